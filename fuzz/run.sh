#!/usr/bin/env bash
# make fuzz: every fuzz target under AFL++ (cargo-afl, stable toolchain),
# FUZZ_SECS seconds each, one after the other; see docs/FUZZING.md.
#
#   FUZZ_SECS=60        seconds per target
#   FUZZ_TARGETS="..."  which targets (default: all)
#   FUZZ_FRESH=1        forget earlier runs' corpora (default: resume them)
#
# Installs cargo-afl from crates.io when missing (it builds AFL++ from the
# sources it ships: needs make and a C compiler, nothing downloaded but the
# crate). Builds the three crates' test binaries with AFL's instrumentation
# in target/afl, runs each target's ignored test `afl` under afl-fuzz in
# persistent mode, prints executions, corpus, crashes and hangs per target,
# and fails when a target crashed. A crash is replayed with the ordinary
# test binary: the command is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECS=${FUZZ_SECS:-60}
FUZZ_TARGETS=${FUZZ_TARGETS:-rrule fields bodies db_rest raft advert}
CARGO=${CARGO:-cargo}
CARGO_AFL_VERSION=0.18.2
OUT=target/afl
export CARGO_TARGET_DIR=$OUT

# target -> crate (package) and the test that is its AFL entry point.
crate_of() {
  case $1 in
    rrule | fields | bodies) echo agenda-calendar ;;
    db_rest | raft) echo agenda-db ;;
    advert) echo agenda-vip ;;
    *) echo "fuzz/run.sh: no target $1" >&2; exit 2 ;;
  esac
}
test_of() {
  case $(crate_of "$1") in
    agenda-calendar) echo recurrence::fuzz_fields::afl ;;
    agenda-db) echo transport::fuzz::afl ;;
    agenda-vip) echo advert::fuzz::afl ;;
  esac
}

if ! cargo afl --version >/dev/null 2>&1; then
  echo "== installing cargo-afl $CARGO_AFL_VERSION (builds AFL++; a few minutes)"
  $CARGO install --locked "cargo-afl@$CARGO_AFL_VERSION"
fi
# AFL++ is built per Rust version: after a toolchain update, build it again.
if ! built=$(cargo afl config --build 2>&1); then
  case $built in *"already built"*) ;; *) echo "$built" >&2; exit 1 ;; esac
fi

for t in $FUZZ_TARGETS; do crate_of "$t" >/dev/null; done # an unknown target stops here
packages=()
for t in $FUZZ_TARGETS; do
  p=$(crate_of "$t")
  [[ " ${packages[*]-} " == *" $p "* ]] || packages+=("$p")
done
echo "== building the instrumented test binaries of ${packages[*]} in $OUT"
declare -A binary
while IFS=' ' read -r name path; do
  binary[$name]=$path
done < <($CARGO afl test --no-run --lib "${packages[@]/#/-p=}" --message-format=json |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"].replace("_", "-"), m["executable"])
')

export AFL_NO_UI=1 AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 \
  AFL_NO_AFFINITY=1 AFL_AUTORESUME=1 AFL_SKIP_CRASHES=1
failed=0
summary=()
for t in $FUZZ_TARGETS; do
  p=$(crate_of "$t")
  bin=${binary[$p]:-}
  [ -x "$bin" ] || { echo "fuzz/run.sh: no test binary for $p" >&2; exit 1; }
  out=$OUT/out/$t
  [ "${FUZZ_FRESH:-0}" = 1 ] && rm -rf "$out"
  # Seeds: the committed ones, and the target's generator's.
  in=$OUT/in/$t
  rm -rf "$in"
  mkdir -p "$in" "$out"
  cp fuzz/seeds/"$t"/* "$in"/
  AGENDA_FUZZ_TARGET=$t AGENDA_FUZZ_GENERATE=$in AGENDA_FUZZ_CASES=32 \
    "$bin" "$(test_of "$t")" --exact --ignored -q >/dev/null
  dict=()
  [ -f fuzz/dict/"$t".dict ] && dict=(-x fuzz/dict/"$t".dict)
  echo "== $t: afl-fuzz for ${FUZZ_SECS}s (log $out.log)"
  # (plain cargo: this runs no build, and may hold no build lock)
  AGENDA_FUZZ_TARGET=$t cargo afl fuzz -V "$FUZZ_SECS" -i "$in" -o "$out" "${dict[@]}" \
    -- "$bin" "$(test_of "$t")" --exact --ignored --test-threads=1 -q >"$out.log" 2>&1 || {
    echo "afl-fuzz failed for $t; the end of its log:"; tail -20 "$out.log"; failed=1; continue; }
  stats=$out/default/fuzzer_stats
  get() { sed -n "s/^$1 *: *//p" "$stats"; }
  crashes=$(get saved_crashes)
  summary+=("$(printf '%-8s %12s execs %9s/s  corpus %5s  edges %6s  crashes %s  hangs %s' \
    "$t" "$(get execs_done)" "$(get execs_per_sec)" "$(get corpus_count)" \
    "$(get edges_found)" "$crashes" "$(get saved_hangs)")")
  if [ "${crashes:-0}" != 0 ]; then
    failed=1
    echo "   $t CRASHED: $out/default/crashes/; replay one with"
    echo "   AGENDA_FUZZ_TARGET=$t AGENDA_FUZZ_INPUT=$out/default/crashes" \
      "$CARGO test -p $p --lib $(test_of "$t") -- --ignored --nocapture"
  fi
done
echo "== make fuzz: ${FUZZ_SECS}s per target (executions are cumulative over resumed runs; FUZZ_FRESH=1 starts over)"
printf '%s\n' "${summary[@]}"
exit $failed
