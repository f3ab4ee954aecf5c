#!/usr/bin/env bash
# Checks the deployment files offline (part of `make test`):
#   - every compose file under deploy/docker/ with `docker-compose config -q`
#     (Debian's docker-compose), given the environment it requires;
#   - every manifest under deploy/k8s/ with `kubernetes-validate --strict`
#     (PyPI), and the kustomization rendered with `kubectl kustomize` and
#     validated the same way when kubectl is installed (otherwise its
#     resource list is checked against the files).
# Installs what it lacks: as root, `apt-get install docker-compose`; the
# validator in a venv under ${XDG_CACHE_HOME:-$HOME/.cache}/agenda/kv-venv.
# Prints one line per check and ends with "N passed, M failed"; exits
# non-zero when a check failed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agenda"
venv="$cache/kv-venv"
kv_version="${KUBERNETES_VALIDATE_VERSION:-1.37.0}"

passed=0
failed=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

ok() { passed=$((passed + 1)); echo "ok   $*"; }
bad() {
  failed=$((failed + 1))
  echo "FAIL $*"
  sed 's/^/     /' "$out"
}

# ---- tools ----
if ! command -v docker-compose >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing docker-compose (Debian)..."
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null 2>&1 || {
      DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    }
  else
    echo "deploy/check-manifests.sh needs docker-compose: sudo apt-get install -y docker-compose" >&2
  fi
fi
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  echo "installing kubernetes-validate $kv_version in $venv..."
  mkdir -p "$cache"
  rm -rf "$venv"
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian's own python3 keeps venv in a package of its own.
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ]; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    else
      echo "deploy/check-manifests.sh needs python3 -m venv: sudo apt-get install -y python3-venv" >&2
      exit 1
    fi
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "kubernetes-validate==$kv_version"
fi
kv="$venv/bin/kubernetes-validate"
# KUBECTL= (empty) skips rendering the kustomization.
kubectl=${KUBECTL-$(command -v kubectl || true)}

# ---- compose files ----
# The secrets the files require (${VAR:?}); every address has a default.
export AGENDA_REDIS_PASSWORD=check-manifests-redis-password
export AGENDA_VIP_AUTH_KEY=check-manifests-vip-key
for f in "$root"/deploy/docker/compose*.yml; do
  rel=${f#"$root"/}
  if ! command -v docker-compose >/dev/null; then
    echo "docker-compose is not installed" >"$out"
    bad "$rel (docker-compose config)"
  elif docker-compose -f "$f" config -q >"$out" 2>&1; then
    ok "$rel (docker-compose config)"
  else
    bad "$rel (docker-compose config)"
  fi
done

# ---- Kubernetes manifests ----
for f in "$root"/deploy/k8s/*.yaml; do
  rel=${f#"$root"/}
  [ "$(basename "$f")" = kustomization.yaml ] && continue
  if "$kv" --strict --quiet "$f" >"$out" 2>&1; then
    ok "$rel (kubernetes-validate --strict)"
  else
    bad "$rel (kubernetes-validate --strict)"
  fi
done

k=$root/deploy/k8s/kustomization.yaml
if [ -f "$k" ]; then
  rel=${k#"$root"/}
  if [ -n "$kubectl" ]; then
    rendered=$(mktemp)
    if "$kubectl" kustomize "$root/deploy/k8s" >"$rendered" 2>"$out" &&
      "$kv" --strict --quiet "$rendered" >"$out" 2>&1; then
      ok "$rel (kubectl kustomize + kubernetes-validate --strict)"
    else
      bad "$rel (kubectl kustomize + kubernetes-validate --strict)"
    fi
    rm -f "$rendered"
  elif "$venv/bin/python" - "$k" >"$out" 2>&1 <<'PY'; then
import os, sys, yaml
path = sys.argv[1]
doc = yaml.safe_load(open(path))
assert doc.get("kind") == "Kustomization", "kind is not Kustomization"
res = doc.get("resources") or []
assert res, "no resources"
missing = [r for r in res if not os.path.exists(os.path.join(os.path.dirname(path), r))]
assert not missing, f"missing resources: {missing}"
PY
    ok "$rel (resources listed exist; kubectl not installed, not rendered)"
  else
    bad "$rel (resources listed exist)"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
