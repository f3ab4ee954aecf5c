// The month / week / day / list views (FullCalendar), fed by the person's
// agenda for the visible range (GET /v1/events, recurring events arrive
// expanded), in the person's time zone; drag and resize move events with
// PATCH; keyboard shortcuts for the views. All-day events (`all_day`,
// `start_date`/`end_date`, the end exclusive as FullCalendar's) sit in the
// all-day row of the week and day views.

import { Calendar } from '@fullcalendar/core';
import dayGridPlugin from '@fullcalendar/daygrid';
import timeGridPlugin from '@fullcalendar/timegrid';
import interactionPlugin from '@fullcalendar/interaction';
import listPlugin from '@fullcalendar/list';
import luxonPlugin from '@fullcalendar/luxon3';
import { get, patch } from './api.js';
import { currentUser } from './session.js';
import { DateTime, isoUtc, formatWhen, plusDays } from './time.js';
import { toast, isTyping } from './ui.js';
import { askScope } from './scope-prompt.js';

const VIEW_KEY = 'agenda.view';
const VIEWS = { m: 'dayGridMonth', w: 'timeGridWeek', d: 'timeGridDay', l: 'listWeek' };

/** FullCalendar's event object for one API event (or occurrence). */
function toCalendarEvent(e, me) {
  const classNames = [`status-${e.my_status || 'none'}`];
  if (e.group_id) classNames.push('group-event');
  if (e.visibility === 'private') classNames.push('private-event');
  return {
    // Each occurrence of a recurring event by its own id (kept when it is
    // moved on its own, so it shows once, where it is now).
    id: e.occurrence_id || e.id,
    title: e.title,
    // An all-day event by its dates (in its own zone): the same days
    // whatever the person's zone, as calendar apps show them.
    start: e.all_day ? e.start_date : e.start,
    end: e.all_day ? e.end_date : e.end,
    allDay: Boolean(e.all_day),
    // Only the organizer may move an event (others answer with RSVP).
    editable: e.organizer_id === me?.id,
    classNames,
    extendedProps: { event: e },
  };
}

/**
 * Mounts the calendar in `el`. `hooks.create({start, end})` opens the
 * dialog for a new event (Dates; or `{allDay: true, start, end}` with
 * dates, the end exclusive), `hooks.open(apiEvent)` for an existing one.
 */
