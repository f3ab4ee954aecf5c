#!/usr/bin/env bash
# `make docker-test`: the compose deployment in real dockerds, one per
# machine, each inside a network namespace of its own (outside CI; root).
#
#   1. namespaces $P-a, $P-b, $P-w (machine A, machine B, the witness host)
#      and $P-c (a client), each with eth0 on one bridge that lives in its
#      own namespace $P-br; subnet 10.77.0.0/24: A .11, B .12, witness .13,
#      client .100, VIP .10 ($P: AGDK_PREFIX, default agdk, so nothing clashes
#      with `make run`'s machine-a etc.). Nothing is added to the host's own
#      network namespace.
#   2. one containerd and one dockerd per machine namespace, started with
#      `nsenter --net=` (`ip netns exec` would remount /sys and break the
#      daemon's cgroups), every path under a temp dir, no bridge, no iptables.
#   3. a base image made locally (no image registry is reachable):
#      debootstrap --variant=minbase bookworm with redis-server, iproute2,
#      iputils-arping, curl, ca-certificates, then `docker import`. The
#      tarball is cached in ${XDG_CACHE_HOME:-~/.cache}/agenda.
#   4. the image from deploy/docker/Dockerfile with BINARIES=prebuilt: the
#      release binaries built on the host by the host toolchain
#      (target/release, or AGENDA_BIN_DIR), since a dockerd here reaches no
#      crate registry and Debian's rustc is too old for the workspace.
#   5. certificates from the release `agendactl certs` (a CA and a leaf per
#      process of the 10.77.0.x topology) in the run's temp dir; each machine
#      gets a directory of its own with ca.pem and its processes' leaves only
#      (AGENDA_CERTS_DIR, mounted into every container); the client trusts
#      ca.pem. Every link is TLS: mutual TLS inside, HTTPS at the gateways.
#      Then compose-witness.yml and compose-a.yml up (A, with the witness a
#      db majority, takes the VIP: the active machine), then compose-b.yml;
#      every container healthy (the compose health checks); plain HTTP to
#      the VIP refused, agenda-db's REST /v1 only for the operator's leaf.
#   6. the agenda story over HTTPS through the VIP from the client namespace
#      (register, log in, create an event, read it back), then `docker
#      kill` of every container on machine A (the active one), then the
#      story again (a new person, and the first event read back) through the
#      same VIP; also the failover time, who holds the VIP over time, and
#      whether clients with a fresh ARP cache reach machine B.
# Prints PASS or FAIL (exit 0 / 1) and removes everything it made (trap on
# exit): compose projects, daemons (by pid), namespaces, mounts, temp dirs.
# The logs of the last run are kept in .agenda/docker-test/.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin_dir=${AGENDA_BIN_DIR:-$root/target/release}
P=${AGDK_PREFIX:-agdk}
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agenda"
logs_keep="$root/.agenda/docker-test"
binaries=(agenda-db agenda-users agenda-groups agenda-gateway agenda-supervisor agenda-vip agendactl)
base_packages=redis-server,iproute2,iputils-arping,curl,ca-certificates
image=agenda:docker-test
net=10.77.0
declare -A addr=([a]=$net.11 [b]=$net.12 [w]=$net.13 [c]=$net.100)
vip=$net.10
machines=(a b w)
declare -A project=([a]=compose-a.yml [b]=compose-b.yml [w]=compose-witness.yml)

