// Calendar apps: the person's private iCalendar feed URL (to subscribe
// from another calendar app), CalDAV (the server URL, the username and
// app passwords, for Thunderbird, DAVx5, Apple Calendar) and importing an
// .ics file. `feedBox` and `copyField` also serve a group's feed
// (groups.js).

import { api, get, post, del } from './api.js';
import { currentUser } from './session.js';
import { formatDay } from './time.js';
import { h, replace, field, showError, clearErrors, toast, uid } from './ui.js';

const MAX_IMPORT_BYTES = 4 << 20; // the most POST /v1/events/import takes

/**
 * A labelled read-only text (a URL, a username, a password) with a Copy
 * button; the text is selected on focus. `hint` describes it.
 */
export function copyField(label, value, { hint } = {}) {
  const id = uid('copy');
  const input = h('input', { id, type: 'text', readonly: true, value, class: 'copy-value', spellcheck: 'false', autocomplete: 'off', onfocus: () => input.select() });
  const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
  if (hintEl) input.setAttribute('aria-describedby', hintEl.id);
  const said = h('span', { class: 'copy-status', role: 'status' });
  const button = h('button', { type: 'button', class: 'btn btn-small', 'aria-label': `Copy ${label}`, onclick: () => copy(input, button, said) }, 'Copy');
  return h('div', { class: 'field copy-field' },
    h('label', { for: id, text: label }),
    h('div', { class: 'copy-row' }, input, button, said),
    hintEl);
}

async function copy(input, button, said) {
  said.textContent = '';
  let done = false;
  try {
    await navigator.clipboard.writeText(input.value);
    done = true;
  } catch {
    // No clipboard API (a plain-HTTP origin other than localhost): the
    // older way, from a selection.
    input.focus();
    input.select();
    try { done = document.execCommand('copy'); } catch { done = false; }
    button.focus();
  }
  said.textContent = done ? 'Copied.' : 'Could not copy: select the text and copy it (Ctrl+C, ⌘C on a Mac).';
}

/**
 * A feed URL: `label` on the button that gets one (`make()` resolves with
 * `{url}`), then the URL with a Copy button and "Make a new URL…", which
 * warns that the current one stops working before it replaces it. The API
 * cannot show a URL made before (it only makes new ones), which the hint
 * says. `name`: the URL field's label; `url`: one made earlier (shown
 * again when the page is drawn anew), `made(url)` is told of each new one.
 */
export function feedBox({ label, name, hint, make, url: known, made }) {
  const error = h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true });
  const shown = h('div', { class: 'feed-url' });
  const hintId = uid('feed-hint');
  const get1 = h('button', { type: 'button', class: 'btn btn-primary', 'aria-describedby': hintId, onclick: () => create(get1) }, label);
  const firstHint = h('p', { class: 'hint', id: hintId, text: 'Agenda cannot show a URL made before: getting one makes a new URL, and any earlier one stops working.' });
  const again = h('button', { type: 'button', class: 'btn', hidden: true, 'aria-expanded': 'false', onclick: () => ask(true) }, 'Make a new URL…');
  const replaceIt = h('button', { type: 'button', class: 'btn btn-danger', onclick: () => create(replaceIt) }, 'Replace the URL');
  const confirm = h('div', { class: 'confirm', hidden: true, role: 'group', 'aria-label': 'Make a new URL' },
    h('p', { text: 'The current URL stops working at once: every app subscribed to it has to be given the new one.' }),
    replaceIt,
    h('button', { type: 'button', class: 'btn', onclick: () => { ask(false); again.focus(); } }, 'Keep this one'));

  function ask(open) {
    confirm.hidden = !open;
    again.setAttribute('aria-expanded', String(open));
    if (open) replaceIt.focus();
  }

  async function create(button) {
    error.hidden = true;
    button.disabled = true;
    try {
      const { url } = await make();
      made?.(url);
      ask(false);
      show(url);
      shown.querySelector('input').focus();
    } catch (e) {
      error.textContent = `Could not make the URL: ${e.message}`;
      error.hidden = false;
      error.focus();
    } finally {
      button.disabled = false;
    }
  }

  function show(url) {
    get1.hidden = true;
    firstHint.hidden = true;
    again.hidden = false;
    replace(shown, copyField(name, url, { hint }));
  }
  if (known) show(known);

  return h('div', { class: 'feed-box' }, error, shown, h('div', { class: 'feed-actions' }, get1, again), firstHint, confirm);
}

