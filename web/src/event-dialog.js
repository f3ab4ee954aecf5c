// The event dialog: create, edit and delete an event (organizer), answer
// an invitation (attendee), see every attendee's answer, and see the
// conflicts the API reports for a change before moving on.
//
// One <dialog> for all of it, built once. Its mode:
//   create  a new event: every field, attendees picked by username
//   edit    the organizer's event: every field, and the attendees of a
//           personal event (the whole list goes in the PATCH when it
//           changed; a group event's attendees are its members)
//   view    someone else's event: read-only fields, RSVP buttons
// In every mode the person's own reminders (minutes before each
// occurrence; only theirs, never anyone else's): sent with a new event,
// otherwise saved with PUT /v1/events/{id}/reminders when they changed
// (with "Save changes", "Save reminders", or an answer to the invitation).
// "Find a time" (find-time.js) proposes free slots for the organizer and
// the people chosen, in create and edit.
// Opened on one occurrence of a recurring event, the form shows that
// occurrence (GET /v1/events/{occurrence_id}: its own title, times,
// location); saving or deleting asks (scope-prompt.js) whether it is for
// this event (its own id: title, start, end, location, description only),
// this and the following events (`?scope=following`: the series splits)
// or all events (the series' id; a time changed here moves the series by
// as much as this occurrence moved).
// "All day" turns start and end into date fields: the first and the LAST
// day (inclusive, as people count days); the API's `end` is the day after
// the last, so the dialog adds that day when it sends and takes it off
// when it shows.

import { get, post, patch, put, del, ApiError } from './api.js';
import { currentUser } from './session.js';
import { zones, toLocalInput, fromLocalInput, formatRange, formatWhen, plusDays, DateTime } from './time.js';
import { h, replace, field, showError, clearErrors, toast, uid } from './ui.js';
import { reminderLabel, REMINDER_PRESETS, MAX_REMINDERS } from './reminders.js';
import { openFindTime } from './find-time.js';
import { askScope } from './scope-prompt.js';

const PRESETS = { none: '', daily: 'FREQ=DAILY', weekly: 'FREQ=WEEKLY', monthly: 'FREQ=MONTHLY' };
const STATUS_TEXT = {
  accepted: 'Accepted', tentative: 'Maybe', declined: 'Declined',
  needs_action: 'Not answered yet', invited: 'Invited, not answered yet',
};

let ui = null; // the dialog's parts, built on first use
// `event`: what the form shows (an occurrence of a series is one: its `id`
// is the series'); `occurrence`: its occurrence_id, or null.
let state = null; // { mode, event, occurrence, key, returnFocus }
let onChanged = () => {};
// My answer to each event the dialog has shown or answered ("me:event"
// -> status), so a notification can tell an answer that was reset.
const known = new Map();
function remember(ev) {
  const mine = myAttendance(ev);
  if (mine) known.set(`${mine.user_id}:${ev.id}`, mine.status);
}
/** My last answer to event `id` seen here, or null. */
export const knownStatus = (id) => known.get(`${currentUser()?.id}:${id}`) ?? null;

/** Called after any change the dialog saves (the calendar refetches). */
export function setOnChanged(fn) { onChanged = fn; }

