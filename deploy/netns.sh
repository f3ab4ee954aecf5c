#!/usr/bin/env bash
# The two-machine topology of seed 002 (figure 2) on one host, in network
# namespaces, and the operator's hands on it. Needs root, iproute2,
# iputils-arping, redis-server, curl.
#
#   deploy/netns.sh run                 start everything, stay in the foreground until Ctrl-C / `stop`
#   deploy/netns.sh up                  start everything and return (tests, chaos)
#   deploy/netns.sh down | stop         stop every process and remove every namespace made here
#   deploy/netns.sh ps                  every process: name, machine, pid, up/down
#   deploy/netns.sh kill NAME [SIGNAL]  kill one process (default KILL), e.g. agenda-gateway-a
#   deploy/netns.sh restart NAME        start a dead process again, same flags, same machine
#   deploy/netns.sh kill-machine M      power cut: every process of machine M killed, its link down
#   deploy/netns.sh start-machine M     power back: link up, every process of M started again
#   deploy/netns.sh partition M1 M2     cut the link between two machines (both ways)
#   deploy/netns.sh heal [M1 M2]        heal one cut, or every cut
#   deploy/netns.sh exec M CMD...       run a command on a machine (e.g. `exec client curl ...`)
#   deploy/netns.sh rolling-restart     every process stopped gracefully and started again, one at a time
#
# Machines: machine-a, machine-b, witness, client (namespaces, prefixed by
# AGENDA_NETNS_PREFIX), joined by a bridge that lives in a namespace of its
# own (<prefix>agenda-lan). Subnet 10.77.0.0/24 (AGENDA_SUBNET=10.77.0):
#   .10 the VIP   .11 machine-a   .12 machine-b   .13 witness   .100 client
# Nothing is added to the host's own network namespace; the only thing in
# it is a loopback relay (agendactl relay) that carries a person's
# connections into the client namespace and on to the VIP.
#
# Placement (DESIGN.md, "Two-machine topology"):
#   machine-a: agenda-db 1,2; redis + agenda-supervisor-a; agenda-users-a;
#              agenda-groups-a; agenda-gateway-a + agenda-vip-a (priority 150)
#   machine-b: agenda-db 3,4; redis + agenda-supervisor-b; agenda-users-b;
#              agenda-groups-b; agenda-gateway-b + agenda-vip-b (priority 100)
#   witness:   agenda-db 5
#
# State under AGENDA_STATE (default .agenda): run/ (pid, command line and
# machine of every process), logs/, data-netns/ (not run-local's data/), certs/, endpoints.json, url (the VIP
# URL, for clients in the client namespace), local_url (the host relay).
# `run` also starts Prometheus on the witness (AGENDA_PROMETHEUS=0: not;
# `up` only with AGENDA_PROMETHEUS=1), reached from the host at
# AGENDA_PROMETHEUS_LISTEN (127.0.0.1:9090), its URL in endpoints.json.
#
# AGENDA_VIP_DAEMON=keepalived (for `make bench-vip` only; default
# agenda-vip): Debian's keepalived holds the same VIP instead of agenda-vip
# (keepalived-a/-b, same priorities, --no-preempt, 100 ms adverts, unicast
# to the other machine), the local gateway's health checked as agenda-vip
# checks it (keepalived-health-a/-b, deploy/keepalived-health.sh, a
# track_file), and the gateways start without the VIP fence (--vip-addr,
# --vip-holder-id: keepalived takes no lease in agenda-db).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
state=${AGENDA_STATE:-$root/.agenda}
bin=${AGENDA_BIN_DIR:-$root/target/release}
# The web app (web/, built by `make web`), served by the gateway at /.
if [ -z "${AGENDA_WEB_DIR:-}" ] && [ -f "$root/web/dist/index.html" ]; then
  export AGENDA_WEB_DIR="$root/web/dist"
fi
prefix=${AGENDA_NETNS_PREFIX:-}
subnet=${AGENDA_SUBNET:-10.77.0}
relay_listen=${AGENDA_RELAY_LISTEN:-127.0.0.1:8080}
prometheus_listen=${AGENDA_PROMETHEUS_LISTEN:-127.0.0.1:9090}
vip_daemon=${AGENDA_VIP_DAEMON:-agenda-vip}
run_dir="$state/run"
logs="$state/logs"
# Not run-local's .agenda/data: its agenda-db members are at 127.0.0.1, and
# members recorded in the data win over --peers, so one mode's data would
# leave the other's nodes calling peers that are not there.
data="$state/data-netns"
# Mutual TLS on every internal link (AGENDA_TLS=0: plaintext): certificates
# from `agendactl certs` in $certs; agenda-db's REST asks for one too.
certs="$state/certs"
tls_on=${AGENDA_TLS:-1}

