"""iCalendar feeds and .ics import, read by libraries nobody here wrote:
icalendar parses the feed, recurring-ical-events expands it, and what they
make of it must be what GET /v1/events says.

1. A person's feed: a weekly series in Europe/Madrid across the late-March
   change to summer time, with an exception date and one occurrence moved
   (PATCH /v1/events/{occurrence_id}), an all-day event, a private event,
   an event with an attendee, one of two months ago and a series begun
   two years ago that ended ten months ago (in the feed), an event and a
   series that ended two years ago (not: the feed is a window). The
   occurrences the libraries expand over a window are GET /v1/events's
   over it (start and end instants, titles; the private one "Busy" with
   nothing else); a
   VTIMEZONE for Europe/Madrid that gives every time in the feed the
   offset it has; ORGANIZER and ATTENDEE with PARTSTAT. A new feed URL
   makes the old one 404.
2. Round trip: the feed imported into a new account gives that account the
   same occurrences; importing it again imports nothing.
3. A hierarchical group's feed: a subordinate's event in full for the
   superior, a private event a busy block for everyone, the superior's
   event a busy block for the subordinate.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

from agenda import Checks, User, expect, request

UTC = dt.timezone.utc
MADRID = ZoneInfo("Europe/Madrid")

checks = Checks("feeds")


def last_sunday_of_march(year):
    d = dt.date(year, 3, 31)
    return d - dt.timedelta(days=(d.weekday() + 1) % 7)


def madrid(day, hour, minute=0):
    """RFC 3339 for a wall-clock time in Madrid."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=MADRID).isoformat()


def utc(s):
    return dt.datetime.fromisoformat(s).astimezone(UTC)


def z(t):
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_occurrences(items, private_titles=()):
    """GET /v1/events items as comparable occurrences: all-day ones by
    dates, the rest by UTC instants; titles of `private_titles` as the
    feed shows them ("Busy")."""
    out = set()
    for it in items:
        title = it["title"]
        if title in private_titles:
            title = "Busy"
        if it.get("all_day"):
            out.add(("day", it["start_date"], it["end_date"], title))
        else:
            out.add(("time", z(utc(it["start"])), z(utc(it["end"])), title))
    return out


def feed_occurrences(cal, start, end):
    """What recurring-ical-events expands in [start, end)."""
    out = set()
    for ev in recurring_ical_events.of(cal).between(start, end):
        s = ev.decoded("DTSTART")
        e = ev.decoded("DTEND") if "DTEND" in ev else None
        title = str(ev.get("SUMMARY", ""))
        if isinstance(s, dt.datetime):
            out.add(("time", z(s), z(e) if e else None, title))
        else:
            out.add(("day", s.isoformat(), e.isoformat() if e else None, title))
    return out


def show(occ):
    return "\n          " + "\n          ".join(map(str, sorted(occ, key=lambda o: (o[1], o[3]))))


def diff(got, want):
    return (
        f"only in the feed/import: {show(got - want)}\n        "
        f"only in GET /v1/events: {show(want - got)}"
    )


def check_vtimezone(c, cal, text):
    """Every TZID=Europe/Madrid time in the feed is covered by the feed's
    own VTIMEZONE (an observance starts at or before it) and gets from it
    the UTC offset Europe/Madrid has then: clients that use the VTIMEZONE
    (not the name) must place the events where Agenda does."""
    zones = {str(tz["TZID"]): tz for tz in cal.walk("VTIMEZONE")}
    if not c.ok("Europe/Madrid" in zones, "the feed has a VTIMEZONE for Europe/Madrid",
                f"VTIMEZONEs: {sorted(zones)}"):
        return
    vtz = zones["Europe/Madrid"]
    onsets = sorted(
        sub.decoded("DTSTART").replace(tzinfo=None)
        for sub in vtz.subcomponents
        if sub.name in ("STANDARD", "DAYLIGHT")
    )
    from_def = vtz.to_tz(lookup_tzid=False)
    bad = []
    uncovered = []
    for ev in cal.walk("VEVENT"):
        for prop in ("DTSTART", "DTEND", "RECURRENCE-ID"):
            if prop not in ev:
                continue
            v = ev[prop]
            if str(v.params.get("TZID", "")) != "Europe/Madrid":
                continue
            local = ev.decoded(prop).replace(tzinfo=None)
            if not onsets or local < onsets[0]:
                uncovered.append(f"{ev.get('SUMMARY')} {prop} {local.isoformat()}")
                continue
            want = local.replace(tzinfo=MADRID).utcoffset()
            try:
                got = local.replace(tzinfo=from_def).utcoffset()
            except Exception:  # a pytz-style zone
                got = from_def.localize(local).utcoffset()
            if got != want:
                bad.append(f"{ev.get('SUMMARY')} {prop} {local.isoformat()}: VTIMEZONE {got}, Europe/Madrid {want}")
    c.ok(
        not uncovered,
        "every Europe/Madrid time in the feed is covered by its VTIMEZONE (an observance starts at or before it)",
        f"first observance starts {onsets[0].isoformat() if onsets else None}; before it: {uncovered}\n"
        f"        (RFC 5545 3.6.5: the offset is undefined there; the feed's VTIMEZONE lines: "
        f"{[l for l in text.splitlines() if l.startswith('DTSTART:')][:4]} ...)",
    )
    c.ok(not bad, "the VTIMEZONE gives each Europe/Madrid time the offset Europe/Madrid has then", str(bad))


