"""The CalDAV server through the Python `caldav` library (and, where the
library has no call for it, plain HTTP requests with the same app password):

- discovery from the base URL and from /.well-known/caldav: principal,
  calendar home, the personal calendar and a group calendar;
- create (save_event with an .ics), read, update (SUMMARY), delete, with
  the JSON API seeing each step, and the JSON API's changes seen here;
- ETag, If-Match, If-None-Match: *;
- time-range search, free-busy;
- sync tokens (RFC 6578): changes and deletions since a token; a token
  older than the sync history refused with DAV:valid-sync-token, then a
  full sync right (needs AGENDA_DAV_SYNC_HISTORY_SECS);
- the account password and a revoked app password refused (401);
- an attendee without an account kept;
- a group calendar read-only (403 on PUT and DELETE).
"""

import datetime as dt
import difflib
import os
import re
import secrets
import time
import uuid
import warnings
from zoneinfo import ZoneInfo

import caldav
import icalendar
from caldav.elements import dav as davel
from caldav.lib import error as caldav_error

from agenda import BASE, CA, Checks, User, expect, request, wait_until

warnings.simplefilter("ignore", DeprecationWarning)

UTC = dt.timezone.utc
MADRID = ZoneInfo("Europe/Madrid")
checks = Checks("caldav")

YEAR = dt.date.today().year + 1


def madrid(month, day, hour, minute=0):
    return dt.datetime(YEAR, month, day, hour, minute, tzinfo=MADRID)


def z(t):
    return t.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def rfc(t):
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ics(uid, summary, start, end, extra=""):
    """An .ics as calendar apps write it: a VTIMEZONE and local times."""
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//agenda tests//caldav_client//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:Europe/Madrid\r\n"
        "BEGIN:DAYLIGHT\r\nTZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nTZNAME:CEST\r\n"
        "DTSTART:19700329T020000\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
        "BEGIN:STANDARD\r\nTZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nTZNAME:CET\r\n"
        "DTSTART:19701025T030000\r\nRRULE:FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU\r\nEND:STANDARD\r\n"
        "END:VTIMEZONE\r\n"
        "BEGIN:VEVENT\r\n"
        f"UID:{uid}\r\nDTSTAMP:{z(dt.datetime.now(UTC))}\r\n"
        f"DTSTART;TZID=Europe/Madrid:{start.strftime('%Y%m%dT%H%M%S')}\r\n"
        f"DTEND;TZID=Europe/Madrid:{end.strftime('%Y%m%dT%H%M%S')}\r\n"
        f"SUMMARY:{summary}\r\n{extra}"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def component(obj):
    """The VEVENT (the master when there are overrides) of a caldav object."""
    cal = icalendar.Calendar.from_ical(obj.data)
    evs = [e for e in cal.walk("VEVENT") if "RECURRENCE-ID" not in e] or list(cal.walk("VEVENT"))
    return evs[0]


def udiff(a, b):
    lines = difflib.unified_diff(a.splitlines(), b.splitlines(), "sent/first", "stored/later", lineterm="", n=0)
    return "\n".join("          " + l for l in lines)


def uid_of(obj):
    return str(component(obj)["UID"])


def new_uid(what):
    return f"{what}-{secrets.token_hex(6)}@calendar-apps.test"


def api_by_title(user, title, start, end):
    return [it for it in user.events(rfc(start), rfc(end)) if it["title"] == title]


def dav(method, url, user, password, body=None, headers=None):
    return request(method, url, body=body, headers=headers, basic=(user, password))


PROPFIND_CUP = (
    '<?xml version="1.0" encoding="utf-8"?>'
    '<d:propfind xmlns:d="DAV:"><d:prop><d:current-user-principal/></d:prop></d:propfind>'
)


def sync_report(token):
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<d:sync-collection xmlns:d="DAV:">'
        f"<d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level>"
        "<d:prop><d:getetag/></d:prop></d:sync-collection>"
    )


# ---------------------------------------------------------------- accounts

ann = User("davann")
bob = User("davbob")
carol = User("davcarol")
carol_email = carol.email
ap_id, ap = ann.app_password("caldav library")
group = expect(ann.post("/v1/groups", {"name": "DAV team", "kind": "flat"}), 201, "create group")["id"]
inv = expect(ann.post(f"/v1/groups/{group}/invitations", {"username": bob.username}), 201, "invite bob")["id"]
expect(bob.post(f"/v1/invitations/{inv}/accept"), 200, "bob accepts")
group_event = ann.create_event(
    title="Team retro", start=rfc(madrid(6, 2, 16)), end=rfc(madrid(6, 2, 17)),
    time_zone="Europe/Madrid", group_id=group,
)

client = None
personal = None
group_cal = None