function build() {
  const c = {};
  const input = (name, attrs = {}) => h('input', { name, ...attrs });
  c.title = input('title', { type: 'text', required: true, maxlength: 200, autocomplete: 'off' });
  c.allDay = input('all_day', { type: 'checkbox', class: 'checkbox' });
  c.allDay.dataset.field = 'all_day';
  c.start = input('start', { type: 'datetime-local', required: true });
  c.end = input('end', { type: 'datetime-local', required: true });
  c.tz = h('select', { name: 'time_zone' }, zones().map((z) => h('option', { value: z, text: z })));
  c.location = input('location', { type: 'text', maxlength: 2000 });
  c.description = h('textarea', { name: 'description', rows: 2, maxlength: 2000 });
  c.preset = h('select', { name: 'repeat' },
    h('option', { value: 'none', text: 'Does not repeat' }),
    h('option', { value: 'daily', text: 'Every day' }),
    h('option', { value: 'weekly', text: 'Every week' }),
    h('option', { value: 'monthly', text: 'Every month' }),
    h('option', { value: 'custom', text: 'Custom rule' }));
  c.rrule = input('rrule', { type: 'text', autocomplete: 'off', spellcheck: 'false', placeholder: 'FREQ=WEEKLY;BYDAY=MO,WE;COUNT=10' });
  c.visibility = h('select', { name: 'visibility' },
    h('option', { value: 'default', text: 'Default (group rules)' }),
    h('option', { value: 'private', text: 'Private (busy only to others)' }));
  c.group = h('select', { name: 'group_id' }, h('option', { value: '', text: 'Personal' }));
  c.attendeeInput = input('attendee', { type: 'text', autocomplete: 'off', list: 'attendee-suggestions', spellcheck: 'false' });
  c.attendeeInput.dataset.field = 'attendees';
  c.suggestions = h('datalist', { id: 'attendee-suggestions' });
  c.addAttendee = h('button', { type: 'button', class: 'btn' }, 'Add');
  c.chips = h('ul', { class: 'chips', 'aria-label': 'Attendees to invite' });
  c.findTime = h('button', { type: 'button', class: 'btn', 'aria-describedby': 'find-time-note', onclick: () => findTime() }, 'Find a time');
  c.findNote = h('p', { class: 'hint', id: 'find-time-note', role: 'status', text: 'Free slots for you and the people above.' });
  c.statuses = h('ul', { class: 'attendee-statuses' });
  // My reminders: one row (a choice and "Remove") each, at most 5.
  c.reminderList = h('ul', { class: 'reminder-list' });
  c.reminderNone = h('p', { class: 'hint reminder-none', text: 'No reminders.' });
  c.addReminder = h('button', { type: 'button', class: 'btn btn-small', 'aria-describedby': 'reminders-hint', onclick: () => addReminder() }, 'Add reminder');
  c.reminderHint = h('p', { class: 'hint', id: 'reminders-hint' });
  c.reminderError = h('p', { class: 'field-error', id: 'reminders-error', hidden: true });
  c.reminders = h('section', { class: 'reminders', 'aria-labelledby': 'reminders-title' },
    h('h3', { id: 'reminders-title', text: 'Your reminders' }),
    c.reminderList, c.reminderNone, c.reminderError,
    h('div', { class: 'reminder-add' }, c.addReminder, c.reminderHint));
  c.formError = h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true });
  c.heading = h('h2', { id: 'event-dialog-title' });
  c.occurrence = h('p', { class: 'occurrence-note', hidden: true });
  c.conflicts = h('section', { class: 'conflicts', hidden: true, tabindex: '-1', 'aria-labelledby': 'conflicts-title' });
  c.rsvp = h('section', { class: 'rsvp', hidden: true, 'aria-labelledby': 'rsvp-title' },
    h('h3', { id: 'rsvp-title', text: 'Your answer' }),
    h('p', { class: 'rsvp-current' }),
    h('div', { class: 'rsvp-buttons', role: 'group', 'aria-labelledby': 'rsvp-title' },
      ['accepted', 'tentative', 'declined'].map((s) => h('button', {
        type: 'button', class: 'btn', dataset: { status: s }, 'aria-pressed': 'false', onclick: () => answer(s),
      }, { accepted: 'Accept', tentative: 'Maybe', declined: 'Decline' }[s]))));
  c.save = h('button', { type: 'submit', class: 'btn btn-primary' }, 'Save');
  c.cancel = h('button', { type: 'button', class: 'btn', onclick: () => close() }, 'Close');
  c.delete = h('button', { type: 'button', class: 'btn btn-danger', onclick: () => confirmDelete(true) }, 'Delete…');
  c.confirm = h('div', { class: 'confirm', hidden: true, role: 'group', 'aria-label': 'Confirm deletion' },
    h('p', { class: 'confirm-text' }),
    h('button', { type: 'button', class: 'btn btn-danger', dataset: { what: 'all' }, onclick: () => remove('all') }, 'Delete for everyone'),
    h('button', { type: 'button', class: 'btn', onclick: () => confirmDelete(false) }, 'Keep it'));

  c.editable = h('fieldset', { class: 'editable' },
    h('legend', { class: 'visually-hidden', text: 'Event details' }),
    field('Title', c.title, { field: 'title' }),
    checkField('All day', c.allDay, 'Whole days in the time zone below; free time (no conflicts, not in free/busy).'),
    h('div', { class: 'row' },
      c.startField = field('Starts', c.start, { field: 'start' }),
      c.endField = field('Ends', c.end, { field: 'end' })),
    h('div', { class: 'row' },
      field('Time zone', c.tz, { field: 'time_zone', hint: 'Start and end are read in this zone.' }),
      field('Location', c.location, { field: 'location' })),
    field('Description', c.description, { field: 'description' }),
    h('div', { class: 'row' },
      field('Repeats', c.preset),
      field('Recurrence rule (RRULE)', c.rrule, { field: 'rrule', hint: 'RFC 5545; blank: once.' })),
    h('div', { class: 'row' },
      field('Visibility', c.visibility, { field: 'visibility' }),
      c.groupField = field('Calendar', c.group, { field: 'group_id', hint: 'A group event invites every member.' })));

  c.attendeeField = h('div', { class: 'attendee-picker' },
    field('Invite people (username)', c.attendeeInput, { hint: 'Pick a suggestion; Enter or Add for each person; × takes one off the list.' }),
    c.addAttendee, c.suggestions, c.chips);
  c.findTimeRow = h('div', { class: 'find-time-row' }, c.findTime, c.findNote);
  c.attendeeSection = h('section', { class: 'attendees', 'aria-labelledby': 'attendees-title' },
    h('h3', { id: 'attendees-title', text: 'Attendees' }),
    c.attendeeField,
    c.findTimeRow,
    c.statuses);

  c.form = h('form', { novalidate: true, onsubmit: (ev) => { ev.preventDefault(); save(); } },
    c.heading, c.occurrence, c.formError, c.conflicts, c.rsvp, c.editable, c.reminders, c.attendeeSection,
    h('div', { class: 'dialog-actions' }, c.delete, h('span', { class: 'spacer' }), c.cancel, c.save),
    c.confirm);
  c.dialog = h('dialog', { id: 'event-dialog', class: 'dialog', 'aria-labelledby': 'event-dialog-title' }, c.form);
  c.dialog.addEventListener('close', () => {
    state?.returnFocus?.focus?.();
    state = null;
  });

  c.allDay.addEventListener('change', () => { switchAllDay(c.allDay.checked); renderReminders(); });

  // Presets fill the raw rule; typing a rule of one's own selects "Custom".
  c.preset.addEventListener('change', () => {
    if (c.preset.value !== 'custom') c.rrule.value = PRESETS[c.preset.value];
  });
  c.rrule.addEventListener('input', () => { c.preset.value = presetOf(c.rrule.value); });

  // Attendee picking: suggestions from GET /v1/users?q= as one types.
  let searchTimer = null;
  c.attendeeInput.addEventListener('input', () => {
    clearTimeout(searchTimer);
    const q = c.attendeeInput.value.trim();
    if (!q) return;
    searchTimer = setTimeout(async () => {
      try {
        const r = await get('/v1/users', { q });
        const me = currentUser();
        replace(c.suggestions, r.items.filter((u) => u.id !== me?.id)
          .map((u) => h('option', { value: u.username, text: u.display_name !== u.username ? u.display_name : '' })));
      } catch { /* suggestions are a convenience */ }
    }, 200);
  });
  c.attendeeInput.addEventListener('keydown', (ev) => {
    // Enter adds the name instead of submitting; read the value a tick
    // later, after a suggestion picked with Enter has filled it in.
    if (ev.key === 'Enter' && c.attendeeInput.value.trim()) { ev.preventDefault(); setTimeout(addChip, 0); }
  });
  c.addAttendee.addEventListener('click', addChip);
  document.body.append(c.dialog);
  return c;
}