def person_feed():
    year = dt.date.today().year + 1
    dst = last_sunday_of_march(year)  # the change to summer time
    first = dst - dt.timedelta(days=27)  # a Monday, four weeks before
    window = (
        dt.datetime.combine(first - dt.timedelta(days=7), dt.time(), UTC),
        dt.datetime.combine(dst + dt.timedelta(days=35), dt.time(), UTC),
    )
    wfrom, wto = z(window[0]), z(window[1])

    a = User("feedann")
    b = User("feedbob")
    with checks.section("a person's feed against GET /v1/events") as c:
        series = a.create_event(
            title="Weekly sync",
            description="roadmap and blockers",
            location="Room 4",
            start=madrid(first, 9),
            end=madrid(first, 10),
            time_zone="Europe/Madrid",
            rrule="FREQ=WEEKLY;COUNT=8",
            exdates=[madrid(first + dt.timedelta(weeks=2), 9)],
        )
        occ = [
            it for it in a.events(wfrom, wto) if it.get("recurring_event_id") == series["id"]
        ]
        c.eq(len(occ), 7, "the series has 8 occurrences less the exception date in GET /v1/events")
        fifth = first + dt.timedelta(weeks=5)  # after the change to summer time
        moved = [o for o in occ if utc(o["start"]) == dt.datetime(fifth.year, fifth.month, fifth.day, 9, tzinfo=MADRID)]
        c.eq(len(moved), 1, "the occurrence to move is listed")
        day_after = fifth + dt.timedelta(days=1)
        expect(
            a.patch(
                f"/v1/events/{moved[0]['occurrence_id']}",
                {"start": madrid(day_after, 10), "end": madrid(day_after, 11, 30), "title": "Weekly sync (moved)"},
            ),
            200,
            "PATCH one occurrence",
        )
        offsite = dst + dt.timedelta(days=3)
        a.create_event(
            title="Offsite",
            all_day=True,
            start=offsite.isoformat(),
            end=(offsite + dt.timedelta(days=2)).isoformat(),
            time_zone="Europe/Madrid",
        )
        doctor_day = dst - dt.timedelta(days=5)
        a.create_event(
            title="Doctor appointment",
            description="cardiology, bring the results",
            location="Hospital Clinic",
            start=madrid(doctor_day, 12),
            end=madrid(doctor_day, 13),
            time_zone="Europe/Madrid",
            visibility="private",
        )
        lunch_day = dst + dt.timedelta(days=2)
        lunch = a.create_event(
            title="Lunch with Bob",
            start=madrid(lunch_day, 14),
            end=madrid(lunch_day, 15),
            time_zone="Europe/Madrid",
            attendees=[b.username],
        )
        # The feed is a window, a year back to two years ahead: an event
        # of two months ago is in it, one of two years ago is not.
        recent = dt.date.today() - dt.timedelta(days=60)
        a.create_event(
            title="Recent review",
            start=madrid(recent, 10),
            end=madrid(recent, 11),
            time_zone="Europe/Madrid",
        )
        old_day = dt.date.today() - dt.timedelta(days=2 * 365)
        a.create_event(
            title="Old review",
            start=madrid(old_day, 10),
            end=madrid(old_day, 11),
            time_zone="Europe/Madrid",
        )
        a.create_event(
            title="Old weekly",
            start=madrid(old_day, 8),
            end=madrid(old_day, 9),
            time_zone="Europe/Madrid",
            rrule="FREQ=WEEKLY;COUNT=4",
        )
        a.create_event(
            title="Weekly since long ago",
            start=madrid(old_day, 7),
            end=madrid(old_day, 7, 30),
            time_zone="Europe/Madrid",
            rrule="FREQ=WEEKLY;COUNT=60",  # its last ~310 days ago
        )

        api = api_occurrences(a.events(wfrom, wto), private_titles={"Doctor appointment"})
        c.eq(len(api), 10, "GET /v1/events: 7 occurrences, an all-day event, a private one and a lunch")

        made = expect(a.post("/v1/me/calendar-feed"), 201, "POST /v1/me/calendar-feed")
        url = made["url"]
        c.ok(url.startswith("https://"), "the feed URL is absolute https", url)
        got = request("GET", url)  # no token: the URL is the credential
        c.eq(got.status, 200, "GET the feed without a token")
        c.ok((got.header("Content-Type") or "").startswith("text/calendar"),
             "the feed is text/calendar", got.header("Content-Type"))
        text = got.text
        cal = icalendar.Calendar.from_ical(text)
        feed = feed_occurrences(cal, *window)
        c.ok(feed == api, "recurring-ical-events expands the feed to GET /v1/events's occurrences "
             "(instants across the DST change, the exception date, the moved one, all-day dates, titles)",
             diff(feed, api))

        vevents = list(cal.walk("VEVENT"))
        by_uid = {}
        for ev in vevents:
            by_uid.setdefault(str(ev["UID"]), []).append(ev)
        sv = by_uid.get(series["id"], [])
        master = [e for e in sv if "RECURRENCE-ID" not in e]
        overrides = [e for e in sv if "RECURRENCE-ID" in e]
        c.ok(len(master) == 1 and "RRULE" in master[0] and "EXDATE" in master[0],
             "the series is one VEVENT with RRULE and EXDATE (by its id as UID)",
             f"VEVENTs with UID {series['id']}: {[e.to_ical().decode() for e in sv]}")
        c.ok(len(overrides) == 1 and overrides[0].decoded("RECURRENCE-ID").astimezone(UTC)
             == dt.datetime(fifth.year, fifth.month, fifth.day, 9, tzinfo=MADRID).astimezone(UTC),
             "the moved occurrence is an override with RECURRENCE-ID = its original start",
             f"{[e.to_ical().decode() for e in overrides]}")
        if master:
            c.eq(str(master[0].get("DESCRIPTION")), "roadmap and blockers", "the series' DESCRIPTION")
            c.eq(str(master[0].get("LOCATION")), "Room 4", "the series' LOCATION")

        private = [e for e in vevents if str(e.get("SUMMARY")) == "Busy"]
        c.eq(len(private), 1, "the private event is one VEVENT titled Busy")
        for word in ("Doctor", "cardiology", "Hospital"):
            c.ok(word not in text, f"nothing of the private event's details ({word!r}) is in the feed")
        if private:
            c.ok("DESCRIPTION" not in private[0] and "LOCATION" not in private[0],
                 "the private event has no DESCRIPTION or LOCATION", private[0].to_ical().decode())

        lv = by_uid.get(lunch["id"], [None])[0]
        if c.ok(lv is not None, "the event with an attendee is in the feed"):
            org = str(lv.get("ORGANIZER", ""))
            # Emails are private: the feed's owner appears with their own
            # email, everyone else with their address here.
            c.eq(org.lower(), f"mailto:{a.email}", "its ORGANIZER is the organizer's address")
            att = lv.get("ATTENDEE", [])
            att = att if isinstance(att, list) else [att]
            parts = {str(x).lower(): str(x.params.get("PARTSTAT", "")) for x in att}
            c.eq(parts, {f"mailto:{a.email}": "ACCEPTED",
                         f"mailto:{b.username}@users.agenda.invalid": "NEEDS-ACTION"},
                 "its ATTENDEEs with PARTSTAT (organizer accepted, Bob not answered yet)")
            c.ok(b.email not in text, "Bob's email is nowhere in Ann's feed")

        bob_feed = expect(b.post("/v1/me/calendar-feed"), 201, "bob's feed")
        bt = request("GET", bob_feed["url"])
        bl = [e for e in icalendar.Calendar.from_ical(bt.text).walk("VEVENT") if str(e["UID"]) == lunch["id"]]
        c.ok(len(bl) == 1
             and str(bl[0].get("ORGANIZER", "")).lower() == f"mailto:{a.username}@users.agenda.invalid",
             "the attendee's own feed has the event, organized by Ann (by her address here)",
             bt.text[-1500:])
        c.ok(a.email not in bt.text, "Ann's email is nowhere in Bob's feed")
        titles = [str(e.get("SUMMARY")) for e in vevents]
        c.eq(titles.count("Recent review"), 1, "an event of two months ago is in the feed")
        c.eq(titles.count("Weekly since long ago"), 1,
             "a series begun two years ago that ended ten months ago is in the feed")
        c.ok("Old review" not in titles and "Old weekly" not in titles,
             "an event and a series that ended two years ago are not (the feed is a window)",
             str(sorted(set(titles))))
        check_vtimezone(c, cal, text)

        # Rotation.
        again = expect(a.post("/v1/me/calendar-feed"), 201, "POST /v1/me/calendar-feed again")
        c.ok(again["url"] != url, "a new feed URL differs from the old one", again["url"])
        old = request("GET", url)
        c.eq(old.status, 404, "the old feed URL answers 404 after rotation")
        new = request("GET", again["url"])
        c.eq(new.status, 200, "the new feed URL answers")
        if new.status == 200:
            c.ok(feed_occurrences(icalendar.Calendar.from_ical(new.text), *window) == api,
                 "the new URL serves the same agenda")
        key = again["url"].split("key=", 1)[-1]
        wrong = request("GET", again["url"].replace(key, key[:-2] + ("AA" if key[-2:] != "AA" else "BB")))
        c.eq(wrong.status, 404, "a wrong key answers 404")
        return text, api, (wfrom, wto), window


