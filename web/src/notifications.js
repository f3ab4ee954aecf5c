// Live notifications: the stored list (GET /v1/notifications, newest
// first, in pages of 50: "Load older" follows `next`), the WebSocket stream
// /v1/stream for what happens next, a toast for each new one, the unread
// count on the bell button and the panel that lists them ("Mark all read"
// is one POST /v1/notifications/read-all).
//
// The stream (API.md, gateway routes/stream.rs): the browser cannot set
// headers on a WebSocket, so the token goes in `?access_token=`; a
// connection closes with 4401 when its token expires unless a fresh one is
// sent first (`{"type":"token","token":...}`), which the session's renewal
// does; after any drop we reconnect with backoff and `?last_id=` (the
// newest id we have), and the gateway replays what we missed.

import { get, post } from './api.js';
import { accessToken, onChange, refresh, currentUser } from './session.js';
import { formatRange, formatDays, midnightDays, ago } from './time.js';
import { reminderText } from './reminders.js';
import { h, replace, toast } from './ui.js';

const MAX_BACKOFF_MS = 30_000;
const PAGE_SIZE = 50;
// For tests and debugging: a smaller page (1..200), e.g.
// localStorage.setItem('agenda.notifications.page_size', '2'), read when
// the app starts.
const PAGE_SIZE_KEY = 'agenda.notifications.page_size';

function pageSize() {
  const n = Number(localStorage.getItem(PAGE_SIZE_KEY));
  return Number.isInteger(n) && n >= 1 && n <= 200 ? n : PAGE_SIZE;
}

/**
 * Starts the notifications of the signed-in person.
 * `hooks.openEvent(id)`, `hooks.changed(notification)` (a live change the
 * calendar, dialog and groups may want to show), `hooks.openGroups()`,
 * `hooks.statusOf(eventId)` (my answer as the calendar has it, or null).
 * Returns { button, panel, stop }.
 */