lan="${prefix}agenda-lan"
vip="$subnet.10"
declare -A ip_of=([machine-a]="$subnet.11" [machine-b]="$subnet.12" [witness]="$subnet.13" [client]="$subnet.100")
declare -A port_of=([machine-a]=va [machine-b]=vb [witness]=vw [client]=vc)
machines=(machine-a machine-b witness client)
db_machine=([1]=machine-a [2]=machine-a [3]=machine-b [4]=machine-b [5]=witness)

ns() { echo "${prefix}$1"; }
scheme() { if [ "$tls_on" = 1 ]; then echo https; else echo http; fi; }
# tls_args NAME: sets TLS to the flags giving process NAME its certificate.
tls_args() { TLS=(); [ "$tls_on" = 1 ] && TLS=(--tls-dir "$certs" --tls-name "$1"); return 0; }
# web_curl MACHINE ARGS...: curl on a machine as a client of the gateways
# (https:// trusting the CA when TLS is on; no certificate of its own).
web_curl() {
  local m=$1
  shift
  if [ "$tls_on" = 1 ]; then
    on "$m" curl --cacert "$certs/ca.pem" "$@"
  else
    on "$m" curl "$@"
  fi
}
# rcli MACHINE ARGS...: redis-cli on a machine, as the operator when TLS is
# on (Redis then speaks TLS only, to certificates of the CA).
rcli() {
  local m=$1
  shift
  if [ "$tls_on" = 1 ]; then
    REDISCLI_AUTH="$AGENDA_REDIS_PASSWORD" on "$m" redis-cli --tls --cacert "$certs/ca.pem" \
      --cert "$certs/agendactl.pem" --key "$certs/agendactl-key.pem" "$@"
  else
    REDISCLI_AUTH="$AGENDA_REDIS_PASSWORD" on "$m" redis-cli "$@"
  fi
}
# db_curl MACHINE ARGS...: curl on a machine, as the operator when TLS is on.
db_curl() {
  local m=$1
  shift
  if [ "$tls_on" = 1 ]; then
    on "$m" curl --cacert "$certs/ca.pem" --cert "$certs/agendactl.pem" --key "$certs/agendactl-key.pem" "$@"
  else
    on "$m" curl "$@"
  fi
}
say() { echo "[netns] $*" >&2; }
die() { echo "netns.sh: $*" >&2; exit 1; }

need_root() {
  [ "$(id -u)" = 0 ] || die "the namespace topology needs root (network namespaces); use \`make run-local\` for the loopback mode"
  for c in ip curl redis-server arping; do
    command -v "$c" >/dev/null || die "missing $c: apt-get install -y iproute2 curl redis-server iputils-arping"
  done
}

db_endpoints() {
  local out="" i
  for i in 1 2 3 4 5; do out="${out:+$out,}${ip_of[${db_machine[$i]}]}:700$i"; done
  echo "$out"
}

# ---------------------------------------------------------------- network

net_up() {
  local m
  ip netns add "$lan"
  ip -n "$lan" link set lo up
  ip -n "$lan" link add br0 type bridge
  ip -n "$lan" link set br0 up
  for m in "${machines[@]}"; do
    ip netns add "$(ns "$m")"
    ip -n "$(ns "$m")" link set lo up
    ip -n "$lan" link add "${port_of[$m]}" type veth peer name eth0 netns "$(ns "$m")"
    ip -n "$lan" link set "${port_of[$m]}" master br0 up
    ip -n "$(ns "$m")" addr add "${ip_of[$m]}/24" dev eth0
    ip -n "$(ns "$m")" link set eth0 up
  done
  # Answer ARP for the VIP only from the interface that holds it, and
  # take gratuitous ARP for a moved address at once.
  for m in "${machines[@]}"; do
    ip netns exec "$(ns "$m")" sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
      net.ipv4.conf.eth0.arp_accept=1 >/dev/null || true
  done
}

net_down() {
  local m
  for m in "${machines[@]}"; do
    ip netns del "$(ns "$m")" 2>/dev/null || true
  done
  ip netns del "$lan" 2>/dev/null || true
}

# ---------------------------------------------------------------- processes

# start NAME MACHINE COMMAND... : detached (its own session, so a Ctrl-C
# in some shell never reaches it), pid recorded, command line kept for
# `restart`. MACHINE "host" runs in the host namespace (the relay only).
start() {
  local name=$1 machine=$2
  shift 2
  mkdir -p "$run_dir" "$logs"
  printf '%q ' "$@" >"$run_dir/$name.cmd"
  echo "$machine" >"$run_dir/$name.machine"
  grep -qx "$name" "$run_dir/order" 2>/dev/null || echo "$name" >>"$run_dir/order"
  rm -f "$run_dir/$name.pid"
  local -a wrap=()
  [ "$machine" != host ] && wrap=(ip netns exec "$(ns "$machine")")
  echo "--- $(date -Is) start: $*" >>"$logs/$name.log"
  setsid -f "${wrap[@]}" sh -c 'echo $$ >"$0"; exec "$@"' "$run_dir/$name.pid" "$@" \
    >>"$logs/$name.log" 2>&1 </dev/null
  local _
  for _ in $(seq 1 100); do [ -s "$run_dir/$name.pid" ] && return 0; sleep 0.05; done
  die "$name did not start; see $logs/$name.log"
}

