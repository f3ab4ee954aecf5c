// "Find a time": the busy time of the organizer and the people chosen for
// an event on one day (GET /v1/freebusy), each on a time line labelled in
// that person's own time zone, and the first free slots of the event's
// length within everyone's working hours (08:00–20:00 in each person's
// zone). Picking a slot hands it back to the event dialog.
//
// The day is a day in the event's time zone (the zone its start and end
// are read in); Previous day / Next day (or the date field) step through
// days. Its own <dialog>, built once, over the event dialog.

import { get } from './api.js';
import { currentUser } from './session.js';
import { DateTime, formatRange } from './time.js';
import { h, replace } from './ui.js';

const WORK_START = 8; // working hours, in each person's own zone
const WORK_END = 20;
const STEP_MIN = 30; // proposals start on the hour or the half hour
const MAX_SLOTS = 5;
const TICK_HOURS = 3;

let ui = null;
let state = null; // { names, zone, day, minutes, ignore, onPick, returnFocus, seq }
const zoneOf = new Map(); // username (lower case) -> IANA zone

function build() {
  const c = {};
  c.summary = h('p', { class: 'hint', id: 'find-time-summary' });
  c.date = h('input', { type: 'date', id: 'find-time-day', required: true });
  c.prev = h('button', { type: 'button', class: 'btn', onclick: () => step(-1) }, '‹ Previous day');
  c.next = h('button', { type: 'button', class: 'btn', onclick: () => step(1) }, 'Next day ›');
  c.status = h('p', { class: 'find-time-status', role: 'status', 'aria-live': 'polite' });
  c.slots = h('ul', { class: 'slots', 'aria-labelledby': 'find-time-slots-title' });
  c.rows = h('ul', { class: 'timelines', 'aria-labelledby': 'find-time-busy-title' });
  c.dialog = h('dialog', { id: 'find-time-dialog', class: 'dialog', 'aria-labelledby': 'find-time-title', 'aria-describedby': 'find-time-summary' },
    h('h2', { id: 'find-time-title', text: 'Find a time' }),
    c.summary,
    h('div', { class: 'day-nav', role: 'group', 'aria-label': 'Choose the day' },
      c.prev,
      h('label', { for: 'find-time-day', text: 'Day' }), c.date,
      c.next),
    c.status,
    h('section', { class: 'find-time-slots' },
      h('h3', { id: 'find-time-slots-title', text: 'First free slots' }),
      c.slots),
    h('section', { class: 'find-time-busy' },
      h('h3', { id: 'find-time-busy-title', text: 'Busy time, in each person’s time zone' }),
      c.rows),
    h('div', { class: 'dialog-actions' }, h('span', { class: 'spacer' }),
      h('button', { type: 'button', class: 'btn', onclick: () => c.dialog.close() }, 'Close')));
  c.date.addEventListener('change', () => {
    const d = DateTime.fromISO(c.date.value, { zone: state.zone });
    if (d.isValid) { state.day = d.startOf('day'); load(); }
  });
  c.dialog.addEventListener('close', () => {
    const back = state?.returnFocus;
    state = null;
    back?.focus?.();
  });
  document.body.append(c.dialog);
  return c;
}

/**
 * Opens the finder. `names`: usernames (the organizer first); `zone`: the
 * event's zone; `day`: a DateTime on the day to show; `minutes`: the
 * event's length; `ignore`: [{start, end}] (the event's own saved time, not
 * counted as busy); `onPick(start, end)` (DateTimes); focus goes back to
 * `returnFocus` on close.
 */
export function openFindTime({ names, zone, day, minutes, ignore = [], onPick, returnFocus }) {
  ui ||= build();
  state = { names, zone, day: day.setZone(zone).startOf('day'), minutes, ignore, onPick, returnFocus, seq: 0 };
  const long = minutes % 60 ? `${minutes} minutes` : `${minutes / 60} hour${minutes === 60 ? '' : 's'}`;
  ui.summary.textContent = `${long} for ${names.join(', ')}, within everyone’s working hours (${pad(WORK_START)}:00–${WORK_END}:00 in each person’s time zone). Times in ${zone}.`;
  ui.dialog.showModal();
  ui.next.focus();
  load();
}

export const isFindTimeOpen = () => Boolean(ui?.dialog.open);

function step(days) {
  state.day = state.day.plus({ days });
  load();
}

const pad = (n) => String(n).padStart(2, '0');

/** Each person's zone: the organizer's from the session, others' from GET /v1/users?q=. */
async function zonesFor(names) {
  const me = currentUser();
  if (me) zoneOf.set(me.username.toLowerCase(), me.time_zone || 'UTC');
  await Promise.all(names.filter((n) => !zoneOf.has(n.toLowerCase())).map(async (n) => {
    try {
      const r = await get('/v1/users', { q: n });
      const u = r.items.find((x) => x.username.toLowerCase() === n.toLowerCase());
      if (u) zoneOf.set(n.toLowerCase(), u.time_zone || 'UTC');
    } catch { /* shown in UTC, said so below */ }
  }));
}

