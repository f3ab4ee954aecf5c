#!/usr/bin/env bash
# deploy/loadtest/run.sh: runs one load level of agenda.yml with Artillery
# against a running system, writes artillery's JSON report and prints its
# summary, then the seed-003 table rows for it (summary.js).
#
# Usage: deploy/loadtest/run.sh ENV [--url URL] [--ca PEM] [--netns NS]
#            [--think-scale F] [--output FILE] [-- ARTILLERY-ARGS...]
#        deploy/loadtest/run.sh --check
#
#   ENV            smoke (10 s at 1/s), low, medium, high, stress, and the
#                  same at 3x and 10x the arrival rates: low-3x ... stress-10x
#   --url URL      the gateway (default .agenda/url, written by make run)
#   --ca PEM       the CA of an https URL (default .agenda/ca.pem), given
#                  to Node as NODE_EXTRA_CA_CERTS
#   --netns NS     run artillery inside network namespace NS (root); the
#                  default in the namespace topology is the client namespace
#                  of .agenda/endpoints.json, where the VIP answers
#   --think-scale F  multiply the think times (3 s, 10 s, 5 s) by F (default
#                  1; 0.1 for a quick try, 0 for none)
#   --output FILE  the JSON report (default deploy/loadtest/reports/ENV-TIME.json)
#   -- ARGS        passed to `artillery run` as they are, e.g.
#                  --overrides '{"config":{"phases":[{"duration":5,"arrivalRate":2}]}}'
#   --check        validate agenda.yml's every environment offline (artillery's
#                  own script checks, the payload, the processor) and print the
#                  virtual users each level makes; sends nothing
#
# The accounts come from deploy/loadtest/people.csv: run setup.sh first
# (once per system). Artillery is installed on first use into
# deploy/loadtest/.npm (npm; git-ignored), without browsers and without
# telemetry. Exits with artillery's status: 0, or 21 when a request failed
# its expectation (a non-2xx answer).
set -euo pipefail

. "$(dirname "$0")/common.sh"

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

ENV="" URL="" CA="" NETNS="" SCALE=1 OUTPUT="" CHECK=0 EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --url) URL=${2:?--url needs a URL}; shift 2 ;;
    --ca) CA=${2:?--ca needs a file}; shift 2 ;;
    --netns) NETNS=${2:?--netns needs a namespace}; shift 2 ;;
    --think-scale) SCALE=${2:?--think-scale needs a number}; shift 2 ;;
    --output) OUTPUT=${2:?--output needs a file}; shift 2 ;;
    --check) CHECK=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -*) usage >&2; die "unknown option: $1" ;;
    *) [ -z "$ENV" ] || die "one environment at a time (got $ENV and $1)"; ENV=$1; shift ;;
  esac
done
[[ "$SCALE" =~ ^[0-9]+([.][0-9]+)?$ ]] || die "--think-scale must be a number >= 0"

# The environments agenda.yml defines (the keys under config.environments).
envs=$(awk '/^  environments:/{on=1; next} on && /^[^ #]/{exit} on && /^    [a-z0-9-]+:$/{sub(":", ""); print $1}' "$loadtest_dir/agenda.yml")

command -v node >/dev/null && command -v npm >/dev/null || die "node and npm are needed (apt-get install nodejs npm)"
artillery="$loadtest_dir/.npm/node_modules/.bin/artillery"
if [ ! -x "$artillery" ]; then
  note "installing artillery@2 into $loadtest_dir/.npm (once; many packages)..."
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --prefix "$loadtest_dir/.npm" \
    --no-audit --no-fund --loglevel=error artillery@2 >&2
fi
export ARTILLERY_DISABLE_TELEMETRY=true
export AGENDA_THINK_SCALE=$SCALE

if [ "$CHECK" = 1 ]; then
  exec node "$loadtest_dir/check.js" "$loadtest_dir/agenda.yml" $envs
fi

[ -n "$ENV" ] || { usage >&2; die "which environment? one of: $(echo $envs)"; }
grep -qx -- "$ENV" <<<"$envs" || die "no environment $ENV in agenda.yml; one of: $(echo $envs)"
payload="$loadtest_dir/people.csv"
[ -s "$payload" ] && [ "$(wc -l <"$payload")" -ge 3 ] ||
  die "no people in $payload: run deploy/loadtest/setup.sh first"
resolve_target

if [ -z "$OUTPUT" ]; then
  mkdir -p "$loadtest_dir/reports"
  OUTPUT="$loadtest_dir/reports/$ENV-$(date -u +%Y%m%dT%H%M%SZ).json"
fi
mkdir -p "$(dirname "$OUTPUT")"
if [ -n "$CA" ]; then export NODE_EXTRA_CA_CERTS=$CA; fi

note "$ENV against $URL${NETNS:+ (from namespace $NETNS)}, $(($(wc -l <"$payload") - 1)) people, think times x$SCALE; report: $OUTPUT"
status=0
# Artillery resolves the payload and processor next to agenda.yml.
(cd "$loadtest_dir" && in_ns "$artillery" run --environment "$ENV" --target "$URL" \
  --output "$OUTPUT" "${EXTRA[@]}" agenda.yml) || status=$?
if [ -s "$OUTPUT" ]; then
  echo
  node "$loadtest_dir/summary.js" "$OUTPUT" "$ENV"
fi
exit "$status"