pid_of() { cat "$run_dir/$1.pid" 2>/dev/null || true; }
# Alive and not a zombie: nothing may reap our detached processes
# promptly (PID 1 of a container or VM need not), and kill -0 succeeds
# on a zombie.
pid_alive() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [ "${s%% *}" != Z ]
}
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && pid_alive "$p"; }

restart() {
  local name=$1
  [ -f "$run_dir/$name.cmd" ] || die "no process named $name (see \`deploy/netns.sh ps\`)"
  alive "$name" && die "$name is running (pid $(pid_of "$name")); kill it first"
  local machine
  machine=$(cat "$run_dir/$name.machine")
  eval "local -a cmd=($(cat "$run_dir/$name.cmd"))"
  start "$name" "$machine" "${cmd[@]}"
  say "$name started again on $machine, pid $(pid_of "$name")"
  write_endpoints
}

# in MACHINE CMD... : run a command on a machine (namespace).
on() {
  local m=$1
  shift
  ip netns exec "$(ns "$m")" "$@"
}

wait_until() { # what timeout_s command...
  local what=$1 timeout=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "timed out after ${timeout}s waiting for $what; logs in $logs/"
      return 1
    fi
    sleep 0.2
  done
}

redis_is_primary() {
  local rec addr
  rec=$(db_curl witness -fsS "$(scheme)://${ip_of[witness]}:7105/v1/kv/%2Fregistry/config/redis-primary") || return 1
  addr=$(sed -n 's/.*"addr":"\([^"]*\)".*/\1/p' <<<"$rec")
  [ -n "$addr" ] || return 1
  local m
  for m in machine-a machine-b; do
    if [ "${addr%:*}" = "${ip_of[$m]}" ]; then
      rcli "$m" -h "${addr%:*}" -p "${addr##*:}" info replication | grep -q '^role:master'
      return
    fi
  done
  return 1
}

vip_answers() { web_curl client -fsS -m 2 "$(scheme)://$vip:8080/healthz"; }

