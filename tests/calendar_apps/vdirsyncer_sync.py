"""Two-way sync of the personal CalDAV calendar with a local folder by
vdirsyncer (its own virtualenv; this script drives the `vdirsyncer` command
and checks both sides through the JSON API and the files):

- discover, then sync: the folder gets one .ics per event;
- a second sync changes nothing on either side;
- a local edit (SUMMARY), a new local file and a removed local file reach
  the server; a JSON API edit, creation and deletion reach the folder;
- both sides editing the same event between syncs is reported as a
  conflict (conflict_resolution unset) and neither edit is lost.

vdirsyncer 0.21 lists a CalDAV collection with PROPFIND and ETags, not
sync-collection tokens, so the expiry of tokens is checked in
caldav_client.py; here a deletion long after the last sync must still
arrive.
"""

import datetime as dt
import os
import re
import shutil
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from agenda import BASE, CA, Checks, User, expect, request

checks = Checks("vdirsyncer")
UTC = dt.timezone.utc
YEAR = dt.date.today().year + 1


def rfc(y, m, d, h, mi=0):
    return dt.datetime(y, m, d, h, mi, tzinfo=UTC).isoformat().replace("+00:00", "Z")


ann = User("vdsann")
_, ap = ann.app_password("vdirsyncer")
work = Path(tempfile.mkdtemp(prefix="agenda-vdirsyncer-"))
local = work / "calendar"
local.mkdir()
(work / "status").mkdir()
config = work / "config"


def write_config(conflict_resolution=None):
    lines = [
        "[general]",
        f'status_path = "{work / "status"}/"',
        "",
        "[pair agenda]",
        'a = "agenda_local"',
        'b = "agenda_remote"',
        "collections = null",
    ]
    if conflict_resolution:
        lines.append(f'conflict_resolution = "{conflict_resolution}"')
    lines += [
        "",
        "[storage agenda_local]",
        'type = "filesystem"',
        f'path = "{local}/"',
        'fileext = ".ics"',
        "",
        "[storage agenda_remote]",
        'type = "caldav"',
        f'url = "{BASE}/dav/calendars/{ann.username}/personal/"',
        f'username = "{ann.username}"',
        f'password = "{ap}"',
        f'verify = "{CA}"',
        "",
    ]
    config.write_text("\n".join(lines))


