"""schemathesis hooks for Agenda's public API (loaded by run.sh).

Authentication: every case carries `Authorization: Bearer <token>` of one
registered user (AGENDA_TOKEN, or a user registered here when it is
empty). `DELETE /v1/me` and `POST /v1/auth/logout` end the account or
the sessions they are sent for, so each of their cases gets a user of its
own, registered for that case (a logout's refresh token is that user's).

The rules JSON Schema cannot express (the document says them in words)
are applied here to the schema-valid ("positive") cases only, so that
every one of those is a request the API must accept; schema-invalid cases
go out as generated:
- an event's `start` and `end` dates exactly when it is all-day (and said
  outright in a PATCH that gives either), its `end` after its `start` and
  at most 31 days later, a
  window's `to` after `from` and at most 366 days later (the audit log's
  `to` after its `from`);
- an rrule is one of a few rules that occur and are not too dense (which
  rules are accepted depends on the rule's meaning, beyond a pattern);
- names that must be existing users (attendees, invitees) name users
  registered here, and `parent_id` a group of the main user;
- a new password is not one of the common ones the service refuses
  (its list, services/calendar/src/common-passwords.txt, compared
  case-insensitively; too long to be an `enum` in the document).
Changing nothing else keeps every other generated value as it was.

`GET /v1/stream` is a WebSocket handshake: a 101 hands the connection to
the WebSocket, so it is closed at once rather than reused for HTTP.

`POST /v1/events/import` takes an iCalendar file (`text/calendar`): the
generated text goes out as it is (a serializer for the type), and a
positive case is given a small valid file with a fresh UID. The feed
(`GET /v1/calendar.ics`) answers `text/calendar`, read as text.
"""

import datetime as dt
import hashlib
import os
import pathlib
import threading
import time
import uuid

import requests
import schemathesis

URL = os.environ["AGENDA_URL"].rstrip("/")
CA = os.environ["AGENDA_CA"]
PASSWORD = "Correct-Horse-Battery-7"

COMMON_PASSWORDS = frozenset(
    line
    for line in (
        pathlib.Path(__file__).resolve().parents[2] / "services/calendar/src/common-passwords.txt"
    )
    .read_text()
    .splitlines()
    if line and not line.startswith("#")
)

MAX_EVENT = dt.timedelta(days=31)
MAX_WINDOW = dt.timedelta(days=366)

# Rules that occur from any start in any zone, hourly at the densest.
RRULES = [
    "FREQ=DAILY;COUNT=3",
    "FREQ=WEEKLY;BYDAY=MO,WE,FR;COUNT=12",
    "FREQ=WEEKLY",
    "FREQ=MONTHLY;INTERVAL=2;COUNT=6",
    "RRULE:FREQ=YEARLY;COUNT=2",
    "FREQ=HOURLY;INTERVAL=6;COUNT=8",
    "freq=daily;interval=3",
]


def _call(method: str, path: str, token=None, body=None) -> requests.Response:
    """One request to the API; a 429 or 503 is waited out (a few seconds)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    for _ in range(5):
        # `verify` on each request: a Session's own is overridden by
        # REQUESTS_CA_BUNDLE when that is set.
        r = requests.request(
            method, f"{URL}{path}", json=body, headers=headers, verify=CA, timeout=30
        )
        if r.status_code not in (429, 503):
            return r
        time.sleep(min(float(r.headers.get("Retry-After", "1") or 1), 5.0))
    return r


def register() -> tuple[str, str, str]:
    """Registers a fresh user; returns (username, access token, refresh token)."""
    name = "st-" + uuid.uuid4().hex[:20]
    r = _call(
        "POST",
        "/v1/auth/register",
        body={"username": name, "email": f"{name}@example.org", "password": PASSWORD},
    )
    if r.status_code != 201:
        raise RuntimeError(f"register {name}: {r.status_code} {r.text}")
    r = _call("POST", "/v1/auth/login", body={"username": name, "password": PASSWORD})
    if r.status_code != 200:
        raise RuntimeError(f"login {name}: {r.status_code} {r.text}")
    reply = r.json()
    return name, reply["access_token"], reply.get("refresh_token", "")


class _State:
    """The main user and what positive cases refer to, made on first use."""

    def __init__(self):
        self.lock = threading.Lock()
        self.token = os.environ.get("AGENDA_TOKEN") or None
        self.others: list[str] = []
        self.parent: str | None = None

    def main_token(self) -> str:
        with self.lock:
            if self.token is None:
                self.token = register()[1]
            return self.token

    def other_users(self) -> list[str]:
        """Two users besides the main one (attendees, invitees)."""
        with self.lock:
            while len(self.others) < 2:
                self.others.append(register()[0])
            return list(self.others)

    def parent_group(self) -> str:
        """A group of the main user's (made again if a case deleted it)."""
        token = self.main_token()
        with self.lock:
            if self.parent is not None:
                if _call("GET", f"/v1/groups/{self.parent}", token).status_code == 200:
                    return self.parent
            r = _call("POST", "/v1/groups", token, {"name": "st parent", "kind": "hierarchical"})
            if r.status_code != 201:
                raise RuntimeError(f"create a parent group: {r.status_code} {r.text}")
            self.parent = r.json()["id"]
            return self.parent