up() {
  need_root
  [ -x "$bin/agenda-vip" ] || die "no binaries in $bin (build with \`cargo build --release --workspace\`)"
  case "$vip_daemon" in
    agenda-vip) ;;
    keepalived) command -v keepalived >/dev/null || die "missing keepalived: apt-get install -y keepalived" ;;
    *) die "AGENDA_VIP_DAEMON=$vip_daemon: agenda-vip or keepalived" ;;
  esac
  if ip netns list | grep -qx "$lan\( .*\)\?"; then
    die "namespace $lan exists: another topology is up (\`deploy/netns.sh down\` removes it)"
  fi
  mkdir -p "$state" "$run_dir" "$logs" "$data"
  rm -f "$run_dir"/* "$state/url" "$state/local_url" "$state/endpoints.json" "$state/ca.pem"
  [ "${AGENDA_FRESH:-0}" = 1 ] && rm -rf "${data:?}"/*
  [ -s "$state/redis-password" ] || head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$state/redis-password"
  [ -s "$state/vip-key" ] || { head -c 32 /dev/urandom | base64 >"$state/vip-key"; chmod 600 "$state/vip-key"; }
  export AGENDA_REDIS_PASSWORD
  AGENDA_REDIS_PASSWORD=$(cat "$state/redis-password")
  cat >"$state/netns.env" <<ENV
AGENDA_NETNS_PREFIX=$prefix
AGENDA_SUBNET=$subnet
AGENDA_STATE=$state
AGENDA_BIN_DIR=$bin
AGENDA_VIP_DAEMON=$vip_daemon
AGENDA_TLS=$tls_on
ENV
  trap 'say "start-up failed; removing what was made"; down; exit 1' ERR
  say "network: bridge in $lan, subnet $subnet.0/24, VIP $vip"
  net_up

  if [ "$tls_on" = 1 ]; then
    "$bin/agendactl" certs --dir "$certs" --subnet "$subnet" >/dev/null
    # A link, not a copy: during a CA rotation (agendactl certs --ca-step)
    # clients trust what the processes trust.
    ln -sfn certs/ca.pem "$state/ca.pem"
    say "certificates in $certs (mutual TLS on every internal link; HTTPS at the gateways, CA in $state/ca.pem)"
  fi
  local db peers="" i peer_port=770
  # Raft traffic on ports of its own (77xx), apart from the client ports.
  # Data made before that knows its members by their client ports: it
  # keeps raft there (AGENDA_FRESH=1 starts over with the new layout).
  if [ -d "$data/db1" ] && [ ! -e "$data/peer-ports" ]; then
    say "the data in $data predates separate raft ports; raft stays on the client ports (AGENDA_FRESH=1 to start over)"
    peer_port=700
  else
    mkdir -p "$data" && touch "$data/peer-ports"
  fi
  db=$(db_endpoints)
  for i in 1 2 3 4 5; do peers="${peers:+$peers,}$i=${ip_of[${db_machine[$i]}]}:$peer_port$i"; done
  for i in 1 2 3 4 5; do
    local m=${db_machine[$i]} a=${ip_of[${db_machine[$i]}]} peer_flag=()
    [ "$peer_port" = 770 ] && peer_flag=(--peer-listen "$a:770$i")
    tls_args "agenda-db-$i"
    start "agenda-db-$i" "$m" "$bin/agenda-db" --id "$i" --listen "$a:700$i" --http "$a:710$i" \
      --peers "$peers" "${peer_flag[@]}" --data-dir "$data/db$i" "${TLS[@]}"
  done
  say "waiting for agenda-db to elect a leader..."
  wait_until "an agenda-db leader" 60 db_curl witness -fsS "$(scheme)://${ip_of[witness]}:7105/healthz"

  local redis_nodes="${ip_of[machine-a]}:7401,${ip_of[machine-b]}:7401" x
  for x in a b; do
    local m="machine-$x" a=${ip_of[machine-$x]}
    tls_args "agenda-supervisor-$x"
    # With TLS its redis-server serves TLS only, with its own certificate.
    [ "$tls_on" = 1 ] && TLS+=(--redis-tls-name "redis-$x")
    start "agenda-supervisor-$x" "$m" "$bin/agenda-supervisor" --id "supervisor-$x" --db "$db" \
      --http "$a:7501" --redis-nodes "$redis_nodes" --local-redis "$a:7401" --redis-dir "$data/redis-$x" \
      "${TLS[@]}"
  done
  say "waiting for a Redis primary..."
  wait_until "a published, answering Redis primary" 60 redis_is_primary

  local prio
  for x in a b; do
    local m="machine-$x" a=${ip_of[machine-$x]} other
    other=$([ $x = a ] && echo "${ip_of[machine-b]}" || echo "${ip_of[machine-a]}")
    prio=$([ $x = a ] && echo 150 || echo 100)
    tls_args "agenda-users-$x"
    start "agenda-users-$x" "$m" "$bin/agenda-users" --listen "$a:7201" --http "$a:7202" --db "$db" "${TLS[@]}"
    tls_args "agenda-groups-$x"
    start "agenda-groups-$x" "$m" "$bin/agenda-groups" --listen "$a:7301" --http "$a:7302" --db "$db" "${TLS[@]}"
    if [ "$vip_daemon" = keepalived ]; then
      start_keepalived "$x" "$a" "$other" "$prio" "$db"
      continue
    fi
    tls_args "agenda-gateway-$x"
    start "agenda-gateway-$x" "$m" "$bin/agenda-gateway" --listen 0.0.0.0:8080 --db "$db" \
      --vip-addr "$vip" --vip-holder-id "$m" "${TLS[@]}"
    tls_args "agenda-vip-$x"
    start "agenda-vip-$x" "$m" "$bin/agenda-vip" --id "$m" --vip "$vip/24" --interface eth0 \
      --bind "$a:5405" --peers "$other:5405" --priority "$prio" --no-preempt \
      --auth-key-file "$state/vip-key" --db "$db" --http "$a:7601" \
      --health-url "$(scheme)://127.0.0.1:8080/healthz" "${TLS[@]}"
  done
  say "waiting for the VIP to answer from the client namespace..."
  wait_until "the VIP" 90 vip_answers
  wait_until "the gateway to be ready" 60 web_curl client -fsS -m 2 "$(scheme)://$vip:8080/readyz"

  if [ "${AGENDA_RELAY:-1}" = 1 ]; then
    start agenda-relay host "$bin/agendactl" relay --listen "$relay_listen" --netns "$(ns client)" --to "$vip:8080"
    wait_until "the host relay" 10 curl --cacert "$certs/ca.pem" -fsS -m 2 "$(scheme)://$relay_listen/healthz"
    echo "$(scheme)://$relay_listen" >"$state/local_url"
  fi
  write_endpoints
  [ "${AGENDA_PROMETHEUS:-0}" = 1 ] && start_prometheus
  echo "$(scheme)://$vip:8080" >"$state/url"
  trap - ERR
}

# Prometheus on the witness machine, scraping every process of both
# machines with the alert rules of deploy/prometheus/; the host reaches it
# through a relay like the VIP's (AGENDA_PROMETHEUS_LISTEN).
start_prometheus() {
  if ! command -v prometheus >/dev/null; then
    say "prometheus is not installed (apt-get install prometheus): running without it"
    return 0
  fi
  local dir="$data/prometheus" a=${ip_of[witness]} rules=() f
  mkdir -p "$dir"
  for f in "$root"/deploy/prometheus/alerts.yml "$root"/deploy/prometheus/recording.yml; do
    [ -f "$f" ] && rules+=(--rules "$f")
  done
  "$bin/agendactl" prometheus-config --endpoints "$state/endpoints.json" "${rules[@]}" --out "$dir/prometheus.yml"
  start prometheus witness prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --storage.tsdb.retention.time=7d --web.listen-address="$a:9090" --log.level=warn
  wait_until "Prometheus" 30 on witness curl -fsS -m 2 "http://$a:9090/-/ready"
  start prometheus-relay host "$bin/agendactl" relay --listen "$prometheus_listen" --netns "$(ns witness)" --to "$a:9090"
  wait_until "the Prometheus relay" 10 curl -fsS -m 2 "http://$prometheus_listen/-/ready"
  write_endpoints
  say "Prometheus scraping every process: http://$prometheus_listen (from this host)"
}

# AGENDA_VIP_DAEMON=keepalived: the gateway of machine X without the VIP
# fence, its health checker and keepalived, set up as agenda-vip is:
# priority, no preemption, 100 ms adverts (VRRPv3, centisecond adverts),
# unicast to the other machine, the same health check (interval 100 ms, 1 s per check,
# fall 3, rise 2, as a track_file: keepalived's vrrp_script runs at most
# once a second), and gratuitous ARPs past Linux's 1 s ARP `locktime` as
# agenda-vip sends them (its are 250 ms apart over 2 s; keepalived's way is
# a burst of 3 at once and a second burst 1 s later, vrrp_garp_master_delay
# being whole seconds; spacing them with vrrp_garp_interval would also hold
# back the first one behind the GARP keepalived sends for the machine's own
# address on entering BACKUP). The state of each
# instance (MASTER, BACKUP, FAULT, STOP) is written by the notify script to
# keepalived/X.state.
start_keepalived() {
  local x=$1 a=$2 other=$3 prio=$4 db=$5 m="machine-$1" kdir="$state/keepalived"
  mkdir -p "$kdir"
  tls_args "agenda-gateway-$x"
  start "agenda-gateway-$x" "$m" "$bin/agenda-gateway" --listen 0.0.0.0:8080 --db "$db" "${TLS[@]}"
  # curl reads the CA to trust from CURL_CA_BUNDLE (part of the command,
  # so `restart` keeps it).
  start "keepalived-health-$x" "$m" env CURL_CA_BUNDLE="$certs/ca.pem" bash "$root/deploy/keepalived-health.sh" \
    "$kdir/$x.health" "$(scheme)://127.0.0.1:8080/healthz" 0.1 3 2 1
  cat >"$kdir/notify-$x.sh" <<SH
#!/bin/sh
# keepalived notify: TYPE NAME STATE PRIORITY
printf '%s\n' "\$3" >"$kdir/$x.state.tmp" && mv "$kdir/$x.state.tmp" "$kdir/$x.state"
echo "\$(date -Is) notify: \$*" >>"$logs/keepalived-$x.log"
SH
  chmod 700 "$kdir/notify-$x.sh"
  rm -f "$kdir/$x.state"
  cat >"$kdir/$x.conf" <<CONF
# keepalived for $m (written by deploy/netns.sh, AGENDA_VIP_DAEMON=keepalived)
global_defs {
  router_id agenda-$m
  vrrp_version 3
  script_user root
  enable_script_security
  vrrp_garp_master_repeat 3
  vrrp_garp_master_delay 1
  vrrp_garp_master_refresh 0
}
track_file gateway_health {
  file "$kdir/$x.health"
  weight 0
  init_file 1
}
vrrp_instance agenda_vip {
  state BACKUP
  interface eth0
  virtual_router_id 77
  priority $prio
  advert_int 0.1
  nopreempt
  unicast_src_ip $a
  unicast_peer {
    $other
  }
  virtual_ipaddress {
    $vip/24 dev eth0
  }
  track_file {
    gateway_health
  }
  notify "$kdir/notify-$x.sh"
}
CONF
  start "keepalived-$x" "$m" keepalived -n -l -D --vrrp -f "$kdir/$x.conf" \
    -p "$kdir/$x.pid" -r "$kdir/$x-vrrp.pid"
}

write_endpoints() {
  local first=1 name m pid
  {
    echo "{"
    echo "  \"vip\": \"$vip\","
    echo "  \"client_netns\": \"$(ns client)\","
    echo "  \"netns_prefix\": \"$prefix\","
    [ "$tls_on" = 1 ] && echo "  \"tls_dir\": \"$certs\","
    echo "  \"url\": \"$(scheme)://$vip:8080\","
    [ -s "$state/local_url" ] && echo "  \"local_url\": \"$(cat "$state/local_url")\","
    [ -s "$run_dir/prometheus.pid" ] && echo "  \"prometheus_url\": \"http://$prometheus_listen\","
    echo "  \"processes\": ["
    while read -r name; do
      m=$(cat "$run_dir/$name.machine")
      pid=$(pid_of "$name")
      local a=${ip_of[$m]:-127.0.0.1} kind extra="" dir=null
      kind=${name%-*}
      case "$name" in
        agenda-db-*) local i=${name##*-}; kind=agenda-db
          extra=", \"grpc\": \"$a:700$i\", \"http\": \"$(scheme)://$a:710$i\""; dir="\"$data/db$i\"" ;;
        agenda-supervisor-*) extra=", \"http\": \"http://$a:7501\", \"redis\": \"$a:7401\""; dir="\"$data/redis-${name##*-}\"" ;;
        agenda-users-*) extra=", \"grpc\": \"$a:7201\", \"http\": \"http://$a:7202\"" ;;
        agenda-groups-*) extra=", \"grpc\": \"$a:7301\", \"http\": \"http://$a:7302\"" ;;
        prometheus) kind=prometheus; extra=", \"http\": \"http://$a:9090\""; dir="\"$data/prometheus\"" ;;
        prometheus-relay) kind=agenda-relay; extra=", \"http\": \"http://$prometheus_listen\"" ;;
        agenda-gateway-*) extra=", \"http\": \"$(scheme)://$a:8080\"" ;;
        agenda-vip-*) extra=", \"http\": \"http://$a:7601\", \"adverts\": \"$a:5405\"" ;;
        agenda-relay) kind=agenda-relay; extra=", \"http\": \"$(cat "$state/local_url" 2>/dev/null)\"" ;;
      esac
      [ $first = 1 ] || echo ","
      first=0
      printf '    {"name": "%s", "kind": "%s", "machine": "%s", "netns": "%s", "pid": %s%s, "data_dir": %s, "log": "%s"}' \
        "$name" "$kind" "$m" "$([ "$m" = host ] && echo "" || ns "$m")" "${pid:-null}" "$extra" "$dir" "$logs/$name.log"
    done <"$run_dir/order"
    echo
    echo "  ]"
    echo "}"
  } >"$state/endpoints.json.tmp"
  mv "$state/endpoints.json.tmp" "$state/endpoints.json"
}

down() {
  local name p
  if [ -f "$run_dir/order" ]; then
    # Reverse start order: the relay, gateways and services first, the
    # supervisors (which stop their Redis), agenda-db last.
    for name in $(tac "$run_dir/order"); do
      p=$(pid_of "$name")
      [ -n "$p" ] && kill -TERM "$p" 2>/dev/null || continue
      for _ in $(seq 1 50); do pid_alive "$p" || break; sleep 0.1; done
      kill -KILL "$p" 2>/dev/null || true
    done
  fi
  # Whatever is left in our namespaces (a Redis whose supervisor was
  # killed, a VIP guard) was started here too.
  local m
  for m in "${machines[@]}"; do
    for p in $(ip netns pids "$(ns "$m")" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  done
  net_down
  rm -f "$state/url" "$state/local_url" "$state/endpoints.json" "$run_dir"/*.pid
}

ps_() {
  local name
  [ -f "$run_dir/order" ] || die "nothing started under $state (set AGENDA_STATE to the state dir of the topology)"
  printf '%-22s %-10s %-8s %s\n' NAME MACHINE PID STATE
  while read -r name; do
    printf '%-22s %-10s %-8s %s\n' "$name" "$(cat "$run_dir/$name.machine")" "$(pid_of "$name")" \
      "$(alive "$name" && echo up || echo down)"
  done <"$run_dir/order"
}

# rolling_restart: every process stopped gracefully (SIGTERM: it drains
# and deregisters) and started again with the same flags, one at a time,
# each back in service before the next goes, as an upgrade would do:
# agenda-db nodes (followers first; the leader hands leadership to a
# follower before it goes), the supervisors (the Redis primary's last),
# the users and groups replicas, then per machine the gateway and its
# agenda-vip (the passive machine first; the VIP holder's agenda-vip goes
# before its gateway, so the VIP moves to a machine already serving).
rolling_restart() {
  need_root
  [ -f "$run_dir/order" ] || die "nothing started under $state"
  local started=$SECONDS name i leader f
  db_field() { # node field
    db_curl "${db_machine[$1]}" -fsS -m 2 "$(scheme)://${ip_of[${db_machine[$1]}]}:710$1/v1/cluster" 2>/dev/null |
      sed -n "s/.*\"$2\":\([0-9]*\).*/\1/p"
  }
  cycle() { # name what-to-wait-for timeout command...
    local name=$1 what=$2 timeout=$3 p
    shift 3
    p=$(pid_of "$name")
    say "rolling restart: $name (pid $p)"
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 300); do pid_alive "$p" || break; sleep 0.1; done
    pid_alive "$p" && { say "$name did not stop within 30 s; killing it"; kill -KILL "$p"; }
    restart "$name"
    wait_until "$what" "$timeout" "$@" || die "rolling restart stopped: $name did not come back"
  }
  db_caught_up() { # node: it follows a leader and has applied what the leader had committed
    local lead c a
    lead=$(db_field "$1" leader_id)
    [ -n "$lead" ] && [ "$lead" != 0 ] || return 1
    c=$(db_field "$lead" commit_index)
    a=$(db_field "$1" applied_index)
    [ -n "$c" ] && [ -n "$a" ] && [ "$a" -ge "$c" ]
  }
  leader=$(db_field 5 leader_id)
  local order=()
  for i in 1 2 3 4 5; do [ "$i" != "$leader" ] && order+=("$i"); done
  order+=("$leader")
  for i in "${order[@]}"; do
    if [ "$i" = "$(db_field 5 leader_id)" ]; then
      f=$([ "$i" = 1 ] && echo 2 || echo 1)
      say "rolling restart: agenda-db-$i leads; handing leadership to $f first"
      on witness "$bin/agendactl" leader transfer "$f" --db "${ip_of[witness]}:7005" \
        $([ "$tls_on" = 1 ] && echo --tls-dir "$certs") >/dev/null
    fi
    cycle "agenda-db-$i" "agenda-db-$i caught up" 60 db_caught_up "$i"
  done
  for f in a b; do
    cycle "agenda-supervisor-$f" "a published, answering Redis primary" 60 redis_is_primary
  done
  # A replica is back once it is in the registry again (its log says
  # "serving" once more), so the gateways can route to it.
  registered_again() { [ "$(grep -c 'agenda_serving::server: serving' "$logs/$1.log")" -gt "$2" ]; }
  for f in a b; do
    for name in "agenda-users-$f" "agenda-groups-$f"; do
      cycle "$name" "$name in the registry" 30 registered_again "$name" \
        "$(grep -c 'agenda_serving::server: serving' "$logs/$name.log")"
    done
  done
  local holder passive
  holder=$(for f in a b; do
    if on "machine-$f" curl -fsS -m 2 "http://${ip_of[machine-$f]}:7601/status" 2>/dev/null | grep -q '"state":"master"'; then
      echo "$f"
    fi
  done | head -1)
  holder=${holder:-a}
  passive=$([ "$holder" = a ] && echo b || echo a)
  for f in "$passive" "$holder"; do
    local a=${ip_of[machine-$f]}
    if alive "agenda-vip-$f"; then
      cycle "agenda-vip-$f" "agenda-vip-$f" 30 on "machine-$f" curl -fsS -m 2 "http://$a:7601/healthz"
    fi
    cycle "agenda-gateway-$f" "agenda-gateway-$f" 30 web_curl "machine-$f" -fsS -m 2 "$(scheme)://127.0.0.1:8080/healthz"
  done
  wait_until "the VIP" 30 vip_answers
  write_endpoints
  say "rolling restart done: every process restarted once in $((SECONDS - started)) s"
}