export function startNotifications(hooks) {
  const items = new Map(); // id -> notification
  const limit = pageSize();
  let lastId = null;
  let older = null; // the `next` of the oldest page read: "Load older" reads from there
  let firstPageRead = false;
  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let stopped = false;

  // The accessible name is the visible text: "Notifications 2 unread".
  const count = h('span', { class: 'count' });
  const button = h('button', { type: 'button', class: 'btn bell', 'aria-expanded': 'false', 'aria-controls': 'notifications-panel' },
    h('span', { text: 'Notifications' }), ' ', count);
  const connection = h('p', { class: 'connection', 'data-state': 'connecting', text: 'Connecting…' });
  const list = h('ul', { class: 'notification-list' });
  const heading = h('h2', { id: 'notifications-title', text: 'Notifications' });
  const loadOlder = h('button', { type: 'button', class: 'btn btn-small load-older', hidden: true, onclick: readOlder }, 'Load older');
  const panel = h('section', { id: 'notifications-panel', class: 'panel notifications', hidden: true, 'aria-labelledby': 'notifications-title', tabindex: '-1' },
    h('div', { class: 'panel-head' }, heading,
      h('button', { type: 'button', class: 'btn btn-small', onclick: markAllRead }, 'Mark all read'),
      h('button', { type: 'button', class: 'btn btn-small btn-quiet', 'aria-label': 'Close notifications', onclick: () => toggle(false) }, '×')),
    connection, list, loadOlder);

  button.addEventListener('click', () => toggle(panel.hidden));
  panel.addEventListener('keydown', (ev) => { if (ev.key === 'Escape') { toggle(false); button.focus(); } });

  function toggle(show) {
    panel.hidden = !show;
    button.setAttribute('aria-expanded', String(show));
    if (show) panel.focus();
  }

  function unread() { let n = 0; for (const x of items.values()) if (!x.read) n += 1; return n; }

  function render() {
    const n = unread();
    replace(count, String(n), h('span', { class: 'visually-hidden', text: ' unread' }));
    count.hidden = n === 0;
    button.dataset.unread = String(n);
    const sorted = [...items.values()].sort((a, b) => (a.id < b.id ? 1 : -1));
    replace(list, sorted.length ? sorted.map(row) : h('li', { class: 'empty', text: 'Nothing yet.' }));
    loadOlder.hidden = !older;
  }

  function row(n) {
    return h('li', { class: `notification ${n.read ? 'read' : 'unread'}`, tabindex: '-1', dataset: { id: n.id, kind: n.kind } },
      h('p', { class: 'notification-text', text: describe(n) }),
      h('p', { class: 'notification-time', text: `${n.read ? '' : 'New · '}${ago(n.created_at)}` }),
      h('div', { class: 'notification-actions' }, actions(n).map((a) => h('button', { type: 'button', class: 'btn btn-small', onclick: a.run }, a.label))));
  }

  /** What a person can do about a notification. */
  function actions(n) {
    const out = [];
    const d = n.data || {};
    if (d.event_id && n.kind !== 'event_cancelled') {
      const answer = n.kind === 'event_invited' || n.answer === 'again' || n.answer === 'awaited';
      out.push({ label: answer ? 'Open and answer' : 'Open event', run: () => { markRead(n); hooks.openEvent(d.event_id); } });
    }
    if (n.kind === 'group_invitation' && d.invitation_id) {
      out.push({ label: 'Join group', run: () => answerInvitation(n, 'accept') });
      out.push({ label: 'Decline', run: () => answerInvitation(n, 'decline') });
    }
    if (d.group_id && n.kind !== 'group_invitation' && n.kind !== 'group_deleted') {
      out.push({ label: 'Open groups', run: () => { markRead(n); hooks.openGroups(d.group_id); } });
    }
    if (!n.read && !out.length) out.push({ label: 'Mark read', run: () => markRead(n) });
    return out;
  }

  async function answerInvitation(n, how) {
    try {
      await post(`/v1/invitations/${n.data.invitation_id}/${how}`);
      toast(how === 'accept' ? `You joined “${n.data.group_name}”.` : `Declined the invitation to “${n.data.group_name}”.`);
      markRead(n);
      hooks.changed({ kind: 'invitation_self', data: n.data });
    } catch (e) {
      toast(`Could not answer: ${e.message}`, { kind: 'error' });
    }
  }

  async function markRead(n) {
    if (n.read) return;
    n.read = true;
    render();
    try { await post(`/v1/notifications/${n.id}/read`); } catch { /* shown as read here anyway */ }
  }

  /** Every one read, in one request (older pages not read yet included). */
  async function markAllRead() {
    const open = [...items.values()].filter((n) => !n.read);
    for (const n of open) n.read = true;
    render();
    try {
      await post('/v1/notifications/read-all');
    } catch (e) {
      for (const n of open) n.read = false;
      render();
      toast(`Could not mark the notifications read: ${e.message}`, { kind: 'error' });
    }
  }

  /** Adds `n` (once); `live`: it just happened, so tell the person. */
  function receive(n, live) {
    if (!n?.id || items.has(n.id)) return;
    items.set(n.id, n);
    if (!lastId || n.id > lastId) lastId = n.id; // UUIDv7: ordered by time
    render();
    if (!live) return;
    if (n.kind === 'event_updated' && n.data?.event_id) {
      // Moving an event sets the attendees' answers back to needs_action:
      // read it again to tell "answer again" from a plain change.
      const before = hooks.statusOf?.(n.data.event_id) ?? null;
      hooks.changed(n);
      get(`/v1/events/${n.data.event_id}`).then((ev) => {
        const me = currentUser();
        if (ev.organizer_id !== me?.id && (ev.my_status === 'needs_action' || ev.my_status === 'invited')) {
          n.answer = ANSWERED.includes(before) && ev.my_status === 'needs_action' ? 'again' : 'awaited';
          render();
        }
      }, () => { /* the toast says it changed; the panel keeps it */ }).finally(() => tell(n));
      return;
    }
    tell(n);
    if (n.kind !== 'reminder') hooks.changed(n); // a reminder changes nothing
  }

  function tell(n) {
    if (stopped) return;
    const acts = actions(n).filter((a) => a.label !== 'Mark read');
    toast(describe(n), { kind: 'notice', actions: acts });
  }

  /** The newest page (at start, and once more when the stream first connects). */
  async function loadStored() {
    try {
      const r = await get('/v1/notifications', { limit });
      for (const n of r.items) receive(n, false);
      // Older pages go on from where the first read ended (a later read of
      // the newest page would only overlap it).
      if (!firstPageRead) { firstPageRead = true; older = r.next || null; render(); }
    } catch (e) {
      toast(`Could not load notifications: ${e.message}`, { kind: 'error' });
    }
  }

  /** "Load older": the next page; focus goes to the first row it added. */
  async function readOlder() {
    if (!older) return;
    loadOlder.disabled = true;
    try {
      const r = await get('/v1/notifications', { limit, before: older });
      const added = r.items.filter((n) => !items.has(n.id));
      for (const n of r.items) receive(n, false);
      older = r.next || null;
      render();
      const first = added.length && list.querySelector(`[data-id="${CSS.escape(added[0].id)}"]`);
      if (older) loadOlder.focus(); else if (first) first.focus(); else panel.focus();
    } catch (e) {
      toast(`Could not load older notifications: ${e.message}`, { kind: 'error' });
    } finally {
      loadOlder.disabled = false;
    }
  }

  function setConnection(state, text) {
    connection.dataset.state = state;
    connection.textContent = text;
    document.body.dataset.stream = state;
  }

  function connect() {
    clearTimeout(retryTimer);
    if (stopped || ws) return;
    const token = accessToken();
    if (!token) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ access_token: token });
    if (lastId) q.set('last_id', lastId);
    const firstWithoutId = !lastId;
    setConnection('connecting', 'Connecting…');
    const sock = new WebSocket(`${scheme}//${location.host}/v1/stream?${q}`);
    ws = sock;
    sock.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (msg.type === 'ready') {
        attempt = 0;
        setConnection('live', 'Live: new notifications appear here as they happen.');
        // Connected without a last_id: anything stored between the first
        // list and now was not replayed, so read the list once more.
        if (firstWithoutId) loadStored().then(() => {});
      } else if (msg.type === 'notification') {
        receive(msg.notification, true);
      }
    };
    sock.onclose = async (ev) => {
      if (ws === sock) ws = null;
      if (stopped) return;
      setConnection('offline', 'Reconnecting…');
      if (ev.code === 4401) {
        // The token expired or the session ended: renew, then reconnect
        // (a failed renewal signs out, which stops us).
        const ok = await refresh();
        if (!ok && !currentUser()) return;
      }
      attempt += 1;
      const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(attempt, 6));
      retryTimer = setTimeout(connect, base / 2 + Math.random() * (base / 2));
    };
  }

  // A renewed access token goes to the open stream so it is not closed.
  const unsubscribe = onChange(({ token, reason }) => {
    if (reason === 'refreshed' && ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'token', token }));
    if (reason === 'signed-out') stop();
  });
  const online = () => { if (!ws) { attempt = 0; connect(); } };
  window.addEventListener('online', online);

  function stop() {
    stopped = true;
    clearTimeout(retryTimer);
    unsubscribe();
    window.removeEventListener('online', online);
    ws?.close(1000, 'signed out');
    ws = null;
  }

  render();
  loadStored().then(connect);
  return { button, panel, stop, toggle };
}

