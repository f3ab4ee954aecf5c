// Time zones and the conversions between the API's instants (RFC 3339)
// and the wall-clock values of <input type="datetime-local"> in a given
// IANA zone. Luxon does the zone arithmetic (also for FullCalendar).

import { DateTime } from 'luxon';

let zoneList = null;
/** Every IANA zone name the browser knows, UTC first. */
export function zones() {
  if (!zoneList) {
    let list = [];
    try { list = Intl.supportedValuesOf('timeZone'); } catch { list = []; }
    zoneList = ['UTC', ...list.filter((z) => z !== 'UTC')];
  }
  return zoneList;
}

/** The browser's own zone (a sensible default at registration). */
export function browserZone() {
  try { return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC'; } catch { return 'UTC'; }
}

/** An instant as the value of a datetime-local input in `zone`. */
export function toLocalInput(iso, zone) {
  const d = (iso instanceof DateTime ? iso : DateTime.fromISO(iso, { setZone: true })).setZone(zone);
  return d.toFormat("yyyy-LL-dd'T'HH:mm");
}

/** A datetime-local value read in `zone`, as RFC 3339 UTC (or null). */
export function fromLocalInput(value, zone) {
  if (!value) return null;
  const d = DateTime.fromISO(value, { zone });
  return d.isValid ? d.toUTC().toISO({ suppressMilliseconds: true }) : null;
}

/** An RFC 3339 string for an instant (UTC). */
export const isoUtc = (d) => DateTime.fromJSDate(d).toUTC().toISO({ suppressMilliseconds: true });

/**
 * "Mon 7 Jan, 10:00–11:00" in `zone` (dates repeated when they differ);
 * `withYear`: "Mon 7 Jan 2026, …" (lists that span years, like search).
 */
export function formatRange(startIso, endIso, zone, withYear = false) {
  const s = DateTime.fromISO(startIso, { setZone: true }).setZone(zone);
  const e = DateTime.fromISO(endIso, { setZone: true }).setZone(zone);
  const day = { weekday: 'short', day: 'numeric', month: 'short', ...(withYear ? { year: 'numeric' } : {}) };
  const time = { hour: '2-digit', minute: '2-digit' };
  if (s.hasSame(e, 'day')) return `${s.toLocaleString(day)}, ${s.toLocaleString(time)}–${e.toLocaleString(time)}`;
  return `${s.toLocaleString(day)} ${s.toLocaleString(time)} – ${e.toLocaleString(day)} ${e.toLocaleString(time)}`;
}

/**
 * An all-day span by its dates (`end` exclusive, as the API and
 * FullCalendar give it): "Sat 5 Sep, all day", or "Sat 5 Sep – Sun 6 Sep,
 * all day" for the first and last days.
 */
export function formatDays(startDate, endDate, withYear = false) {
  return `${formatDayList(startDate, endDate, withYear)}, all day`;
}

/** The days from `startDate` to the day before `endDate`: "Sat 5 Sep", "Sat 5 Sep – Sun 6 Sep". */
export function formatDayList(startDate, endDate, withYear = false) {
  const s = DateTime.fromISO(startDate);
  const last = DateTime.fromISO(endDate).minus({ days: 1 });
  const day = { weekday: 'short', day: 'numeric', month: 'short', ...(withYear ? { year: 'numeric' } : {}) };
  if (!(last > s)) return s.toLocaleString(day);
  return `${s.toLocaleString(day)} – ${last.toLocaleString(day)}`;
}

/**
 * The days ([first, day after the last]) of an all-day span given by its
 * midnights in a zone not named (a notification's or a busy item's
 * `start` and `end`): a midnight falls between 10:00 UTC the day before
 * (UTC+14) and 12:00 UTC the same day (UTC−12), so from 12:00 UTC on it is
 * the next day's (wrong only for zones at UTC+13, +14 and −12).
 */
export function midnightDays(startIso, endIso) {
  const day = (iso) => {
    const t = DateTime.fromISO(iso, { zone: 'UTC' });
    return (t.hour >= 12 ? t.plus({ days: 1 }) : t).toISODate();
  };
  const start = day(startIso);
  const end = endIso ? day(endIso) : start;
  return [start, end > start ? end : DateTime.fromISO(start).plus({ days: 1 }).toISODate()];
}

/** When an API event (or occurrence) happens, in `zone`: its days when it is all-day. */
export function formatWhen(e, zone, withYear = false) {
  return e.all_day && e.start_date && e.end_date
    ? formatDays(e.start_date, e.end_date, withYear)
    : formatRange(e.start, e.end, zone, withYear);
}

/** A date (yyyy-mm-dd) `n` days on (or back). */
export const plusDays = (date, n) => DateTime.fromISO(date).plus({ days: n }).toISODate();

/** "Nov 26, 2026" in `zone` (a JS Date or an ISO string). */
export function formatDay(d, zone) {
  const t = d instanceof Date ? DateTime.fromJSDate(d) : DateTime.fromISO(d, { setZone: true });
  return t.setZone(zone).toLocaleString({ day: 'numeric', month: 'short', year: 'numeric' });
}

/** "3 min ago" style, for notification lists. */
export function ago(iso) {
  const d = DateTime.fromISO(iso);
  return d.isValid ? d.toRelative() : '';
}

export { DateTime };