function presetOf(rule) {
  const r = rule.trim().toUpperCase().replace(/^RRULE:/, '');
  for (const [k, v] of Object.entries(PRESETS)) if (r === v) return k;
  return 'custom';
}

/** A checkbox with its label after it, a hint and an error slot (as `field`). */
function checkField(label, control, hint) {
  const id = uid('f');
  control.id = id;
  control.setAttribute('aria-errormessage', `${id}-error`);
  control.setAttribute('aria-describedby', `${id}-error ${id}-hint`);
  return h('div', { class: 'field check-field' },
    h('div', { class: 'check' }, control, h('label', { for: id, text: label })),
    h('p', { class: 'hint', id: `${id}-hint`, text: hint }),
    h('p', { class: 'field-error', id: `${id}-error`, hidden: true }));
}

/**
 * Shows start and end as dates (all day: the first and the last day) or
 * as date and time; `values` ([start, end] in the new form) or nothing.
 */
function setAllDay(on, values) {
  ui.allDay.checked = on;
  for (const [input, f, label] of [[ui.start, ui.startField, on ? 'First day' : 'Starts'], [ui.end, ui.endField, on ? 'Last day' : 'Ends']]) {
    input.type = on ? 'date' : 'datetime-local';
    f.querySelector('label').textContent = label;
  }
  const hint = document.getElementById(`${ui.tz.id}-hint`);
  if (hint) hint.textContent = on ? 'The days run from midnight to midnight in this zone.' : 'Start and end are read in this zone.';
  if (values) [ui.start.value, ui.end.value] = values;
}

/**
 * The person ticked or cleared "All day": the same days as dates (an end
 * at midnight is the day before's end), or back to times on the first day
 * (the times shown before, or 09:00–10:00).
 */
function switchAllDay(on) {
  const [s, e] = [ui.start.value, ui.end.value];
  if (on) {
    ui.allDay.dataset.times = JSON.stringify([s, e]);
    const first = s.slice(0, 10);
    let last = e.slice(0, 10);
    if (e.slice(11) === '00:00' && last > first) last = plusDays(last, -1);
    setAllDay(true, [first, last && last >= first ? last : first]);
    return;
  }
  let times = [];
  try { times = JSON.parse(ui.allDay.dataset.times || '[]'); } catch { times = []; }
  const day = s || DateTime.now().toISODate();
  const at = (v) => DateTime.fromISO(v, { zone: 'UTC' }); // wall clock only
  let start = at(`${day}T${(times[0] || '').slice(11) || '09:00'}`);
  const was = times.length === 2 ? at(times[1]).diff(at(times[0]), 'minutes').minutes : NaN;
  if (!start.isValid) start = at(`${day}T09:00`);
  const end = start.plus({ minutes: was > 0 ? was : 60 });
  setAllDay(false, [start.toFormat("yyyy-LL-dd'T'HH:mm"), end.toFormat("yyyy-LL-dd'T'HH:mm")]);
}

/** The reminders chosen: minutes before, sorted, each once (as the API keeps them). */
function chosenReminders() {
  const set = new Set([...ui.reminderList.querySelectorAll('select')].map((s) => Number(s.value)));
  return [...set].sort((a, b) => a - b);
}

const reminderKey = (list) => [...new Set(list || [])].sort((a, b) => a - b).join(',');
/** Whether my reminders as chosen differ from those saved on the event shown. */
const remindersChanged = () => reminderKey(chosenReminders()) !== reminderKey(state.event?.reminders);
/** Whether I may set reminders on the event shown: mine, or one I am an attendee of. */
const remindersShown = () => state.mode !== 'view' || Boolean(myAttendance(state.event));

