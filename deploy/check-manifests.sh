#!/usr/bin/env bash
# Checks the deployment files offline (part of `make test`):
#   - every compose file under deploy/docker/ with `docker-compose config -q`
#     (Debian's docker-compose), given the environment it requires;
#   - every manifest under deploy/k8s/ with `kubernetes-validate --strict`
#     (PyPI), and the kustomization rendered with `kubectl kustomize` and
#     validated the same way when kubectl is installed (otherwise its
#     resource list is checked against the files);
#   - the TLS wiring, which the validators cannot see: every process gets
#     --tls-dir and --tls-name and the certificate directory (compose: a
#     read-only bind mount; k8s: the agenda-tls Secret as a directory, never
#     subPath, which the kubelet would not update on rotation), agenda-db
#     its raft port (--peer-listen), the supervisors --redis-tls-name, and
#     no health check or probe speaks plain HTTP to a TLS port (only the
#     supervisors' and agenda-vip's metrics ports stay plain).
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

# compose_tls FILE: the resolved file (docker-compose config) wires TLS.
compose_tls() {
  docker-compose -f "$1" config | "$venv/bin/python" -c '
import sys, yaml
doc = yaml.safe_load(sys.stdin)
bad = []
for name, svc in (doc.get("services") or {}).items():
    cmd = [str(c) for c in svc.get("command") or []]
    flags = {c.split("=", 1)[0] for c in cmd}
    for f in ("--tls-dir", "--tls-name"):
        if f not in flags:
            bad.append(f"{name}: no {f}")
    if cmd[:1] == ["agenda-db"] and "--peer-listen" not in flags:
        bad.append(f"{name}: agenda-db without --peer-listen")
    if cmd[:1] == ["agenda-supervisor"] and "--redis-tls-name" not in flags:
        bad.append(f"{name}: agenda-supervisor without --redis-tls-name")
    if cmd[:1] == ["agenda-vip"] and not any(c.startswith("--health-url=https://") for c in cmd):
        bad.append(f"{name}: agenda-vip --health-url is not https")
    mounts = []
    for v in svc.get("volumes") or []:
        if isinstance(v, dict):
            mounts.append((v.get("target"), bool(v.get("read_only"))))
        else:
            parts = str(v).split(":")
            mounts.append((parts[1] if len(parts) > 1 else parts[0], parts[-1] == "ro"))
    if ("/etc/agenda/certs", True) not in mounts:
        bad.append(f"{name}: no read-only mount at /etc/agenda/certs")
    test = (svc.get("healthcheck") or {}).get("test") or []
    for word in " ".join(str(t) for t in test).split():
        if word.startswith("http://") and not word.rsplit(":", 1)[-1].startswith(("7501/", "7601/")):
            bad.append(f"{name}: health check over plain HTTP: {word}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
'
}
for f in "$root"/deploy/docker/compose*.yml; do
  rel=${f#"$root"/}
  if ! command -v docker-compose >/dev/null; then
    echo "docker-compose is not installed" >"$out"
    bad "$rel (TLS wiring)"
  elif compose_tls "$f" >"$out" 2>&1; then
    ok "$rel (TLS wiring)"
  else
    bad "$rel (TLS wiring)"
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

# Every pod template mounts the agenda-tls Secret as a directory in every
# container, names its certificate, and probes no TLS port over plain HTTP.
k8s_tls() {
  "$venv/bin/python" - "$@" <<'PY'
import os, sys, yaml
scripts = {}
docs = []
for path in sys.argv[1:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs.append((os.path.basename(path), doc))
            if doc.get("kind") == "ConfigMap":
                scripts.update(doc.get("data") or {})
bad = []
for path, doc in docs:
    spec = ((doc.get("spec") or {}).get("template") or {}).get("spec")
    if not spec:
        continue
    where = f"{path} {doc['kind']}/{doc['metadata']['name']}"
    tls = [v["name"] for v in spec.get("volumes") or []
           if (v.get("secret") or {}).get("secretName") == "agenda-tls"]
    if not tls:
        bad.append(f"{where}: no agenda-tls Secret volume")
    for c in spec.get("containers") or []:
        mounts = [m for m in c.get("volumeMounts") or [] if m["name"] in tls]
        if not any(m.get("mountPath") == "/etc/agenda/certs" for m in mounts):
            bad.append(f"{where} {c['name']}: agenda-tls not mounted at /etc/agenda/certs")
        if any("subPath" in m or "subPathExpr" in m for m in mounts):
            bad.append(f"{where} {c['name']}: agenda-tls mounted with subPath (never updated)")
        # The flags, in the container's command/args or in the start script
        # (config.yaml) it runs.
        text = " ".join(c.get("command") or []) + " " + " ".join(c.get("args") or [])
        text += " " + " ".join(s for k, s in scripts.items() if k in text)
        if "--tls-name" not in text or "--tls-dir" not in text:
            bad.append(f"{where} {c['name']}: no --tls-dir/--tls-name")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if get and get.get("scheme", "HTTP") == "HTTP" and get.get("port") != "metrics":
                bad.append(f"{where} {c['name']}: {probe} over plain HTTP")
print("\n".join(bad))
sys.exit(1 if bad else 0)
PY
}
if k8s_tls "$root"/deploy/k8s/*.yaml >"$out" 2>&1; then
  ok "deploy/k8s/*.yaml (TLS wiring)"
else
  bad "deploy/k8s/*.yaml (TLS wiring)"
fi

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
