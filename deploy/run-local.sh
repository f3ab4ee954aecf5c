#!/usr/bin/env bash
# Starts the local system on loopback and stays in the foreground until
# Ctrl-C (or SIGTERM), then stops everything it started.
#
# Today the system is the five-node agenda-db cluster. Writes, once ready:
#   .agenda/url             operator base URL of node 1 (REST)
#   .agenda/endpoints.json  every process: name, machine, pid, addresses, data dir
# Data lives under .agenda/data (kept across runs; AGENDA_FRESH=1 wipes it).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.agenda"
bin="${AGENDA_BIN_DIR:-$root/target/release}"
nodes=5
grpc_base=${AGENDA_DB_GRPC_BASE:-7001}
http_base=${AGENDA_DB_HTTP_BASE:-7101}

mkdir -p "$state/logs" "$state/data"
[ "${AGENDA_FRESH:-0}" = 1 ] && rm -rf "$state/data"/*
rm -f "$state/url" "$state/endpoints.json"

peers=""
for i in $(seq 1 $nodes); do
  peers="${peers:+$peers,}$i=127.0.0.1:$((grpc_base + i - 1))"
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} processes..."
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$state/url" "$state/endpoints.json"
  echo "stopped."
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

for i in $(seq 1 $nodes); do
  "$bin/agenda-db" --id "$i" \
    --listen "127.0.0.1:$((grpc_base + i - 1))" \
    --http "127.0.0.1:$((http_base + i - 1))" \
    --peers "$peers" \
    --data-dir "$state/data/db$i" \
    >"$state/logs/db$i.log" 2>&1 &
  pids+=($!)
done

echo "waiting for the cluster to elect a leader..."
deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$http_base/healthz" >/dev/null 2>&1; do
  for idx in "${!pids[@]}"; do
    if ! kill -0 "${pids[$idx]}" 2>/dev/null; then
      echo "agenda-db node $((idx + 1)) exited; its log:" >&2
      tail -n 20 "$state/logs/db$((idx + 1)).log" >&2
      exit 1
    fi
  done
  if [ $SECONDS -ge $deadline ]; then
    echo "no leader after 30 s; see $state/logs/" >&2
    exit 1
  fi
  sleep 0.2
done

{
  echo '{"processes": ['
  for i in $(seq 1 $nodes); do
    sep=","; [ "$i" = "$nodes" ] && sep=""
    printf '  {"name": "agenda-db-%s", "kind": "agenda-db", "machine": "local", "pid": %s, "grpc": "127.0.0.1:%s", "http": "http://127.0.0.1:%s", "data_dir": "%s", "log": "%s"}%s\n' \
      "$i" "${pids[$((i - 1))]}" "$((grpc_base + i - 1))" "$((http_base + i - 1))" \
      "$state/data/db$i" "$state/logs/db$i.log" "$sep"
  done
  echo ']}'
} >"$state/endpoints.json"
echo "http://127.0.0.1:$http_base" >"$state/url"

cat <<TXT

agenda-db cluster is up (5 nodes). Logs: $state/logs/, processes: $state/endpoints.json
Try:
  curl -X PUT --data-binary hello http://127.0.0.1:$http_base/v1/kv/greeting
  curl -i http://127.0.0.1:$((http_base + 2))/v1/kv/greeting      # any node answers
  curl 'http://127.0.0.1:$http_base/v1/kv?prefix=' ; curl http://127.0.0.1:$http_base/v1/cluster
gRPC clients: any of 127.0.0.1:$grpc_base..$((grpc_base + nodes - 1)).
Ctrl-C stops everything.
TXT

wait -n "${pids[@]}" || true
echo "a process exited unexpectedly; stopping the rest" >&2
exit 1