function reminderRow(minutes) {
  const select = h('select', { name: 'reminder', class: 'reminder-select', 'aria-errormessage': 'reminders-error', 'aria-describedby': 'reminders-error reminders-hint' });
  select.id = uid('reminder');
  select.dataset.field = 'reminders';
  select.dataset.minutes = String(minutes);
  const label = h('label', { for: select.id, class: 'visually-hidden' });
  const remove = h('button', { type: 'button', class: 'btn btn-small', onclick: () => removeReminder(li) }, 'Remove');
  const li = h('li', { class: 'reminder' }, label, select, remove);
  select.addEventListener('change', () => { select.dataset.minutes = select.value; renderReminders(); });
  return li;
}

/** Shows `list` (minutes before) as rows. */
function setReminders(list) {
  replace(ui.reminderList, [...new Set(list || [])].sort((a, b) => a - b).map(reminderRow));
  renderReminders();
}

/** Labels (all day or timed), numbers, "Add reminder" and the empty state. */
function renderReminders() {
  const allDay = ui.allDay.checked;
  const rows = [...ui.reminderList.querySelectorAll('li')];
  rows.forEach((li, i) => {
    const select = li.querySelector('select');
    const value = Number(select.dataset.minutes);
    const values = [...new Set([...REMINDER_PRESETS, value])].sort((a, b) => a - b);
    replace(select, values.map((m) => h('option', { value: String(m), text: reminderLabel(m, allDay) })));
    select.value = String(value);
    li.querySelector('label').textContent = `Reminder ${i + 1}`;
    li.querySelector('button').setAttribute('aria-label', `Remove reminder ${i + 1} (${reminderLabel(value, allDay)})`);
  });
  ui.reminderNone.hidden = rows.length > 0;
  const full = rows.length >= MAX_REMINDERS;
  ui.addReminder.disabled = full;
  ui.reminderHint.textContent = (full ? `At most ${MAX_REMINDERS}. ` : '')
    + (allDay ? 'Only you get them, as a notification. An all-day event begins at midnight in its time zone.'
      : 'Only you get them, as a notification (before each occurrence of a series).');
}

function addReminder() {
  const have = new Set(chosenReminders());
  if (have.size >= MAX_REMINDERS && ui.reminderList.children.length >= MAX_REMINDERS) return;
  const minutes = [10, 30, 60, 1440, 5, 15, 0].find((m) => !have.has(m)) ?? 10;
  const li = reminderRow(minutes);
  ui.reminderList.append(li);
  renderReminders();
  li.querySelector('select').focus();
}

function removeReminder(li) {
  const next = li.nextElementSibling || li.previousElementSibling;
  li.remove();
  renderReminders();
  (next?.querySelector('select') || ui.addReminder).focus();
}

/** Saves my reminders on the event shown when they changed; the event as saved, or null. */
async function saveReminders() {
  if (!state?.event || !remindersShown() || !remindersChanged()) return null;
  const ev = await put(`/v1/events/${state.event.id}/reminders`, { minutes_before: chosenReminders() });
  if (state?.event?.id === ev.id) state.event = { ...state.event, reminders: ev.reminders };
  return ev;
}

function chipNames() {
  return [...ui.chips.querySelectorAll('li')].map((li) => li.dataset.username);
}

function chip(name) {
  const li = h('li', { class: 'chip', dataset: { username: name } },
    h('span', { text: name }),
    h('button', { type: 'button', class: 'chip-remove', 'aria-label': `Remove ${name}`, onclick: () => { li.remove(); ui.attendeeInput.focus(); } }, '×'));
  return li;
}

function addChip() {
  // Several names may be typed at once, separated by commas or spaces.
  const names = ui.attendeeInput.value.split(/[\s,]+/).map((s) => s.trim().replace(/^@/, '')).filter(Boolean);
  const have = new Set(chipNames().map((n) => n.toLowerCase()));
  for (const name of names) {
    if (have.has(name.toLowerCase())) continue;
    have.add(name.toLowerCase());
    ui.chips.append(chip(name));
  }
  ui.attendeeInput.value = '';
  ui.attendeeInput.focus();
}

/** Whether the attendees of the event shown may be edited here (the organizer's personal event). */
const attendeesEditable = () => state.mode === 'create' || (state.mode === 'edit' && !state.event?.group_id);

/** The attendees a saved event has now, but its organizer (usernames). */
const savedAttendees = (ev) => ev.attendees.filter((a) => a.user_id !== ev.organizer_id).map((a) => a.username);

function tzOption(tz) {
  if (![...ui.tz.options].some((o) => o.value === tz)) ui.tz.append(h('option', { value: tz, text: tz }));
  ui.tz.value = tz;
}

async function loadGroups() {
  try {
    const r = await get('/v1/groups');
    replace(ui.group, h('option', { value: '', text: 'Personal' }), r.items.map((g) => h('option', { value: g.id, text: `Group: ${g.name}` })));
  } catch { /* personal events still work */ }
}

/**
 * Opens the dialog for a new event from `start` to `end` (Dates), or an
 * all-day one (`allDay`: `start` and `end` dates, the end exclusive).
 */