def round_trip(text, api, wq, window):
    with checks.section("the feed imported into a new account") as c:
        carol = User("feedcarol")
        r = carol.call("POST", "/v1/events/import", text, headers={"Content-Type": "text/calendar"})
        rep = expect(r, 200, "POST /v1/events/import (the feed)")
        uids = {str(e["UID"]) for e in icalendar.Calendar.from_ical(text).walk("VEVENT")}
        c.eq(rep.get("imported"), len(uids), "every event (UID) of the feed is imported")
        c.eq(rep.get("skipped"), [], "nothing is skipped")
        c.eq(sorted(e["uid"] for e in rep.get("events", [])), sorted(uids),
             "the report lists each imported UID")
        mine = api_occurrences(carol.events(*wq))
        c.ok(mine == api, "the new account's GET /v1/events has the same occurrences "
             "(times, titles; the private one a Busy block)", diff(mine, api))
        carol_feed = expect(carol.post("/v1/me/calendar-feed"), 201, "carol's feed")
        ct = request("GET", carol_feed["url"])
        if c.eq(ct.status, 200, "the new account's feed answers"):
            cf = feed_occurrences(icalendar.Calendar.from_ical(ct.text), *window)
            c.ok(cf == api, "and it expands to the same occurrences", diff(cf, api))
        r2 = carol.call("POST", "/v1/events/import", text, headers={"Content-Type": "text/calendar"})
        rep2 = expect(r2, 200, "POST /v1/events/import (the same file again)")
        c.eq(rep2.get("imported"), 0, "importing the same file again imports nothing")
        reasons = [s.get("reason", "") for s in rep2.get("skipped", [])]
        c.ok(len(reasons) == len(uids) and all("already imported" in x for x in reasons),
             "each event is skipped as already imported", str(rep2))
        c.eq(api_occurrences(carol.events(*wq)), api, "and the agenda is unchanged")