def vdirsyncer(*args, timeout=90):
    """Runs vdirsyncer; (exit code, output)."""
    started = time.monotonic()
    p = subprocess.run(
        ["vdirsyncer", "--config", str(config), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    print(f"  $ vdirsyncer {' '.join(args)}  -> exit {p.returncode} in {time.monotonic() - started:.1f} s")
    for line in p.stdout.splitlines():
        print(f"    | {line}")
    return p.returncode, p.stdout


def snapshot():
    """The folder: file name -> contents."""
    return {f.name: f.read_text() for f in sorted(local.glob("*.ics"))}


def local_by_uid():
    """UID -> (file, contents) of the folder's events."""
    out = {}
    for f in local.glob("*.ics"):
        text = f.read_text()
        m = re.search(r"^UID:(.*)$", text.replace("\r\n ", ""), re.M)
        if m:
            out[m.group(1).strip()] = (f, text)
    return out


def summary(text):
    m = re.search(r"^SUMMARY:(.*)$", text.replace("\r\n ", "").replace("\n ", ""), re.M)
    return m.group(1).strip() if m else None


def server_ics(uid):
    """(reply, the server's .ics of the event with this UID or None), by a
    calendar-query REPORT asking for calendar-data."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">'
        "<d:prop><d:getetag/><c:calendar-data/></d:prop>"
        '<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>'
        "</c:calendar-query>"
    )
    r = request("REPORT", f"{BASE}/dav/calendars/{ann.username}/personal/", body=body,
                headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
                basic=(ann.username, ap))
    if r.status != 207:
        return r, None
    for el in ET.fromstring(r.raw).iter("{urn:ietf:params:xml:ns:caldav}calendar-data"):
        if el.text and f"UID:{uid}" in el.text.replace("\r\n ", ""):
            return r, el.text
    return r, None


WINDOW = (f"{YEAR}-04-01T00:00:00Z", f"{YEAR}-07-01T00:00:00Z")


def server():
    """id -> (title, start, end, rrule) of the person's events (series once)."""
    out = {}
    for it in ann.events(*WINDOW):
        out.setdefault(it["id"], (it["title"], it.get("rrule")))
    return out


def server_items():
    return sorted(
        (it["id"], it["title"], it["start"], it["end"]) for it in ann.events(*WINDOW)
    )


alpha = ann.create_event(title="Alpha", start=rfc(YEAR, 4, 6, 9), end=rfc(YEAR, 4, 6, 10),
                         time_zone="Europe/Madrid", description="first")
bravo = ann.create_event(title="Bravo", start=rfc(YEAR, 4, 7, 9), end=rfc(YEAR, 4, 7, 10),
                         time_zone="Europe/Madrid", rrule="FREQ=WEEKLY;COUNT=5")
charlie = ann.create_event(title="Charlie", start=f"{YEAR}-04-10", end=f"{YEAR}-04-11", all_day=True,
                           time_zone="Europe/Madrid")
write_config()

with checks.section("discover and the first sync") as c:
    code, out = vdirsyncer("discover")
    c.eq(code, 0, "vdirsyncer discover succeeds")
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "vdirsyncer sync succeeds")
    files = local_by_uid()
    c.eq(sorted(files), sorted([alpha["id"], bravo["id"], charlie["id"]]),
         "the folder has one .ics per event (by UID)")
    if bravo["id"] in files:
        c.ok("RRULE:FREQ=WEEKLY;COUNT=5" in files[bravo["id"]][1], "the series came as one file with its RRULE",
             files[bravo["id"]][1])
    if charlie["id"] in files:
        c.ok(f"DTSTART;VALUE=DATE:{YEAR}0410" in files[charlie["id"]][1], "the all-day event came with a DATE",
             files[charlie["id"]][1])

with checks.section("two syncs in a row change nothing") as c:
    before_local, before_server = snapshot(), server_items()
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the second sync succeeds")
    c.eq(snapshot(), before_local, "the folder is byte for byte the same")
    c.eq(server_items(), before_server, "the server's events are the same")
    c.ok(not re.search(r"Copying|Updating|Deleting", out), "vdirsyncer copied, updated and deleted nothing", out)
    code, out = vdirsyncer("sync")
    c.eq((code, snapshot(), server_items()), (0, before_local, before_server), "and a third one neither")

with checks.section("local changes reach the server") as c:
    f, text = local_by_uid()[alpha["id"]]
    f.write_text(text.replace("SUMMARY:Alpha", "SUMMARY:Alpha (edited locally)"))
    new_uid = f"local-{os.urandom(4).hex()}@calendar-apps.test"
    stamp = dt.datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    (local / "made-locally.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//agenda tests//vdirsyncer//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{new_uid}\r\nDTSTAMP:{stamp}\r\nDTSTART:{YEAR}0420T100000Z\r\nDTEND:{YEAR}0420T110000Z\r\n"
        "SUMMARY:Delta (made locally)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync succeeds")
    titles = {t for (t, _) in server().values()}
    c.ok("Alpha (edited locally)" in titles and "Alpha" not in titles,
         "the local SUMMARY edit is on the server (GET /v1/events)", str(sorted(titles)))
    c.ok("Delta (made locally)" in titles, "the new local file is an event on the server", str(sorted(titles)))
    got = expect(ann.get(f"/v1/events/{alpha['id']}"), 200, "GET alpha")
    c.eq(got.get("description"), "first", "the edit kept the event's other fields (description)")
    delta_file = local_by_uid().get(new_uid, (None,))[0]
    if delta_file:
        delta_file.unlink()
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync after a local removal succeeds")
    titles = {t for (t, _) in server().values()}
    c.ok("Delta (made locally)" not in titles, "the removed local file's event is gone from the server",
         str(sorted(titles)))
    code, out = vdirsyncer("sync")
    c.ok(code == 0 and not re.search(r"Copying|Updating|Deleting", out), "and the next sync has nothing to do", out)

with checks.section("after a sync the folder and the server hold the same event") as c:
    # A phone-style event: an alarm and a category. Either the server keeps
    # them, or its answer to the upload makes vdirsyncer fetch what it kept;
    # it must not be that the folder keeps them while the server silently
    # has not (RFC 4791 5.3.4: no strong ETag for a changed body).
    xuid = f"alarm-{os.urandom(4).hex()}@calendar-apps.test"
    (local / "with-alarm.ics").write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//agenda tests//vdirsyncer//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{xuid}\r\nDTSTAMP:{stamp}\r\nDTSTART:{YEAR}0421T100000Z\r\nDTEND:{YEAR}0421T110000Z\r\n"
        "SUMMARY:Foxtrot (with an alarm)\r\nCATEGORIES:Work\r\n"
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync succeeds")
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "and the next one")
    f, text = local_by_uid()[xuid]
    r, stored = server_ics(xuid)
    c.ok(stored is not None, "the uploaded event is on the server", str(r))
    stored = stored or ""
    def props(t):
        t = t.replace("\r\n ", "").replace("\r\n", "\n")
        return {l.split(":", 1)[0].split(";", 1)[0] for l in t.splitlines() if l and l.split(":", 1)[0] not in
                ("DTSTAMP", "PRODID", "CREATED", "LAST-MODIFIED", "SEQUENCE")}
    only_local = props(text) - props(stored)
    c.ok(not only_local,
         "every property of the folder's copy is on the server (else the folder shows what the server does not have)",
         f"only in the folder: {sorted(only_local)}\n  folder:\n{text}\n  server:\n{stored}")
    f.unlink()
    code, out = vdirsyncer("sync")

