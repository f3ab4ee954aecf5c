// The app's entry: the sign-in / registration screen, then the shell
// (top bar, calendar, groups, calendar apps, notifications) wired together.
// Sections are chosen by the URL's hash (#/calendar, #/groups,
// #/calendar-apps): the gateway serves only
// the app's own files, so every page of the app is the one index.html.

import { api } from './api.js';
import * as session from './session.js';
import { mountCalendar, SHORTCUTS } from './calendar.js';
import { openNewEvent, openEvent, eventChanged, setOnChanged, knownStatus, close as closeEventDialog } from './event-dialog.js';
import { startNotifications } from './notifications.js';
import { mountGroups } from './groups.js';
import { mountSearch } from './search.js';
import { mountCalendarApps } from './calendar-apps.js';
import { zones, browserZone } from './time.js';
import { h, replace, field, showError, clearErrors, toast, clearToasts, isTyping } from './ui.js';

const root = document.getElementById('app');
let teardown = null;

function zoneSelect(name, value) {
  const sel = h('select', { name }, zones().map((z) => h('option', { value: z, text: z })));
  if (![...sel.options].some((o) => o.value === value)) sel.append(h('option', { value, text: value }));
  sel.value = value;
  return sel;
}

function showAuth(message) {
  teardown?.();
  teardown = null;
  document.title = 'Sign in · Agenda';
  const who = h('input', { name: 'username', type: 'text', autocomplete: 'username', required: true, autocapitalize: 'none', spellcheck: 'false' });
  const pw = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const loginForm = h('form', { class: 'card auth-card', novalidate: true, 'aria-labelledby': 'login-title', onsubmit: async (ev) => {
    ev.preventDefault();
    clearErrors(loginForm);
    try {
      await session.login(who.value.trim(), pw.value);
      showApp();
    } catch (e) { showError(loginForm, e); }
  } },
  h('h2', { id: 'login-title', text: 'Sign in' }),
  h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
  field('Username or email', who, { field: 'username' }),
  field('Password', pw, { field: 'password' }),
  h('button', { type: 'submit', class: 'btn btn-primary' }, 'Sign in'));

  const r = {
    username: h('input', { name: 'username', type: 'text', autocomplete: 'username', required: true, minlength: 3, maxlength: 32, pattern: '[A-Za-z0-9_.\\-]+', autocapitalize: 'none', spellcheck: 'false' }),
    email: h('input', { name: 'email', type: 'email', autocomplete: 'email', required: true }),
    password: h('input', { name: 'password', type: 'password', autocomplete: 'new-password', required: true, minlength: 8, maxlength: 128 }),
    display_name: h('input', { name: 'display_name', type: 'text', autocomplete: 'name', maxlength: 100 }),
    time_zone: zoneSelect('time_zone', browserZone()),
  };
  const regForm = h('form', { class: 'card auth-card', novalidate: true, 'aria-labelledby': 'register-title', onsubmit: async (ev) => {
    ev.preventDefault();
    clearErrors(regForm);
    try {
      await session.register({
        username: r.username.value.trim(), email: r.email.value.trim(), password: r.password.value,
        display_name: r.display_name.value.trim(), time_zone: r.time_zone.value,
      });
      showApp();
    } catch (e) { showError(regForm, e); }
  } },
  h('h2', { id: 'register-title', text: 'Create an account' }),
  h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
  field('Username', r.username, { field: 'username', hint: '3 to 32 letters, digits, dots, dashes or underscores.' }),
  field('Email', r.email, { field: 'email' }),
  field('Password', r.password, { field: 'password', hint: 'At least 8 characters, and not a common password.' }),
  field('Display name (optional)', r.display_name, { field: 'display_name' }),
  field('Time zone', r.time_zone, { field: 'time_zone' }),
  h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create account'));

  replace(root,
    h('main', { class: 'auth', id: 'main' },
      h('h1', { class: 'brand-big', text: 'Agenda' }),
      h('p', { class: 'tagline', text: 'Your calendar, shared with the people and groups you work with.' }),
      message ? h('p', { class: 'notice', role: 'status', text: message }) : null,
      h('div', { class: 'auth-forms' }, loginForm, regForm)));
}

function showApp() {
  teardown?.();
  const me = session.currentUser();
  document.title = 'Agenda';

  const tz = zoneSelect('time_zone', me.time_zone || 'UTC');
  tz.id = 'my-time-zone';
  const calendarEl = h('div', { class: 'calendar', id: 'calendar' });
  // The calendar's header: event search ("/" focuses it).
  const search = mountSearch({
    anchor: () => cal.calendar.view.activeStart,
    open: (occurrence) => openEvent(occurrence),
    active: () => !calendarView.hidden,
  });
  const calendarView = h('section', { id: 'calendar-view', class: 'view', 'aria-label': 'Calendar' }, search.el, calendarEl);
  const groupsView = h('section', { id: 'groups-view', class: 'view', 'aria-label': 'Groups', hidden: true });
  const appsView = h('section', { id: 'apps-view', class: 'view', 'aria-label': 'Calendar apps', hidden: true });
  const navCal = h('a', { href: '#/calendar', class: 'nav-link' }, 'Calendar');
  const navGroups = h('a', { href: '#/groups', class: 'nav-link' }, 'Groups');
  const navApps = h('a', { href: '#/calendar-apps', class: 'nav-link' }, 'Calendar apps');
  const shortcutsDialog = h('dialog', { class: 'dialog dialog-small', 'aria-labelledby': 'shortcuts-title' },
    h('h2', { id: 'shortcuts-title', text: 'Keyboard shortcuts' }),
    h('table', { class: 'shortcuts' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Key' }), h('th', { scope: 'col', text: 'Action' }))),
      h('tbody', {}, SHORTCUTS.map(([k, what]) => h('tr', {}, h('td', {}, h('kbd', { text: k })), h('td', { text: what }))))),
    h('p', { class: 'hint', text: 'Tab moves between buttons and events; Enter opens an event; Escape closes a dialog, or dismisses the message focus is on (notifications stay in the Notifications panel).' }),
    h('form', { method: 'dialog' }, h('button', { class: 'btn btn-primary', type: 'submit' }, 'Close')));

  let groups = null;
  let apps = null;
  let pendingGroup = null; // a group to show once the groups page is up
  const notifications = startNotifications({
    openEvent: (id) => openEvent(id),
    // My answer to an event as the calendar has it now (before a refetch),
    // else as the event dialog last saw it.
    statusOf: (id) => cal.statusOf(id) ?? knownStatus(id),
    openGroups: (id) => {
      if (location.hash.startsWith('#/groups') && groups) groups.show(id);
      else { pendingGroup = id; location.hash = '#/groups'; }
    },
    changed: (n) => {
      cal.refetch();
      if (n.data?.event_id) eventChanged(n.data.event_id);
      if (n.data?.group_id) groups?.refresh();
      else groups?.refetchAgenda();
    },
  });

  replace(root,
    h('a', { href: '#main', class: 'skip-link', onclick: (ev) => { ev.preventDefault(); document.getElementById('main').focus(); } }, 'Skip to content'),
    h('header', { class: 'topbar' },
      h('h1', { class: 'brand', text: 'Agenda' }),
      h('nav', { 'aria-label': 'Sections' }, navCal, navGroups, navApps),
      h('div', { class: 'topbar-tools' },
        notifications.button,
        h('div', { class: 'tz-picker' }, h('label', { for: 'my-time-zone', text: 'Time zone' }), tz),
        h('button', { type: 'button', class: 'btn btn-quiet', 'aria-keyshortcuts': '?', onclick: () => shortcutsDialog.showModal() }, 'Shortcuts'),
        h('span', { class: 'who', text: me.display_name || me.username, title: `Signed in as ${me.username}` }),
        h('button', { type: 'button', class: 'btn', onclick: () => session.logout() }, 'Log out'))),
    notifications.panel,
    h('main', { id: 'main', tabindex: '-1' }, calendarView, groupsView, appsView),
    shortcutsDialog);

  const cal = mountCalendar(calendarEl, { create: openNewEvent, open: openEvent });
  setOnChanged(() => { cal.refetch(); groups?.refetchAgenda(); });

  tz.addEventListener('change', async () => {
    const value = tz.value;
    try {
      const user = await api('PATCH', '/v1/me', { body: { time_zone: value } });
      session.setUser({ ...session.currentUser(), ...user });
      cal.setTimeZone(value);
      groups?.setTimeZone(value);
      toast(`Times are now shown in ${value}.`);
    } catch (e) {
      tz.value = session.currentUser().time_zone;
      toast(`Could not change the time zone: ${e.message}`, { kind: 'error' });
    }
  });

  function route() {
    const onGroups = location.hash.startsWith('#/groups');
    const onApps = location.hash.startsWith('#/calendar-apps');
    calendarView.hidden = onGroups || onApps;
    groupsView.hidden = !onGroups;
    appsView.hidden = !onApps;
    navCal.setAttribute('aria-current', onGroups || onApps ? 'false' : 'page');
    navGroups.setAttribute('aria-current', onGroups ? 'page' : 'false');
    navApps.setAttribute('aria-current', onApps ? 'page' : 'false');
    if (onApps) {
      if (!apps) apps = mountCalendarApps(appsView, { changed: () => cal.refetch() });
      apps.show();
      document.getElementById('main').scrollTop = 0; // not where the calendar was scrolled to
    } else if (onGroups) {
      if (!groups) groups = mountGroups(groupsView, { openEvent: (id) => openEvent(id) });
      groups.show(pendingGroup);
      pendingGroup = null;
    } else {
      cal.updateSize();
    }
  }
  window.addEventListener('hashchange', route);
  route();

  const onKey = (ev) => {
    if (ev.key === '?' && !isTyping(ev) && !document.querySelector('dialog[open]')) { ev.preventDefault(); shortcutsDialog.showModal(); }
  };
  document.addEventListener('keydown', onKey);

  teardown = () => {
    window.removeEventListener('hashchange', route);
    document.removeEventListener('keydown', onKey);
    notifications.stop();
    closeEventDialog();
    cal.destroy();
    search.destroy();
    groups?.destroy();
    apps?.destroy();
    clearToasts();
  };
}

session.onChange(({ reason }) => {
  if (reason === 'signed-out') showAuth('You are signed out.');
});

(async () => {
  let user = null;
  try { user = await session.restore(); } catch { user = null; }
  if (user) showApp(); else showAuth();
})();