def outlook_import():
    """An .ics as Outlook and Exchange export it: Windows zone names, with
    VTIMEZONEs saying what they mean."""
    with checks.section("an Outlook export imports") as c:
        dora = User("feeddora")
        year = dt.date.today().year + 1
        start = dt.datetime(year, 6, 10, 9, tzinfo=MADRID)
        body = (
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Microsoft Corporation//Outlook 16.0 MIMEDIR//EN\r\n"
            "METHOD:PUBLISH\r\n"
            "BEGIN:VTIMEZONE\r\nTZID:W. Europe Standard Time\r\n"
            "BEGIN:STANDARD\r\nDTSTART:16011028T030000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=10\r\n"
            "TZOFFSETFROM:+0200\r\nTZOFFSETTO:+0100\r\nEND:STANDARD\r\n"
            "BEGIN:DAYLIGHT\r\nDTSTART:16010325T020000\r\nRRULE:FREQ=YEARLY;BYDAY=-1SU;BYMONTH=3\r\n"
            "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n"
            "BEGIN:VEVENT\r\nUID:040000008200E00074C5B7101A82E00800000000OUTLOOK" + dora.username + "\r\n"
            "DTSTAMP:20260101T000000Z\r\n"
            f"DTSTART;TZID=W. Europe Standard Time:{start.strftime('%Y%m%dT%H%M%S')}\r\n"
            f"DTEND;TZID=W. Europe Standard Time:{(start + dt.timedelta(hours=1)).strftime('%Y%m%dT%H%M%S')}\r\n"
            "SUMMARY:Quarterly review (Outlook)\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
        )
        r = dora.call("POST", "/v1/events/import", body, headers={"Content-Type": "text/calendar"})
        c.ok(r.status == 200 and r.json.get("imported") == 1,
             "an event with TZID=W. Europe Standard Time (and its VTIMEZONE) is imported", str(r))
        its = [it for it in dora.events(z(start - dt.timedelta(days=1)), z(start + dt.timedelta(days=1)))
               if it["title"] == "Quarterly review (Outlook)"]
        c.ok(len(its) == 1 and z(utc(its[0]["start"])) == z(start),
             f"at {z(start)} (09:00 in Madrid, summer time)", str(its))