export function openNewEvent({ start, end, allDay = false }) {
  ui ||= build();
  const me = currentUser();
  const tz = me?.time_zone || 'UTC';
  state = { mode: 'create', event: null, key: crypto.randomUUID(), returnFocus: document.activeElement };
  reset();
  ui.heading.textContent = 'New event';
  if (allDay) setAllDay(true, [start, plusDays(end, -1)]);
  else setAllDay(false, [toLocalInput(DateTime.fromJSDate(start), tz), toLocalInput(DateTime.fromJSDate(end), tz)]);
  tzOption(tz);
  ui.groupField.hidden = false;
  loadGroups();
  render();
  ui.dialog.showModal();
  ui.title.focus();
}

/** An occurrence's id: `{id}_{YYYYMMDDTHHMMSSZ}`. */
const OCCURRENCE_ID = /_\d{8}T\d{6}Z$/;

/**
 * Opens an existing event (an agenda item, a notification's event id, or
 * an occurrence of a recurring event, or its id: the form then shows that
 * occurrence).
 */
export async function openEvent(eventOrId) {
  ui ||= build();
  const returnFocus = document.activeElement;
  // An occurrence (an agenda item, or its id) opens as itself.
  const occurrence = typeof eventOrId === 'string'
    ? (OCCURRENCE_ID.test(eventOrId) ? eventOrId : null)
    : (eventOrId.occurrence_id || null);
  const id = occurrence || (typeof eventOrId === 'string' ? eventOrId : (eventOrId.recurring_event_id || eventOrId.id));
  let ev;
  try {
    ev = await get(`/v1/events/${id}`);
  } catch (e) {
    toast(e.status === 404 ? 'That event no longer exists (or you may no longer see it).' : `Could not open the event: ${e.message}`, { kind: 'error' });
    return;
  }
  remember(ev);
  const mode = ev.organizer_id === currentUser()?.id ? 'edit' : 'view';
  state = { mode, event: ev, occurrence: ev.occurrence_id || null, returnFocus };
  reset();
  fill(ev);
  render();
  if (!ui.dialog.open) ui.dialog.showModal();
  (mode === 'edit' ? ui.title : (ui.rsvp.querySelector('button') || ui.cancel)).focus();
}

/** The event `id` changed elsewhere (a notification): refresh what is shown. */
export async function eventChanged(id) {
  if (!state?.event || state.event.id !== id || !ui.dialog.open) return;
  try {
    const ev = await get(`/v1/events/${state.occurrence || id}`);
    if (!state || state.event?.id !== id) return;
    // A move sets my answer back to needs_action: say so.
    const before = myAttendance(state.event)?.status;
    if (['accepted', 'tentative', 'declined'].includes(before) && myAttendance(ev)?.status === 'needs_action') state.reasked = true;
    state.event = ev;
    remember(ev);
    // Fields the person may be editing stay as they are; answers update.
    renderStatuses();
    renderRsvp();
  } catch (e) {
    if (e.status === 404) { toast('This event was cancelled.', { kind: 'warning' }); close(); }
  }
}

function reset() {
  clearErrors(ui.form);
  ui.form.reset();
  setAllDay(false);
  delete ui.allDay.dataset.times;
  ui.conflicts.hidden = true;
  ui.confirm.hidden = true;
  ui.occurrence.hidden = true;
  replace(ui.chips);
  replace(ui.suggestions);
  ui.preset.value = 'none';
  setReminders([]);
}

function fill(ev) {
  ui.heading.textContent = state.mode === 'edit' ? 'Edit event' : ev.title;
  ui.title.value = ev.title;
  tzOption(ev.time_zone);
  if (ev.all_day) setAllDay(true, [ev.start_date, plusDays(ev.end_date, -1)]);
  else setAllDay(false, [toLocalInput(ev.start, ev.time_zone), toLocalInput(ev.end, ev.time_zone)]);
  ui.location.value = ev.location || '';
  ui.description.value = ev.description || '';
  ui.rrule.value = ev.rrule || '';
  ui.preset.value = presetOf(ev.rrule || '');
  ui.visibility.value = ev.visibility || 'default';
  ui.groupField.hidden = true;
  setReminders(ev.reminders || []);
  // The organizer edits the list of a personal event as chips; the rows
  // below keep showing the answers as saved.
  replace(ui.chips, attendeesEditable() ? savedAttendees(ev).map(chip) : []);
  if (state.occurrence) {
    ui.occurrence.hidden = false;
    const when = formatWhen(ev, currentUser()?.time_zone || 'UTC');
    ui.occurrence.textContent = state.mode === 'edit'
      ? `One event of a series (${when}). Saving or deleting asks which events it is for.`
      : `One event of a series (${when}).`;
  }
}

/** Shows and hides the parts of the dialog that depend on the mode. */
function render() {
  const { mode } = state;
  ui.editable.disabled = mode === 'view';
  ui.attendeeField.hidden = !attendeesEditable();
  ui.chips.setAttribute('aria-label', mode === 'create' ? 'Attendees to invite' : 'Attendees (saved with the changes)');
  ui.findTimeRow.hidden = mode === 'view';
  ui.findNote.textContent = 'Free slots for you and the people above.';
  ui.reminders.hidden = !remindersShown();
  ui.save.hidden = mode === 'view' && ui.reminders.hidden;
  ui.save.textContent = { create: 'Create event', edit: 'Save changes', view: 'Save reminders' }[mode];
  ui.delete.hidden = mode !== 'edit';
  ui.cancel.textContent = mode === 'view' ? 'Close' : 'Cancel';
  renderStatuses();
  renderRsvp();
}

