#!/usr/bin/env bash
# deploy/loadtest/setup.sh: makes the accounts the Artillery load test
# (agenda.yml) logs in with, through the public API, and writes
# deploy/loadtest/people.csv (git-ignored): username,password,attendee,invite.
#
# Usage: deploy/loadtest/setup.sh [--people N] [--url URL] [--ca PEM]
#            [--netns NS] [--rate R] [--jobs J] [--prefix P] [--out FILE]
#
#   --people N   accounts to make (default 500; at least 2)
#   --url URL    the gateway (default .agenda/url, written by make run; in
#                the namespace topology see --netns)
#   --ca PEM     the CA of an https URL (default .agenda/ca.pem)
#   --netns NS   send every request from inside network namespace NS (root);
#                the default in the namespace topology is the client
#                namespace of .agenda/endpoints.json, where the VIP answers
#   --rate R     requests per second at most (default 20)
#   --jobs J     requests in flight at most (default 8)
#   --prefix P   username prefix (default lt + 6 random hex digits + '-', so
#                every run makes new people and never meets a taken name)
#   --out FILE   the CSV (default deploy/loadtest/people.csv)
#
# For each person i (0..N-1), named PREFIX + i: registers them (add_me
# "anyone", so an event they are added to is in their agenda at once),
# logs in, and creates one event with person i+1 (mod N) as its attendee,
# a 30-minute slot at random in the load's four-week window (agenda.js;
# AGENDA_WINDOW_START moves it, as there). Person i's CSV line then names
# as "invite" the event person i-1 made for them: the invitation a visit
# answers when no other visit left one (any RSVP is valid there, again and
# again), and person i+1 as "attendee". One password for all, random per
# run, in the CSV. As agenda-bench's setup (make bench-load).
#
# Pacing, after docs/API.md "Limits": at most --rate requests a second and
# --jobs at once (far below the gateway's admission of 32 requests at once
# when light); a 429 or 503 waits its Retry-After and tries again (up to 8
# times); registration 409s (which count against the address, burst 200)
# cannot happen with a fresh prefix. Event creations carry an
# Idempotency-Key, so a retried one never makes two.
set -euo pipefail

. "$(dirname "$0")/common.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

PEOPLE=500 URL="" CA="" NETNS="" RATE=20 JOBS=8 PREFIX="" OUT="$loadtest_dir/people.csv"
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --people) PEOPLE=${2:?--people needs a number}; shift 2 ;;
    --url) URL=${2:?--url needs a URL}; shift 2 ;;
    --ca) CA=${2:?--ca needs a file}; shift 2 ;;
    --netns) NETNS=${2:?--netns needs a namespace}; shift 2 ;;
    --rate) RATE=${2:?--rate needs a number}; shift 2 ;;
    --jobs) JOBS=${2:?--jobs needs a number}; shift 2 ;;
    --prefix) PREFIX=${2:?--prefix needs a prefix}; shift 2 ;;
    --out) OUT=${2:?--out needs a file}; shift 2 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