with checks.section("discovery") as c:
    base_client = caldav.DAVClient(url=BASE, username=ann.username, password=ap, ssl_verify_cert=CA)
    try:
        principal = base_client.principal()
        c.ok(True, "DAVClient(url=<base URL>).principal() finds the principal")
        client = base_client
    except Exception as e:
        raw = dav("PROPFIND", BASE + "/", ann.username, ap, PROPFIND_CUP,
                  {"Depth": "0", "Content-Type": "application/xml; charset=utf-8"})
        c.ok(False, "DAVClient(url=<base URL>).principal() finds the principal",
             f"caldav raised {type(e).__name__}: {e}\n        the request it makes, by hand:\n  {raw}")
    wk_client = caldav.DAVClient(url=BASE + "/.well-known/caldav", username=ann.username,
                                 password=ap, ssl_verify_cert=CA)
    principal = wk_client.principal()
    c.eq(str(principal.url), f"{BASE}/dav/principals/{ann.username}/",
         "DAVClient(url=<base>/.well-known/caldav).principal() is /dav/principals/{username}/")
    if client is None:
        client = wk_client  # to test the rest
    principal = client.principal()
    home = principal.calendar_home_set
    c.eq(str(home.url), f"{BASE}/dav/calendars/{ann.username}/", "calendar-home-set")
    cals = {str(cal.url): cal for cal in principal.calendars()}
    purl = f"{BASE}/dav/calendars/{ann.username}/personal/"
    gurl = f"{BASE}/dav/calendars/{ann.username}/{group}/"
    c.ok(purl in cals, "the personal calendar is found", str(sorted(cals)))
    c.ok(gurl in cals, "the group's calendar is found", str(sorted(cals)))
    c.eq(len(cals), 2, "exactly two calendars (personal, the one group)")
    personal = cals.get(purl) or caldav.Calendar(client=client, url=purl)
    group_cal = cals.get(gurl) or caldav.Calendar(client=client, url=gurl)
    c.eq(group_cal.get_display_name(), "DAV team", "the group calendar's name is the group's")
    comps = personal.get_supported_components()
    c.ok("VEVENT" in comps, "the personal calendar supports VEVENT", str(comps))

with checks.section("create, read, update, delete (and the JSON API sees each step)") as c:
    uid = new_uid("crud")
    start, end = madrid(6, 7, 10), madrid(6, 7, 11, 30)
    ev = personal.save_event(ics(uid, "Dentist", start, end, "DESCRIPTION:check-up\r\nLOCATION:Calle Mayor 1\r\n"))
    c.ok(str(ev.url).startswith(str(personal.url)), "save_event stores the event in the personal calendar", str(ev.url))
    back = personal.event_by_uid(uid)
    comp = component(back)
    c.eq(str(comp["SUMMARY"]), "Dentist", "read back by UID: SUMMARY")
    c.eq(comp.decoded("DTSTART").astimezone(UTC), start.astimezone(UTC), "read back: DTSTART instant")
    c.eq(comp.decoded("DTEND").astimezone(UTC), end.astimezone(UTC), "read back: DTEND instant")
    c.eq(str(comp.get("DESCRIPTION")), "check-up", "read back: DESCRIPTION")
    c.eq(str(comp.get("LOCATION")), "Calle Mayor 1", "read back: LOCATION")
    items = api_by_title(ann, "Dentist", start - dt.timedelta(days=1), end + dt.timedelta(days=1))
    c.ok(len(items) == 1 and items[0]["start"] and dt.datetime.fromisoformat(items[0]["start"]) == start
         and dt.datetime.fromisoformat(items[0]["end"]) == end and items[0]["time_zone"] == "Europe/Madrid",
         "GET /v1/events has the event made over CalDAV (times, Europe/Madrid)", str(items))

    back.icalendar_component["SUMMARY"] = "Dentist (moved to Tuesday)"
    back.save()
    again = personal.event_by_uid(uid)
    c.eq(str(component(again)["SUMMARY"]), "Dentist (moved to Tuesday)", "the SUMMARY changed over CalDAV reads back")
    c.eq(len(api_by_title(ann, "Dentist (moved to Tuesday)", start - dt.timedelta(days=1), end + dt.timedelta(days=1))),
         1, "GET /v1/events shows the new title")

    # ETags and preconditions, as clients send them.
    url = str(again.url)
    got = dav("GET", url, ann.username, ap)
    etag = got.header("ETag")
    c.ok(got.status == 200 and etag, "GET of the resource answers with an ETag", str(got))
    # A strong ETag names one representation: the same ETag, the same bytes.
    pairs = []

    def changed_or_done():
        r = dav("GET", url, ann.username, ap)
        pairs.append((r.header("ETag"), r.raw))
        return len({b for (t, b) in pairs if t == etag}) > 1

    wait_until("a second GET", changed_or_done, deadline=3.0, every=0.4)
    bodies = [b for (t, b) in pairs if t == etag]
    differ = [b.decode() for b in bodies if b != got.raw]
    c.ok(not differ, f"GETs with the same strong ETag {etag} give the same bytes ({len(bodies)} GETs over 3 s)",
         f"GET {url}, ETag {etag} both times; the bodies differ:\n" + udiff(got.text, differ[0] if differ else ""))
    body = got.text.replace("Dentist (moved to Tuesday)", "Dentist (If-Match)")
    r = dav("PUT", url, ann.username, ap, body, {"Content-Type": "text/calendar", "If-Match": '"0"'})
    c.eq(r.status, 412, "PUT with a stale If-Match is 412")
    r = dav("PUT", url, ann.username, ap, body, {"Content-Type": "text/calendar", "If-None-Match": "*"})
    c.eq(r.status, 412, "PUT with If-None-Match: * on an existing resource is 412")
    r = dav("PUT", url, ann.username, ap, body, {"Content-Type": "text/calendar", "If-Match": etag})
    c.ok(r.status in (200, 204) and r.header("ETag") and r.header("ETag") != etag,
         "PUT with the current If-Match succeeds with a new ETag", str(r))
    r = dav("DELETE", url, ann.username, ap, headers={"If-Match": etag})
    c.eq(r.status, 412, "DELETE with a stale If-Match is 412")

    again = personal.event_by_uid(uid)
    again.delete()
    try:
        personal.event_by_uid(uid)
        c.ok(False, "after delete the event is gone from CalDAV")
    except caldav_error.NotFoundError:
        c.ok(True, "after delete the event is gone from CalDAV")
    c.eq(dav("GET", url, ann.username, ap).status, 404, "GET of the deleted resource is 404")
    c.eq(api_by_title(ann, "Dentist (If-Match)", start - dt.timedelta(days=1), end + dt.timedelta(days=1)), [],
         "GET /v1/events no longer has it")

