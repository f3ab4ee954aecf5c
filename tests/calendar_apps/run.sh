#!/usr/bin/env bash
# Calendar apps nobody here wrote, against a LIVE gateway over HTTPS: the
# iCalendar feeds and .ics import (parsed and expanded by icalendar and
# recurring-ical-events), the CalDAV server through the Python caldav
# library, and two-way sync with vdirsyncer.
#
#   tests/calendar_apps/run.sh setup
#       creates (or reuses) the two virtualenvs and prints nothing else on
#       stdout; exit 3: python3 cannot make a virtualenv (install
#       python3-venv), 4: pip could not install a requirements file.
#   tests/calendar_apps/run.sh feeds|caldav|vdirsyncer
#       runs feeds.py, caldav_client.py or vdirsyncer_sync.py (setup first
#       if needed). They read AGENDA_URL (the gateway's https:// base) and
#       AGENDA_CA (the CA file its certificate chains to), register users
#       of their own, print each check and exit 1 when one failed.
#       caldav also reads AGENDA_DAV_SYNC_HISTORY_SECS: the
#       --dav-sync-history-secs the agenda-users replicas were started with
#       (the token-expiry check waits past it; unset: that check is skipped).
#
# Two virtualenvs, because the caldav library pulls urllib3-future, which
# takes the place of urllib3 and can break requests-based tools:
#   caldav-venv      caldav, icalendar, recurring-ical-events
#                    (requirements-caldav.txt): feeds.py, caldav_client.py
#   vdirsyncer-venv  vdirsyncer (requirements-vdirsyncer.txt)
# Both live in ${XDG_CACHE_HOME:-$HOME/.cache}/agenda/calendar-apps-*
# (AGENDA_CALENDAR_APPS_VENVS overrides the folder), made again when their
# requirements file changes; PYTHON picks the interpreter (default python3).
#
# The system test tests/tests/calendar_apps.rs runs all of this against a
# system it starts; against `make run-local`:
#   AGENDA_URL="$(cat .agenda/url)" AGENDA_CA=.agenda/ca.pem tests/calendar_apps/run.sh caldav
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cache="${XDG_CACHE_HOME:-$HOME/.cache}/agenda"
venvs="${AGENDA_CALENDAR_APPS_VENVS:-$cache}"
python="${PYTHON:-python3}"

# make_venv NAME REQUIREMENTS CHECK_BINARY
make_venv() {
  local venv="$venvs/calendar-apps-$1-venv" req="$here/$2" check="$3"
  local stamp="$venv/.requirements"
  if [ -x "$venv/bin/$check" ] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  echo "calendar apps: creating the virtualenv $venv" >&2
  rm -rf "$venv"
  mkdir -p "$venvs"
  if ! command -v "$python" >/dev/null; then
    echo "calendar apps: $python not found; install Python 3 and its venv module: apt-get install -y python3 python3-venv" >&2
    exit 3
  fi
  if ! "$python" -m venv "$venv" >&2; then
    rm -rf "$venv"
    echo "calendar apps: '$python -m venv' cannot create a virtualenv; install python3-venv: apt-get install -y python3-venv" >&2
    exit 3
  fi
  if ! "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2; then
    rm -rf "$venv"
    echo "calendar apps: pip could not install $req (is PyPI reachable?)" >&2
    exit 4
  fi
  cp "$req" "$stamp"
}

setup() {
  make_venv caldav requirements-caldav.txt python
  make_venv vdirsyncer requirements-vdirsyncer.txt vdirsyncer
}

need_env() {
  if [ -z "${AGENDA_URL:-}" ] || [ -z "${AGENDA_CA:-}" ]; then
    echo "run.sh $1: set AGENDA_URL (https://host:port) and AGENDA_CA (the CA file)" >&2
    exit 2
  fi
}

run_py() { # VENV SCRIPT
  local venv="$venvs/calendar-apps-$1-venv"
  cd "$here"
  # -u: every line reaches the log at once (the test prints its tail).
  PATH="$venv/bin:$PATH" PYTHONPATH="$here" exec "$venv/bin/python" -u "$here/$2"
}

case "${1:-}" in
  setup) setup ;;
  feeds) need_env feeds; setup; run_py caldav feeds.py ;;
  caldav) need_env caldav; setup; run_py caldav caldav_client.py ;;
  vdirsyncer) need_env vdirsyncer; setup; run_py vdirsyncer vdirsyncer_sync.py ;;
  *) echo "usage: $0 setup | feeds | caldav | vdirsyncer   (AGENDA_URL and AGENDA_CA in the environment)" >&2; exit 2 ;;
esac