def group_feed():
    with checks.section("a hierarchical group's feed as each member sees it") as c:
        year = dt.date.today().year + 1
        day = dt.date(year, 5, 3)
        boss, sub, pat = User("feedboss"), User("feedsub"), User("feedpat")
        g = expect(boss.post("/v1/groups", {"name": "Feed team", "kind": "hierarchical"}), 201, "create group")["id"]
        for who, rank in ((sub, 1), (pat, 2)):
            inv = expect(boss.post(f"/v1/groups/{g}/invitations", {"username": who.username, "rank": rank}),
                         201, f"invite {who.username}")["id"]
            expect(who.post(f"/v1/invitations/{inv}/accept"), 200, f"{who.username} accepts")
        sub.create_event(title="Sub planning", description="quarter plan", start=madrid(day, 9),
                         end=madrid(day, 10), time_zone="Europe/Madrid")
        pat.create_event(title="Pat therapy", description="do not share", start=madrid(day, 11),
                         end=madrid(day, 12), time_zone="Europe/Madrid", visibility="private")
        boss.create_event(title="Boss one-on-one", start=madrid(day, 13), end=madrid(day, 14),
                          time_zone="Europe/Madrid")
        boss.create_event(title="Team meeting", start=madrid(day, 15), end=madrid(day, 16),
                          time_zone="Europe/Madrid", group_id=g)
        window = (dt.datetime.combine(day, dt.time(), UTC), dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), UTC))

        def seen(user):
            made = expect(user.post(f"/v1/groups/{g}/calendar-feed"), 201, f"{user.username}: group feed")
            r = request("GET", made["url"])
            expect(r, 200, f"{user.username}: GET the group feed")
            return r.text, {(o[1], o[3]) for o in feed_occurrences(icalendar.Calendar.from_ical(r.text), *window)}

        def at(h):
            return z(dt.datetime(day.year, day.month, day.day, h, tzinfo=MADRID))

        text, got = seen(boss)
        want = {
            (at(9), "Sub planning"),
            (at(11), f"Busy ({pat.username})"),
            (at(13), "Boss one-on-one"),
            (at(15), "Team meeting"),
        }
        c.eq(got, want, "the superior sees the subordinate's event in full, the private one as Busy (pat)")
        c.ok("do not share" not in text and "therapy" not in text,
             "nothing of the private event's details is in the superior's group feed")
        c.ok("quarter plan" in text, "the subordinate's event comes with its description")

        text, got = seen(sub)
        want = {
            (at(9), "Sub planning"),
            (at(11), f"Busy ({pat.username})"),
            (at(13), f"Busy ({boss.username})"),
            (at(15), "Team meeting"),
        }
        c.eq(got, want, "the subordinate sees the superior's own event as Busy (boss), the private one as Busy")
        c.ok("Boss one-on-one" not in text and "therapy" not in text,
             "nothing of events the subordinate may not see is in their group feed")
        outsider = User("feedout")
        r = outsider.post(f"/v1/groups/{g}/calendar-feed")
        c.eq(r.status, 404, "someone outside the group gets no feed of it (404)")

        # A member's group feed ends with the membership, also if they
        # come back later.
        url = expect(pat.post(f"/v1/groups/{g}/calendar-feed"), 201, "pat: group feed")["url"]
        expect(request("GET", url), 200, "pat's group feed while a member")
        expect(pat.call("DELETE", f"/v1/groups/{g}/members/{pat.id}"), 204, "pat leaves the group")
        c.eq(request("GET", url).status, 404, "a member's group feed URL is 404 once they left")
        inv = expect(boss.post(f"/v1/groups/{g}/invitations", {"username": pat.username, "rank": 2}),
                     201, "invite pat again")["id"]
        expect(pat.post(f"/v1/invitations/{inv}/accept"), 200, "pat rejoins")
        c.eq(request("GET", url).status, 404, "and stays 404 when they rejoin")


try:
    text, api, wq, window = person_feed()
except Exception:
    text = None
if text:
    round_trip(text, api, wq, window)
outlook_import()
group_feed()
checks.finish()
