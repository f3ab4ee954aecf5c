// Reminders, each person's own: the presets the event dialog offers, how
// a number of minutes before reads ("15 minutes before"; for an all-day
// event counted back from the midnight it begins), and the sentence of a
// `reminder` notification ("Reminder: “Standup” starts at 10:00 (in 15
// min)").

import { DateTime, midnightDays, formatDayList } from './time.js';

/** Minutes before: at the start, 5, 10, 15, 30 minutes, 1 hour, 1 day. */
export const REMINDER_PRESETS = [0, 5, 10, 15, 30, 60, 1440];
/** The API's bounds: at most 5 per person and event, 0 to 40320 minutes. */
export const MAX_REMINDERS = 5;

const plural = (n, one) => `${n} ${one}${n === 1 ? '' : 's'}`;

/** "15 minutes", "1 hour", "1 hour 30 minutes", "2 days". */
export function span(m) {
  if (m > 0 && m % 1440 === 0) return plural(m / 1440, 'day');
  if (m >= 60) return [plural(Math.floor(m / 60), 'hour'), m % 60 ? plural(m % 60, 'minute') : ''].filter(Boolean).join(' ');
  return plural(m, 'minute');
}

/**
 * How `m` minutes before reads in the dialog. An all-day event begins at
 * midnight (in its time zone), so its reminders say the clock time they
 * come at: "1 hour before it begins (23:00 the day before)".
 */
export function reminderLabel(m, allDay = false) {
  if (!allDay) return m === 0 ? 'At the start' : `${span(m)} before`;
  if (m === 0) return 'When it begins (00:00)';
  const back = Math.ceil(m / 1440);
  const at = back * 1440 - m;
  const clock = `${String(Math.floor(at / 60)).padStart(2, '0')}:${String(at % 60).padStart(2, '0')}`;
  return `${span(m)} before it begins (${clock} ${back === 1 ? 'the day before' : `${back} days before`})`;
}

/** "15 min", "1 h", "1 h 30 min", "2 days": how long until something. */
function until(minutes) {
  if (minutes >= 1440) { const d = Math.round(minutes / 1440); return plural(d, 'day'); }
  if (minutes >= 60) return `${Math.floor(minutes / 60)} h${minutes % 60 ? ` ${minutes % 60} min` : ''}`;
  return `${minutes} min`;
}

/**
 * The sentence of a `reminder` notification (`d`: its data), read now in
 * `zone`: "Reminder: “Standup” starts at 10:00 (in 15 min).", "… starts
 * now (10:00).", "… started at 10:00.", another day "… starts Tue 24 Nov
 * at 10:00 (in 1 day)."; all day: "Reminder: “Holiday” is on Tue 24 Nov
 * (tomorrow)."
 */
export function reminderText(d, zone, now = DateTime.now()) {
  const title = d.title ? `“${d.title}”` : 'an event';
  if (!d.start) return `Reminder: ${title}.`;
  const today = now.setZone(zone).startOf('day');
  if (d.all_day) {
    const [first, after] = midnightDays(d.start, d.end);
    const days = Math.round(DateTime.fromISO(first, { zone }).diff(today, 'days').days);
    const rel = { 0: ' (today)', 1: ' (tomorrow)' }[days] ?? '';
    const over = DateTime.fromISO(after, { zone }) <= today;
    return `Reminder: ${title} ${over ? 'was' : 'is'} on ${formatDayList(first, after)}${rel}.`;
  }
  const start = DateTime.fromISO(d.start, { setZone: true }).setZone(zone);
  const end = d.end ? DateTime.fromISO(d.end, { setZone: true }).setZone(zone) : start;
  const clock = start.toLocaleString({ hour: '2-digit', minute: '2-digit' });
  const at = start.hasSame(today, 'day') ? `at ${clock}` : `${start.toLocaleString({ weekday: 'short', day: 'numeric', month: 'short' })} at ${clock}`;
  const seconds = start.diff(now, 'seconds').seconds;
  if (Math.abs(seconds) <= 30) return `Reminder: ${title} starts now (${clock}).`;
  if (seconds > 0) return `Reminder: ${title} starts ${at} (in ${until(Math.round(seconds / 60))}).`;
  return `Reminder: ${title} ${end > now ? 'started' : 'was'} ${at}.`;
}