/**
 * Mounts the calendar apps page in `root`. `hooks.changed()`: the agenda
 * changed (an import), the calendar reads it again. Returns { show(), destroy() }.
 */
export function mountCalendarApps(root, hooks) {
  const me = currentUser();

  // (a) The private feed.
  const feed = h('section', { class: 'card', 'aria-labelledby': 'feed-title' },
    h('h2', { id: 'feed-title', text: 'Subscribe from another calendar app' }),
    h('p', { text: 'A private address of your agenda in iCalendar format, for apps that subscribe to a calendar by URL (Google Calendar, Outlook, Apple Calendar and others). They read it now and then: changes show there after a while, and they cannot change anything here.' }),
    feedBox({
      label: 'Create feed URL',
      name: 'Feed URL of your agenda',
      hint: 'Anyone with this URL can read your agenda (your private events show as busy): share it with nobody.',
      make: () => post('/v1/me/calendar-feed'),
    }));

  // (b) CalDAV: where, who, and app passwords.
  const list = h('div', { class: 'app-password-list' });
  const fresh = h('div', { class: 'new-password', hidden: true });
  const pwName = h('input', { name: 'name', type: 'text', maxlength: 100, required: true, autocomplete: 'off' });
  const pwForm = h('form', { class: 'app-password-form', novalidate: true, 'aria-labelledby': 'new-app-password-title', onsubmit: (ev) => { ev.preventDefault(); createPassword(); } },
    h('h4', { id: 'new-app-password-title', text: 'New app password' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field('Name', pwName, { field: 'name', hint: 'What it is for, e.g. “Thunderbird on my laptop”.' }),
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Create app password'));
  const dav = h('section', { class: 'card', 'aria-labelledby': 'caldav-title' },
    h('h2', { id: 'caldav-title', text: 'CalDAV (Thunderbird, DAVx5, Apple Calendar)' }),
    h('p', { text: 'Apps that speak CalDAV keep your agenda in step both ways. Add a CalDAV account in the app with these details:' }),
    copyField('Server URL', `${location.origin}/dav/`, { hint: 'Some apps find it from this site’s address alone.' }),
    copyField('Username', me.username),
    h('h3', { id: 'app-passwords-title', tabindex: '-1', text: 'App passwords' }),
    h('p', { class: 'hint', text: 'Apps sign in with your username and an app password, never with your own password. Make one per app; revoke it to shut that app out.' }),
    list, fresh, pwForm);

  // (c) Import.
  const file = h('input', { name: 'file', type: 'file', accept: '.ics,text/calendar' });
  const summary = h('p', { class: 'import-summary', role: 'status' });
  const details = h('div', { class: 'import-report' });
  const importForm = h('form', { class: 'card', novalidate: true, 'aria-labelledby': 'import-title', onsubmit: (ev) => { ev.preventDefault(); importFile(); } },
    h('h2', { id: 'import-title', text: 'Import an .ics file' }),
    h('p', { text: 'Adds the events of another calendar app’s export to your agenda. People in it who have an account here (by email) are invited. Importing the same file again adds nothing new.' }),
    h('p', { class: 'form-error', role: 'alert', tabindex: '-1', hidden: true }),
    field('iCalendar file (.ics)', file, { field: 'file', hint: 'At most 4 MiB.' }),
    h('button', { type: 'submit', class: 'btn btn-primary' }, 'Import'),
    summary, details);

  replace(root, h('div', { class: 'apps-layout' },
    h('h2', { class: 'visually-hidden', text: 'Calendar apps' }),
    feed, dav, importForm));

  let items = [];
  async function loadPasswords(focusAt = null) {
    try {
      items = (await get('/v1/me/app-passwords')).items;
    } catch (e) {
      replace(list, h('p', { class: 'form-error', text: `Could not load your app passwords: ${e.message}` }));
      return;
    }
    if (!items.length) {
      replace(list, h('p', { class: 'empty', text: 'No app passwords yet.' }));
    } else {
      const zone = currentUser()?.time_zone || 'UTC';
      replace(list, h('table', { class: 'members app-passwords', 'aria-labelledby': 'app-passwords-title' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Name' }), h('th', { scope: 'col', text: 'Created' }), h('th', { scope: 'col', text: 'Actions' }))),
        h('tbody', {}, items.map((p, i) => h('tr', { dataset: { id: p.id } },
          h('td', { text: p.name }),
          h('td', { text: formatDay(p.created_at, zone) }),
          h('td', {}, h('button', { type: 'button', class: 'btn btn-small btn-danger', 'aria-label': `Revoke ${p.name}`, onclick: () => revoke(p, i) }, 'Revoke')))))));
    }
    if (focusAt !== null) {
      const buttons = list.querySelectorAll('button');
      (buttons[Math.min(focusAt, buttons.length - 1)] || pwName).focus();
    }
  }

  async function createPassword() {
    clearErrors(pwForm);
    const name = pwName.value.trim();
    try {
      const made = await post('/v1/me/app-passwords', { name });
      pwForm.reset();
      replace(fresh,
        copyField(`App password for “${made.name}”`, made.password, { hint: 'Copy it into the app now: it will not be shown again. Lost it? Revoke it and make another.' }),
        h('button', { type: 'button', class: 'btn', onclick: () => { replace(fresh); fresh.hidden = true; pwName.focus(); } }, 'Done'));
      fresh.hidden = false;
      fresh.querySelector('input').focus();
      await loadPasswords();
    } catch (e) {
      showError(pwForm, e);
    }
  }

  async function revoke(p, i) {
    try {
      await del(`/v1/me/app-passwords/${p.id}`);
      toast(`Revoked “${p.name}”: apps using it can no longer sign in.`);
    } catch (e) {
      toast(`Could not revoke “${p.name}”: ${e.message}`, { kind: 'error' });
    }
    await loadPasswords(i);
  }

  async function importFile() {
    clearErrors(importForm);
    const f = file.files?.[0];
    const wrong = (message) => showError(importForm, { field: 'file', message });
    if (!f) { wrong('Choose an .ics file first.'); return; }
    if (f.size > MAX_IMPORT_BYTES) { wrong('The file is larger than 4 MiB, the most Agenda takes.'); return; }
    summary.textContent = `Importing “${f.name}”…`;
    replace(details);
    try {
      const report = await api('POST', '/v1/events/import', { raw: await f.text(), headers: { 'Content-Type': 'text/calendar' } });
      const skipped = report.skipped || [];
      summary.textContent = `“${f.name}”: ${report.imported} imported, ${skipped.length} skipped.`;
      replace(details,
        skipped.length ? [
          h('h3', { text: 'Skipped' }),
          h('ul', { class: 'skipped' }, skipped.map((s) => h('li', {}, h('span', { class: 'uid', text: s.uid || '(no UID)' }), `: ${s.reason}`))),
        ] : null,
        report.imported ? h('a', { href: '#/calendar' }, 'Go to the calendar') : null);
      if (report.imported) hooks.changed();
    } catch (e) {
      summary.textContent = '';
      // Not an iCalendar file (400), or not sent as one (415): about the file.
      wrong(e.message);
    }
  }

  return {
    show: () => loadPasswords(),
    destroy: () => { replace(fresh); },
  };
}
