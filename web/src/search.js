// Event search (GET /v1/events/search): the box in the calendar's header
// ("/" focuses it), and its results for a window around the visible range:
// the year before its first day and the year from it (two requests, as
// the API takes at most 366 days per request). Each result opens the event
// dialog. Errors (the API's, e.g. a blank search) show next to the box.

import { get } from './api.js';
import { currentUser } from './session.js';
import { DateTime, isoUtc, formatWhen, formatDay } from './time.js';
import { h, replace, field, showError, clearErrors, isTyping } from './ui.js';

const DAYS = 365; // per request; the API allows 366
const FIRST_SHOWN = 10; // results per part before "Show all"

/**
 * The search header. `hooks.anchor()`: the first instant of the visible
 * range (a Date); `hooks.open(occurrence)`: opens the event dialog;
 * `hooks.active()`: whether the calendar is the page shown (for "/").
 * Returns { el, destroy }.
 */
export function mountSearch(hooks) {
  const input = h('input', {
    type: 'search', name: 'q', maxlength: 200, autocomplete: 'off', spellcheck: 'false',
    'aria-keyshortcuts': '/', placeholder: 'Title, location or description',
  });
  input.id = 'event-search';
  const clear = h('button', { type: 'button', class: 'btn btn-quiet', hidden: true, onclick: () => { reset(); input.focus(); } }, 'Clear');
  const form = h('form', { class: 'search-form', role: 'search', 'aria-label': 'Events', novalidate: true, onsubmit: (ev) => { ev.preventDefault(); run(input.value); } },
    field('Search events', input, { field: 'q' }),
    h('button', { type: 'submit', class: 'btn' }, 'Search'),
    clear);
  // Announced as it changes ("Searching…", "12 events match …").
  const status = h('p', { class: 'search-status', role: 'status' });
  const results = h('section', { class: 'search-results', hidden: true, 'aria-labelledby': 'search-results-title', tabindex: '-1' });
  const el = h('div', { class: 'calendar-head' }, form, status, results);

  let seq = 0; // the newest search; older answers are dropped
  let last = null; // the query of the results shown

  function reset() {
    seq += 1;
    last = null;
    clearErrors(form);
    input.value = '';
    status.textContent = '';
    replace(results);
    results.hidden = true;
    clear.hidden = true;
  }

  async function run(q) {
    const mine = ++seq;
    clearErrors(form);
    const tz = currentUser()?.time_zone || 'UTC';
    const anchor = DateTime.fromJSDate(hooks.anchor()).toUTC();
    const from = anchor.minus({ days: DAYS });
    const to = anchor.plus({ days: DAYS });
    const iso = (d) => isoUtc(d.toJSDate());
    status.textContent = 'Searching…';
    clear.hidden = false;
    let parts;
    try {
      // The API trims q and refuses a blank one (422 naming q): its
      // message is shown next to the box.
      parts = await Promise.all([
        get('/v1/events/search', { q, from: iso(from), to: iso(anchor) }),
        get('/v1/events/search', { q, from: iso(anchor), to: iso(to) }),
      ]);
    } catch (e) {
      if (mine !== seq) return;
      status.textContent = '';
      results.hidden = true;
      showError(form, { field: 'q', message: e.message });
      return;
    }
    if (mine !== seq) return;
    last = q;
    const earlier = parts[0].items.slice().sort((a, b) => Date.parse(b.start) - Date.parse(a.start));
    const later = parts[1].items.slice().sort((a, b) => Date.parse(a.start) - Date.parse(b.start));
    const total = earlier.length + later.length;
    const shown = `“${q.trim()}”`;
    const span = `from ${formatDay(from.toJSDate(), tz)} to ${formatDay(to.toJSDate(), tz)}`;
    status.textContent = total
      ? `${total} event${total > 1 ? 's' : ''} match ${shown} ${span}.`
      : `No events match ${shown} ${span}.`;
    if (!total) { replace(results); results.hidden = true; return; }
    replace(results,
      h('div', { class: 'search-results-head' },
        h('h2', { id: 'search-results-title', text: `Search results for ${shown}` }),
        h('span', { class: 'hint', text: `Times in ${tz}. Escape closes.` })),
      part(`From ${formatDay(anchor.toJSDate(), tz)}`, later, tz),
      part(`Before ${formatDay(anchor.toJSDate(), tz)}`, earlier, tz));
    results.hidden = false;
  }

  /** One part of the results (a heading and its list), or nothing. */
  function part(title, items, tz) {
    if (!items.length) return null;
    const list = h('ul', { class: 'search-list' });
    const more = h('button', { type: 'button', class: 'btn btn-small', onclick: () => {
      const first = list.children.length;
      fill(items.length);
      more.remove();
      list.children[first]?.querySelector('button')?.focus();
    } }, `Show all ${items.length}`);
    function fill(n) { replace(list, items.slice(0, n).map((e) => result(e, tz))); }
    fill(FIRST_SHOWN);
    return h('div', { class: 'search-part' },
      h('h3', { text: `${title} (${items.length})` }), list, items.length > FIRST_SHOWN ? more : null);
  }

  function result(e, tz) {
    return h('li', {},
      h('button', { type: 'button', class: 'search-result', dataset: { eventId: e.recurring_event_id || e.id }, onclick: () => hooks.open(e) },
        h('span', { class: 'search-title', text: e.title }),
        h('span', { class: 'search-when', text: formatWhen(e, tz, true) }),
        e.location ? h('span', { class: 'search-where', text: e.location }) : null));
  }

  // Escape in the box or the results closes them (focus back in the box).
  el.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && (last !== null || status.textContent || !clear.hidden)) {
      ev.preventDefault();
      reset();
      input.focus();
    }
  });
  // The box emptied (also by the browser's own × of a search field): the
  // results of what was there go too.
  input.addEventListener('input', () => { if (!input.value && last !== null) reset(); });

  function onKey(ev) {
    if (ev.key !== '/' || ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || isTyping(ev)) return;
    if (document.querySelector('dialog[open]') || !hooks.active()) return;
    ev.preventDefault();
    input.focus();
    input.select();
  }
  document.addEventListener('keydown', onKey);

  return { el, destroy: () => document.removeEventListener('keydown', onKey) };
}