kill_() {
  local name=$1 sig=${2:-KILL} p
  p=$(pid_of "$name")
  [ -n "$p" ] || die "no process named $name (see \`deploy/netns.sh ps\`)"
  kill -"$sig" "$p" 2>/dev/null || die "$name (pid $p) is not running"
  say "sent SIG$sig to $name (pid $p)"
}

check_machine() {
  case "$1" in machine-a | machine-b | witness | client) ;; *) die "unknown machine $1 (machine-a, machine-b, witness, client)" ;; esac
}

kill_machine() {
  local m=$1 p
  check_machine "$m"
  # The link first: a power cut takes nothing off the wire politely.
  ip -n "$lan" link set "${port_of[$m]}" down
  for p in $(ip netns pids "$(ns "$m")"); do kill -KILL "$p" 2>/dev/null || true; done
  say "machine $m is off (link down, every process killed)"
}

start_machine() {
  local m=$1 name
  check_machine "$m"
  # A reboot: the interface comes back with the machine's own address
  # only (a VIP it held when it lost power is not on it any more).
  ip -n "$(ns "$m")" addr flush dev eth0
  ip -n "$(ns "$m")" addr add "${ip_of[$m]}/24" dev eth0
  ip -n "$lan" link set "${port_of[$m]}" up
  while read -r name; do
    if [ "$(cat "$run_dir/$name.machine")" = "$m" ] && ! alive "$name"; then
      restart "$name"
    fi
  done <"$run_dir/order"
  say "machine $m is on again"
}