STATE = _State()

# Operations that end what they are sent for.
ENDING = {("DELETE", "/v1/me"), ("POST", "/v1/auth/logout")}
# Refresh tokens of the users made for them, by access token.
REFRESH: dict[str, str] = {}


@schemathesis.auth(refresh_interval=None, retry_on=[])
class Bearer:
    """The main user's token; a fresh user's where the case ends it."""

    def get(self, case, ctx):
        if (case.method.upper(), case.operation.path) in ENDING:
            _, access, refresh = register()
            REFRESH[access] = refresh
            return access
        return STATE.main_token()

    def set(self, case, data, ctx):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"


# ---- the rules of positive cases -------------------------------------------


def _pick(options: list, seed: object):
    """One of `options`, the same for the same seed (runs stay reproducible)."""
    digest = hashlib.sha256(repr(seed).encode()).digest()
    return options[int.from_bytes(digest[:4], "big") % len(options)]


def _parse(value):
    if not isinstance(value, str):
        return None
    try:
        t = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t if t.tzinfo is not None else None


def _after(first: dt.datetime, longest: dt.timedelta) -> str | None:
    """A time after `first`, at most `longest` later (None: none fits)."""
    for step in (dt.timedelta(hours=1), dt.timedelta(seconds=1)):
        if step <= longest:
            try:
                return (first + step).isoformat()
            except OverflowError:
                continue
    return None


def _before(last: dt.datetime) -> str | None:
    try:
        return (last - dt.timedelta(hours=1)).isoformat()
    except OverflowError:
        return None


def _span(obj: dict, first: str, last: str, longest: dt.timedelta, both: bool) -> None:
    """`obj[last]` after `obj[first]`, at most `longest` later. With only
    one of them present (a PATCH), the other is added next to it: the
    stored one may be anywhere."""
    a, b = _parse(obj.get(first)), _parse(obj.get(last))
    if a is not None and b is not None:
        if not (a < b <= a + longest):
            later = _after(a, longest)
            if later is not None:
                obj[last] = later
            else:
                obj[first] = _before(a) or obj[first]
                obj[last] = a.isoformat()
    elif not both and a is not None and obj.get(last) is None:
        later = _after(a, longest)
        if later is not None:
            obj[last] = later
    elif not both and b is not None and obj.get(first) is None:
        earlier = _before(b)
        if earlier is not None:
            obj[first] = earlier


def _rrule(body: dict) -> None:
    r = body.get("rrule")
    if isinstance(r, str) and r.strip():
        body["rrule"] = _pick(RRULES, r)


def _date(value):
    """A `YYYY-MM-DD` value as a date (None: not one)."""
    if not isinstance(value, str) or len(value.strip()) != 10:
        return None
    try:
        return dt.date.fromisoformat(value.strip())
    except ValueError:
        return None


def _day_span(obj: dict) -> None:
    """An all-day event's `end` (exclusive) after its `start`, at most 31
    days later; with one of them only (a PATCH), the other next to it."""
    a, b = _date(obj.get("start")), _date(obj.get("end"))
    try:
        if a is not None and (b is None or not (a < b <= a + MAX_EVENT)):
            obj["end"] = (a + dt.timedelta(days=1)).isoformat()
        elif a is None and b is not None:
            obj["start"] = (b - dt.timedelta(days=1)).isoformat()
    except OverflowError:
        obj["start"], obj["end"] = "2030-01-01", "2030-01-02"