with checks.section("the JSON API's changes seen over CalDAV") as c:
    made = ann.create_event(title="Planning (API)", start=rfc(madrid(6, 9, 9)), end=rfc(madrid(6, 9, 10)),
                            time_zone="Europe/Madrid", description="from the JSON API")
    obj = personal.event_by_uid(made["id"])
    c.eq(str(component(obj)["SUMMARY"]), "Planning (API)", "an event made with the JSON API is in CalDAV (UID = its id)")
    expect(ann.patch(f"/v1/events/{made['id']}", {"title": "Planning (API, renamed)"}), 200, "PATCH title")
    obj = personal.event_by_uid(made["id"])
    c.eq(str(component(obj)["SUMMARY"]), "Planning (API, renamed)", "a JSON API PATCH shows over CalDAV")
    expect(ann.delete(f"/v1/events/{made['id']}"), 204, "DELETE via the JSON API")
    try:
        personal.event_by_uid(made["id"])
        c.ok(False, "a JSON API delete removes it from CalDAV")
    except caldav_error.NotFoundError:
        c.ok(True, "a JSON API delete removes it from CalDAV")

with checks.section("what calendar apps write") as c:
    # A client names the resource itself (Thunderbird: a random UUID), not
    # after the UID; it must find it under that name.
    name = f"{uuid.uuid4()}.ics"
    uid = new_uid("named")
    url = f"{personal.url}{name}"
    body = ics(uid, "Named by the client", madrid(6, 8, 8), madrid(6, 8, 9))
    r = dav("PUT", url, ann.username, ap, body, {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"})
    c.eq(r.status, 201, "PUT of a new resource with If-None-Match: * is 201")
    c.ok(bool(r.header("ETag")), "and answers with its ETag", str(r))
    g = dav("GET", url, ann.username, ap)
    c.ok(g.status == 200 and f"UID:{uid}" in g.text, "GET under the client's own name gives the event", str(g))
    hrefs = {str(o.url) for o in personal.objects_by_sync_token(load_objects=False, disable_fallback=True)}
    c.ok(url in hrefs, "the calendar lists it under the client's own name (no second href for it)",
         f"PUT at {url}; listed: {sorted(h for h in hrefs if 'named' in h or name in h or uid in h)}")
    r = dav("PUT", url, ann.username, ap, body, {"Content-Type": "text/calendar", "If-None-Match": "*"})
    c.eq(r.status, 412, "the same PUT with If-None-Match: * again is 412")

    # What the server keeps of what a client sends. RFC 4791 5.3.4: the
    # server stores the event in its own rendering (VTIMEZONE, ORGANIZER,
    # PRODID), so it answers a PUT with an ETag only when every property
    # and alarm sent was kept; when something was dropped it answers
    # without one, and the client reads the event back (clients such as
    # vdirsyncer take an ETag as "the server has what I sent").
    xuid = new_uid("extras")
    xurl = f"{personal.url}{xuid.split('@')[0]}.ics"
    xbody = ics(xuid, "Extras kept?", madrid(6, 8, 12), madrid(6, 8, 13),
                "CATEGORIES:Work\r\nSTATUS:TENTATIVE\r\nURL:https://example.org/agenda\r\n"
                "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n")
    put = dav("PUT", xurl, ann.username, ap, xbody, {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"})
    c.eq(put.status, 201, "PUT of an event with CATEGORIES, STATUS, URL and a VALARM is 201")
    got = dav("GET", xurl, ann.username, ap)
    tag = put.header("ETag") or ""
    stored = icalendar.Calendar.from_ical(got.raw)
    sent = icalendar.Calendar.from_ical(xbody.encode())
    sev = [e for e in stored.walk("VEVENT")][0]
    xev = [e for e in sent.walk("VEVENT")][0]
    lost = [p for p in ("CATEGORIES", "STATUS", "URL") if p not in sev]
    alarms = [str(a.get("TRIGGER").to_ical().decode()) for a in sev.walk("VALARM")]
    c.ok(not lost and alarms == ["-PT15M"] and str(sev["STATUS"]) == str(xev["STATUS"]),
         "every property and the alarm sent are in the stored event",
         f"lost {lost}, alarms {alarms}:\n{udiff(xbody, got.text)}")
    c.ok(bool(tag) and tag == got.header("ETag"),
         "so the PUT answers with the ETag the stored event has", f"PUT ETag {tag!r}, GET ETag {got.header('ETag')!r}")
    luid = new_uid("lossy")
    lurl = f"{personal.url}{luid.split('@')[0]}.ics"
    lbody = ics(luid, "Alarm at a fixed time", madrid(6, 8, 14), madrid(6, 8, 15),
                "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:r\r\n"
                "TRIGGER;VALUE=DATE-TIME:20300101T080000Z\r\nEND:VALARM\r\n")
    put = dav("PUT", lurl, ann.username, ap, lbody, {"Content-Type": "text/calendar; charset=utf-8", "If-None-Match": "*"})
    c.ok(put.status == 201 and not put.header("ETag"),
         "a PUT with something the server cannot keep (an alarm at a fixed time) answers without an ETag", str(put))
    kept = {p: (p in got.text) for p in ("CATEGORIES", "STATUS:TENTATIVE", "URL:", "BEGIN:VALARM")}
    print(f"  note  of the extra properties sent, the server keeps: {kept}")
    mine = [it for it in ann.events(rfc(madrid(6, 8, 0)), rfc(madrid(6, 9, 0))) if it["title"] == "Extras kept?"]
    if mine:
        print(f"  note  the VALARM (TRIGGER:-PT15M) became reminders: {mine[0].get('reminders')}")

    puid = new_uid("private")
    personal.save_event(ics(puid, "Private over CalDAV", madrid(6, 8, 16), madrid(6, 8, 17), "CLASS:PRIVATE\r\n"))
    its = [it for it in ann.events(rfc(madrid(6, 8, 0)), rfc(madrid(6, 9, 0))) if it["title"] == "Private over CalDAV"]
    c.ok(len(its) == 1 and its[0].get("visibility") == "private",
         "CLASS:PRIVATE over CalDAV makes a private event (visibility private in GET /v1/events)", str(its))
    jp = ann.create_event(title="Private via API", start=rfc(madrid(6, 8, 18)), end=rfc(madrid(6, 8, 19)),
                          time_zone="Europe/Madrid", visibility="private", description="mine")
    jc = component(personal.event_by_uid(jp["id"]))
    c.ok(str(jc.get("CLASS")) == "PRIVATE" and str(jc.get("SUMMARY")) == "Private via API"
         and str(jc.get("DESCRIPTION")) == "mine",
         "a private event shows to its owner over CalDAV in full, with CLASS:PRIVATE", jc.to_ical().decode())

    # Outlook and Exchange name zones their own way, with the VTIMEZONE
    # saying what they mean.
    ouid = new_uid("outlook")
    start = madrid(6, 10, 9)
    outlook = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\n"
        "BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\n"
        "BEGIN:STANDARD\r\nDTSTART:16011028T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n"
        "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
        "BEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n"
        "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
        "BEGIN:VEVENT\r\n"
        f"UID:{ouid}\r\nDTSTAMP:{z(dt.datetime.now(UTC))}\r\n"
        f"DTSTART;TZID=W. Europe Standard Time:{start.strftime('%Y%m%dT%H%M%S')}\r\n"
        f"DTEND;TZID=W. Europe Standard Time:{(start + dt.timedelta(hours=1)).strftime('%Y%m%dT%H%M%S')}\r\n"
        "SUMMARY:From Outlook\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    r = dav("PUT", f"{personal.url}{ouid.split('@')[0]}.ics", ann.username, ap, outlook,
            {"Content-Type": "text/calendar; charset=utf-8"})
    its = [it for it in ann.events(rfc(madrid(6, 10, 0)), rfc(madrid(6, 11, 0))) if it["title"] == "From Outlook"]
    c.ok(r.status == 201 and len(its) == 1 and rfc(dt.datetime.fromisoformat(its[0]["start"])) == rfc(start),
         f"an Outlook-style TZID (W. Europe Standard Time, with its VTIMEZONE) is placed at {rfc(start)}",
         f"PUT -> {r.status} {r.text[:300]}; GET /v1/events: {[(i['start'], i['time_zone']) for i in its]}")

    # One occurrence moved and one cancelled, as apps send them: the
    # series with an EXDATE and an override (RECURRENCE-ID) in one resource.
    suid = new_uid("series")
    first = madrid(9, 6, 18)  # a Monday
    series_ics = ics(suid, "Choir rehearsal", first, first + dt.timedelta(hours=2),
                     f"RRULE:FREQ=WEEKLY;COUNT=4\r\n"
                     f"EXDATE;TZID=Europe/Madrid:{(first + dt.timedelta(weeks=1)).strftime('%Y%m%dT%H%M%S')}\r\n")
    moved_from = first + dt.timedelta(weeks=2)
    moved_to = moved_from + dt.timedelta(days=1, hours=1)
    override = (
        "BEGIN:VEVENT\r\n"
        f"UID:{suid}\r\nDTSTAMP:{z(dt.datetime.now(UTC))}\r\n"
        f"RECURRENCE-ID;TZID=Europe/Madrid:{moved_from.strftime('%Y%m%dT%H%M%S')}\r\n"
        f"DTSTART;TZID=Europe/Madrid:{moved_to.strftime('%Y%m%dT%H%M%S')}\r\n"
        f"DTEND;TZID=Europe/Madrid:{(moved_to + dt.timedelta(hours=2)).strftime('%Y%m%dT%H%M%S')}\r\n"
        "SUMMARY:Choir rehearsal (Tuesday)\r\nEND:VEVENT\r\n"
    )
    series_ics = series_ics.replace("END:VCALENDAR", override + "END:VCALENDAR")
    try:
        personal.save_event(series_ics)
        occ = sorted((it["start"], it["title"]) for it in ann.events(rfc(first - dt.timedelta(days=1)), rfc(first + dt.timedelta(weeks=5)))
                     if it["title"].startswith("Choir"))
        want = sorted([
            (rfc(first), "Choir rehearsal"),
            (rfc(moved_to), "Choir rehearsal (Tuesday)"),
            (rfc(first + dt.timedelta(weeks=3)), "Choir rehearsal"),
        ])
        got = sorted((rfc(dt.datetime.fromisoformat(s)), t) for s, t in occ)
        c.eq(got, want, "a series PUT with an EXDATE and a moved occurrence: GET /v1/events has the 3 occurrences, the moved one moved")
        back = icalendar.Calendar.from_ical(personal.event_by_uid(suid).data)
        c.eq(len([e for e in back.walk("VEVENT") if "RECURRENCE-ID" in e]), 1,
             "GET of the series keeps the override (RECURRENCE-ID)")
    except Exception as e:
        c.ok(False, "a series with an override is accepted over CalDAV", f"{type(e).__name__}: {e}\n  sent:\n{series_ics}")

    # An all-day event, an event with DURATION instead of DTEND, an alarm.
    duid = new_uid("allday")
    day_ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//agenda tests//caldav_client//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{duid}\r\nDTSTAMP:{z(dt.datetime.now(UTC))}\r\n"
        f"DTSTART;VALUE=DATE:{YEAR}0915\r\nDTEND;VALUE=DATE:{YEAR}0917\r\n"
        "SUMMARY:Conference\r\nTRANSP:TRANSPARENT\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    try:
        personal.save_event(day_ics)
        its = [it for it in ann.events(f"{YEAR}-09-14T00:00:00Z", f"{YEAR}-09-18T00:00:00Z") if it["title"] == "Conference"]
        c.ok(len(its) == 1 and its[0].get("all_day") is True and its[0].get("start_date") == f"{YEAR}-09-15"
             and its[0].get("end_date") == f"{YEAR}-09-17",
             "an all-day event (DTSTART;VALUE=DATE) is all-day in GET /v1/events with its dates", str(its))
        back = component(personal.event_by_uid(duid))
        c.eq((back.decoded("DTSTART"), back.decoded("DTEND")), (dt.date(YEAR, 9, 15), dt.date(YEAR, 9, 17)),
             "and reads back as dates")
    except Exception as e:
        c.ok(False, "an all-day event is accepted over CalDAV", f"{type(e).__name__}: {e}\n  sent:\n{day_ics}")
    ruid = new_uid("duration")
    dur_ics = (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//agenda tests//caldav_client//EN\r\nBEGIN:VEVENT\r\n"
        f"UID:{ruid}\r\nDTSTAMP:{z(dt.datetime.now(UTC))}\r\n"
        f"DTSTART:{YEAR}0920T080000Z\r\nDURATION:PT45M\r\nSUMMARY:Call with DURATION\r\n"
        "BEGIN:VALARM\r\nACTION:DISPLAY\r\nDESCRIPTION:Reminder\r\nTRIGGER:-PT15M\r\nEND:VALARM\r\n"
        "END:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    try:
        personal.save_event(dur_ics)
        its = [it for it in ann.events(f"{YEAR}-09-20T00:00:00Z", f"{YEAR}-09-21T00:00:00Z") if it["title"] == "Call with DURATION"]
        c.ok(len(its) == 1 and rfc(dt.datetime.fromisoformat(its[0]["start"])) == f"{YEAR}-09-20T08:00:00Z"
             and rfc(dt.datetime.fromisoformat(its[0]["end"])) == f"{YEAR}-09-20T08:45:00Z",
             "an event with DURATION (and a VALARM) gets its end from the duration", str(its))
    except Exception as e:
        c.ok(False, "an event with DURATION and a VALARM is accepted over CalDAV", f"{type(e).__name__}: {e}\n  sent:\n{dur_ics}")

with checks.section("time-range search and free-busy") as c:
    d = dt.date(YEAR, 6, 14)
    mon = d + dt.timedelta(days=(7 - d.weekday()) % 7)  # the first Monday from June 14

    def at(days, hour, minute=0):
        x = mon + dt.timedelta(days=days)
        return madrid(x.month, x.day, hour, minute)

    week = at(0, 0)
    inside = {
        new_uid("mon"): ("Monday review", at(0, 10), at(0, 11)),
        new_uid("wed"): ("Wednesday call", at(2, 15), at(2, 16, 30)),
    }
    outside = {
        new_uid("next"): ("Next week", at(7, 10), at(7, 11)),
        new_uid("before"): ("Week before", at(-3, 10), at(-3, 11)),
    }
    for u, (s, a, b) in {**inside, **outside}.items():
        personal.save_event(ics(u, s, a, b))
    series = ann.create_event(title="Daily standup", start=rfc(at(-13, 9)), end=rfc(at(-13, 9, 15)),
                              time_zone="Europe/Madrid", rrule="FREQ=WEEKLY;BYDAY=TU;COUNT=10")
    found = personal.search(start=week, end=week + dt.timedelta(days=3), event=True, expand=False)
    got = {uid_of(o) for o in found}
    want = set(inside) | {series["id"]}
    c.eq(got, want, "search(Mon..Thu) finds exactly the two events in range and the series with an occurrence in it")
    found = personal.search(start=week, end=week + dt.timedelta(days=3), event=True, expand=True)
    starts = sorted(rfc(component(o).decoded("DTSTART")) for o in found)
    want_starts = sorted([rfc(a) for (_, a, _) in inside.values()] + [rfc(at(1, 9))])
    c.eq(starts, want_starts, "search(expand=True) gives the occurrences in range")
    try:
        fb = personal.freebusy_request(week, week + dt.timedelta(days=3))
        cal = icalendar.Calendar.from_ical(fb.data)
        periods = []
        for vfb in cal.walk("VFREEBUSY"):
            fbs = vfb.get("FREEBUSY", [])
            for p in fbs if isinstance(fbs, list) else [fbs]:
                for (a, b) in p.dt if isinstance(p.dt, list) else [p.dt]:
                    b = a + b if isinstance(b, dt.timedelta) else b
                    periods.append((rfc(a), rfc(b)))
        want_busy = sorted([(rfc(a), rfc(b)) for (_, a, b) in inside.values()]
                           + [(rfc(at(1, 9)), rfc(at(1, 9, 15)))])
        c.eq(sorted(periods), want_busy, "calendar.freebusy_request gives the busy time in the range")
    except Exception as e:
        c.ok(False, "calendar.freebusy_request works", f"{type(e).__name__}: {e}")

with checks.section("sync tokens: changes and deletions since a token") as c:
    keep_uid, change_uid, gone_uid = new_uid("keep"), new_uid("change"), new_uid("gone")
    for u, title in ((keep_uid, "Sync keep"), (change_uid, "Sync change"), (gone_uid, "Sync gone")):
        personal.save_event(ics(u, title, madrid(7, 1, 10), madrid(7, 1, 11)))
    first = personal.objects_by_sync_token(load_objects=True, disable_fallback=True)
    token = first.sync_token
    c.ok(str(token).startswith("urn:"), "sync-collection gives a real token (no fallback)", repr(token))
    listed = {uid_of(o) for o in first}
    c.ok({keep_uid, change_uid, gone_uid} <= listed, "the initial sync lists the events", str(sorted(listed)))
    new_u = new_uid("new")
    personal.save_event(ics(new_u, "Sync new", madrid(7, 2, 10), madrid(7, 2, 11)))
    api_made = ann.create_event(title="Sync via API", start=rfc(madrid(7, 3, 10)), end=rfc(madrid(7, 3, 11)),
                                time_zone="Europe/Madrid")
    ch = personal.event_by_uid(change_uid)
    ch.icalendar_component["SUMMARY"] = "Sync changed"
    ch.save()
    gone_obj = personal.event_by_uid(gone_uid)
    gone_url = gone_obj.url.canonical()
    gone_obj.delete()
    deleted_at = time.monotonic()
    delta = personal.objects_by_sync_token(sync_token=token, load_objects=True, disable_fallback=True)
    took = time.monotonic() - deleted_at
    changed = {uid_of(o) for o in delta if o.url.canonical() not in delta.deleted_urls}
    c.eq(changed, {new_u, api_made["id"], change_uid},
         f"objects_by_sync_token(token) gives exactly what changed since (new, changed, made by the API; {took:.1f} s after the delete)")
    c.eq(set(delta.deleted_urls), {gone_url}, "and the deletion since (404 for its href)")
    c.ok(delta.sync_token != token, "and a new token")
    after = personal.objects_by_sync_token(sync_token=delta.sync_token, load_objects=False, disable_fallback=True)
    c.eq((len(after), len(after.deleted_urls)), (0, 0), "nothing changed since the new token")
    bogus = dav("REPORT", str(personal.url), ann.username, ap, sync_report("urn:agenda:sync:bogus"),
                {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
    c.ok(bogus.status == 403 and re.search(r"<[a-z]*:?valid-sync-token\s*/>", bogus.text),
         "an unknown token answers 403 with DAV:valid-sync-token", str(bogus))
    gsync = group_cal.objects_by_sync_token(load_objects=True, disable_fallback=True)
    c.eq({uid_of(o) for o in gsync}, {group_event["id"]}, "the group calendar's sync lists the group's event")
    ann.create_event(title="Team lunch", start=rfc(madrid(6, 3, 13)), end=rfc(madrid(6, 3, 14)),
                     time_zone="Europe/Madrid", group_id=group)
    gdelta = group_cal.objects_by_sync_token(sync_token=gsync.sync_token, load_objects=True, disable_fallback=True)
    c.eq([str(component(o)["SUMMARY"]) for o in gdelta], ["Team lunch"],
         "a new group event shows in the group calendar's sync since its token")
    pers = {uid_of(o) for o in personal.objects_by_sync_token(load_objects=True, disable_fallback=True)}
    c.ok(group_event["id"] not in pers, "group events are not in the personal calendar too")

history = os.environ.get("AGENDA_DAV_SYNC_HISTORY_SECS")
if history and float(history) <= 60:
    history = float(history)
    with checks.section(f"a sync token older than the sync history ({history:.0f} s)") as c:
        e1, e2 = new_uid("expire-a"), new_uid("expire-b")
        personal.save_event(ics(e1, "Expiry A", madrid(8, 1, 10), madrid(8, 1, 11)))
        personal.save_event(ics(e2, "Expiry B", madrid(8, 2, 10), madrid(8, 2, 11)))
        old = personal.objects_by_sync_token(load_objects=False, disable_fallback=True).sync_token
        personal.event_by_uid(e1).delete()
        deleted = time.monotonic()
        end = deleted + history + 30
        time.sleep(max(0.0, deleted + history + 0.5 - time.monotonic()))
        outcome = None
        while time.monotonic() < end:
            try:
                r = personal.objects_by_sync_token(sync_token=old, load_objects=False, disable_fallback=True)
                outcome = f"still answered: {len(r)} changed, deleted {sorted(map(str, r.deleted_urls))}"
            except caldav_error.AuthorizationError as e:
                outcome = e
                break
            except Exception as e:
                outcome = f"{type(e).__name__}: {e}"
                break
            time.sleep(0.5)
        waited = time.monotonic() - deleted
        c.ok(isinstance(outcome, caldav_error.AuthorizationError)
             and davel.ValidSyncToken.tag in outcome.preconditions,
             f"the token from before a deletion {history:.0f} s old is refused with DAV:valid-sync-token ({waited:.1f} s after it)",
             str(outcome))
        raw = dav("REPORT", str(personal.url), ann.username, ap, sync_report(old),
                  {"Depth": "1", "Content-Type": "application/xml; charset=utf-8"})
        c.ok(raw.status == 403
             and re.search(r"<([a-z]+:)?error[^>]*>\s*<([a-z]+:)?valid-sync-token\s*/>", raw.text) is not None
             and re.search(r"xmlns(:[a-z]+)?=[\"']DAV:[\"']", raw.text) is not None,
             "the raw answer is 403 <error><valid-sync-token/></error> in the DAV: namespace", str(raw))
        full = personal.objects_by_sync_token(sync_token=old, load_objects=True)
        fresh = personal.objects_by_sync_token(load_objects=True, disable_fallback=True)
        want = {uid_of(o) for o in fresh}
        got = {uid_of(o) for o in full}
        c.ok(e1 not in got and e2 in got and got == want,
             "the library's full sync after the refusal has the right set (B, not the deleted A)",
             f"got {sorted(got)}\n        want {sorted(want)}")
        nxt_u = new_uid("after-expiry")
        personal.save_event(ics(nxt_u, "After expiry", madrid(8, 3, 10), madrid(8, 3, 11)))
        inc = personal.objects_by_sync_token(sync_token=fresh.sync_token, load_objects=True, disable_fallback=True)
        c.eq({uid_of(o) for o in inc}, {nxt_u}, "a fresh token syncs incrementally again")
else:
    print("\n== (sync-token expiry skipped: AGENDA_DAV_SYNC_HISTORY_SECS not set or over 60)")

with checks.section("app passwords only") as c:
    for what, pw in (("the account password", "correct-horse-calendar-apps-1"), ("a wrong password", "nope")):
        bad = caldav.DAVClient(url=f"{BASE}/dav/", username=ann.username, password=pw, ssl_verify_cert=CA)
        try:
            bad.principal()
            c.ok(False, f"{what} is refused")
        except caldav_error.AuthorizationError as e:
            c.eq(getattr(e, "status", None), 401, f"{what} is refused (401)")
    raw = dav("PROPFIND", f"{BASE}/dav/", ann.username, "correct-horse-calendar-apps-1", PROPFIND_CUP, {"Depth": "0"})
    c.ok(raw.status == 401 and "basic" in (raw.header("WWW-Authenticate") or "").lower(),
         "the account password: 401 with WWW-Authenticate: Basic", str(raw))
    second_id, second = ann.app_password("second phone")
    listed = expect(ann.get("/v1/me/app-passwords"), 200, "GET /v1/me/app-passwords")
    items = listed.get("items", listed) if isinstance(listed, dict) else listed
    c.eq(sorted(i["name"] for i in items), ["caldav library", "second phone"], "the app passwords are listed by name")
    c.ok(all("password" not in i for i in items), "the list shows no passwords", str(items))
    other = caldav.DAVClient(url=f"{BASE}/dav/", username=ann.username, password=second, ssl_verify_cert=CA)
    c.eq(len(other.principal().calendars()), 2, "a second app password works")
    expect(ann.delete(f"/v1/me/app-passwords/{second_id}"), 204, "DELETE the second app password")
    other = caldav.DAVClient(url=f"{BASE}/dav/", username=ann.username, password=second, ssl_verify_cert=CA)
    try:
        other.principal().calendars()
        c.ok(False, "the revoked app password is refused")
    except caldav_error.AuthorizationError as e:
        c.eq(getattr(e, "status", None), 401, "the revoked app password is refused (401)")
    raw = dav("PROPFIND", f"{BASE}/dav/", ann.username, second, PROPFIND_CUP, {"Depth": "0"})
    c.eq(raw.status, 401, "the revoked app password: 401 at once")
    c.eq(len(client.principal().calendars()), 2, "the other app password still works")
    c.eq(dav("PROPFIND", f"{BASE}/dav/calendars/{bob.username}/", ann.username, ap, PROPFIND_CUP,
             {"Depth": "0"}).status, 404, "someone else's calendar home is not shown (404)")

with checks.section("attendees without an account") as c:
    uid = new_uid("external")
    ext = f"guest-{secrets.token_hex(4)}@outside.example"
    extra = (
        f"ORGANIZER;CN=Ann:mailto:{ann.email}\r\n"
        f"ATTENDEE;CN=Ann;PARTSTAT=ACCEPTED:mailto:{ann.email}\r\n"
        f"ATTENDEE;CN=Guest;PARTSTAT=NEEDS-ACTION;RSVP=TRUE:mailto:{ext}\r\n"
        f"ATTENDEE;CN=Bob;PARTSTAT=NEEDS-ACTION:mailto:{bob.username}@users.agenda.invalid\r\n"
        f"ATTENDEE;CN=Carol;PARTSTAT=NEEDS-ACTION:mailto:{carol_email}\r\n"
    )
    personal.save_event(ics(uid, "Meeting with a guest", madrid(6, 23, 12), madrid(6, 23, 13), extra))
    obj = personal.event_by_uid(uid)
    r = dav("GET", str(obj.url), ann.username, ap)
    att = component(obj).get("ATTENDEE", [])
    att = [str(a).lower() for a in (att if isinstance(att, list) else [att])]
    c.ok(f"mailto:{ext}" in att, "GET of the resource still lists the attendee without an account", r.text)
    c.ok(f"mailto:{bob.username}@users.agenda.invalid" in att,
         "and the one with an account, by the address calendars show for them", str(att))
    bobs = api_by_title(bob, "Meeting with a guest", madrid(6, 23, 0), madrid(6, 24, 0))
    c.eq(len(bobs), 1, "the attendee with an account has it in their agenda (add_me: anyone)")
    # An email never names an account (a client could otherwise probe
    # which emails have one): Carol's real email stays an external one.
    c.ok(f"mailto:{carol_email}" in att, "an account's real email is kept as an external attendee", str(att))
    c.eq(api_by_title(carol, "Meeting with a guest", madrid(6, 23, 0), madrid(6, 24, 0)), [],
         "and does not put the event in that account's agenda")

with checks.section("a group calendar is read-only over CalDAV") as c:
    objs = group_cal.search(start=madrid(6, 1, 0), end=madrid(6, 10, 0), event=True)
    c.eq(sorted(str(component(o)["SUMMARY"]) for o in objs), ["Team lunch", "Team retro"],
         "the group calendar has the group's events")
    ge = group_cal.event_by_uid(group_event["id"])
    r = dav("PUT", str(ge.url), ann.username, ap, ge.data.replace("Team retro", "Team retro (edited)"),
            {"Content-Type": "text/calendar"})
    c.eq(r.status, 403, "PUT of a group event over CalDAV is 403")
    r = dav("PUT", str(group_cal.url) + "new-one.ics", ann.username, ap,
            ics(new_uid("grp"), "Sneaky", madrid(6, 4, 9), madrid(6, 4, 10)), {"Content-Type": "text/calendar"})
    c.eq(r.status, 403, "PUT of a new resource in a group calendar is 403")
    r = dav("DELETE", str(ge.url), ann.username, ap)
    c.eq(r.status, 403, "DELETE of a group event over CalDAV is 403")
    try:
        group_cal.save_event(ics(new_uid("grp2"), "Via library", madrid(6, 4, 11), madrid(6, 4, 12)))
        c.ok(False, "the library's save_event into the group calendar is refused")
    except caldav_error.DAVError as e:
        c.ok(True, f"the library's save_event into the group calendar is refused ({type(e).__name__})")
    c.eq(str(component(group_cal.event_by_uid(group_event["id"]))["SUMMARY"]), "Team retro",
         "the group event is unchanged")

checks.finish()