export function mountCalendar(el, hooks) {
  const me = currentUser();
  const calendar = new Calendar(el, {
    plugins: [dayGridPlugin, timeGridPlugin, interactionPlugin, listPlugin, luxonPlugin],
    timeZone: me.time_zone || 'UTC',
    initialView: localStorage.getItem(VIEW_KEY) || 'timeGridWeek',
    headerToolbar: { left: 'prev,next today newEvent', center: 'title', right: 'dayGridMonth,timeGridWeek,timeGridDay,listWeek' },
    // FullCalendar's icon font is a data: URL the gateway's content security
    // policy refuses (fonts from this origin only): text arrows instead.
    buttonIcons: false,
    buttonText: { prev: '‹', next: '›', today: 'Today', month: 'Month', week: 'Week', day: 'Day', list: 'List' },
    buttonHints: { prev: 'Previous $0 (p)', next: 'Next $0 (n)', today: 'Go to today (t)' },
    customButtons: {
      newEvent: { text: '+ New event', hint: 'New event (c)', click: () => hooks.create(defaultSlot()) },
    },
    // The page scrolls, not a pane inside the grid: FullCalendar's own
    // scroller cannot take focus without breaking its grid's ARIA roles,
    // and a scroll pane keyboard users cannot reach fails WCAG 2.1.1.
    height: 'auto',
    stickyHeaderDates: true,
    firstDay: 1,
    nowIndicator: true,
    allDaySlot: true,
    allDayText: 'All day',
    slotDuration: '00:30:00',
    eventTimeFormat: { hour: '2-digit', minute: '2-digit', hour12: false },
    slotLabelFormat: { hour: '2-digit', minute: '2-digit', hour12: false },
    dayMaxEvents: true,
    // Events are focusable and open with Enter, like links.
    eventInteractive: true,
    selectable: true,
    selectMirror: true,
    editable: true,
    eventDurationEditable: true,
    events: (info, ok, fail) => {
      get('/v1/events', { from: isoUtc(info.start), to: isoUtc(info.end) })
        .then((r) => ok(r.items.map((e) => toCalendarEvent(e, currentUser()))))
        .catch((e) => { toast(`Could not load your agenda: ${e.message}`, { kind: 'error' }); fail(e); });
    },
    loading: (busy) => el.setAttribute('aria-busy', busy ? 'true' : 'false'),
    select: (info) => {
      calendar.unselect();
      // The all-day row (week, day) or day cells (month): an all-day event
      // on those days (FullCalendar's end is exclusive, as the API's).
      hooks.create(info.allDay ? { allDay: true, start: info.startStr, end: info.endStr } : { start: info.start, end: info.end });
    },
    eventClick: (info) => {
      info.jsEvent.preventDefault();
      hooks.open(info.event.extendedProps.event);
    },
    eventDrop: (info) => move(info, 'drop'),
    eventResize: (info) => move(info, 'resize'),
    viewDidMount: (arg) => {
      localStorage.setItem(VIEW_KEY, arg.view.type);
      if (arg.view.type.startsWith('timeGrid')) scrollToMorning(el);
    },
    // A month cell is named by its day number's label ("November 26,
    // 2026") alone, which hides the events shown in it (WCAG 2.5.3):
    // named by its content instead, which starts with that same label.
    dayCellDidMount: (arg) => arg.el.removeAttribute('aria-labelledby'),
    eventDidMount: (arg) => {
      // Screen readers hear the time and the answer, not only the title.
      const e = arg.event.extendedProps.event;
      const label = `${e.title}, ${formatWhen(e, calendar.getOption('timeZone'))}${statusWord(e.my_status)}`;
      arg.el.setAttribute('aria-label', label);
    },
  });

  /** The next whole hour on the day in view (today when it is in view). */
  function defaultSlot() {
    const tz = calendar.getOption('timeZone');
    const now = DateTime.now().setZone(tz);
    const view = calendar.view;
    const inView = now.toJSDate() >= view.activeStart && now.toJSDate() < view.activeEnd;
    let start = now.startOf('hour').plus({ hours: 1 });
    if (!inView) start = DateTime.fromJSDate(calendar.getDate()).setZone(tz).set({ hour: 9, minute: 0, second: 0, millisecond: 0 });
    return { start: start.toJSDate(), end: start.plus({ hours: 1 }).toJSDate() };
  }

  /**
   * A drag or resize. One occurrence of a recurring event asks first which
   * events it moves ("This event", "This and following events", "All
   * events"; Cancel puts it back): this one (its own id) or it and the
   * later ones (`?scope=following`) move to where it was dropped; all of
   * them: the series' first start shifts by the same amount, in its own
   * time zone, so 09:00 stays 09:00 across DST (an all-day event moves by
   * days). Dragged between the all-day row and the hours, a single event
   * becomes all-day on the day it lands on (its days kept) or timed at the
   * time it lands on (one hour); a series is not changed that way (the
   * dialog's "All day" changes it as a whole).
   */
  async function move(info, how) {
    const e = info.event.extendedProps.event;
    const becomes = info.event.allDay !== Boolean(e.all_day);
    if (becomes && e.recurring_event_id) {
      info.revert();
      toast(`“${e.title}” repeats: to make the whole series ${e.all_day ? 'timed' : 'all-day'}, open it and use “All day”.`, {
        kind: 'warning', actions: [{ label: 'Open', run: () => hooks.open(e) }],
      });
      return;
    }
    let scope = null;
    if (e.recurring_event_id && e.occurrence_id) {
      scope = await askScope({ verb: 'change', title: e.title });
      if (!scope) { info.revert(); return; }
    }
    try {
      const base = e.recurring_event_id && (scope === 'all' || !scope) ? await get(`/v1/events/${e.recurring_event_id}`) : e;
      const shift = (iso, delta) => DateTime.fromISO(iso, { zone: base.time_zone })
        .plus({ years: delta.years, months: delta.months, days: delta.days, milliseconds: delta.milliseconds })
        .toUTC().toISO({ suppressMilliseconds: true });
      const shiftDate = (date, delta) => DateTime.fromISO(date)
        .plus({ years: delta.years, months: delta.months, days: delta.days }).toISODate();
      let body;
      if (becomes) body = convertBody(info.event, e);
      else if (e.all_day) {
        body = how === 'drop'
          ? { all_day: true, start: shiftDate(base.start_date, info.delta), end: shiftDate(base.end_date, info.delta) }
          : { all_day: true, start: shiftDate(base.start_date, info.startDelta), end: shiftDate(base.end_date, info.endDelta) };
      } else {
        body = how === 'drop'
          ? { start: shift(base.start, info.delta), end: shift(base.end, info.delta) }
          : { start: shift(base.start, info.startDelta), end: shift(base.end, info.endDelta) };
      }
      // One occurrence takes only its dates (the series stays all-day).
      if (scope === 'this' || scope === 'following') delete body.all_day;
      const path = scope === 'this' || scope === 'following' ? `/v1/events/${e.occurrence_id}` : `/v1/events/${base.id}`;
      const reply = await patch(path, body, scope === 'following' ? { query: { scope: 'following' } } : undefined);
      const what = { this: `this occurrence of “${e.title}”`, following: `“${e.title}” from this occurrence on`, all: `every occurrence of “${e.title}”` }[scope] || `“${e.title}”`;
      const conflicts = reply.conflicts || [];
      if (conflicts.length) {
        toast(`Moved ${what}. It now overlaps ${conflicts.length} other event${conflicts.length > 1 ? 's' : ''}: ${conflicts.slice(0, 3).map((c) => c.title || 'busy time').join(', ')}.`, {
          kind: 'warning', actions: [{ label: 'Open', run: () => hooks.open(reply.event) }],
        });
      } else {
        toast(becomes ? `“${e.title}” is now ${body.all_day ? 'an all-day event' : 'timed'}.` : `Moved ${what}.`);
      }
      calendar.refetchEvents();
    } catch (err) {
      info.revert();
      toast(`Could not move “${e.title}”: ${err.message}`, { kind: 'error' });
    }
  }

  /**
   * The PATCH for a single event dropped across the all-day line: all-day
   * on the days it covers where it landed (at least one; the dates are
   * read in the event's own zone), or timed from where it landed, one hour.
   */
  function convertBody(fcEvent, e) {
    if (fcEvent.allDay) {
      const start = fcEvent.startStr.slice(0, 10);
      const days = Math.max(1, Math.round(DateTime.fromISO(e.end).diff(DateTime.fromISO(e.start), 'days').days));
      return { all_day: true, start, end: plusDays(start, days) };
    }
    const start = DateTime.fromISO(fcEvent.startStr, { setZone: true });
    return {
      all_day: false,
      start: start.toUTC().toISO({ suppressMilliseconds: true }),
      end: start.plus({ hours: 1 }).toUTC().toISO({ suppressMilliseconds: true }),
    };
  }

  // Keyboard shortcuts (as in common calendar apps). Ignored while typing,
  // with a modifier held, or while a dialog is open.
  function onKey(ev) {
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || isTyping(ev)) return;
    if (document.querySelector('dialog[open]') || el.closest('[hidden]')) return;
    const k = ev.key;
    if (k === 't') calendar.today();
    else if (k === 'n' || k === 'j') calendar.next();
    else if (k === 'p' || k === 'k') calendar.prev();
    else if (VIEWS[k]) calendar.changeView(VIEWS[k]);
    else if (k === 'c') hooks.create(defaultSlot());
    else if (k === 'r') calendar.refetchEvents();
    else return;
    ev.preventDefault();
  }
  document.addEventListener('keydown', onKey);

  calendar.render();
  trackToolbar(el);
  return {
    calendar,
    refetch: () => calendar.refetchEvents(),
    setTimeZone: (tz) => calendar.setOption('timeZone', tz),
    updateSize: () => calendar.updateSize(),
    /** My answer to event `id` as last loaded (an occurrence in view), or null. */
    statusOf: (id) => {
      const hit = calendar.getEvents().find((x) => {
        const e = x.extendedProps.event;
        return e && (e.id === id || e.recurring_event_id === id);
      });
      return hit?.extendedProps.event.my_status ?? null;
    },
    destroy: () => { document.removeEventListener('keydown', onKey); calendar.destroy(); },
  };
}