[[ "$PEOPLE" =~ ^[0-9]+$ ]] && [ "$PEOPLE" -ge 2 ] || die "--people must be a whole number, at least 2"
[[ "$JOBS" =~ ^[0-9]+$ ]] && [ "$JOBS" -ge 1 ] || die "--jobs must be a whole number, at least 1"
[[ "$RATE" =~ ^[0-9]+([.][0-9]+)?$ ]] && awk "BEGIN{exit !($RATE > 0)}" || die "--rate must be a number above 0"
command -v curl >/dev/null || die "curl is needed"
[ -n "$PREFIX" ] || PREFIX="lt$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')-"
width=${#PEOPLE}
[ $((${#PREFIX} + width)) -le 32 ] || die "--prefix is too long (usernames are at most 32 characters)"
[[ "$PREFIX" =~ ^[A-Za-z0-9_.-]+$ ]] || die "--prefix: letters, digits, _ . - only"
resolve_target

password="Lt-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/agenda-loadtest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/id" "$tmp/invite" "$tmp/err"

name() { printf '%s%0*d' "$PREFIX" "$width" "$1"; }

# call OUT METHOD PATH [JSON] [TOKEN] [EXTRA-HEADER]: prints the status
# (000 when no answer came); the body goes to OUT. Waits and tries again
# on 429, 503 and no answer, up to 8 times.
call() {
  local out=$1 method=$2 path=$3 data=${4:-} token=${5:-} extra=${6:-}
  local hdr="$out.headers" code wait try
  local args=(-sS -m 30 -o "$out" -D "$hdr" -w '%{http_code}' -X "$method")
  [ -n "$CA" ] && args+=(--cacert "$CA")
  [ -n "$data" ] && args+=(-H 'content-type: application/json' --data-binary "$data")
  [ -n "$token" ] && args+=(-H "authorization: Bearer $token")
  [ -n "$extra" ] && args+=(-H "$extra")
  for try in 1 2 3 4 5 6 7 8; do
    code=$(in_ns curl "${args[@]}" "$URL$path" 2>"$out.curl") || code=000
    case "$code" in
      429 | 503)
        wait=$(sed -n 's/^[Rr]etry-[Aa]fter: *\([0-9]*\).*/\1/p' "$hdr" | head -n 1)
        wait=${wait:-1}
        [ "$wait" -le 30 ] || wait=30
        [ "$wait" -ge 1 ] || wait=1
        sleep "$wait"
        ;;
      000) sleep 1 ;;
      *) break ;;
    esac
  done
  echo "$code"
}

# json_field FILE KEY: the first "KEY":"value" string in a JSON file
# (enough for ids and tokens, which hold no quotes or escapes; an event's
# own id comes before its attendees' user_id, which does not match).
json_field() {
  grep -o "\"$2\" *: *\"[^\"]*\"" "$1" | head -n 1 | sed 's/.*: *"\(.*\)"$/\1/'
}

fail() { # fail I WHAT FILE STATUS: records why person I's step failed
  { echo "$(name "$1"): $2 answered $4: $(head -c 300 "$3" 2>/dev/null) $(cat "$3.curl" 2>/dev/null)"; } >"$tmp/err/$1"
}

login() { # login I BODYFILE: prints the access token, or nothing
  local code
  code=$(call "$2" POST /v1/auth/login "{\"username\":\"$(name "$1")\",\"password\":\"$password\"}")
  if [ "$code" = 200 ]; then json_field "$2" access_token; else fail "$1" "login" "$2" "$code"; fi
}

register() { # register I
  local i=$1 u out="$tmp/r$1" code
  u=$(name "$i")
  code=$(call "$out" POST /v1/auth/register \
    "{\"username\":\"$u\",\"email\":\"$u@loadtest.example\",\"password\":\"$password\",\"add_me\":\"anyone\",\"time_zone\":\"Europe/Madrid\"}")
  case "$code" in
    201) json_field "$out" id >"$tmp/id/$i" ;;
    # Taken: our own earlier try that got no answer, if the password works.
    409) [ -n "$(login "$i" "$out.login")" ] && echo taken-by-us >"$tmp/id/$i" && rm -f "$tmp/err/$i" || true ;;
    *) fail "$i" "register" "$out" "$code" ;;
  esac
  [ -s "$tmp/id/$i" ] || [ -s "$tmp/err/$i" ] || fail "$i" "register" "$out" "$code"
}

# The window's first Monday 00:00 UTC, in seconds (agenda.js's default).
case "${AGENDA_WINDOW_START:-}" in
  "") window=$(date -u -d 2027-01-04T00:00:00Z +%s) ;;
  current) window=$(date -u -d "$(date -u +%F) -$(($(date -u +%u) - 1)) days" +%s) ;;
  *) window=$(date -u -d "$AGENDA_WINDOW_START" +%s 2>/dev/null) || die "AGENDA_WINDOW_START: not a time: $AGENDA_WINDOW_START" ;;