with checks.section("server changes reach the folder") as c:
    expect(ann.patch(f"/v1/events/{bravo['id']}", {"title": "Bravo (renamed in the app)"}), 200, "PATCH bravo")
    echo = ann.create_event(title="Echo (made in the app)", start=rfc(YEAR, 5, 4, 15), end=rfc(YEAR, 5, 4, 16),
                            time_zone="Europe/Madrid")
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync succeeds")
    files = local_by_uid()
    c.eq(summary(files.get(bravo["id"], (None, ""))[1]), "Bravo (renamed in the app)",
         "the JSON API's new title is in the local file")
    c.ok(echo["id"] in files, "the JSON API's new event is a new local file", str(sorted(files)))
    expect(ann.delete(f"/v1/events/{echo['id']}"), 204, "DELETE echo")
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync after a deletion in the app succeeds")
    c.ok(echo["id"] not in local_by_uid(), "the deleted event's file is gone")

with checks.section("a conflict is reported, nothing lost") as c:
    expect(ann.patch(f"/v1/events/{charlie['id']}", {"title": "Charlie (server side)"}), 200, "PATCH charlie")
    f, text = local_by_uid()[charlie["id"]]
    f.write_text(text.replace("SUMMARY:Charlie", "SUMMARY:Charlie (local side)"))
    code, out = vdirsyncer("sync")
    reported = code != 0 and re.search(r"conflict", out, re.I)
    c.ok(bool(reported), "vdirsyncer reports the conflict (non-zero exit, says conflict)", f"exit {code}: {out}")
    c.eq(summary(local_by_uid()[charlie["id"]][1]), "Charlie (local side)", "the local edit is still in the folder")
    got = expect(ann.get(f"/v1/events/{charlie['id']}"), 200, "GET charlie")
    c.eq(got["title"], "Charlie (server side)", "the server's edit is still on the server")
    # Resolved as a person would: the server's side wins.
    write_config("b wins")
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "with conflict_resolution = \"b wins\" the sync succeeds")
    c.eq(summary(local_by_uid()[charlie["id"]][1]), "Charlie (server side)", "and the folder has the server's edit")
    write_config()

with checks.section("a deletion long after the last sync still arrives") as c:
    history = float(os.environ.get("AGENDA_DAV_SYNC_HISTORY_SECS", "0") or 0)
    expect(ann.delete(f"/v1/events/{alpha['id']}"), 204, "DELETE alpha")
    if 0 < history <= 60:
        # Past the server's history of deletions (a token-based client
        # would have to start over); a bounded wait, not a poll target.
        time.sleep(history + 1)
    code, out = vdirsyncer("sync")
    c.eq(code, 0, "the sync succeeds")
    files = local_by_uid()
    c.ok(alpha["id"] not in files, "the deleted event's file is gone", str(sorted(files)))
    c.eq(sorted(files), sorted([bravo["id"], charlie["id"]]), "the folder has exactly the server's events")
    before = snapshot()
    code, out = vdirsyncer("sync")
    c.ok(code == 0 and snapshot() == before, "and the next sync changes nothing")

if checks.failed:
    print(f"\nvdirsyncer's config, folder and status are kept in {work}")
else:
    shutil.rmtree(work, ignore_errors=True)
checks.finish()