/** Scrolls the page so a time grid starts at 07:00 (the night is above). */
export function scrollToMorning(root) {
  requestAnimationFrame(() => {
    const slot = root.querySelector('.fc-timegrid-slot[data-time="07:00:00"]');
    const pane = root.closest('#main');
    const bar = root.querySelector('.fc-header-toolbar');
    const head = root.querySelector('.fc-col-header');
    if (!slot || !pane) return;
    const offset = slot.getBoundingClientRect().top - pane.getBoundingClientRect().top + pane.scrollTop;
    pane.scrollTop = offset - (bar?.offsetHeight || 0) - (head?.offsetHeight || 0) - 8;
  });
}

/** The toolbar's height, for the sticky day headers below it. */
export function trackToolbar(root) {
  const bar = root.querySelector('.fc-header-toolbar');
  if (!bar || typeof ResizeObserver === 'undefined') return;
  new ResizeObserver(() => root.style.setProperty('--fc-toolbar-h', `${bar.offsetHeight}px`)).observe(bar);
}

function statusWord(s) {
  return ({ needs_action: ', awaiting your answer', tentative: ', you answered maybe', declined: ', you declined', invited: ', you are invited' })[s] || '';
}

export const SHORTCUTS = [
  ['c', 'New event'],
  ['t', 'Today'],
  ['n / j', 'Next period'],
  ['p / k', 'Previous period'],
  ['m', 'Month view'],
  ['w', 'Week view'],
  ['d', 'Day view'],
  ['l', 'List view'],
  ['r', 'Reload the agenda'],
  ['/', 'Search events'],
  ['?', 'Show these shortcuts'],
];
