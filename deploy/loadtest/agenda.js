// Artillery processor for agenda.yml: what each virtual user (one person's
// visit) decides before its first request, and the invitations VUs leave
// each other. The choices are agenda-bench's (tests/src/bin/agenda_bench.rs,
// `make bench-load`), so both tools put the same load on the system.
//
// prepare (beforeScenario) sets on context.vars:
//   week_from, week_to   one week, at random, of the four-week window (the
//                        week view a person opens; the window holds the
//                        events the load creates, so the views are not empty)
//   event_start, event_end  a 30-minute slot, 08:00..17:30 UTC, on a day of
//                        the window, at random
//   attendee             another person of people.csv, at random (the CSV's
//                        own attendee column when the file cannot be read)
//   rsvp                 accepted, tentative or declined, at random
//   think_after_login, think_after_week, think_after_create
//                        the seed's think times (3 s, 10 s, 5 s) times
//                        AGENDA_THINK_SCALE (default 1; run.sh
//                        --think-scale), as "NNNms" strings
// remember (a function step after "create"): the event just made waits
//   for its attendee's answer.
// pick_invitation (before "rsvp"): answer_event, the newest event a VU
//   invited this person to and nobody answered yet, else the one setup.sh
//   made for them (CSV column "invite"). As in agenda-bench; but Artillery
//   runs VUs in worker threads that share nothing, so a worker hands on
//   only the invitations its own VUs made.
//
// The window: AGENDA_WINDOW_START, a Monday 00:00 UTC in RFC 3339 (default
// 2027-01-04T00:00:00Z, agenda-bench's), or "current" for this week's.
// setup.sh reads the same variable for the invitations it makes.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const DAY_MS = 86400 * 1000;
const WEEKS = 4;
/** Invitations remembered per person; older ones are never answered. */
const PENDING_CAP = 64;

function numberFromEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0) throw new Error(`${name} must be a number >= 0, got ${raw}`);
  return v;
}

const thinkScale = numberFromEnv('AGENDA_THINK_SCALE', 1);

/** RFC 3339 in UTC, whole seconds (what the API documents). */
function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Monday 00:00 UTC of the week holding `ms`. */
function mondayOf(ms) {
  const d = new Date(ms);
  const midnight = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate());
  return midnight - ((d.getUTCDay() + 6) % 7) * DAY_MS;
}

function windowStart() {
  const raw = process.env.AGENDA_WINDOW_START || '2027-01-04T00:00:00Z';
  if (raw === 'current') return mondayOf(Date.now());
  const ms = Date.parse(raw);
  if (Number.isNaN(ms) || mondayOf(ms) !== ms) {
    throw new Error(`AGENDA_WINDOW_START must be a Monday 00:00 UTC (RFC 3339) or "current", got ${raw}`);
  }
  return ms;
}

const WINDOW = windowStart();

/** The usernames of people.csv (beside this file), or [] when unreadable. */
function loadPeople() {
  try {
    const lines = fs.readFileSync(path.join(__dirname, 'people.csv'), 'utf8').trim().split('\n');
    return lines.slice(1).map((l) => l.split(',')[0]).filter((u) => u);
  } catch {
    return [];
  }
}

const people = loadPeople();
/** username -> ids of events VUs of this worker invited them to. */
const pending = new Map();

function randomInt(n) {
  return Math.floor(Math.random() * n);
}

function think(seconds) {
  return `${Math.round(seconds * thinkScale * 1000)}ms`;
}

function prepare(context, _events, done) {
  const vars = context.vars;
  const week = WINDOW + randomInt(WEEKS) * 7 * DAY_MS;
  vars.week_from = rfc3339(week);
  vars.week_to = rfc3339(week + 7 * DAY_MS);

  const start = WINDOW + randomInt(WEEKS * 7) * DAY_MS + (16 + randomInt(20)) * 30 * 60 * 1000;
  vars.event_start = rfc3339(start);
  vars.event_end = rfc3339(start + 30 * 60 * 1000);

  if (people.length >= 2) {
    let other = people[randomInt(people.length)];
    while (other === vars.username) other = people[randomInt(people.length)];
    vars.attendee = other;
  }
  vars.rsvp = ['accepted', 'tentative', 'declined'][randomInt(3)];

  vars.think_after_login = think(3);
  vars.think_after_week = think(10);
  vars.think_after_create = think(5);
  return done();
}

function remember(context, _events, done) {
  const { attendee, event_id: id } = context.vars;
  if (attendee && id) {
    const list = pending.get(attendee) || [];
    if (list.length >= PENDING_CAP) list.shift();
    list.push(id);
    pending.set(attendee, list);
  }
  return done();
}

function pick_invitation(context, _events, done) {
  const list = pending.get(context.vars.username);
  context.vars.answer_event = (list && list.pop()) || context.vars.invite;
  return done();
}

module.exports = { prepare, remember, pick_invitation, mondayOf, rfc3339, WINDOW, WEEKS };
