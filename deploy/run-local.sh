#!/usr/bin/env bash
# Starts the local system on loopback and stays in the foreground until
# Ctrl-C (or SIGTERM), then stops everything it started.
#
# The system: five agenda-db nodes, two Redis servers each owned by an
# agenda-supervisor (one per "machine"), two agenda-users, two
# agenda-groups and one agenda-gateway, and Prometheus (Debian's, when
# installed; AGENDA_PROMETHEUS=0: none) scraping all of them with the alert
# rules of deploy/prometheus/ (config and data in .agenda/prometheus/, at
# AGENDA_PROMETHEUS_ADDR, default 127.0.0.1:9090). Writes, once everything is ready:
#   .agenda/url             the public base URL (the gateway)
#   .agenda/ca.pem          the CA a client of that URL trusts (TLS only)
#   .agenda/endpoints.json  every process: name, kind, machine, pid, addresses, data dir, log;
#                           prometheus_url
# Data lives under .agenda/data (kept across runs; AGENDA_FRESH=1 wipes it).
#
# TLS (AGENDA_TLS=1, the default): `agendactl certs` writes a development CA
# (kept across runs) and a fresh certificate per process to .agenda/certs;
# agenda-db (gRPC and REST) and the users/groups replicas accept only mutual
# TLS with them, and every internal link uses it (Redis too: TLS only, and
# replication over TLS); the gateway serves HTTPS and WSS with its
# certificate (.agenda/ca.pem is the CA clients need). AGENDA_TLS=0: all
# plaintext.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state="$root/.agenda"
bin="${AGENDA_BIN_DIR:-$root/target/release}"
# The web app (web/, built by `make web`), served by the gateway at /.
if [ -z "${AGENDA_WEB_DIR:-}" ] && [ -f "$root/web/dist/index.html" ]; then
  export AGENDA_WEB_DIR="$root/web/dist"