function renderStatuses() {
  const ev = state.event;
  ui.statuses.hidden = !ev;
  if (!ev) return;
  replace(ui.statuses, ev.attendees.map((a, i) => h('li', { class: `attendee status-${a.status}`, dataset: { username: a.username } },
    h('span', { class: 'attendee-name', text: a.username + (i === 0 && a.user_id === ev.organizer_id ? ' (organizer)' : '') }),
    h('span', { class: 'badge', text: STATUS_TEXT[a.status] || a.status }))));
}

/** My attendee entry of `ev` (not as its organizer), or null. */
function myAttendance(ev) {
  const me = currentUser();
  return (ev && me && ev.organizer_id !== me.id && ev.attendees.find((a) => a.user_id === me.id)) || null;
}

function renderRsvp() {
  const mine = myAttendance(state.event);
  ui.rsvp.hidden = !mine;
  if (!mine) return;
  const again = state.reasked && mine.status === 'needs_action' ? ' The event was moved: please answer again.' : '';
  ui.rsvp.querySelector('.rsvp-current').textContent = `You: ${STATUS_TEXT[mine.status] || mine.status}.${again}`;
  for (const b of ui.rsvp.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.status === mine.status));
}

/**
 * The request body from the form (for PATCH: only what changed). All day:
 * `all_day` and dates, the end the day after the last day shown.
 */
function body() {
  const tz = ui.tz.value;
  const allDay = ui.allDay.checked;
  const b = {
    title: ui.title.value.trim(),
    start: allDay ? (ui.start.value || null) : fromLocalInput(ui.start.value, tz),
    end: allDay ? (ui.end.value ? plusDays(ui.end.value, 1) : null) : fromLocalInput(ui.end.value, tz),
    time_zone: tz,
    location: ui.location.value,
    description: ui.description.value,
    rrule: ui.rrule.value.trim(),
    visibility: ui.visibility.value,
  };
  if (state.mode === 'create') {
    if (allDay) b.all_day = true;
    if (!b.rrule) delete b.rrule;
    const pending = ui.attendeeInput.value.trim();
    if (pending) addChip(); // a name typed but not added yet still counts
    const names = chipNames();
    if (names.length) b.attendees = names;
    if (ui.group.value) b.group_id = ui.group.value;
    const reminders = chosenReminders();
    if (reminders.length) b.reminders = reminders;
    return b;
  }
  const ev = state.event;
  const same = (a, b2) => a === b2 || (a && b2 && Date.parse(a) === Date.parse(b2));
  // Switched on or off: `all_day` with both ends (the API needs both to
  // make it timed). Still all-day: the dates that changed, with `all_day`.
  const when = { start: b.start, end: b.end };
  delete b.start;
  delete b.end;
  for (const k of Object.keys(b)) {
    if (k === 'rrule' ? (b.rrule || '') === (ev.rrule || '') : same(b[k], ev[k] ?? '')) delete b[k];
  }
  if (allDay !== Boolean(ev.all_day)) Object.assign(b, { all_day: allDay }, when);
  else if (allDay) {
    if (when.start !== ev.start_date) b.start = when.start;
    if (when.end !== ev.end_date) b.end = when.end;
    if ('start' in b || 'end' in b) b.all_day = true;
  } else {
    // A field still showing what it was filled with is unchanged (an
    // event made through the API may start at seconds the field drops).
    const kept = (input, iso) => tz === ev.time_zone && !ev.all_day && input.value === toLocalInput(iso, ev.time_zone);
    if (!same(when.start, ev.start) && !kept(ui.start, ev.start)) b.start = when.start;
    if (!same(when.end, ev.end) && !kept(ui.end, ev.end)) b.end = when.end;
  }
  // Attendees: the whole list, and only when it changed (the organizer
  // always stays, so never listed).
  if (attendeesEditable()) {
    if (ui.attendeeInput.value.trim()) addChip();
    const me = currentUser()?.username.toLowerCase();
    const names = chipNames().filter((n) => n.toLowerCase() !== me);
    const key = (list) => list.map((n) => n.toLowerCase()).sort().join(',');
    if (key(names) !== key(savedAttendees(ev))) b.attendees = names;
  }
  return b;
}

