# Sourced by setup.sh and run.sh: where the system is and how to reach it.
#
# Callers set URL, CA and NETNS from their flags (empty when not given) and
# call resolve_target, which fills in what `make run` wrote under .agenda/:
#   - the namespace topology (.agenda/endpoints.json names "client_netns"):
#     .agenda/url is the VIP, reachable only inside that namespace, so as
#     root NETNS defaults to it; otherwise (not root) the host relay,
#     .agenda/local_url, is used instead (every connection then goes
#     through one relay process: fine to try things, not to measure);
#   - loopback mode (make run-local): .agenda/url;
#   - CA: .agenda/ca.pem when the URL is https.
# in_ns CMD... runs CMD inside NETNS when one is set.

loadtest_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$loadtest_dir/../.." && pwd)
state_dir=${AGENDA_STATE:-$repo_root/.agenda}

die() {
  echo "$(basename "$0"): $*" >&2
  exit 1
}

note() {
  echo "$(basename "$0"): $*" >&2
}

# The value of a top-level "key": "value" line of .agenda/endpoints.json.
endpoints_field() {
  local file="$state_dir/endpoints.json"
  [ -f "$file" ] || return 0
  sed -n "s/^ *\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" "$file" | head -n 1
}

resolve_target() {
  local client_ns
  client_ns=$(endpoints_field client_netns)
  if [ -z "$URL" ]; then
    if [ -n "$client_ns" ] && [ -z "$NETNS" ]; then
      if [ "$(id -u)" = 0 ] && command -v ip >/dev/null; then
        NETNS=$client_ns
        note "namespace topology: running inside the client namespace $NETNS (--netns)"
      elif [ -s "$state_dir/local_url" ]; then
        URL=$(cat "$state_dir/local_url")
        note "namespace topology, not root: using the host relay $URL (.agenda/local_url)"
      fi
    fi
    if [ -z "$URL" ]; then
      [ -s "$state_dir/url" ] || die "no --url and no $state_dir/url: start the system first (make run), or pass --url"
      URL=$(cat "$state_dir/url")
    fi
  fi
  URL=${URL%/}
  case "$URL" in
    https://*)
      if [ -z "$CA" ]; then
        [ -e "$state_dir/ca.pem" ] || die "$URL is https and there is no --ca nor $state_dir/ca.pem"
        CA=$state_dir/ca.pem
      fi
      [ -r "$CA" ] || die "cannot read the CA file $CA"
      CA=$(cd "$(dirname "$CA")" && pwd)/$(basename "$CA")
      ;;
    http://*) CA="" ;;
    *) die "the URL must start with http:// or https://: $URL" ;;
  esac
  if [ -n "$NETNS" ]; then
    command -v ip >/dev/null || die "--netns needs the ip command (iproute2)"
    ip netns exec "$NETNS" true 2>/dev/null || die "cannot enter the network namespace $NETNS (root needed; does it exist? ip netns list)"
  fi
}

in_ns() {
  if [ -n "$NETNS" ]; then
    ip netns exec "$NETNS" "$@"
  else
    "$@"
  fi
}
