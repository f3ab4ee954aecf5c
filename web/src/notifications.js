// Live notifications: the stored list (GET /v1/notifications), the
// WebSocket stream /v1/stream for what happens next, a toast for each new
// one, the unread count on the bell button and the panel that lists them.
//
// The stream (API.md, gateway routes/stream.rs): the browser cannot set
// headers on a WebSocket, so the token goes in `?access_token=`; a
// connection closes with 4401 when its token expires unless a fresh one is
// sent first (`{"type":"token","token":...}`), which the session's renewal
// does; after any drop we reconnect with backoff and `?last_id=` (the
// newest id we have), and the gateway replays what we missed.

import { get, post } from './api.js';
import { accessToken, onChange, refresh, currentUser } from './session.js';
import { formatRange, ago } from './time.js';
import { h, replace, toast } from './ui.js';

const MAX_BACKOFF_MS = 30_000;

/**
 * Starts the notifications of the signed-in person.
 * `hooks.openEvent(id)`, `hooks.changed(notification)` (a live change the
 * calendar, dialog and groups may want to show), `hooks.openGroups()`.
 * Returns { button, panel, stop }.
 */
export function startNotifications(hooks) {
  const items = new Map(); // id -> notification
  let lastId = null;
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
  const panel = h('section', { id: 'notifications-panel', class: 'panel notifications', hidden: true, 'aria-labelledby': 'notifications-title', tabindex: '-1' },
    h('div', { class: 'panel-head' }, heading,
      h('button', { type: 'button', class: 'btn btn-small', onclick: markAllRead }, 'Mark all read'),
      h('button', { type: 'button', class: 'btn btn-small btn-quiet', 'aria-label': 'Close notifications', onclick: () => toggle(false) }, '×')),
    connection, list);

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
  }

  function row(n) {
    return h('li', { class: `notification ${n.read ? 'read' : 'unread'}`, dataset: { id: n.id, kind: n.kind } },
      h('p', { class: 'notification-text', text: describe(n) }),
      h('p', { class: 'notification-time', text: `${n.read ? '' : 'New · '}${ago(n.created_at)}` }),
      h('div', { class: 'notification-actions' }, actions(n).map((a) => h('button', { type: 'button', class: 'btn btn-small', onclick: a.run }, a.label))));
  }

  /** What a person can do about a notification. */
  function actions(n) {
    const out = [];
    const d = n.data || {};
    if (d.event_id && n.kind !== 'event_cancelled') {
      out.push({ label: n.kind === 'event_invited' ? 'Open and answer' : 'Open event', run: () => { markRead(n); hooks.openEvent(d.event_id); } });
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

  async function markAllRead() {
    const open = [...items.values()].filter((n) => !n.read);
    for (const n of open) n.read = true;
    render();
    await Promise.allSettled(open.map((n) => post(`/v1/notifications/${n.id}/read`)));
  }

  /** Adds `n` (once); `live`: it just happened, so tell the person. */
  function receive(n, live) {
    if (!n?.id || items.has(n.id)) return;
    items.set(n.id, n);
    if (!lastId || n.id > lastId) lastId = n.id; // UUIDv7: ordered by time
    render();
    if (live) {
      const acts = actions(n).filter((a) => a.label !== 'Mark read');
      toast(describe(n), { kind: 'notice', actions: acts });
      hooks.changed(n);
    }
  }

  async function loadStored() {
    try {
      const r = await get('/v1/notifications');
      for (const n of r.items) receive(n, false);
    } catch (e) {
      toast(`Could not load notifications: ${e.message}`, { kind: 'error' });
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

/** One sentence for a notification. */
export function describe(n) {
  const d = n.data || {};
  const tz = currentUser()?.time_zone || 'UTC';
  const title = d.title ? `“${d.title}”` : 'an event';
  const when = d.start && d.end ? ` (${formatRange(d.start, d.end, tz)})` : '';
  const group = d.group_name || d.name ? `“${d.group_name || d.name}”` : 'a group';
  switch (n.kind) {
    case 'event_invited': return `You are invited to ${title}${when}.`;
    case 'event_added': return `${title} was added to your agenda${when}.`;
    case 'event_updated': return `${title} was changed${when}.`;
    case 'event_cancelled': return `${title} was cancelled${when}.`;
    case 'rsvp': return `An attendee answered your invitation to ${title}.`;
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