# fds 3 and 4: the script's own stdout and stderr, for the exit trap (a
# signal can arrive while a command's output is redirected to a file).
exec 3>&1 4>&2
log() { printf '[docker-test %s] %s\n' "$(date +%T)" "$*"; }
die() { log "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || { echo "make docker-test needs root (namespaces, dockerd)"; exit 1; }

# ---- tools ----
need=()
command -v dockerd >/dev/null || need+=(docker.io)
[ -x /usr/bin/docker ] || need+=(docker.io)
command -v containerd >/dev/null || need+=(containerd)
command -v docker-compose >/dev/null || need+=(docker-compose)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v ip >/dev/null || need+=(iproute2)
command -v nsenter >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  # Debian's docker.io must not start a daemon in the host namespace: its
  # service is never started here (policy-rc.d refuses, when there is one).
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null
fi
# Debian's client matches Debian's dockerd and builds with BuildKit
# (DOCKER_BUILDKIT=1) without the buildx plugin.
docker=/usr/bin/docker

missing=()
for b in "${binaries[@]}"; do [ -x "$bin_dir/$b" ] || missing+=("$b"); done
[ ${#missing[@]} = 0 ] || die "missing release binaries in $bin_dir: ${missing[*]} (make release)"

mkdir -p "$cache"
exec 9>"$cache/docker-test.lock"
flock -n 9 || die "another docker-test runs (lock $cache/docker-test.lock)"

# ---- clean-up (also of a run that was killed before its own clean-up) ----
# Everything a run makes is named from its work dir: the daemons' pid files,
# the cgroup parent, mounts under it; the namespaces carry the prefix.
cleanup_work() {
  local work=$1 m pidf pid i cg d
  [ -d "$work" ] || return 0
  for m in "${machines[@]}"; do
    pid=$(cat "$work/$m/dockerd.pid" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ -f "$work/$m/compose.env" ]; then
      # shellcheck disable=SC2046
      env $(cat "$work/$m/compose.env") DOCKER_HOST="unix://$work/$m/docker.sock" \
        timeout 90 docker-compose -p "$P-$m" -f "$root/deploy/docker/${project[$m]}" \
        down -v -t 5 >/dev/null 2>&1 || true
    fi
  done
  # dockerd first (it stops its containers), then containerd.
  for d in dockerd containerd; do
    for m in "${machines[@]}"; do
      pidf="$work/$m/$d.pid"
      [ -f "$pidf" ] || continue
      pid=$(cat "$pidf")
      if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
  done
  # What is left in our cgroups (containers whose shim outlived containerd).
  cg=$(basename "$work")
  for d in /sys/fs/cgroup/*/"$cg"* /sys/fs/cgroup/"$cg"*; do
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | while read -r pid; do
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
  # Container shims of this run's containerds (they outlive containerd).
  local cmd
  for i in /proc/[0-9]*; do
    cmd=$( { tr '\0' ' ' <"$i/cmdline"; } 2>/dev/null || true)
    [[ $cmd == *containerd-shim*" -address $work/"* ]] && kill -KILL "${i#/proc/}" 2>/dev/null
  done
  sleep 0.5
  for d in /sys/fs/cgroup/*/"$cg"* /sys/fs/cgroup/"$cg"*; do
    [ -d "$d" ] || continue
    find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
  # Mounts under the work dir (overlays, shm), deepest first.
  awk -v w="$work/" 'index($5, w) == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r d; do
    umount -l "$d" 2>/dev/null || true
  done
  rm -rf "$work"
}

cleanup_netns() {
  local n
  for n in br a b w c; do
    ip netns del "$P-$n" 2>/dev/null || true
  done
}

# The state file names the running run's work dir (line 1) and the host
# paths it must remove (the rest), so a run killed before its clean-up is
# cleaned up by the next one.
state="$cache/docker-test.state"
if [ -f "$state" ]; then
  old=$(head -1 "$state")
  log "cleaning up after an earlier run that did not finish ($old)"
  [ -n "$old" ] && cleanup_work "$old"
  tail -n +2 "$state" | while read -r d; do if [ -n "$d" ]; then rm -rf "$d"; fi; done
  rm -f "$state"
fi
for n in br a b w c; do
  if [ -e "/var/run/netns/$P-$n" ]; then
    log "removing namespace $P-$n left by an earlier run"
    ip netns del "$P-$n"
  fi
done

# Host paths dockerd/containerd create outside their roots; removed at the
# end when they did not exist before.
host_leftovers=()
for d in /etc/docker/key.json /etc/docker /run/containerd /run/docker /var/lib/docker /var/lib/containerd; do
  [ -e "$d" ] || host_leftovers+=("$d")
done

work=$(mktemp -d /tmp/agdk.XXXXXX)
{ echo "$work"; printf '%s\n' "${host_leftovers[@]}"; } >"$state"
result=FAIL
finish() {
  local rc=$?
  # The clean-up runs to its end: a second Ctrl-C or TERM waits for it.
  trap - EXIT
  trap '' INT TERM
  exec 1>&3 2>&4
  set +e
  [ -f "$work/sampler.pid" ] && kill "$(cat "$work/sampler.pid")" 2>/dev/null
  if [ -d "$work" ]; then
    rm -rf "$logs_keep"
    mkdir -p "$logs_keep"
    for m in "${machines[@]}"; do
      for f in "$work/$m/"*.log; do [ -f "$f" ] && cp "$f" "$logs_keep/$m-$(basename "$f")"; done
      if [ -S "$work/$m/docker.sock" ] && [ -f "$work/$m/compose.env" ]; then
        # shellcheck disable=SC2046
        env $(cat "$work/$m/compose.env") DOCKER_HOST="unix://$work/$m/docker.sock" \
          timeout 60 docker-compose -p "$P-$m" -f "$root/deploy/docker/${project[$m]}" \
          logs --no-color -t >"$logs_keep/compose-$m.log" 2>&1
      fi
    done
    cp "$work/story.log" "$work/vip-holders.log" "$logs_keep/" 2>/dev/null
    log "logs kept in $logs_keep"
  fi
  log "cleaning up"
  cleanup_work "$work"
  cleanup_netns
  for d in "${host_leftovers[@]}"; do rm -rf "$d"; done
  rm -f "$state"
  echo "$result"
  [ "$result" = PASS ] && exit 0
  exit $((rc == 0 ? 1 : rc))
}
trap finish EXIT
trap 'exit 130' INT TERM

# ---- 1. namespaces ----
log "namespaces $P-{a,b,w,c} on a bridge in $P-br ($net.0/24, VIP $vip)"
ip netns add "$P-br"
ip -n "$P-br" link set lo up
ip -n "$P-br" link add br0 type bridge
ip -n "$P-br" link set br0 up
for m in a b w c; do
  ns="$P-$m"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  # Created inside the bridge namespace with its peer straight in the
  # machine's: no interface ever appears in the host's namespace.
  ip -n "$P-br" link add "p-$m" type veth peer name eth0 netns "$ns"
  ip -n "$P-br" link set "p-$m" master br0 up
  ip -n "$ns" addr add "${addr[$m]}/24" dev eth0
  ip -n "$ns" link set eth0 up
done
in_ns() { local m=$1; shift; ip netns exec "$P-$m" "$@"; }

# ---- 2. one containerd + dockerd per machine ----
cg=$(basename "$work")
for m in "${machines[@]}"; do
  d="$work/$m"
  mkdir -p "$d"
  cat >"$d/containerd.toml" <<EOF
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[debug]
  address = ""
EOF
  echo '{}' >"$d/daemon.json"
  # 9>&- 3>&- 4>&-: the daemons must not inherit the lock or our output.
  nsenter --net="/var/run/netns/$P-$m" -- containerd --config "$d/containerd.toml" \
    >"$d/containerd.log" 2>&1 9>&- 3>&- 4>&- &
  echo $! >"$d/containerd.pid"
done
for m in "${machines[@]}"; do
  d="$work/$m"
  for _ in $(seq 1 100); do [ -S "$d/containerd.sock" ] && break; sleep 0.1; done
  [ -S "$d/containerd.sock" ] || die "containerd on machine $m did not start: $(tail -5 "$d/containerd.log")"
  nsenter --net="/var/run/netns/$P-$m" -- dockerd \
    --config-file "$d/daemon.json" \
    --data-root "$d/data" --exec-root "$d/exec" \
    --host "unix://$d/docker.sock" --pidfile "$d/dockerd.pid.own" \
    --containerd "$d/containerd.sock" \
    --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --userland-proxy=false --cgroup-parent "/$cg-$m" \
    >"$d/dockerd.log" 2>&1 9>&- 3>&- 4>&- &
  echo $! >"$d/dockerd.pid"
done
dk() { local m=$1; shift; DOCKER_HOST="unix://$work/$m/docker.sock" "$docker" "$@"; }
for m in "${machines[@]}"; do
  for _ in $(seq 1 300); do dk "$m" version >/dev/null 2>&1 && break; sleep 0.1; done
  dk "$m" version >/dev/null 2>&1 || die "dockerd on machine $m did not start: $(tail -5 "$work/$m/dockerd.log")"
done
log "dockerd up in $P-a, $P-b, $P-w"

# ---- 3. base image ----
key=$(printf '%s' "bookworm minbase $base_packages" | sha256sum | cut -c1-12)
tarball="$cache/agenda-base-bookworm-$key.tar.gz"
if [ ! -s "$tarball" ]; then
  # The Debian mirror this machine's apt uses (DEBIAN_MIRROR overrides).
  mirror=${DEBIAN_MIRROR:-$( (cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null || true) |
    grep -oE 'https?://[^ ]+/debian/?([ ]|$)' | head -1 | tr -d ' ' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  log "debootstrap bookworm (minbase + $base_packages) from $mirror"
  rootfs="$work/rootfs"
  debootstrap --variant=minbase --include="$base_packages" bookworm "$rootfs" "$mirror" \
    >"$work/debootstrap.log" 2>&1 || die "debootstrap failed: $(tail -5 "$work/debootstrap.log")"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log
  tar -C "$rootfs" --numeric-owner -czf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"
fi
for m in "${machines[@]}"; do
  dk "$m" import "$tarball" agenda-base:bookworm >/dev/null
done
log "base image agenda-base:bookworm imported ($tarball)"

# ---- 4. the image, from the Dockerfile, with prebuilt binaries ----
ctx="$work/ctx"
mkdir -p "$ctx/prebuilt"
for b in "${binaries[@]}"; do cp "$bin_dir/$b" "$ctx/prebuilt/"; done
DOCKER_BUILDKIT=1 dk a build -q -f "$root/deploy/docker/Dockerfile" \
  --build-arg BINARIES=prebuilt --build-arg BASE_IMAGE=agenda-base:bookworm \
  --network=none --target runtime -t "$image" "$ctx" >"$work/build.log" 2>&1 ||
  die "image build failed: $(tail -20 "$work/build.log")"
rm -rf "$ctx"
for m in b w; do dk a save "$image" | dk "$m" load >/dev/null; done
log "image $image built on machine A, loaded on B and the witness"

# ---- 5. certificates, compose up ----
certs="$work/certs"
"$bin_dir/agendactl" certs --dir "$certs" --subnet "$net" >"$work/certs.log" 2>&1 ||
  die "agendactl certs failed: $(tail -5 "$work/certs.log")"
ca="$certs/ca.pem"
# What each machine runs (the names compose-*.yml give --tls-name).
declare -A leaves=(
  [a]="agenda-db-1 agenda-db-2 agenda-supervisor-a redis-a agenda-users-a agenda-groups-a agenda-gateway-a agenda-vip-a"
  [b]="agenda-db-3 agenda-db-4 agenda-supervisor-b redis-b agenda-users-b agenda-groups-b agenda-gateway-b agenda-vip-b"
  [w]="agenda-db-5"
)
for m in "${machines[@]}"; do
  d="$work/$m/certs"
  mkdir -p "$d"
  cp "$ca" "$d/"
  for n in ${leaves[$m]}; do cp "$certs/$n.pem" "$certs/$n-key.pem" "$d/"; done
  # The processes run as the image's user agenda (uid 10001); keys stay 0600.
  chown -R 10001:10001 "$d"
  chmod 0755 "$d"
done
log "certificates from agendactl certs in $certs; machine directories with ca.pem and their own leaves"

redis_pw=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
vip_key=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
compose() {
  local m=$1; shift
  # shellcheck disable=SC2046
  env $(cat "$work/$m/compose.env") DOCKER_HOST="unix://$work/$m/docker.sock" \
    docker-compose -p "$P-$m" -f "$root/deploy/docker/${project[$m]}" "$@"
}
for m in "${machines[@]}"; do
  cat >"$work/$m/compose.env" <<EOF
AGENDA_IMAGE=$image
AGENDA_A_ADDR=${addr[a]}
AGENDA_B_ADDR=${addr[b]}
AGENDA_WITNESS_ADDR=${addr[w]}
AGENDA_VIP_ADDR=$vip
AGENDA_VIP_PREFIX=24
AGENDA_VIP_INTERFACE=eth0
AGENDA_REDIS_PASSWORD=$redis_pw
AGENDA_VIP_AUTH_KEY=$vip_key
AGENDA_CERTS_DIR=$work/$m/certs
EOF
done
compose_up() {
  compose "$1" up -d >"$work/$1/compose-up.log" 2>&1 || die "compose up on machine $1: $(tail -10 "$work/$1/compose-up.log")"
}

base="https://$vip:8080"
story_log="$work/story.log"
# req METHOD PATH [BODY] [TOKEN]: prints "STATUS BODY"; curl runs in the client namespace.
req() {
  local method=$1 path=$2 body=${3:-} token=${4:-} args=()
  args=(-sS -m 5 --cacert "$ca" -o "$work/resp" -w '%{http_code}' -X "$method" -H 'content-type: application/json')
  [ -n "$token" ] && args+=(-H "authorization: Bearer $token")
  [ -n "$body" ] && args+=(--data "$body")
  local code
  code=$(in_ns c curl "${args[@]}" "$base$path" 2>>"$story_log") || code=000
  printf '%s %s\n' "$code" "$(cat "$work/resp" 2>/dev/null)"
  printf '%s %s %s -> %s %s\n' "$(date +%T.%N | cut -c1-12)" "$method" "$path" "$code" "$(head -c 300 "$work/resp" 2>/dev/null)" >>"$story_log"
  rm -f "$work/resp"
}
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" | head -1; }
first_id() { grep -o '"id":"[^"]*"' | head -1 | cut -d'"' -f4; }

# wait_ok SECONDS URL: until URL answers 200 from the client namespace
# (HTTPS, trusting the CA; the gateways ask for no client certificate).
wait_ok() {
  local limit=$1 url=$2 start=$SECONDS code
  while [ $((SECONDS - start)) -lt "$limit" ]; do
    code=$(in_ns c curl -s -m 2 --cacert "$ca" -o /dev/null -w '%{http_code}' "$url" 2>/dev/null) || code=000
    [ "$code" = 200 ] && return 0
    sleep 0.5
  done
  return 1
}
# Which machines have the VIP on their interface.
vip_holders() {
  local m h="" out
  for m in a b; do
    # (No `| grep -q`: under pipefail its early exit can fail the pipeline.)
    out=$(ip -n "$P-$m" -o -4 addr show dev eth0 2>/dev/null || true)
    [[ $out == *" $vip/"* ]] && h="$h $m"
  done
  echo "${h# }"
}
# wait_healthy SECONDS MACHINE...: until every container there is healthy
# (the compose files' health checks).
wait_healthy() {
  local limit=$1 start=$SECONDS m bad
  shift
  while :; do
    bad=""
    for m in "$@"; do
      bad="$bad$(dk "$m" ps -a --format '{{.Names}} {{.Status}}' | grep -v '(healthy)' | sed 's/$/; /' || true)"
    done
    [ -z "$bad" ] && return 0
    [ $((SECONDS - start)) -lt "$limit" ] || { log "not healthy: $bad"; return 1; }
    sleep 1
  done
}

# The witness and machine A first, so that A (with the witness, a db
# majority) takes the VIP and is the active machine; then machine B.
limit=${AGDK_READY_TIMEOUT:-240}
compose_up w
compose_up a
log "compose up: $P-w (db 5), $P-a (db 1-2, redis + supervisor, users, groups, gateway, agenda-vip)"
wait_ok "$limit" "$base/readyz" || die "no ready gateway on the VIP after $limit s (VIP on: '$(vip_holders)')"
log "the VIP answers; held by machine '$(vip_holders)'"
compose_up b
log "compose up: $P-b (db 3-4, redis + supervisor, users, groups, gateway, agenda-vip)"
wait_healthy "$limit" w a b || die "containers not healthy after $limit s"
wait_ok 60 "https://${addr[b]}:8080/readyz" || die "machine B's gateway is not ready"
log "every container on the three machines is healthy"
# TLS is really on: plain HTTP to the VIP is refused (400), and agenda-db's
# REST API serves /v1/... to the operator's certificate only.
code=$(in_ns c curl -s -m 5 -o /dev/null -w '%{http_code}' "http://$vip:8080/healthz" 2>/dev/null) || code=000
[ "$code" = 400 ] || die "plain HTTP to the VIP answered $code, not 400"
db_rest="https://${addr[w]}:7105/v1/cluster"
code=$(in_ns c curl -s -m 5 --cacert "$ca" --cert "$certs/agendactl.pem" --key "$certs/agendactl-key.pem" \
  -o "$work/db-status" -w '%{http_code}' "$db_rest" 2>/dev/null) || code=000
[ "$code" = 200 ] || die "agenda-db REST $db_rest with the operator certificate: $code $(head -c 300 "$work/db-status" 2>/dev/null)"
code=$(in_ns c curl -s -m 5 --cacert "$ca" --cert "$certs/agenda-gateway-b.pem" --key "$certs/agenda-gateway-b-key.pem" \
  -o /dev/null -w '%{http_code}' "$db_rest" 2>/dev/null) || code=000
[ "$code" = 403 ] || die "agenda-db REST $db_rest with a gateway certificate answered $code, not 403"
log "TLS: plain HTTP to the VIP gets 400; agenda-db REST /v1 answers the operator certificate (200), not a gateway's (403)"

# A sampler of who has the VIP on its interface, every 50 ms.
(
  last=""
  while :; do
    h=$(vip_holders)
    [ "$h" = "$last" ] || { echo "$(date +%s%3N) ${h:-none}"; last=$h; }
    sleep 0.05
  done
) >"$work/vip-holders.log" 2>/dev/null 9>&- 3>&- 4>&- &
echo $! >"$work/sampler.pid"

# ---- 6. the story through the VIP ----
[ "$(vip_holders)" = a ] || die "the VIP is on '$(vip_holders)', not on machine A, before the story"
run=$(date +%s)
password=correct-horse-1
register_login() {
  local user=$1 r
  r=$(req POST /v1/auth/register "{\"username\":\"$user\",\"email\":\"$user@example.org\",\"password\":\"$password\",\"time_zone\":\"Europe/Madrid\"}")
  [ "${r%% *}" = 201 ] || { log "register $user: $r"; return 1; }
  r=$(req POST /v1/auth/login "{\"username\":\"$user\",\"password\":\"$password\"}")
  [ "${r%% *}" = 200 ] || { log "login $user: $r"; return 1; }
  token=$(printf '%s' "${r#* }" | json_field access_token)
  [ -n "$token" ] || { log "login $user: no token in $r"; return 1; }
}

alice="alice_$run"
register_login "$alice" || die "story 1: register/login"
alice_token=$token
title="docker-test standup $run"
r=$(req POST /v1/events "{\"title\":\"$title\",\"start\":\"2026-10-12T09:00:00+02:00\",\"end\":\"2026-10-12T09:15:00+02:00\",\"time_zone\":\"Europe/Madrid\"}" "$alice_token")
[ "${r%% *}" = 201 ] || die "story 1: create event: $r"
event_id=$(printf '%s' "${r#* }" | first_id)
r=$(req GET "/v1/events/$event_id" "" "$alice_token")
{ [ "${r%% *}" = 200 ] && grep -qF "$title" <<<"$r"; } || die "story 1: read event $event_id: $r"
log "story 1 ok through machine '$(vip_holders)': $alice registered, logged in, created and read event $event_id"

# ---- 7. machine A dies: every container on it killed ----
[ "$(vip_holders)" = a ] || die "the VIP is on '$(vip_holders)', not on machine A, before the kill"
ids=$(dk a ps -q)
# No restarts: a dead machine stays dead (`docker kill` alone already keeps
# unless-stopped containers down; the policy is cleared to say so).
# shellcheck disable=SC2086
dk a update --restart=no $ids >/dev/null
t0=$(date +%s%N)
# shellcheck disable=SC2086
dk a kill $ids >/dev/null
log "killed every container on machine A ($(echo "$ids" | wc -w) containers)"

# The story again: the first request that succeeds marks the failover.
bob="bob_$run"
deadline=$((SECONDS + 90))
until r=$(req POST /v1/auth/register "{\"username\":\"$bob\",\"email\":\"$bob@example.org\",\"password\":\"$password\"}") && [ "${r%% *}" = 201 ]; do
  [ $SECONDS -lt $deadline ] || die "story 2: no successful register through the VIP within 90 s of the kill (VIP on: '$(vip_holders)'); last: $r"
  sleep 0.1
done
t1=$(date +%s%N)
failover_ms=$(((t1 - t0) / 1000000))
log "first successful request through the VIP ${failover_ms} ms after the kill (VIP on: '$(vip_holders)')"
r=$(req POST /v1/auth/login "{\"username\":\"$bob\",\"password\":\"$password\"}")
[ "${r%% *}" = 200 ] || die "story 2: login $bob: $r"
r=$(req POST /v1/auth/login "{\"username\":\"$alice\",\"password\":\"$password\"}")
[ "${r%% *}" = 200 ] || die "story 2: login $alice: $r"
alice_token=$(printf '%s' "${r#* }" | json_field access_token)
r=$(req GET "/v1/events/$event_id" "" "$alice_token")
{ [ "${r%% *}" = 200 ] && grep -qF "$title" <<<"$r"; } || die "story 2: read the first event: $r"
holders=$(vip_holders)
log "story 2 ok: $bob registered and logged in, $alice read event $event_id back (VIP on: '$holders')"
case "$holders" in
  *b*) ;;
  *) die "the VIP is not on machine B after the kill (on: '$holders')" ;;
esac
# A client that has to ARP for the VIP afresh (a new client, or an expired
# neighbour entry) must also reach machine B.
mac_a=$(in_ns a cat /sys/class/net/eth0/address)
mac_b=$(in_ns b cat /sys/class/net/eth0/address)
fresh_ok=0
resolved=""
for _ in $(seq 1 10); do
  ip -n "$P-c" neigh flush dev eth0 >/dev/null 2>&1 || true
  code=$(in_ns c curl -s -m 2 --cacert "$ca" -o /dev/null -w '%{http_code}' "$base/readyz" 2>/dev/null) || code=000
  [ "$code" = 200 ] && fresh_ok=$((fresh_ok + 1))
  mac=$(ip -n "$P-c" neigh show "$vip" 2>/dev/null | sed -n 's/.* lladdr \([0-9a-f:]*\).*/\1/p')
  case "$mac" in "$mac_a") resolved="${resolved}A" ;; "$mac_b") resolved="${resolved}B" ;; *) resolved="${resolved}?" ;; esac
  sleep 0.2