fi
nodes=5
grpc_base=${AGENDA_DB_GRPC_BASE:-7001}
http_base=${AGENDA_DB_HTTP_BASE:-7101}
users_base=${AGENDA_USERS_BASE:-7201}
groups_base=${AGENDA_GROUPS_BASE:-7301}
gateway=${AGENDA_GATEWAY_ADDR:-127.0.0.1:8080}
redis_base=${AGENDA_REDIS_BASE:-7401}
supervisor_base=${AGENDA_SUPERVISOR_BASE:-7501}
# /metrics of the users and groups replicas (their gRPC port + 50).
users_http_base=$((users_base + 50))
groups_http_base=$((groups_base + 50))
prometheus_addr=${AGENDA_PROMETHEUS_ADDR:-127.0.0.1:9090}
replicas=2
# One password for both Redis servers and their clients; kept in the
# state dir so a restart finds the servers' AOF data under the same one.
if [ -z "${AGENDA_REDIS_PASSWORD:-}" ]; then
  mkdir -p "$state"
  [ -s "$state/redis-password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$state/redis-password"
  AGENDA_REDIS_PASSWORD=$(cat "$state/redis-password")
fi
export AGENDA_REDIS_PASSWORD

mkdir -p "$state/logs" "$state/data"
[ "${AGENDA_FRESH:-0}" = 1 ] && rm -rf "$state/data"/*
rm -f "$state/url" "$state/endpoints.json" "$state/ca.pem"

certs="$state/certs"
if [ "${AGENDA_TLS:-1}" = 1 ]; then
  "$bin/agendactl" certs --dir "$certs" >/dev/null
  scheme=https
  # Every process reads the directory from the environment (a path with
  # spaces survives); tls NAME gives it its certificate's name.
  export AGENDA_TLS_DIR="$certs"
  tls() { echo --tls-name "$1"; }
  # The operator's curl (agenda-db's REST wants a cluster certificate).
  dbcurl() { curl --cacert "$certs/ca.pem" --cert "$certs/agendactl.pem" --key "$certs/agendactl-key.pem" "$@"; }
  # Redis speaks TLS only, to certificates of the CA (the operator's here);
  # redis_tls M names the certificate of machine M's redis-server.
  rcli() { REDISCLI_AUTH="$AGENDA_REDIS_PASSWORD" redis-cli --tls --cacert "$certs/ca.pem" --cert "$certs/agendactl.pem" --key "$certs/agendactl-key.pem" "$@"; }
  redis_tls() { echo --redis-tls-name "redis-$1"; }
  # Clients of the gateway trust the CA and show no certificate.
  # A link, not a copy: during a CA rotation (agendactl certs --ca-step)
  # clients trust what the processes trust.
  ln -sfn certs/ca.pem "$state/ca.pem"
  webcurl() { curl --cacert "$state/ca.pem" "$@"; }
else
  scheme=http
  unset AGENDA_TLS_DIR
  tls() { :; }
  dbcurl() { curl "$@"; }
  rcli() { REDISCLI_AUTH="$AGENDA_REDIS_PASSWORD" redis-cli "$@"; }
  redis_tls() { :; }
  webcurl() { curl "$@"; }
fi
# The letter of replica number N (1, 2): certificates are per machine.
letter() { [ "$1" = 1 ] && echo a || echo b; }

# Raft traffic on ports of its own (--peer-listen), apart from the client
# ports. Data made before that knows its members by their client ports:
# it keeps raft there (AGENDA_FRESH=1 starts over with the new layout).
peer_base=${AGENDA_DB_PEER_BASE:-7701}
if [ -d "$state/data/db1" ] && [ ! -e "$state/data/peer-ports" ]; then
  echo "note: the data in $state/data predates separate raft ports; raft stays on the client ports (AGENDA_FRESH=1 to start over)"
  peer_base=""
else
  touch "$state/data/peer-ports"
fi
peer_flag() { [ -n "$peer_base" ] && echo --peer-listen "127.0.0.1:$((peer_base + $1 - 1))"; }
peers=""
for i in $(seq 1 $nodes); do
  peers="${peers:+$peers,}$i=127.0.0.1:$((${peer_base:-$grpc_base} + i - 1))"
done

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping ${#pids[@]} processes..."
  # In reverse start order: the gateway and services first (they
  # deregister through agenda-db), then the supervisors (which stop their
  # Redis), agenda-db last.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    p=${pids[$i]}
    kill -TERM "$p" 2>/dev/null || continue
    for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  rm -f "$state/url" "$state/endpoints.json" "$state/run-local.pid"
  echo "stopped."
}
trap 'stop; exit 0' INT TERM
trap stop EXIT

# Fail early if something is already on our ports.
for port in $(seq $grpc_base $((grpc_base + nodes - 1))) $(seq $http_base $((http_base + nodes - 1))) \
  $(seq $users_base $((users_base + replicas - 1))) $(seq $groups_base $((groups_base + replicas - 1))) \
  $(seq $redis_base $((redis_base + 1))) $(seq $supervisor_base $((supervisor_base + 1))) "${gateway##*:}" \
  $(seq $users_http_base $((users_http_base + replicas - 1))) $(seq $groups_http_base $((groups_http_base + replicas - 1))) \
  $([ "${AGENDA_PROMETHEUS:-1}" = 1 ] && echo "${prometheus_addr##*:}") \
  $([ -n "$peer_base" ] && seq $peer_base $((peer_base + nodes - 1))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is already in use (another make run?); stop that first" >&2
    exit 1
  fi
done

names=()
kinds=()
addrs=()
dirs=()
# start NAME KIND ADDR DATA_DIR COMMAND...
start() {
  local name=$1 kind=$2 addr=$3 dir=$4
  shift 4
  "$@" >"$state/logs/$name.log" 2>&1 &
  pids+=($!)
  names+=("$name")
  kinds+=("$kind")
  addrs+=("$addr")
  dirs+=("$dir")
}

check_alive() {
  for idx in "${!pids[@]}"; do
    if ! kill -0 "${pids[$idx]}" 2>/dev/null; then
      echo "${names[$idx]} exited; its log:" >&2
      tail -n 20 "$state/logs/${names[$idx]}.log" >&2
      exit 1
    fi
  done
}

db_endpoints=""
for i in $(seq 1 $nodes); do
  db_endpoints="${db_endpoints:+$db_endpoints,}127.0.0.1:$((grpc_base + i - 1))"
  start "agenda-db-$i" agenda-db "127.0.0.1:$((grpc_base + i - 1))" "$state/data/db$i" \
    "$bin/agenda-db" --id "$i" \
    --listen "127.0.0.1:$((grpc_base + i - 1))" \
    --http "127.0.0.1:$((http_base + i - 1))" \
    --peers "$peers" $(peer_flag "$i") \
    --data-dir "$state/data/db$i" $(tls "agenda-db-$i")
done

echo "waiting for agenda-db to elect a leader..."
deadline=$((SECONDS + 30))
until dbcurl -fsS "$scheme://127.0.0.1:$http_base/healthz" >/dev/null 2>&1; do
  check_alive
  if [ $SECONDS -ge $deadline ]; then
    echo "no leader after 30 s; see $state/logs/" >&2
    exit 1
  fi
  sleep 0.2
done

# One supervisor per machine, each owning its machine's Redis.
redis_nodes="127.0.0.1:$redis_base,127.0.0.1:$((redis_base + 1))"
for m in a b; do
  k=$([ $m = a ] && echo 0 || echo 1)
  start "agenda-supervisor-$m" agenda-supervisor "127.0.0.1:$((supervisor_base + k))" "$state/data/redis-$m" \
    "$bin/agenda-supervisor" --id "supervisor-$m" --db "$db_endpoints" \
    --http "127.0.0.1:$((supervisor_base + k))" --redis-nodes "$redis_nodes" \
    --local-redis "127.0.0.1:$((redis_base + k))" --redis-dir "$state/data/redis-$m" \
    $(tls "agenda-supervisor-$m") $(redis_tls "$m")
done

echo "waiting for a Redis primary to be published and answering..."
# The record may survive from an earlier run; what counts is that the node
# it names answers as a master (after a restart the supervisors may first
# have to fail over).
deadline=$((SECONDS + 45))
until primary=$(dbcurl -fsS "$scheme://127.0.0.1:$http_base/v1/kv/%2Fregistry/config/redis-primary" 2>/dev/null | sed -n 's/.*"addr":"\([^"]*\)".*/\1/p') \
  && [ -n "$primary" ] \
  && rcli -h "${primary%:*}" -p "${primary##*:}" info replication 2>/dev/null | grep -q '^role:master'; do
  check_alive
  if [ $SECONDS -ge $deadline ]; then
    echo "no answering Redis primary after 45 s; see $state/logs/agenda-supervisor-*.log" >&2
    exit 1
  fi
  sleep 0.2
done

for r in $(seq 1 $replicas); do
  start "agenda-users-$r" agenda-users "127.0.0.1:$((users_base + r - 1))" "" \
    "$bin/agenda-users" --listen "127.0.0.1:$((users_base + r - 1))" --db "$db_endpoints" \
    --http "127.0.0.1:$((users_http_base + r - 1))" $(tls "agenda-users-$(letter "$r")")
  start "agenda-groups-$r" agenda-groups "127.0.0.1:$((groups_base + r - 1))" "" \
    "$bin/agenda-groups" --listen "127.0.0.1:$((groups_base + r - 1))" --db "$db_endpoints" \
    --http "127.0.0.1:$((groups_http_base + r - 1))" $(tls "agenda-groups-$(letter "$r")")
done
start agenda-gateway agenda-gateway "$gateway" "" \
  "$bin/agenda-gateway" --listen "$gateway" --db "$db_endpoints" $(tls agenda-gateway-a)

echo "waiting for the gateway to be ready..."
deadline=$((SECONDS + 30))
until webcurl -fsS "$scheme://$gateway/readyz" >/dev/null 2>&1; do
  check_alive
  if [ $SECONDS -ge $deadline ]; then
    echo "gateway not ready after 30 s:" >&2
    webcurl -sS "$scheme://$gateway/readyz" >&2 || true
    echo "see $state/logs/" >&2
    exit 1
  fi
  sleep 0.2
done

# endpoints.json: every process started (see the header).
write_endpoints() {
  {
    echo '{'
    [ "$scheme" = https ] && printf '"tls_dir": "%s",\n' "$certs"
    [ -n "${prometheus_url:-}" ] && printf '"prometheus_url": "%s",\n' "$prometheus_url"
    echo '"processes": ['
    last=$((${#pids[@]} - 1))
    for idx in "${!pids[@]}"; do
      sep=","; [ "$idx" = "$last" ] && sep=""
      extra=""
      case "${kinds[$idx]}" in
        agenda-db) n=${names[$idx]##*-}; extra=", \"grpc\": \"${addrs[$idx]}\", \"http\": \"$scheme://127.0.0.1:$((http_base + n - 1))\"" ;;
        agenda-gateway) extra=", \"http\": \"$scheme://${addrs[$idx]}\"" ;;
        agenda-supervisor) m=${names[$idx]##*-}; k=$([ "$m" = a ] && echo 0 || echo 1)
          extra=", \"http\": \"http://${addrs[$idx]}\", \"redis\": \"127.0.0.1:$((redis_base + k))\"" ;;
        agenda-users) n=${names[$idx]##*-}
          extra=", \"grpc\": \"${addrs[$idx]}\", \"http\": \"http://127.0.0.1:$((users_http_base + n - 1))\"" ;;
        agenda-groups) n=${names[$idx]##*-}
          extra=", \"grpc\": \"${addrs[$idx]}\", \"http\": \"http://127.0.0.1:$((groups_http_base + n - 1))\"" ;;
        prometheus) extra=", \"http\": \"http://${addrs[$idx]}\"" ;;
        *) extra=", \"grpc\": \"${addrs[$idx]}\"" ;;
      esac
      printf '  {"name": "%s", "kind": "%s", "machine": "local", "pid": %s%s, "data_dir": %s, "log": "%s"}%s\n' \
        "${names[$idx]}" "${kinds[$idx]}" "${pids[$idx]}" "$extra" \
        "$([ -n "${dirs[$idx]}" ] && printf '"%s"' "${dirs[$idx]}" || echo null)" \
        "$state/logs/${names[$idx]}.log" "$sep"
    done
    # The Redis servers are children of their supervisors.
    for m in a b; do
      k=$([ $m = a ] && echo 0 || echo 1)
      port=$((redis_base + k))
      # A node may be restarting (its supervisor brings it back): then null.
      rpid=$(rcli -p "$port" info server 2>/dev/null | tr -d '\r' | sed -n 's/^process_id://p' || true)
      role=$(rcli -p "$port" info replication 2>/dev/null | tr -d '\r' | sed -n 's/^role://p' || true)
      printf '  ,{"name": "redis-%s", "kind": "redis-server", "machine": "local", "pid": %s, "redis": "127.0.0.1:%s", "role": "%s", "managed_by": "agenda-supervisor-%s", "data_dir": "%s"}\n' \
        "$m" "${rpid:-null}" "$port" "${role:-unknown}" "$m" "$state/data/redis-$m"
    done
    echo ']}'
  } >"$state/endpoints.json.tmp"
  mv "$state/endpoints.json.tmp" "$state/endpoints.json"
}
write_endpoints

# Prometheus scraping every process, with the alert rules of
# deploy/prometheus/ (AGENDA_PROMETHEUS=0: none).
prometheus_note="Prometheus: not started (AGENDA_PROMETHEUS=0)"
if [ "${AGENDA_PROMETHEUS:-1}" = 1 ]; then
  if command -v prometheus >/dev/null; then
    mkdir -p "$state/prometheus"
    rules=()
    for f in "$root"/deploy/prometheus/alerts.yml "$root"/deploy/prometheus/recording.yml; do
      [ -f "$f" ] && rules+=(--rules "$f")
    done
    "$bin/agendactl" prometheus-config --endpoints "$state/endpoints.json" "${rules[@]}" \
      --out "$state/prometheus/prometheus.yml"
    start prometheus prometheus "$prometheus_addr" "$state/prometheus" \
      prometheus --config.file="$state/prometheus/prometheus.yml" \
      --storage.tsdb.path="$state/prometheus/data" --storage.tsdb.retention.time=7d \
      --web.listen-address="$prometheus_addr" --log.level=warn
    echo "waiting for Prometheus..."
    deadline=$((SECONDS + 30))
    until curl -fsS "http://$prometheus_addr/-/ready" >/dev/null 2>&1; do
      check_alive
      if [ $SECONDS -ge $deadline ]; then
        echo "Prometheus not ready after 30 s; see $state/logs/prometheus.log" >&2
        exit 1
      fi
      sleep 0.2
    done
    prometheus_url="http://$prometheus_addr"
    write_endpoints
    prometheus_note="Prometheus: http://$prometheus_addr (alerts: /alerts; SLO table: $bin/agendactl slo --since 1h)"
  else
    prometheus_note="Prometheus: not installed (apt-get install prometheus), so not started"
  fi
fi
echo "$scheme://$gateway" >"$state/url"

kv_curl="curl -s $scheme://127.0.0.1:$http_base/v1/kv/%2Fregistry/config/redis-primary"
tls_note="."
web="curl -s"
if [ "$scheme" = https ]; then
  web="curl --cacert $state/ca.pem -s"
  kv_curl="curl --cacert '$certs/ca.pem' --cert '$certs/agendactl.pem' --key '$certs/agendactl-key.pem' \\
    -s https://127.0.0.1:$http_base/v1/kv/%2Fregistry/config/redis-primary"
  tls_note="; like agenda-db's gRPC
  ports it asks for a certificate of the cluster CA ($certs/, agendactl.pem is the operator's)."
fi
cat <<TXT

Agenda is up: 5 agenda-db nodes, 2 Redis (each with its agenda-supervisor), $replicas agenda-users,
$replicas agenda-groups, 1 gateway.
Public API: $scheme://$gateway   (OpenAPI: $scheme://$gateway/openapi.json)
Logs: $state/logs/   Processes: $state/endpoints.json
Try:
  $web -X POST $scheme://$gateway/v1/auth/register -H 'content-type: application/json' \\
    -d '{"username":"alice","email":"alice@example.org","password":"correct-horse-1"}'
  $web -X POST $scheme://$gateway/v1/auth/login -H 'content-type: application/json' \\
    -d '{"username":"alice","password":"correct-horse-1"}'
  $web $scheme://$gateway/v1/me -H "authorization: Bearer <access_token from login>"
Live notifications: a WebSocket on ${scheme/http/ws}://$gateway/v1/stream?access_token=<token>
Redis primary (published by the acting supervisor):
  $kv_curl
Operators: agenda-db REST on $scheme://127.0.0.1:$http_base..$((http_base + nodes - 1)) (/v1/cluster, /metrics)$tls_note
The whole system at a glance: $bin/agendactl status
$prometheus_note
Ctrl-C stops everything.
TXT

echo $$ >"$state/run-local.pid"
# The runner outlives the deaths it exists to survive: a process that dies
# is reported once and stays down (restart it by hand with the command
# line in its log's first lines, or restart `make run-local`).
declare -A reported=()
while true; do
  for idx in "${!pids[@]}"; do
    if ! kill -0 "${pids[$idx]}" 2>/dev/null && [ -z "${reported[$idx]:-}" ]; then
      reported[$idx]=1
      wait "${pids[$idx]}" 2>/dev/null && code=0 || code=$?
      echo "${names[$idx]} (pid ${pids[$idx]}) exited with status $code; the rest keep serving (log: $state/logs/${names[$idx]}.log)" >&2
    fi
  done
  sleep 1 &
  wait $! || true
done