/** Opens "Find a time" for the organizer and the people chosen; a slot picked fills start and end. */
function findTime() {
  const me = currentUser();
  if (ui.attendeeInput.value.trim()) addChip();
  const ev = state.event;
  const others = attendeesEditable() ? chipNames() : (ev ? savedAttendees(ev) : []);
  const names = [me.username];
  for (const n of others) if (!names.some((x) => x.toLowerCase() === n.toLowerCase())) names.push(n);
  const zone = ui.tz.value;
  const start = DateTime.fromISO(ui.start.value, { zone });
  const end = DateTime.fromISO(ui.end.value, { zone });
  // All day: an hour on the first day (a slot picked makes it timed).
  const minutes = !ui.allDay.checked && start.isValid && end.isValid && end > start ? Math.round(end.diff(start, 'minutes').minutes) : 60;
  // The event's own saved time is not busy time for finding it a new one.
  const ignore = ev ? [ev].map((x) => ({ start: DateTime.fromISO(x.start), end: DateTime.fromISO(x.end) })) : [];
  openFindTime({
    names, zone, minutes, ignore,
    day: start.isValid ? start : DateTime.now().setZone(zone),
    returnFocus: ui.findTime,
    onPick: (s, e) => {
      setAllDay(false, [toLocalInput(s, zone), toLocalInput(e, zone)]);
      ui.findNote.textContent = `Start and end set to ${formatRange(s.toISO(), e.toISO(), zone)} (${zone}). Save to keep it.`;
    },
  });
}

/** Client-side checks the browser can do at once; the API checks the rest. */
function precheck(b) {
  if (state.mode === 'create' || 'title' in b) {
    if (!b.title) return new ApiError(422, { error: { message: 'Give the event a title.', details: { field: 'title' } } });
  }
  if ((state.mode === 'create' || 'start' in b) && !b.start) return new ApiError(422, { error: { message: 'Choose when it starts.', details: { field: 'start' } } });
  if ((state.mode === 'create' || 'end' in b) && !b.end) return new ApiError(422, { error: { message: 'Choose when it ends.', details: { field: 'end' } } });
  if (ui.allDay.checked && ui.start.value && ui.end.value && ui.end.value < ui.start.value) {
    return new ApiError(422, { error: { message: 'The last day cannot be before the first day.', details: { field: 'end' } } });
  }
  return null;
}

// What one occurrence may change on its own; the rest is the series'.
const OCCURRENCE_FIELDS = ['title', 'start', 'end', 'location', 'description'];
const FIELD_NAMES = { all_day: '“All day”', time_zone: 'the time zone', rrule: 'the repeat rule', visibility: 'the visibility', attendees: 'the attendees' };

/**
 * Where the changes `b` go: the event itself, or, opened on an occurrence,
 * what the person picks ("This event" only when nothing but the fields of
 * one occurrence changed). `{path, body, query}`, or null when cancelled.
 */
async function target(b) {
  const ev = state.event;
  if (!state.occurrence) return { path: `/v1/events/${ev.id}`, body: b };
  const own = { ...b };
  if (own.all_day === Boolean(ev.all_day)) delete own.all_day; // still all-day: the dates alone
  const others = Object.keys(own).filter((k) => !OCCURRENCE_FIELDS.includes(k));
  const names = others.map((k) => FIELD_NAMES[k] || k);
  const list = names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : names[0];
  const notThis = others.length ? `Not for one event alone: ${list} can only change for the whole series, or for this and the following events.` : '';
  const scope = await askScope({ verb: 'change', title: ev.title, notThis });
  if (!scope) return null;
  if (scope === 'this') return { path: `/v1/events/${state.occurrence}`, body: own };
  if (scope === 'following') return { path: `/v1/events/${state.occurrence}`, body: own, query: { scope: 'following' } };
  return { path: `/v1/events/${ev.id}`, body: await seriesBody(b) };
}

/**
 * The changes `b`, made on one occurrence, for the whole series: a new
 * start or end moves the series' own by as much as this occurrence moved
 * (wall-clock time, so 09:00 stays 09:00 across DST; days for all-day).
 */
async function seriesBody(b) {
  if (!('start' in b) && !('end' in b)) return b;
  const ev = state.event;
  const series = await get(`/v1/events/${ev.id}`);
  // Wall-clock times as UTC DateTimes, only to count the difference.
  const wall = (value) => DateTime.fromISO(value, { zone: 'UTC' });
  const wallOf = (x) => wall(x.all_day ? x.start_date : toLocalInput(x.start, x.time_zone));
  const offset = wallOf(series).diff(wallOf(ev)).toMillis();
  const allDay = ui.allDay.checked;
  const shown = { start: ui.start.value, end: allDay ? plusDays(ui.end.value, 1) : ui.end.value };
  const out = { ...b };
  for (const k of ['start', 'end']) {
    if (!(k in b)) continue;
    const moved = wall(shown[k]).plus({ milliseconds: offset });
    out[k] = allDay ? moved.toISODate() : fromLocalInput(moved.toFormat("yyyy-LL-dd'T'HH:mm:ss"), ui.tz.value);
  }
  return out;
}