done
log "clients with a fresh ARP cache: $fresh_ok/10 reached a ready gateway through the VIP (the VIP resolved to machine: $resolved)"
if command -v arping >/dev/null; then
  # Who answers an ARP request for the VIP now (a machine whose interface
  # still carries the address answers too, unless something stops it).
  answers=$(in_ns c timeout 5 arping -c 3 -w 3 -I eth0 "$vip" 2>/dev/null | grep -oiE '\[[0-9a-f:]{17}\]' | tr -d '[]' | tr 'A-F' 'a-f' | sort -u || true)
  who=""
  for mac in $answers; do
    case "$mac" in "$mac_a") who="$who A" ;; "$mac_b") who="$who B" ;; *) who="$who $mac" ;; esac
  done
  log "ARP requests for the VIP are answered by machine(s):${who:- none}"
fi
kill "$(cat "$work/sampler.pid")" 2>/dev/null || true
log "VIP holders over time (ms since the kill):"
while read -r ts h; do
  printf '    %+7d ms  %s\n' "$((ts - t0 / 1000000))" "$h"
done <"$work/vip-holders.log"
[ "$holders" = b ] || log "note: the VIP address stayed on machine A's interface (its agenda-vip and guard died with the container; nothing there answers on it)"
# DESIGN.md's target for a whole machine is 3 s; three times that here
# (shared CPU, three dockerds).
limit_ms=${AGDK_FAILOVER_LIMIT_MS:-9000}
[ "$failover_ms" -le "$limit_ms" ] || die "failover took $failover_ms ms, over $limit_ms ms"
[ "$fresh_ok" = 10 ] || die "$((10 - fresh_ok)) of 10 fresh clients did not reach a gateway (machine A's interface still answers ARP for the VIP)"
result=PASS
log "machine A killed: failover to machine B in ${failover_ms} ms, nothing lost"
