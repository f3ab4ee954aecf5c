#!/usr/bin/env bash
# The local gateway's health for keepalived, checked exactly as agenda-vip
# checks it (its --health-url, --health-interval, --health-fall,
# --health-rise, --health-timeout): one GET every INTERVAL, each check
# must answer 2xx within TIMEOUT (a check still waiting delays the next),
# FALL failures in a row make the gateway
# unhealthy, RISE passes make it healthy again, starting unhealthy. A
# refused connection (nothing listens on the port: the gateway is gone)
# makes it unhealthy at once, not after FALL checks.
#
#   deploy/keepalived-health.sh FILE URL [INTERVAL_S] [FALL] [RISE] [TIMEOUT_S]
#
# The verdict goes to FILE, a keepalived track_file with weight 0: `0`
# healthy, `1` unhealthy (the instance goes to FAULT). keepalived reads the
# file the moment it changes (inotify); its own vrrp_script cannot run
# more often than once a second, ten times slower than agenda-vip's check.
# Used by `AGENDA_VIP_DAEMON=keepalived deploy/netns.sh` (make bench-vip).
set -uo pipefail
export LC_ALL=C

file=$1 url=$2 interval=${3:-0.1} fall=${4:-3} rise=${5:-2} timeout=${6:-1}
# Interval in microseconds (EPOCHREALTIME has microseconds).
usec() { local s=${1%.*} f=${1#*.}; [ "$s" = "$1" ] && f=0; f="${f}000000"; echo $((10#${s:-0} * 1000000 + 10#${f:0:6})); }
step=$(usec "$interval")

healthy=0 streak=0
printf '1\n' >"$file"
echo "$(date -Is) checking $url every ${interval}s, ${timeout}s per check (fall $fall, rise $rise); unhealthy until proven"
next=$(usec "$EPOCHREALTIME")
while :; do
  curl -fsS -o /dev/null -m "$timeout" "$url" 2>/dev/null
  rc=$?
  if [ "$rc" = 0 ]; then ok=1; else ok=0; fi
  if [ "$rc" = 7 ] && [ "$healthy" = 1 ]; then
    # curl 7: could not connect (refused): down at once, as in agenda-vip.
    healthy=0 streak=0
    printf '1\n' >"$file"
    echo "$(date -Is) local gateway health changed: healthy=false (connection refused)"
  elif [ "$ok" = "$healthy" ]; then
    streak=0
  else
    streak=$((streak + 1))
    if { [ "$healthy" = 1 ] && [ "$streak" -ge "$fall" ]; } || { [ "$healthy" = 0 ] && [ "$streak" -ge "$rise" ]; }; then
      healthy=$ok streak=0
      printf '%s\n' "$((1 - healthy))" >"$file"
      echo "$(date -Is) local gateway health changed: healthy=$([ "$healthy" = 1 ] && echo true || echo false)"
    fi
  fi
  # The next check INTERVAL after the previous one was due, or at once
  # after one that waited longer (no burst catching up, as in agenda-vip).
  next=$((next + step))
  now=$(usec "$EPOCHREALTIME")
  if [ "$next" -le "$now" ]; then
    next=$now
  else
    rest=$((next - now))
    sleep "$((rest / 1000000)).$(printf '%06d' $((rest % 1000000)))"
  fi
done