const ANSWERED = ['accepted', 'tentative', 'declined'];
const ANSWER_VERB = { accepted: 'accepted', tentative: 'answered maybe to', declined: 'declined', needs_action: 'has not answered yet for' };

/**
 * One sentence for a notification. Event notifications name who caused
 * them (`by_username`, while they take part); an `rsvp` what they
 * answered (`status`); an `event_updated` the app read again live may
 * carry `answer` ('again': my answer was reset; 'awaited': I have not
 * answered); a `reminder` when the occurrence is, from now
 * ("starts at 10:00 (in 15 min)", all day: its days).
 */
export function describe(n) {
  const d = n.data || {};
  const tz = currentUser()?.time_zone || 'UTC';
  const title = d.title ? `“${d.title}”` : 'an event';
  // An all-day event's days (its midnights in the event's zone, which the
  // data does not name: `midnightDays`), not midnights as times.
  const when = d.start && d.end ? ` (${d.all_day ? formatDays(...midnightDays(d.start, d.end)) : formatRange(d.start, d.end, tz)})` : '';
  const group = d.group_name || d.name ? `“${d.group_name || d.name}”` : 'a group';
  const by = d.by_username || null;
  switch (n.kind) {
    case 'event_invited': return by ? `${by} invited you to ${title}${when}.` : `You are invited to ${title}${when}.`;
    case 'event_added': return `${title} was added to your agenda${by ? ` by ${by}` : ''}${when}.`;
    case 'event_updated':
      if (n.answer === 'again') return `${by || 'The organizer'} moved ${title}${when}. Please answer again.`;
      if (n.answer === 'awaited') return `${by ? `${by} changed` : 'Changed:'} ${title}${when}. It awaits your answer.`;
      return by ? `${by} changed ${title}${when}.` : `${title} was changed${when}.`;
    case 'event_cancelled': return by ? `${by} cancelled ${title}${when}.` : `${title} was cancelled${when}.`;
    case 'rsvp': return `${by || 'An attendee'} ${ANSWER_VERB[d.status] || 'answered your invitation to'} ${title}.`;
    case 'reminder': return reminderText(d, tz);
    case 'attendee_left': return `An attendee of ${title} deleted their account.`;
    case 'group_invitation': return `You are invited to join the group ${group}.`;
    case 'invitation_answered': return `${d.username || 'Someone'} ${d.status === 'accepted' ? 'joined' : 'declined to join'} ${group}.`;
    case 'invitation_revoked': return `Your invitation to ${group} was withdrawn.`;
    case 'member_changed': return d.rank === 0 ? `You now own ${group}.` : `Your rank in ${group} is now ${d.rank}.`;
    case 'member_removed': return `You were removed from ${group}.`;
    case 'group_deleted': return `The group ${group} was deleted.`;
    default: return `Something changed (${n.kind}).`;
  }
}
