#!/usr/bin/env bash
# schemathesis against the OpenAPI document of a LIVE gateway: every
# operation, every check, authenticated, over TLS.
#
#   tests/schemathesis/run.sh setup
#       creates (or reuses) the virtualenv and prints nothing else on
#       stdout; exit 3: python3 cannot make a virtualenv (install
#       python3-venv), 4: pip could not install requirements.txt.
#   tests/schemathesis/run.sh run --url https://127.0.0.1:8080 --ca ca.pem \
#       --report-dir DIR [--token TOKEN] [--max-examples N] [--max-time S] [--seed S]
#       runs schemathesis; DIR gets junit.xml, events.ndjson (every
#       scenario, its cases and their checks) and schemathesis.log. Exit
#       code: schemathesis's (0: no failure).
#
# The token is a bearer token of a registered user (`--token` or
# AGENDA_TOKEN); without one, hooks.py registers a user itself. Operations
# that end a session (DELETE /v1/me) get a fresh user per case (hooks.py).
# The system test tests/tests/api_schema.rs runs this against a system it
# starts; against `make run-local`:
#   tests/schemathesis/run.sh run --url "$(cat .agenda/url)" --ca .agenda/ca.pem --report-dir /tmp/st
#
# The virtualenv lives in ${XDG_CACHE_HOME:-$HOME/.cache}/agenda/
# (AGENDA_SCHEMATHESIS_VENV overrides), made again when requirements.txt
# changes; PYTHON picks the interpreter (default python3).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agenda"
venv="${AGENDA_SCHEMATHESIS_VENV:-$cache/schemathesis-venv}"
python="${PYTHON:-python3}"
stamp="$venv/.requirements"

setup() {
  if [ -x "$venv/bin/schemathesis" ] && cmp -s "$here/requirements.txt" "$stamp"; then
    return 0
  fi
  echo "schemathesis: creating the virtualenv $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! command -v "$python" >/dev/null; then
    echo "schemathesis: $python not found; install Python 3 and its venv module: apt-get install -y python3 python3-venv" >&2
    exit 3
  fi
  if ! "$python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "schemathesis: '$python -m venv' cannot create a virtualenv; install python3-venv: apt-get install -y python3-venv" >&2
    exit 3
  fi
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt" >&2; then
    rm -rf "$venv"
    echo "schemathesis: pip could not install $here/requirements.txt (is PyPI reachable?)" >&2
    exit 4
  fi
  cp "$here/requirements.txt" "$stamp"
}

run() {
  local url="" ca="" report="" token="${AGENDA_TOKEN:-}" max_examples=100 max_time="" seed=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --url) url=$2; shift 2 ;;
      --ca) ca=$2; shift 2 ;;
      --report-dir) report=$2; shift 2 ;;
      --token) token=$2; shift 2 ;;
      --max-examples) max_examples=$2; shift 2 ;;
      --max-time) max_time=$2; shift 2 ;;
      --seed) seed=$2; shift 2 ;;
      *) echo "run.sh run: unknown argument $1" >&2; exit 2 ;;
    esac
  done
  if [ -z "$url" ] || [ -z "$ca" ] || [ -z "$report" ]; then
    echo "run.sh run: --url, --ca and --report-dir are required" >&2
    exit 2
  fi
  setup
  mkdir -p "$report"
  # --include-path-regex: every operation, /openapi.json too (left out
  # by default as the document's own address).
  local args=(
    --config-file "$here/schemathesis.toml"
    run "${url%/}/openapi.json"
    --include-path-regex '.'
    --checks all
    --continue-on-failure
    --tls-verify "$ca"
    --max-examples "$max_examples"
    --report junit,ndjson
    --report-dir "$report"
    --report-junit-path "$report/junit.xml"
    --report-ndjson-path "$report/events.ndjson"
    --generation-database none
    --no-color
  )
  [ -n "$max_time" ] && args+=(--max-time "$max_time")
  [ -n "$seed" ] && args+=(--seed "$seed")
  cd "$here"
  AGENDA_URL="${url%/}" AGENDA_CA="$ca" AGENDA_TOKEN="$token" \
    SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$here" \
    "$venv/bin/schemathesis" "${args[@]}" 2>&1 | tee "$report/schemathesis.log"
  return "${PIPESTATUS[0]}"
}

case "${1:-}" in
  setup) setup ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 setup | run --url URL --ca CA --report-dir DIR [--token T] [--max-examples N] [--max-time S] [--seed S]" >&2; exit 2 ;;
esac