esac
[ $((window % 86400)) = 0 ] && [ "$(date -u -d "@$window" +%u)" = 1 ] ||
  die "AGENDA_WINDOW_START must be a Monday 00:00 UTC or \"current\""
invite_event() { # invite_event I: person I makes the event that invites I+1
  local i=$1 j=$(((i + 1) % PEOPLE)) out="$tmp/e$1" token code day slot start end
  token=$(login "$i" "$out.login")
  [ -n "$token" ] || return 0
  # A day of the four weeks, a half-hour from 08:00 to 17:30 UTC.
  day=$((RANDOM % 28))
  slot=$((window + day * 86400 + (16 + RANDOM % 20) * 1800))
  start=$(date -u -d "@$slot" +%FT%TZ)
  end=$(date -u -d "@$((slot + 1800))" +%FT%TZ)
  code=$(call "$out" POST /v1/events \
    "{\"title\":\"Invitation for $(name "$j")\",\"start\":\"$start\",\"end\":\"$end\",\"time_zone\":\"Europe/Madrid\",\"attendees\":[\"$(name "$j")\"]}" \
    "$token" "idempotency-key: loadtest-setup-$(name "$i")")
  if [ "$code" = 201 ]; then
    json_field "$out" id >"$tmp/invite/$j"
    [ -s "$tmp/invite/$j" ] || fail "$i" "create the invitation (no id)" "$out" "$code"
  else
    fail "$i" "create the invitation" "$out" "$code"
  fi
}

# pace REQUESTS STEP: runs STEP 0..N-1 in the background, at most JOBS at
# once, starting them REQUESTS/RATE seconds apart.
pace() {
  local requests=$1 step=$2 i gap running=0
  gap=$(awk "BEGIN{printf \"%.3f\", $requests / $RATE}")
  for ((i = 0; i < PEOPLE; i++)); do
    if [ "$running" -ge "$JOBS" ]; then
      wait -n || true
      running=$((running - 1))
    fi
    "$step" "$i" &
    running=$((running + 1))
    sleep "$gap"
    if [ $((i % 100)) = 99 ]; then note "  $((i + 1))/$PEOPLE"; fi
  done
  wait || true
}

errors() { # errors WHAT: stops with the first failures, if any
  local n
  n=$(find "$tmp/err" -type f | wc -l)
  [ "$n" = 0 ] && return 0
  echo "$(basename "$0"): $n of $PEOPLE failed to $1; the first:" >&2
  find "$tmp/err" -type f | head -n 5 | xargs cat >&2
  exit 1
}

curl_ca=()
[ -n "$CA" ] && curl_ca=(--cacert "$CA")
in_ns curl -fsS -m 5 "${curl_ca[@]}" "$URL/readyz" >/dev/null ||
  die "the gateway at $URL is not ready (GET /readyz)${NETNS:+ from namespace $NETNS}"

started=$(date +%s)
note "making $PEOPLE people ${PREFIX}$(printf '%0*d' "$width" 0)..$(name $((PEOPLE - 1))) at $URL${NETNS:+ (from namespace $NETNS)}, $RATE requests/s at most, $JOBS at once"
pace 1 register
errors register
note "registered; each makes an invitation for the next one (log in, create)..."
pace 2 invite_event
errors "make their invitation"

{
  echo "username,password,attendee,invite"
  for ((i = 0; i < PEOPLE; i++)); do
    invite=$(cat "$tmp/invite/$i" 2>/dev/null || true)
    [ -n "$invite" ] || die "no invitation was recorded for $(name "$i")"
    echo "$(name "$i"),$password,$(name $(((i + 1) % PEOPLE))),$invite"
  done
} >"$OUT.tmp.$$"
mv "$OUT.tmp.$$" "$OUT"
note "wrote $OUT: $PEOPLE people in $(($(date +%s) - started)) s (prefix $PREFIX)"
