"""What the calendar-app scripts share: a small client of Agenda's JSON API
(standard library only, so it runs in either virtualenv) and a record of
checks that keeps going after a failure and prints every one of them.

AGENDA_URL: the gateway's base URL (https://127.0.0.1:PORT).
AGENDA_CA: the CA file its certificate chains to.
"""

import base64
import json
import os
import secrets
import ssl
import sys
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

PASSWORD = "correct-horse-calendar-apps-1"


def env(name):
    v = os.environ.get(name)
    if not v:
        sys.exit(f"set {name} (AGENDA_URL: the gateway's https:// base, AGENDA_CA: its CA file)")
    return v


BASE = env("AGENDA_URL").rstrip("/")
CA = env("AGENDA_CA")
SSL = ssl.create_default_context(cafile=CA)


def unique(prefix):
    """A username no other run has: prefix + 8 hex digits."""
    return f"{prefix}{secrets.token_hex(4)}"


class Reply:
    def __init__(self, method, url, status, headers, body, sent=None):
        self.method = method
        self.url = url
        self.status = status
        self.headers = headers
        self.raw = body
        self.sent = sent
        self.text = body.decode("utf-8", "replace")
        try:
            self.json = json.loads(self.text) if self.text else None
        except ValueError:
            self.json = None

    def header(self, name):
        return self.headers.get(name)

    def __str__(self):
        sent = ""
        if self.sent:
            sent = "\n  body sent: " + self.sent[:1500]
        return (
            f"{self.method} {self.url} -> {self.status}\n  body: {self.text[:3000]}\n"
            f"  headers: {dict(self.headers)}{sent}"
        )


def request(method, url, body=None, headers=None, token=None, basic=None, timeout=60):
    """One HTTP request; a Reply for any status (transport errors raise)."""
    if not url.startswith("http"):
        url = BASE + url
    headers = dict(headers or {})
    data = None
    sent = None
    if body is not None:
        if isinstance(body, (dict, list)):
            data = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = body
        sent = data.decode("utf-8", "replace")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if basic:
        pair = f"{basic[0]}:{basic[1]}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None

    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=SSL), NoRedirect()
    )
    try:
        with opener.open(req, timeout=timeout) as resp:
            return Reply(method, url, resp.status, resp.headers, resp.read(), sent)
    except urllib.error.HTTPError as e:
        return Reply(method, url, e.code, e.headers, e.read(), sent)


class ApiError(AssertionError):
    pass


def expect(reply, status, what):
    """The JSON body of a reply that must have `status`, else ApiError with
    the whole exchange."""
    if reply.status != status:
        raise ApiError(f"{what}: expected {status}, got:\n  {reply}")
    return reply.json


class User:
    """A registered, logged-in account."""

    def __init__(self, prefix, time_zone="Europe/Madrid", add_me="anyone"):
        self.username = unique(prefix)
        self.email = f"{self.username}@example.com"
        body = {
            "username": self.username,
            "email": self.email,
            "password": PASSWORD,
            "time_zone": time_zone,
            "add_me": add_me,
        }
        u = expect(request("POST", "/v1/auth/register", body), 201, f"register {self.username}")
        self.id = u["id"]
        login = expect(
            request("POST", "/v1/auth/login", {"username": self.username, "password": PASSWORD}),
            200,
            f"login {self.username}",
        )
        self.token = login["access_token"]

    def call(self, method, path, body=None, headers=None):
        return request(method, path, body=body, headers=headers, token=self.token)

    def get(self, path):
        return self.call("GET", path)

    def post(self, path, body=None):
        return self.call("POST", path, body if body is not None else {})

    def patch(self, path, body):
        return self.call("PATCH", path, body)

    def delete(self, path):
        return self.call("DELETE", path)

    def create_event(self, **fields):
        """POST /v1/events; the event."""
        ev = expect(self.post("/v1/events", fields), 201, f"{self.username}: create event {fields}")
        return ev["event"]

    def events(self, start, end):
        """GET /v1/events over [start, end) (RFC 3339): every occurrence."""
        q = urllib.parse.urlencode({"from": start, "to": end})
        body = expect(self.get(f"/v1/events?{q}"), 200, f"{self.username}: GET /v1/events?{q}")
        return body["items"]

    def app_password(self, name="calendar app"):
        """A new app password: (id, password)."""
        ap = expect(self.post("/v1/me/app-passwords", {"name": name}), 201, "create app password")
        return ap["id"], ap["password"]


class Checks:
    """Checks that are recorded, printed and counted; a failing one does
    not stop the run (each section stops at its first exception)."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = []
        self.started = time.monotonic()

    def ok(self, cond, what, evidence=""):
        if cond:
            self.passed += 1
            print(f"  ok    {what}", flush=True)
        else:
            msg = what + (f"\n        {evidence}" if evidence else "")
            self.failed.append(msg)
            print(f"  FAIL  {msg}", flush=True)
        return cond

    def eq(self, got, want, what):
        return self.ok(got == want, what, f"got:  {got!r}\n        want: {want!r}")

    def section(self, title):
        return _Section(self, title)

    def finish(self):
        took = time.monotonic() - self.started
        print(
            f"\n{self.name}: {self.passed} checks passed, {len(self.failed)} failed ({took:.0f} s)",
            flush=True,
        )
        for i, f in enumerate(self.failed, 1):
            print(f"--- failure {i}: {f}", flush=True)
        sys.exit(1 if self.failed else 0)


class _Section:
    def __init__(self, checks, title):
        self.checks = checks
        self.title = title

    def __enter__(self):
        print(f"\n== {self.title}", flush=True)
        return self.checks

    def __exit__(self, kind, value, tb):
        if kind is None:
            return False
        if kind is KeyboardInterrupt:
            return False
        text = "".join(traceback.format_exception(kind, value, tb))
        self.checks.failed.append(f"[{self.title}] stopped by an exception:\n{text}")
        print(f"  FAIL  [{self.title}] stopped by an exception:\n{text}", flush=True)
        return True


def wait_until(what, fn, deadline=20.0, every=0.3):
    """Polls fn() until it returns a true value (returned) or the deadline
    passes (then the last value, false)."""
    end = time.monotonic() + deadline
    while True:
        v = fn()
        if v or time.monotonic() >= end:
            return v
        time.sleep(every)