def _all_day(body: dict, patch: bool) -> bool:
    """Dates exactly when `all_day` (the kind of the first of `start` and
    `end` given decides, the other is made the same); in a PATCH that gives
    either, `all_day` is said outright (the stored event may be of the
    other kind), and a bare `all_day: false` goes (a timed event needs
    both times). Whether the event is all-day."""
    given = [body[k] for k in ("start", "end") if isinstance(body.get(k), str)]
    if not given:
        if patch and body.get("all_day") is False:
            body["all_day"] = None
        return False
    days = _date(given[0]) is not None
    for k in ("start", "end"):
        v = body.get(k)
        if not isinstance(v, str):
            continue
        if days and _date(v) is None:
            t = _parse(v)
            body[k] = t.date().isoformat() if t is not None else given[0]
        elif not days and _date(v) is not None:
            body[k] = f"{_date(v).isoformat()}T00:00:00+00:00"
    if days or patch or body.get("all_day") is not None:
        body["all_day"] = days
    return days


def _fix_event(body, *, patch: bool) -> None:
    if not isinstance(body, dict):
        return
    if _all_day(body, patch):
        _day_span(body)
    else:
        _span(body, "start", "end", MAX_EVENT, both=not patch)
    _rrule(body)
    people = body.get("attendees")
    if isinstance(people, list) and people:
        others = STATE.other_users()
        body["attendees"] = [_pick(others, (i, name)) for i, name in enumerate(people)]


def _fix_window(case, *, defaults: bool = False) -> None:
    """`defaults`: a missing end defaults to a time of the server's (the
    audit log's now, 30 days ago), so it is given next to the other."""
    if isinstance(case.query, dict):
        _span(case.query, "from", "to", MAX_WINDOW, both=not defaults)


def _fix_group(body) -> None:
    if isinstance(body, dict) and isinstance(body.get("parent_id"), str):
        body["parent_id"] = STATE.parent_group()


def _fix_invitation(body) -> None:
    if isinstance(body, dict) and isinstance(body.get("username"), str):
        body["username"] = _pick(STATE.other_users(), body["username"])


def _fix_password(body) -> None:
    p = body.get("password") if isinstance(body, dict) else None
    if isinstance(p, str) and p.lower() in COMMON_PASSWORDS:
        body["password"] = p + "\u00e9"  # no entry ends in é


def _fix_logout(case) -> None:
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("refresh_token"), str):
        token = (case.headers or {}).get("Authorization", "").removeprefix("Bearer ")
        if REFRESH.get(token):
            body["refresh_token"] = REFRESH[token]


# Text out as it is, as for text/plain.
schemathesis.serializer.alias("text/calendar", "text/plain")


@schemathesis.deserializer("text/calendar")
def _ics_in(ctx, response):
    return response.content.decode("utf-8", "replace")


def _ics_file() -> str:
    return (
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//schemathesis//EN\r\n"
        f"BEGIN:VEVENT\r\nUID:{uuid.uuid4()}@schemathesis\r\n"
        "DTSTART:20310105T090000Z\r\nDTEND:20310105T100000Z\r\n"
        "SUMMARY:Imported\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )


def _positive(case) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _close_upgraded(response, *args, **kwargs):
    """After a 101 the connection speaks WebSocket: never reuse it."""
    if response.status_code == 101:
        conn = getattr(response.raw, "_connection", None) or getattr(
            response.raw, "connection", None
        )
        if conn is not None:
            conn.close()
    return response


@schemathesis.hook
def before_call(context, case, kwargs):
    method, path = case.method.upper(), case.operation.path
    if (method, path) == ("GET", "/v1/stream"):
        kwargs["hooks"] = {"response": [_close_upgraded]}
    if not _positive(case):
        return
    if (method, path) == ("POST", "/v1/events"):
        _fix_event(case.body, patch=False)
    elif (method, path) == ("PATCH", "/v1/events/{id}"):
        _fix_event(case.body, patch=True)
    elif method == "GET" and path in (
        "/v1/events",
        "/v1/events/search",
        "/v1/freebusy",
        "/v1/groups/{id}/agenda",
    ):
        _fix_window(case)
    elif (method, path) == ("GET", "/v1/admin/audit"):
        _fix_window(case, defaults=True)
    elif (method, path) == ("POST", "/v1/groups"):
        _fix_group(case.body)
    elif (method, path) == ("POST", "/v1/groups/{id}/invitations"):
        _fix_invitation(case.body)
    elif (method, path) in (("POST", "/v1/auth/register"), ("PATCH", "/v1/me")):
        _fix_password(case.body)
    elif (method, path) == ("POST", "/v1/auth/logout"):
        _fix_logout(case)
    elif (method, path) == ("POST", "/v1/events/import"):
        case.body = _ics_file()