async function save() {
  if (!state) return;
  clearErrors(ui.form);
  if (state.mode === 'view') { await saveOnlyReminders(); return; }
  const b = body();
  const bad = precheck(b);
  if (bad) { showError(ui.form, bad); return; }
  // Where the changes go (opened on an occurrence: the person is asked).
  let to = null;
  if (state.mode !== 'create' && Object.keys(b).length) {
    try { to = await target(b); } catch (e) { showError(ui.form, e); return; }
    if (!to) return; // cancelled: the dialog stays as it is, focus where it was
  }
  ui.save.disabled = true;
  try {
    let reply;
    if (state.mode === 'create') {
      // The same key on a retry: the event is created once.
      reply = await post('/v1/events', b, { headers: { 'Idempotency-Key': state.key } });
    } else if (to) {
      reply = await patch(to.path, to.body, to.query ? { query: to.query } : undefined);
      // Saved: a failure of the reminders below must not send it again.
      state.event = reply.event;
      // A part split off (following) or the series (all): no longer one occurrence.
      if (!reply.event.occurrence_id) state.occurrence = null;
      const ev = await saveReminders();
      if (ev) reply = { ...reply, event: { ...reply.event, reminders: ev.reminders } };
    } else if (remindersChanged()) {
      reply = { event: await saveReminders(), conflicts: [] };
    } else {
      close();
      return;
    }
    const created = state.mode === 'create';
    onChanged();
    const conflicts = reply.conflicts || [];
    if (conflicts.length) {
      // Stay open: the person sees what overlaps, and may change the time
      // and save again (now as an edit of the saved event).
      state = { ...state, mode: 'edit', event: reply.event, occurrence: reply.event.occurrence_id || null };
      fill(reply.event);
      render();
      showConflicts(conflicts, created ? 'Event created' : 'Changes saved');
    } else {
      toast(created ? `Created “${reply.event.title}”.` : `Saved “${reply.event.title}”.`);
      close();
    }
  } catch (e) {
    showError(ui.form, e);
  } finally {
    ui.save.disabled = false;
  }
}

/** "Save reminders" on someone else's event: my reminders only. */
async function saveOnlyReminders() {
  if (!remindersChanged()) { close(); return; }
  ui.save.disabled = true;
  try {
    const ev = await saveReminders();
    toast(`Saved your reminders for “${ev.title}”.`);
    close();
  } catch (e) {
    showError(ui.form, e);
  } finally {
    ui.save.disabled = false;
  }
}

function describeConflict(c) {
  const me = currentUser();
  const tz = me?.time_zone || 'UTC';
  const who = c.user_id === me?.id ? 'you' : (state?.event?.attendees.find((a) => a.user_id === c.user_id)?.username || 'an attendee');
  const what = c.title ? `“${c.title}”` : 'busy time';
  return `${what} (${who}), ${formatRange(c.start, c.end, tz)}`;
}

function showConflicts(conflicts, what) {
  const more = conflicts.length >= 100 ? ' (the first 100)' : '';
  replace(ui.conflicts,
    h('h3', { id: 'conflicts-title', text: `${what}, but it overlaps ${conflicts.length} other event${conflicts.length > 1 ? 's' : ''}${more}` }),
    h('ul', {}, conflicts.map((c) => h('li', { text: describeConflict(c) }))),
    h('p', { class: 'hint', text: 'Change the time and save again, or close to keep it as it is.' }));
  ui.conflicts.hidden = false;
  ui.conflicts.focus();
}

async function answer(status) {
  const ev = state?.event;
  if (!ev) return;
  clearErrors(ui.form);
  try {
    const reply = await post(`/v1/events/${ev.id}/rsvp`, { status });
    state.event = reply.event;
    remember(reply.event);
    renderStatuses();
    renderRsvp();
    onChanged();
    // My reminders as chosen go with the answer (an error shows next to them).
    try { await saveReminders(); } catch (e) { showError(ui.form, e); return; }
    const conflicts = reply.conflicts || [];
    if (conflicts.length && status !== 'declined') showConflicts(conflicts, `Answered ${STATUS_TEXT[status].toLowerCase()}`);
    else { ui.conflicts.hidden = true; toast(`${STATUS_TEXT[status]}: “${ev.title}”.`); }
  } catch (e) {
    showError(ui.form, e);
  }
}

async function confirmDelete(show) {
  // One occurrence of a series: which events go is the question.
  if (show && state?.occurrence) {
    const scope = await askScope({ verb: 'delete', title: state.event.title });
    if (scope) await remove(scope);
    return;
  }
  ui.confirm.hidden = !show;
  if (!show) { ui.delete.focus(); return; }
  ui.confirm.querySelector('.confirm-text').textContent = state.event?.rrule
    ? 'Delete every occurrence for everyone?'
    : 'Delete this event for everyone invited?';
  ui.confirm.querySelector('[data-what="all"]').focus();
}

/**
 * Deletes `what`: 'all' (the event, or the whole series), or, opened on
 * an occurrence, 'this' (that occurrence alone) or 'following' (it and
 * every later one: the series ends before it).
 */
async function remove(what) {
  const ev = state?.event;
  if (!ev) return;
  try {
    if (what !== 'all' && state.occurrence) {
      await del(`/v1/events/${state.occurrence}`, what === 'following' ? { query: { scope: 'following' } } : {});
      toast(what === 'following' ? `Deleted “${ev.title}” from this occurrence on.` : `Deleted this occurrence of “${ev.title}”.`);
    } else {
      await del(`/v1/events/${ev.id}`);
      toast(`Deleted “${ev.title}”.`);
    }
    onChanged();
    close();
  } catch (e) {
    ui.confirm.hidden = true;
    showError(ui.form, e);
  }
}

export function close() {
  if (ui?.dialog.open) ui.dialog.close();
}

export const isOpen = () => Boolean(ui?.dialog.open);
// For tests and for notifications: which event the dialog shows.
export const shownEventId = () => state?.event?.id ?? null;