# A cut is a blackhole route on each side (packets silently dropped, as
# on a dead link), inside our namespaces only.
partition() {
  local a=$1 b=$2
  check_machine "$a"
  check_machine "$b"
  ip -n "$(ns "$a")" route replace blackhole "${ip_of[$b]}/32"
  ip -n "$(ns "$b")" route replace blackhole "${ip_of[$a]}/32"
  echo "$a $b" >>"$run_dir/cuts"
  say "cut $a <-> $b"
}

heal() {
  local a b
  if [ $# -ge 2 ]; then
    ip -n "$(ns "$1")" route del blackhole "${ip_of[$2]}/32" 2>/dev/null || true
    ip -n "$(ns "$2")" route del blackhole "${ip_of[$1]}/32" 2>/dev/null || true
    say "healed $1 <-> $2"
    return
  fi
  [ -f "$run_dir/cuts" ] || return 0
  while read -r a b; do
    ip -n "$(ns "$a")" route del blackhole "${ip_of[$b]}/32" 2>/dev/null || true
    ip -n "$(ns "$b")" route del blackhole "${ip_of[$a]}/32" 2>/dev/null || true
  done <"$run_dir/cuts"
  rm -f "$run_dir/cuts"
  say "healed every cut"
}

# The foreground runner of `make run`: outlives every death it exists to
# survive; a process that dies is logged and stays down until restarted.
run_fg() {
  # A person's run gets Prometheus; tests (`up`) ask for it when they want it.
  export AGENDA_PROMETHEUS=${AGENDA_PROMETHEUS:-1}
  up
  echo $$ >"$run_dir/runner.pid"
  trap 'echo; say "stopping..."; down; say "stopped."; exit 0' INT TERM
  local web="curl -s"
  [ "$tls_on" = 1 ] && web="curl --cacert $state/ca.pem -s"
  cat <<TXT

Agenda is up on two machines (network namespaces) behind the virtual IP $vip:
  machine-a: agenda-db 1-2, Redis + supervisor, users, groups, gateway (active), agenda-vip
  machine-b: agenda-db 3-4, Redis + supervisor, users, groups, gateway (passive), agenda-vip
  witness:   agenda-db 5
Clients in the client namespace use the VIP URL:   $(cat "$state/url")   (.agenda/url)
  sudo ip netns exec $(ns client) $web $(cat "$state/url")/readyz
A browser or curl on this host uses the relay:       $(cat "$state/local_url" 2>/dev/null)   (.agenda/local_url)
  $web $(cat "$state/local_url" 2>/dev/null)/v1/auth/register -H 'content-type: application/json' \\
    -d '{"username":"alice","email":"alice@example.org","password":"correct-horse-1"}'
The whole system at a glance:  target/release/agendactl status
Prometheus (alerts at /alerts):  $(grep -o '"prometheus_url": "[^"]*"' "$state/endpoints.json" | cut -d'"' -f4)   SLOs: target/release/agendactl slo --since 1h
Break things:  deploy/netns.sh kill agenda-gateway-a | kill-machine machine-a | partition machine-a machine-b
               deploy/netns.sh restart NAME | start-machine M | heal      (deploy/netns.sh ps lists names)
Logs: $logs/   Processes: $state/endpoints.json
Ctrl-C (or \`make stop\` from another shell) stops everything and removes the namespaces.
TXT
  declare -A reported=()
  local name
  while true; do
    while read -r name; do
      if alive "$name"; then
        reported[$name]=""
      elif [ -z "${reported[$name]:-}" ]; then
        reported[$name]=1
        say "$name (pid $(pid_of "$name")) is down; it stays down until \`deploy/netns.sh restart $name\`"
      fi
    done <"$run_dir/order"
    sleep 1 &
    wait $! || true
  done
}

stop_() {
  local p
  p=$(cat "$run_dir/runner.pid" 2>/dev/null || true)
  if [ -n "$p" ] && pid_alive "$p"; then
    kill -TERM "$p"
    for _ in $(seq 1 300); do pid_alive "$p" || return 0; sleep 0.1; done
  fi
  down
}

# Commands other than run/up find the topology's settings in netns.env.
if [ "${1:-}" != run ] && [ "${1:-}" != up ] && [ -f "$state/netns.env" ] && [ -z "${AGENDA_NETNS_PREFIX+x}" ]; then
  # shellcheck disable=SC1091
  . "$state/netns.env"
  prefix=$AGENDA_NETNS_PREFIX
  tls_on=${AGENDA_TLS:-1}
  lan="${prefix}agenda-lan"
fi

# Every process gets the Redis password from the state dir, also one that
# `restart` or `start-machine` starts from another shell (without it a
# restarted service cannot talk to Redis at all).
if [ -s "$state/redis-password" ]; then
  export AGENDA_REDIS_PASSWORD
  AGENDA_REDIS_PASSWORD=$(cat "$state/redis-password")
fi

cmd=${1:-}
shift || true
case "$cmd" in
  run) run_fg ;;
  up) up ;;
  down) need_root; down ;;
  stop) need_root; stop_ ;;
  ps) ps_ ;;
  kill) [ $# -ge 1 ] || die "usage: kill NAME [SIGNAL]"; kill_ "$@" ;;
  restart) [ $# -eq 1 ] || die "usage: restart NAME"; restart "$1" ;;
  kill-machine) [ $# -eq 1 ] || die "usage: kill-machine MACHINE"; kill_machine "$1" ;;
  start-machine) [ $# -eq 1 ] || die "usage: start-machine MACHINE"; start_machine "$1" ;;
  partition) [ $# -eq 2 ] || die "usage: partition M1 M2"; partition "$1" "$2" ;;
  heal) heal "$@" ;;
  exec) [ $# -ge 2 ] || die "usage: exec MACHINE CMD..."; check_machine "$1"; m=$1; shift; on "$m" "$@" ;;
  endpoints) write_endpoints ;;
  rolling-restart) rolling_restart ;;
  *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; [ -z "$cmd" ] || [ "$cmd" = help ] || [ "$cmd" = --help ] || exit 2 ;;
esac