async function load() {
  const s = state;
  const seq = (s.seq += 1);
  const from = s.day;
  const to = s.day.plus({ days: 1 });
  ui.date.value = from.toISODate();
  ui.status.textContent = `Loading ${from.toLocaleString({ weekday: 'long', day: 'numeric', month: 'long' })}…`;
  ui.status.classList.remove('form-error');
  ui.slots.setAttribute('aria-busy', 'true');
  let busy;
  try {
    const [r] = await Promise.all([
      get('/v1/freebusy', { users: s.names.join(','), from: from.toUTC().toISO({ suppressMilliseconds: true }), to: to.toUTC().toISO({ suppressMilliseconds: true }) }),
      zonesFor(s.names),
    ]);
    busy = r.users || {};
  } catch (e) {
    if (state !== s || seq !== s.seq) return;
    ui.status.textContent = `Could not load the busy times: ${e.message}`;
    ui.status.classList.add('form-error');
    replace(ui.slots);
    replace(ui.rows);
    ui.slots.removeAttribute('aria-busy');
    return;
  }
  if (state !== s || seq !== s.seq) return; // a newer day was asked for meanwhile
  const people = s.names.map((name) => {
    const key = Object.keys(busy).find((k) => k.toLowerCase() === name.toLowerCase());
    const zone = zoneOf.get(name.toLowerCase()) || 'UTC';
    const intervals = (busy[key] || [])
      .map((b) => ({ start: DateTime.fromISO(b.start), end: DateTime.fromISO(b.end) }))
      .filter((b) => !s.ignore.some((x) => +x.start === +b.start && +x.end === +b.end))
      .filter((b) => b.end > from && b.start < to);
    return { name: key || name, zone, busy: intervals, work: workHours(zone, from, to) };
  });
  const slots = freeSlots(people, from, to, s.minutes);
  const day = from.toLocaleString({ weekday: 'long', day: 'numeric', month: 'long' });
  ui.status.textContent = slots.length
    ? `${day}: ${slots.length === MAX_SLOTS ? `the first ${MAX_SLOTS}` : slots.length} free slot${slots.length > 1 ? 's' : ''}.`
    : `${day}: no free slot of that length within everyone’s working hours${from < DateTime.now() ? ' (from now on)' : ''}. Try another day.`;
  replace(ui.slots, slots.map((x) => h('li', {},
    h('button', {
      type: 'button', class: 'btn slot', onclick: () => pick(x),
      dataset: { start: x.start.toUTC().toISO({ suppressMilliseconds: true }), end: x.end.toUTC().toISO({ suppressMilliseconds: true }) },
    }, formatRange(x.start.toISO(), x.end.toISO(), s.zone)))));
  ui.slots.removeAttribute('aria-busy');
  replace(ui.rows, people.map((p) => row(p, from, to)));
}

/** A person's working hours ([{start, end}]) that fall in [from, to). */
function workHours(zone, from, to) {
  const out = [];
  for (let d = from.setZone(zone).startOf('day').minus({ days: 1 }); d < to; d = d.plus({ days: 1 })) {
    const start = DateTime.max(d.set({ hour: WORK_START }), from);
    const end = DateTime.min(d.set({ hour: WORK_END }), to);
    if (end > start) out.push({ start, end });
  }
  return out;
}

/** The first MAX_SLOTS starts (every STEP_MIN, from now on) everyone is free and working for. */
function freeSlots(people, from, to, minutes) {
  const out = [];
  const now = DateTime.now();
  for (let start = from; out.length < MAX_SLOTS; start = start.plus({ minutes: STEP_MIN })) {
    const end = start.plus({ minutes });
    if (end > to) break;
    if (start < now) continue;
    const ok = people.every((p) => p.work.some((w) => w.start <= start && end <= w.end)
      && !p.busy.some((b) => b.start < end && start < b.end));
    if (ok) out.push({ start, end });
  }
  return out;
}

/** One person's row: the day as a bar (working hours lighter, busy dark), labelled in their zone, and the same as text. */
function row(p, from, to) {
  const span = to - from;
  const at = (t) => `${Math.max(0, Math.min(100, ((t - from) / span) * 100))}%`;
  const block = (cls, x) => {
    const el = h('div', { class: cls });
    el.style.left = at(x.start);
    el.style.width = `calc(${at(x.end)} - ${at(x.start)})`;
    return el;
  };
  const ticks = [];
  for (let t = from; t < to; t = t.plus({ hours: TICK_HOURS })) {
    const tick = h('span', { class: 'tick', text: t.setZone(p.zone).toFormat('HH:mm') });
    tick.style.left = at(t);
    ticks.push(tick);
  }
  const fmt = (x) => {
    const s = DateTime.max(x.start, from).setZone(p.zone);
    const e = DateTime.min(x.end, to).setZone(p.zone);
    return `${s.toFormat('HH:mm')}–${e.toFormat('HH:mm')}${s.hasSame(e.minus({ milliseconds: 1 }), 'day') ? '' : ' (next day)'}`;
  };
  const text = p.busy.length ? `Busy ${p.busy.map(fmt).join(', ')}` : 'Free all day';
  return h('li', { class: 'timeline-row', dataset: { username: p.name } },
    h('p', { class: 'timeline-name' }, h('strong', { text: p.name }), ` (${p.zone})`),
    h('div', { class: 'timeline', 'aria-hidden': 'true' },
      h('div', { class: 'ticks' }, ticks),
      h('div', { class: 'bar' }, p.work.map((w) => block('work', w)), p.busy.map((b) => block('busy', b)))),
    h('p', { class: 'timeline-text', text: `${text} (${p.zone}).` }));
}

function pick(x) {
  const { onPick } = state;
  onPick(x.start, x.end);
  ui.dialog.close();
}
