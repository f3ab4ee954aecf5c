// The web app end to end in a real browser (Chromium through
// playwright-core), against a running Agenda system:
//   AGENDA_URL=http://127.0.0.1:8080 node web/tests/browser.mjs
// Two people in two browser contexts, fresh usernames each run. Every wait
// is on a condition with a timeout (no fixed sleeps). On failure it prints
// the step and the screenshot path and exits non-zero.
// Env: AGENDA_URL (default http://127.0.0.1:8080; for https, also
// NODE_EXTRA_CA_CERTS=.agenda/ca.pem), ARTIFACTS (screenshots,
// default web/test-artifacts/), CHROMIUM (default /usr/bin/chromium),
// HEADED=1 to watch, AGENDA_USERS_PIDS (comma-separated pids of the two
// agenda-users replicas; the failover step kills the first, and is skipped
// without it).

import { chromium } from 'playwright-core';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DateTime } from 'luxon';

const here = dirname(fileURLToPath(import.meta.url));
const BASE = (process.env.AGENDA_URL || 'http://127.0.0.1:8080').replace(/\/$/, '');
const ARTIFACTS = resolve(process.env.ARTIFACTS || join(here, '..', 'test-artifacts'));
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const T = 15_000; // default wait for one condition
const PASSWORD = 'correct-horse-battery-1';
const run = Date.now().toString(36).slice(-6) + Math.random().toString(36).slice(2, 5);
const A = { name: `alice_${run}`, zone: 'Europe/Madrid' };
const B = { name: `bob_${run}`, zone: 'America/New_York' };
const title = `Team sync ${run}`;
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

mkdirSync(ARTIFACTS, { recursive: true });
const results = [];
const notes = [];
let browser;
let pages = [];
let carol = null; // a third person, made through the API (B's stream step)

async function shot(page, name) {
  const path = join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  return path;
}

/** Runs one step; on failure screenshots every page and exits 1. */
async function step(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, Date.now() - t0]);
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message.split('\n').slice(0, 6).join('\n     ')}`);
    for (const [i, p] of pages.entries()) {
      try {
        const path = await shot(p, `failure-${i === 0 ? 'A' : 'B'}`);
        console.log(`     screenshot: ${path}`);
      } catch { /* the page may be gone */ }
    }
    console.log(`${results.length} passed, 1 failed`);
    await browser?.close().catch(() => {});
    process.exit(1);
  }
}

/** Waits for `loc` to be visible (and, if given, to contain `text`). */
async function visible(loc, text, timeout = T) {
  const l = text ? loc.filter({ hasText: text }) : loc;
  await l.first().waitFor({ state: 'visible', timeout });
  return l.first();
}

async function waitFor(page, fn, arg, what, timeout = T) {
  try {
    await page.waitForFunction(fn, arg, { timeout, polling: 100 });
  } catch (e) {
    throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
  }
}

/** axe-core on the page as it is; fails on serious or critical findings. */
async function axe(page, label) {
  // evaluate() runs outside the page's content security policy, so the
  // app is scanned under the same CSP it is served with.
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(axeSource);
  const res = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'] },
  }));
  const bad = res.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  const minor = res.violations.filter((v) => !bad.includes(v));
  if (minor.length) notes.push(`axe ${label}: ${minor.map((v) => `${v.id} (${v.impact}, ${v.nodes.length})`).join(', ')}`);
  if (bad.length) {
    const detail = bad.map((v) => `${v.id} [${v.impact}] ${v.help}: ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(' | ')}`).join('\n');
    throw new Error(`axe found ${bad.length} serious/critical violation(s) on ${label}:\n${detail}`);
  }
}

function dayAt(zone, hour, minute = 0) {
  // Today's date in `zone`, as yyyy-mm-ddTHH:MM (a datetime-local value).
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: zone, year: 'numeric', month: '2-digit', day: '2-digit' }).format(new Date());
  return `${parts}T${String(hour).padStart(2, '0')}:${String(minute).padStart(2, '0')}`;
}

async function register(page, who) {
  const form = page.locator('form[aria-labelledby="register-title"]');
  await form.getByRole('textbox', { name: 'Username', exact: true }).fill(who.name);
  await form.getByRole('textbox', { name: 'Email', exact: true }).fill(`${who.name}@example.com`);
  await form.getByLabel('Password', { exact: true }).fill(PASSWORD);
  await form.getByLabel('Time zone').selectOption(who.zone);
  await form.getByRole('button', { name: 'Create account' }).click();
  await visible(page.locator('.fc-view-harness'), null, 20_000);
  await waitFor(page, () => document.body.dataset.stream === 'live', null, 'the notification stream to be live');
}

const dialog = (page) => page.locator('#event-dialog');

/**
 * Dismisses every toast through the UI (its × button), then moves the
 * pointer away (a toast under the pointer stays), so a screenshot shows
 * the view itself. Not while a modal dialog is open (the page behind it
 * is inert).
 */
async function dismissToasts(page) {
  const toasts = page.locator('#toasts .toast');
  const deadline = Date.now() + T;
  while ((await toasts.count()) > 0) {
    if (Date.now() > deadline) throw new Error(`toasts still shown: ${await toasts.allTextContents()}`);
    // One may go by itself meanwhile: then the next is clicked.
    await toasts.first().getByRole('button', { name: 'Dismiss' }).click({ timeout: 2000 }).catch(() => {});
  }
  await page.mouse.move(2, 890);
  await waitFor(page, () => !document.querySelector('#toasts .toast'), null, 'no toast shown');
}

/** What the page's toast watch recorded (see toastWatch). */
const toastLog = (page) => page.evaluate(() => ({ log: window.__toasts.log.map(({ el, ...x }) => x), most: window.__toasts.most() }));

async function closeDialog(page) {
  await page.keyboard.press('Escape');
  await dialog(page).waitFor({ state: 'hidden', timeout: T });
}

/** Opens the notifications panel (the bell toggles it). */
async function openPanel(page) {
  if (await page.locator('#notifications-panel').isHidden()) await page.getByRole('button', { name: /Notifications/ }).click();
  await visible(page.locator('#notifications-panel'));
}

/** An event in the calendar grid by its title. */
const calEvent = (page, text) => page.locator('.fc-event').filter({ hasText: text }).first();
// Opens an event's dialog with the keyboard: events the test made earlier,
// at times that follow the clock it runs at, may lie over the middle of
// this one, where a click would land.
async function openEvent(page, text) {
  await calEvent(page, text).focus();
  await page.keyboard.press('Enter');
}

// A point of an element that the mouse would reach: events the test made
// earlier, at times that follow the clock, may lie over part of it (the
// later of two overlapping events is drawn inset over the earlier one's
// right side). Tries the middle, then points along the left edge.
async function reachable(loc) {
  const point = await loc.evaluate((el) => {
    const r = el.getBoundingClientRect();
    const ys = [0.5, 0.25, 0.75, 0.1, 0.9].map((f) => r.y + r.height * f);
    const xs = [0.5, 0.1, 0.25].map((f) => r.x + r.width * f);
    for (const x of xs) for (const y of ys) if (el.contains(document.elementFromPoint(x, y))) return { x, y };
    return null;
  });
  if (!point) throw new Error('every point of the element is covered by another');
  return point;
}

browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: !process.env.HEADED,
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
// Over TLS the local system's certificate comes from its own development
// CA (.agenda/ca.pem): the browser accepts it; Node's fetch needs
// NODE_EXTRA_CA_CERTS=.agenda/ca.pem.
const tls = BASE.startsWith('https:');
const ctxA = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'Europe/Madrid', ignoreHTTPSErrors: tls });
// A's Copy buttons (calendar apps) write to the clipboard, which the test reads.
await ctxA.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });
const ctxB = await browser.newContext({ viewport: { width: 1280, height: 900 }, locale: 'en-US', timezoneId: 'America/New_York', ignoreHTTPSErrors: tls });
const pa = await ctxA.newPage();
const pb = await ctxB.newPage();
pages = [pa, pb];
const consoleErrors = [];
for (const [who, p] of [['A', pa], ['B', pb]]) {
  p.on('pageerror', (e) => consoleErrors.push(`${who} page error: ${e.message}`));
  // The browser logs every 4xx answer as a failed resource; the test
  // provokes some on purpose (an unknown attendee, a 401, a 503).
  // Anything else counts.
  p.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource: the server responded with a status of (4\d\d|503)/.test(m.text())) {
      consoleErrors.push(`${who} console: ${m.text().slice(0, 200)}`);
    }
  });
}
let loadMs = null;

// B's live stream goes through a pass-through route, so the test can drop
// the connection and hold the next one back (a network gap) on purpose.
const streamUrls = [];
let currentStream = null;
let holdNext = null; // a promise: the next connection is refused when it settles
await ctxB.routeWebSocket(/\/v1\/stream/, (ws) => {
  streamUrls.push(ws.url());
  if (holdNext) {
    // Not connected to the server (Playwright mocks it): closed later with
    // "try again later", like a gateway that is not there yet.
    const held = holdNext;
    holdNext = null;
    held.then(() => ws.close({ code: 1013, reason: 'test: still unreachable' }));
    return;
  }
  ws.connectToServer();
  currentStream = ws;
});
// Every toast each page shows: when it came, when and why it went
// (the app marks data-gone: timeout, evicted, dismissed), and the most
// shown at once.
function toastWatch() {
  const log = [];
  let most = 0;
  window.__toasts = { log, most: () => most };
  document.addEventListener('DOMContentLoaded', () => {
    const box = document.getElementById('toasts');
    new MutationObserver((records) => {
      for (const r of records) {
        for (const n of r.addedNodes) {
          if (!(n instanceof HTMLElement) || !n.classList.contains('toast')) continue;
          log.push({ el: n, text: n.querySelector('.toast-text')?.textContent || '', kind: n.className, actions: n.querySelectorAll('.toast-actions .btn:not(.btn-quiet)').length, unread: Number(document.querySelector('.bell')?.dataset.unread), added: Date.now(), removed: null, gone: null });
        }
        for (const n of r.removedNodes) {
          const e = log.find((x) => x.el === n);
          if (e && e.removed === null) { e.removed = Date.now(); e.gone = n.dataset.gone || null; }
        }
      }
      most = Math.max(most, box.querySelectorAll('.toast').length);
    }).observe(box, { childList: true });
  });
}
await ctxA.addInitScript(toastWatch);
await ctxB.addInitScript(toastWatch);
// What A's stream receives (the token renewal answer).
const framesA = [];
pa.on('websocket', (ws) => ws.on('framereceived', (f) => framesA.push(String(f.payload))));

/** A person made through the API directly (for events B did not see coming). */
async function apiPerson(name) {
  const call = async (method, path, body, token) => {
    const r = await fetch(`${BASE}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  await call('POST', '/v1/auth/register', { username: name, email: `${name}@example.com`, password: PASSWORD });
  const login = await call('POST', '/v1/auth/login', { username: name, password: PASSWORD });
  return { name, id: login.user.id, call: (m, p, b) => call(m, p, b, login.access_token) };
}

await step('the app loads at / (first load timed)', async () => {
  await pa.goto(`${BASE}/`, { waitUntil: 'load' });
  const nav = await pa.evaluate(() => {
    const n = performance.getEntriesByType('navigation')[0];
    const bytes = performance.getEntriesByType('resource').reduce((sum, r) => sum + r.transferSize, n.transferSize);
    return { load: n.loadEventEnd - n.startTime, dcl: n.domContentLoadedEventEnd - n.startTime, bytes };
  });
  loadMs = nav;
  await visible(pa.getByRole('heading', { name: 'Sign in' }));
});

await step('axe: the sign-in screen', () => axe(pa, 'sign-in screen'));

await step('A registers (time zone Europe/Madrid)', () => register(pa, A));

await step('A stays signed in across a reload', async () => {
  await pa.reload({ waitUntil: 'load' });
  await visible(pa.locator('.fc-view-harness'));
  await visible(pa.getByRole('button', { name: 'Log out' }));
  const tz = await pa.locator('#my-time-zone').inputValue();
  if (tz !== A.zone) throw new Error(`time zone after reload is ${tz}, wanted ${A.zone}`);
  await waitFor(pa, () => document.body.dataset.stream === 'live', null, 'the stream after the reload');
});

await step('A changes the time zone (PATCH /v1/me) and back', async () => {
  await pa.locator('#my-time-zone').selectOption('Asia/Tokyo');
  await visible(pa.locator('.toast'), 'Asia/Tokyo');
  await pa.locator('#my-time-zone').selectOption(A.zone);
  await visible(pa.locator('.toast'), A.zone);
});

await step('toasts: at most three at once (the oldest goes first), Escape dismisses the focused one, the rest go after 6 s', async () => {
  // Two "Times are now shown" toasts so far (Tokyo, Madrid); three more.
  const tz = pa.locator('#my-time-zone');
  for (const z of ['UTC', 'America/New_York', A.zone]) {
    const count = (text) => window.__toasts.log.filter((t) => t.text.includes(text)).length;
    const before = await pa.evaluate(count, `shown in ${z}.`);
    await tz.selectOption(z);
    await waitFor(pa, ([text, n]) => window.__toasts.log.filter((t) => t.text.includes(text)).length > n, [`shown in ${z}.`, before], `the toast for ${z}`);
  }
  const texts = await pa.locator('#toasts .toast .toast-text').allTextContents();
  const want = ['UTC', 'America/New_York', A.zone].map((z) => `Times are now shown in ${z}.`);
  if (JSON.stringify(texts) !== JSON.stringify(want)) throw new Error(`toasts shown: ${JSON.stringify(texts)}, wanted the newest three: ${JSON.stringify(want)}`);
  // Keyboard: from the time zone field into the newest toast; Escape
  // dismisses it and gives focus back.
  await tz.focus();
  const newest = pa.locator('#toasts .toast').last();
  await newest.getByRole('button', { name: 'Dismiss' }).focus();
  await pa.keyboard.press('Escape');
  await waitFor(pa, () => document.querySelectorAll('#toasts .toast').length === 2, null, 'the focused toast to go');
  await waitFor(pa, () => document.activeElement?.id === 'my-time-zone', null, 'focus back on the time zone field');
  // The other two go by themselves, 6 s after they came (the pointer is
  // elsewhere: a toast under it would stay).
  await pa.mouse.move(400, 25);
  await waitFor(pa, () => !document.querySelector('#toasts .toast'), null, 'the toasts to go by themselves');
  const { log } = await toastLog(pa);
  const zones = log.filter((t) => t.text.startsWith('Times are now shown in'));
  const went = zones.map((t) => t.gone).join(',');
  if (went !== 'evicted,evicted,timeout,timeout,dismissed') throw new Error(`the time zone toasts (Tokyo, Madrid, UTC, New York, Madrid) went as: ${went}`);
  const rest = log.filter((t) => t.text.includes('shown in UTC') || t.text.includes('shown in America/New_York'));
  const wrong = rest.filter((t) => t.gone !== 'timeout' || t.removed - t.added < 5_900 || t.removed - t.added > 10_000);
  if (rest.length !== 2 || wrong.length) throw new Error(`toasts did not go by themselves after 6 s: ${JSON.stringify(rest)}`);
});

await step('B registers in a second browser (time zone America/New_York)', async () => {
  await pb.goto(`${BASE}/`, { waitUntil: 'load' });
  await register(pb, B);
});

await step('an unknown attendee is refused next to the attendee field', async () => {
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(`Nobody ${run}`);
  await d.getByLabel('Invite people (username)').fill(`nobody_${run}`);
  await d.getByRole('button', { name: 'Create event' }).click();
  const err = await visible(d.locator('.field-error'), 'no user named');
  const forId = await err.getAttribute('id');
  const input = d.getByLabel('Invite people (username)');
  if ((await input.getAttribute('aria-errormessage')) !== forId) throw new Error('the error is not tied to the attendee field');
  if ((await input.getAttribute('aria-invalid')) !== 'true') throw new Error('the attendee field is not marked invalid');
  await closeDialog(pa);
});

await step('A creates a weekly event inviting B', async () => {
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(title);
  await d.getByLabel('Starts').fill(dayAt(A.zone, 10));
  await d.getByLabel('Ends').fill(dayAt(A.zone, 11));
  await d.getByLabel('Location').fill('Room 4');
  await d.getByLabel('Repeats').selectOption('weekly');
  const rule = await d.getByLabel('Recurrence rule (RRULE)').inputValue();
  if (rule !== 'FREQ=WEEKLY') throw new Error(`the weekly preset wrote ${rule}`);
  const who = d.getByLabel('Invite people (username)');
  await who.fill(B.name);
  await who.press('Enter');
  await visible(d.locator('.chip'), B.name);
  await d.getByRole('button', { name: 'Create event' }).click();
  await d.waitFor({ state: 'hidden', timeout: T });
  await visible(calEvent(pa, title));
});

await step('A opens the event and sees B invited', async () => {
  await openEvent(pa, title);
  const d = dialog(pa);
  await visible(d.locator('.attendee', { hasText: B.name }), 'Invited');
});

await step('B sees the invitation arrive live (toast and unread count, no reload)', async () => {
  const navs = await pb.evaluate(() => performance.getEntriesByType('navigation').length);
  // B points at it as it arrives, as people do: it stays while pointed at
  // (it would go after 12 s), so B can open it in the next steps.
  await (await visible(pb.locator('.toast'), title)).hover();
  await waitFor(pb, () => Number(document.querySelector('.bell')?.dataset.unread) >= 1, null, 'an unread count');
  await visible(pb.getByRole('button', { name: 'Notifications 1 unread' }));
  if ((await pb.evaluate(() => performance.getEntriesByType('navigation').length)) !== navs) throw new Error('the page reloaded');
});

await step('axe: B\'s week view with a toast', () => axe(pb, 'week view with a notification toast'));

await step('B opens the invitation from the toast and accepts', async () => {
  await pb.locator('.toast').filter({ hasText: title }).getByRole('button', { name: 'Open and answer' }).click();
  const d = dialog(pb);
  await visible(d.getByRole('heading', { name: title }));
  await visible(d.locator('.attendee', { hasText: A.name }), 'Accepted');
  await shot(pb, 'invitation-dialog');
  await axe(pb, 'event dialog (attendee view)');
  await d.getByRole('button', { name: 'Accept' }).click();
  await visible(d.locator('.rsvp-current'), 'Accepted');
  await visible(d.locator('.attendee', { hasText: B.name }), 'Accepted');
  if ((await d.getByRole('button', { name: 'Accept' }).getAttribute('aria-pressed')) !== 'true') throw new Error('Accept is not shown as pressed');
  await closeDialog(pb);
  // Accepted: the event is in B's agenda now.
  await visible(calEvent(pb, title));
});

await step('A sees B\'s status change to accepted in the open dialog, and a toast naming B and "accepted"', async () => {
  await visible(dialog(pa).locator('.attendee', { hasText: B.name }), 'Accepted');
  // The toast sits behind the modal dialog: read it from the toast log.
  const want = `${B.name} accepted “${title}”`;
  await waitFor(pa, (text) => window.__toasts.log.some((t) => t.text.includes(text)), want, `a toast "${want}"`);
});

await step('screenshot: week view with the event dialog open', async () => {
  // The toasts sit under the modal dialog, out of reach (inert): close it,
  // dismiss them, open the event again.
  await closeDialog(pa);
  await dismissToasts(pa);
  await openEvent(pa, title);
  await visible(dialog(pa).locator('.attendee', { hasText: B.name }), 'Accepted');
  const path = await shot(pa, 'week-event-dialog');
  notes.push(`screenshot ${path}`);
  await axe(pa, 'event dialog (organizer)');
  await closeDialog(pa);
});

await step('search: "/" focuses the box, A finds the weekly event (date, time, place in A\'s zone) and opens it from the results', async () => {
  await pa.evaluate(() => document.activeElement?.blur());
  await pa.keyboard.press('/');
  await waitFor(pa, () => document.activeElement?.id === 'event-search', null, 'focus in the search box');
  await pa.keyboard.type(title.toUpperCase()); // any case
  const searched = pa.waitForResponse((r) => r.url().includes('/v1/events/search?'), { timeout: T });
  await pa.keyboard.press('Enter');
  if ((await searched).status() !== 200) throw new Error(`the search answered ${(await searched).status()}`);
  await visible(pa.locator('.search-status'), 'match');
  const results = pa.locator('.search-results');
  // The first occurrence is today at 10:00 in Madrid, in Room 4.
  const today = new Intl.DateTimeFormat('en-US', { timeZone: A.zone, weekday: 'short', day: 'numeric', month: 'short', year: 'numeric' }).format(new Date());
  const first = await visible(results.locator('.search-result'), title);
  const text = await first.textContent();
  if (!text.includes(today) || !text.includes('10:00') || !text.includes('Room 4')) throw new Error(`the first result reads "${text}", wanted ${today}, 10:00 and Room 4`);
  await dismissToasts(pa);
  await shot(pa, 'search-results');
  await axe(pa, 'search results');
  await first.click();
  const d = dialog(pa);
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  if ((await d.getByLabel('Title').inputValue()) !== title) throw new Error('the result opened another event');
  await closeDialog(pa);
  await waitFor(pa, () => document.activeElement?.classList.contains('search-result'), null, 'focus back on the result');
});

await step('search: a blank search shows the API\'s error next to the box, a search that finds nothing says so, Escape clears', async () => {
  const box = pa.getByRole('searchbox', { name: 'Search events' });
  await box.fill('   ');
  await box.press('Enter');
  const err = await visible(pa.locator('.search-form .field-error'));
  if (!(await err.textContent()).trim()) throw new Error('the error is empty');
  if ((await box.getAttribute('aria-errormessage')) !== (await err.getAttribute('id'))) throw new Error('the error is not tied to the search box');
  if ((await box.getAttribute('aria-invalid')) !== 'true') throw new Error('the search box is not marked invalid');
  if (await pa.locator('.search-results').isVisible()) throw new Error('results are still shown');
  await box.fill(`nothing-${run}`);
  await box.press('Enter');
  await visible(pa.locator('.search-status'), `No events match “nothing-${run}”`);
  if (await err.isVisible()) throw new Error('the blank search\'s error is still shown');
  await box.press('Escape');
  await waitFor(pa, () => !document.querySelector('.search-status')?.textContent && document.querySelector('#event-search')?.value === '', null, 'the search cleared');
});

await step('A creates an overlapping event and sees the conflict in the dialog', async () => {
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(`Overlap ${run}`);
  await d.getByLabel('Starts').fill(dayAt(A.zone, 10, 30));
  await d.getByLabel('Ends').fill(dayAt(A.zone, 11, 30));
  await d.getByRole('button', { name: 'Create event' }).click();
  const box = await visible(d.locator('.conflicts'), 'overlaps');
  await visible(box.locator('li'), title);
  await shot(pa, 'conflict-shown');
  await axe(pa, 'event dialog with conflicts');
  await closeDialog(pa);
  await visible(calEvent(pa, `Overlap ${run}`));
});

await step('A creates an event with the keyboard alone', async () => {
  // Focus somewhere neutral without the mouse: the skip link is first in
  // the tab order; then the shortcut "c" opens a new event.
  await pa.keyboard.press('Escape');
  await pa.evaluate(() => document.activeElement?.blur());
  await pa.keyboard.press('c');
  const d = dialog(pa);
  await visible(d);
  await waitFor(pa, () => document.activeElement?.name === 'title', null, 'focus in the title field');
  await pa.keyboard.type(`Keyboard ${run}`);
  // Tab on to Location (date-time fields take one Tab per part).
  for (let i = 0; i < 30 && (await pa.evaluate(() => document.activeElement?.name)) !== 'location'; i += 1) {
    await pa.keyboard.press('Tab');
  }
  await waitFor(pa, () => document.activeElement?.name === 'location', null, 'Tab to reach Location');
  await pa.keyboard.type('Desk');
  await pa.keyboard.press('Enter');
  // Saved: either the dialog closes (a toast says so) or it shows what it
  // overlaps (the default slot is the next hour, which may be busy).
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the keyboard event to be saved');
  if (await d.isVisible()) await pa.keyboard.press('Escape');
  await d.waitFor({ state: 'hidden', timeout: T });
  // Find it through the list view, by keyboard too ("l"; "n" for the next week).
  await pa.keyboard.press('l');
  await visible(pa.locator('.fc-listWeek-view'));
  if (!(await pa.locator('.fc-list-event', { hasText: `Keyboard ${run}` }).count())) await pa.keyboard.press('n');
  await visible(pa.locator('.fc-list-event'), `Keyboard ${run}`);
  await axe(pa, 'list view');
  await pa.keyboard.press('t');
});

await step('keyboard: month view ("m"), screenshot and axe', async () => {
  await pa.keyboard.press('m');
  await visible(pa.locator('.fc-dayGridMonth-view'));
  await visible(calEvent(pa, title));
  await dismissToasts(pa);
  notes.push(`screenshot ${await shot(pa, 'month-view')}`);
  await axe(pa, 'month view');
  await pa.keyboard.press('w');
  await visible(pa.locator('.fc-timeGridWeek-view'));
  // The time grid opens at 07:00: an event before then (the keyboard one
  // is at the next hour, so when the test runs at night) sits under the
  // sticky day header, and axe measures its text against the header.
  // From midnight, nothing is under the header, whatever the hour.
  await pa.evaluate(() => {
    window.scrollTo(0, 0);
    for (const el of document.querySelectorAll('*')) if (el.scrollTop) el.scrollTop = 0;
  });
  await pa.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  await axe(pa, 'week view');
});

await step('events are focusable and open with Enter', async () => {
  const ev = calEvent(pa, title);
  await ev.focus();
  await pa.keyboard.press('Enter');
  await visible(dialog(pa).getByRole('heading', { name: 'Edit event' }));
  await closeDialog(pa);
});

await step('drag moves an event (PATCH), resize stretches it', async () => {
  const ev = pa.locator('.fc-timegrid-event', { hasText: `Overlap ${run}` }).first();
  await ev.scrollIntoViewIfNeeded();
  const slot = await pa.locator('.fc-timegrid-slot-lane').first().boundingBox();
  const { x, y } = await reachable(ev);
  await pa.mouse.move(x, y);
  await pa.mouse.down();
  await pa.mouse.move(x, y + 10, { steps: 4 });
  await pa.mouse.move(x, y + slot.height * 2, { steps: 10 }); // one hour: 10:30 -> 11:30
  await pa.mouse.up();
  await visible(pa.locator('.toast'), `Moved “Overlap ${run}”`);
  await visible(pa.locator('.fc-timegrid-event', { hasText: `Overlap ${run}` }), '11:30');
  // The toast sits over the grid's lower right corner: on a Friday around
  // 10:00 it covered the moved event's end (the handle below).
  await pa.locator('.toast', { hasText: `Moved “Overlap ${run}”` }).getByRole('button', { name: 'Dismiss' }).click();
  await pa.locator('.toast', { hasText: `Moved “Overlap ${run}”` }).waitFor({ state: 'detached', timeout: T });
  // Resize: the end handle appears on hover; half an hour longer.
  // Hovered where it is not under the keyboard event (at the next hour,
  // it overlaps when the test runs between 10:00 and 12:00 in Madrid).
  const moved = pa.locator('.fc-timegrid-event', { hasText: `Overlap ${run}` }).first();
  const over = await reachable(moved);
  await pa.mouse.move(over.x, over.y);
  const handle = moved.locator('.fc-event-resizer-end');
  await handle.waitFor({ state: 'visible', timeout: T });
  const hp = await reachable(handle);
  await pa.mouse.move(hp.x, hp.y);
  await pa.mouse.down();
  await pa.mouse.move(hp.x, hp.y + slot.height, { steps: 8 });
  // The resize is saved (PATCH), then the agenda is read again.
  let patched = false;
  const saved = pa.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().includes('/v1/events/'), { timeout: T });
  saved.then(() => { patched = true; }, () => {});
  const reread = pa.waitForResponse((r) => patched && r.request().method() === 'GET' && r.url().includes('/v1/events?'), { timeout: T });
  // Awaited below; until then a timeout must not be an unhandled
  // rejection, which ends the process before the step can say what failed.
  reread.catch(() => {});
  await pa.mouse.up();
  await visible(pa.locator('.fc-timegrid-event', { hasText: `Overlap ${run}` }), '13:00');
  if ((await saved).status() !== 200) throw new Error('the resize was not saved');
  await reread;
  await waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to reload');
});

let allDayId = null; // A's all-day event (the group agenda step looks for it)
await step('all-day: A selects two days in the week\'s all-day row, the dialog proposes them as an all-day event, it spans them, reopens as all day, moves a day by drag, and turns timed and back', async () => {
  const name = `Offsite ${run}`;
  // Tuesday and Wednesday of this week in Madrid (the week in view),
  // then dragged to Wednesday and Thursday.
  const monday = DateTime.now().setZone(A.zone).startOf('week');
  const [tue, wed, thu, fri] = [1, 2, 3, 4].map((n) => monday.plus({ days: n }).toISODate());
  const main = pa.locator('#main');
  const week = pa.locator('.fc-timeGridWeek-view');
  await visible(week);
  if (!(await pa.locator(`.fc-col-header-cell[data-date="${tue}"]`).count())) await pa.keyboard.press('t');
  await visible(pa.locator(`.fc-col-header-cell[data-date="${tue}"]`));
  await main.evaluate((el) => { el.scrollTop = 0; });
  const row = week.locator('.fc-daygrid-body');
  const cell = (date) => row.locator(`.fc-daygrid-day[data-date="${date}"]`);
  // The mouse: press in Tuesday's all-day cell, let go in Wednesday's.
  const [c1, c2] = [await cell(tue).boundingBox(), await cell(wed).boundingBox()];
  await pa.mouse.move(c1.x + c1.width / 2, c1.y + c1.height - 4);
  await pa.mouse.down();
  await pa.mouse.move(c1.x + c1.width / 2 + 10, c1.y + c1.height - 4, { steps: 3 });
  await pa.mouse.move(c2.x + c2.width / 2, c2.y + c2.height - 4, { steps: 8 });
  await pa.mouse.up();
  const d = dialog(pa);
  await visible(d.getByRole('heading', { name: 'New event' }));
  const box = d.getByRole('checkbox', { name: 'All day' });
  if (!(await box.isChecked())) throw new Error('"All day" is not ticked for a selection in the all-day row');
  const days = async () => [await d.getByLabel('First day').inputValue(), await d.getByLabel('Last day').inputValue()];
  let got = await days();
  if (got.join(' ') !== `${tue} ${wed}`) throw new Error(`the dialog proposes ${got.join(' to ')}, wanted ${tue} to ${wed} (the last day shown, inclusive)`);
  await axe(pa, 'event dialog (all-day event)');
  await d.getByLabel('Title').fill(name);
  const posted = pa.waitForRequest((r) => r.method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()), { timeout: T });
  const created = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()), { timeout: T });
  await d.getByRole('button', { name: 'Create event' }).click();
  const sent = JSON.parse((await posted).postData());
  if (sent.all_day !== true || sent.start !== tue || sent.end !== thu) throw new Error(`the POST sent all_day ${sent.all_day}, ${sent.start} to ${sent.end}; wanted true, ${tue} to ${thu} (the day after the last)`);
  const res = await created;
  const reply = await res.json();
  if (res.status() !== 201 || reply.conflicts.length) throw new Error(`the creation answered ${res.status()} ${JSON.stringify(reply).slice(0, 300)}`);
  allDayId = reply.event.id;
  await d.waitFor({ state: 'hidden', timeout: T });
  // In the all-day row, from Tuesday's column to Wednesday's.
  const ev = row.locator('.fc-event', { hasText: name });
  await visible(ev);
  await main.evaluate((el) => { el.scrollTop = 0; });
  const spans = async (first, last) => {
    const [e, h1, h2] = [await ev.boundingBox(), await pa.locator(`.fc-col-header-cell[data-date="${first}"]`).boundingBox(), await pa.locator(`.fc-col-header-cell[data-date="${last}"]`).boundingBox()];
    return Math.abs(e.x - h1.x) < 8 && Math.abs(e.x + e.width - (h2.x + h2.width)) < 8;
  };
  if (!(await spans(tue, wed))) throw new Error('the event does not span Tuesday and Wednesday in the all-day row');
  if (await week.locator('.fc-timegrid-event', { hasText: name }).count()) throw new Error('the event is in the hours too');
  // Opened again: all day, the same first and last days.
  await ev.click();
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  if (!(await box.isChecked())) throw new Error('"All day" is not ticked when the event is opened again');
  got = await days();
  if (got.join(' ') !== `${tue} ${wed}`) throw new Error(`the dialog shows ${got.join(' to ')}, wanted ${tue} to ${wed}`);
  await shot(pa, 'all-day-dialog');
  await closeDialog(pa);
  // Dragged one column on: a PATCH by days.
  await dismissToasts(pa);
  await main.evaluate((el) => { el.scrollTop = 0; });
  const e0 = await ev.boundingBox();
  const x = e0.x + 20;
  const y = e0.y + e0.height / 2;
  const patched = pa.waitForRequest((r) => r.method() === 'PATCH' && r.url().endsWith(`/v1/events/${allDayId}`), { timeout: T });
  const saved = pa.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().endsWith(`/v1/events/${allDayId}`), { timeout: T });
  await pa.mouse.move(x, y);
  await pa.mouse.down();
  await pa.mouse.move(x + 10, y, { steps: 3 });
  await pa.mouse.move(x + c1.width, y, { steps: 10 });
  await pa.mouse.up();
  const moved = JSON.parse((await patched).postData());
  if (JSON.stringify(moved) !== JSON.stringify({ all_day: true, start: wed, end: fri })) throw new Error(`the drag sent ${JSON.stringify(moved)}`);
  if ((await saved).status() !== 200) throw new Error(`the move answered ${(await saved).status()}`);
  await visible(pa.locator('.toast'), `Moved “${name}”`);
  const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: A.name, password: PASSWORD }) })).json();
  const read = async () => {
    const r = await fetch(`${BASE}/v1/events/${allDayId}`, { headers: { authorization: `Bearer ${login.access_token}` } });
    if (!r.ok) throw new Error(`GET /v1/events/${allDayId}: ${r.status} ${await r.text()}`);
    return r.json();
  };
  const after = await read();
  if (!after.all_day || after.start_date !== wed || after.end_date !== fri) throw new Error(`after the drag the event reads all_day ${after.all_day}, ${after.start_date} to ${after.end_date}; wanted ${wed} to ${fri}`);
  await waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to reload');
  await main.evaluate((el) => { el.scrollTop = 0; });
  if (!(await spans(wed, thu))) throw new Error('the moved event does not span Wednesday and Thursday');
  await dismissToasts(pa);
  await main.evaluate((el) => { el.scrollTop = 0; });
  notes.push(`screenshot ${await shot(pa, 'all-day-event')}`);
  await axe(pa, 'week view with an all-day event');
  // "All day" off: times on the first day (09:00–10:00), sent with both
  // times; on again: the dates, sent with all_day.
  const toggle = async (on, want) => {
    await ev.or(week.locator('.fc-timegrid-event', { hasText: name })).first().click();
    await visible(d.getByRole('heading', { name: 'Edit event' }));
    if (on) await box.check(); else await box.uncheck();
    const req = pa.waitForRequest((r) => r.method() === 'PATCH' && r.url().endsWith(`/v1/events/${allDayId}`), { timeout: T });
    await d.getByRole('button', { name: 'Save changes' }).click();
    const body = JSON.parse((await req).postData());
    if (JSON.stringify(body) !== JSON.stringify(want)) throw new Error(`"All day" ${on ? 'on' : 'off'} sent ${JSON.stringify(body)}, wanted ${JSON.stringify(want)}`);
    await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the change to be saved');
    if (await d.isVisible()) await closeDialog(pa);
  };
  const at = (hour) => DateTime.fromISO(`${wed}T${hour}:00`, { zone: A.zone }).toUTC().toISO({ suppressMilliseconds: true });
  await toggle(false, { all_day: false, start: at('09'), end: at('10') });
  const timed = await read();
  if (timed.all_day || Date.parse(timed.start) !== Date.parse(at('09')) || Date.parse(timed.end) !== Date.parse(at('10'))) throw new Error(`made timed, it reads ${JSON.stringify(timed).slice(0, 300)}`);
  await visible(week.locator('.fc-timegrid-event', { hasText: name }));
  await toggle(true, { all_day: true, start: wed, end: thu });
  const again = await read();
  if (!again.all_day || again.start_date !== wed || again.end_date !== thu) throw new Error(`made all-day again, it reads all_day ${again.all_day}, ${again.start_date} to ${again.end_date}`);
  await visible(row.locator('.fc-event', { hasText: name }));
});

await step('recurring: A makes a weekly event (COUNT 4) in the week view, drags one occurrence to Wednesday with "This event" (Cancel puts a drag back), renames from the third on with "This and following events" ("This event" refused for a series-only change), deletes one with "This event" (prompt by keyboard, axe, screenshot)', async () => {
  const name = `Weekly ${run}`;
  const renamed = `Weekly renamed ${run}`;
  const monday = DateTime.now().setZone(A.zone).startOf('week');
  const mon = (week) => monday.plus({ weeks: week }).toISODate();
  const at = (date, hour) => DateTime.fromISO(`${date}T${String(hour).padStart(2, '0')}:00`, { zone: A.zone });
  const utc = (t) => t.toUTC().toISO({ suppressMilliseconds: true });
  const stamp = (week) => at(mon(week), 8).toUTC().toFormat("yyyyLLdd'T'HHmmss'Z'");
  const wed = monday.plus({ days: 2 }).toISODate();
  const tue = monday.plus({ days: 1 }).toISODate();
  const d = dialog(pa);
  const prompt = pa.locator('#scope-prompt');
  const week = pa.locator('.fc-timeGridWeek-view');
  const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: A.name, password: PASSWORD }) })).json();
  /** A's occurrences of the two series over the four weeks: [occurrence_id, start, title]. */
  const listed = async () => {
    const q = new URLSearchParams({ from: utc(monday), to: utc(monday.plus({ weeks: 4 })) });
    const r = await fetch(`${BASE}/v1/events?${q}`, { headers: { authorization: `Bearer ${login.access_token}` } });
    if (!r.ok) throw new Error(`GET /v1/events: ${r.status} ${await r.text()}`);
    return (await r.json()).items.filter((e) => e.title.startsWith('Weekly ') && e.title.endsWith(run))
      .map((e) => [e.occurrence_id, Date.parse(e.start), e.title]).sort((x, y) => x[1] - y[1]);
  };
  const agendaLoaded = () => waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to load');
  /** The column (yyyy-mm-dd) the event titled `text` sits in, by its position. */
  const columnOf = async (text) => {
    const box = await week.locator('.fc-timegrid-event', { hasText: text }).first().boundingBox();
    const cols = await week.locator('.fc-timegrid-col[data-date]').evaluateAll((els) => els.map((e) => [e.dataset.date, e.getBoundingClientRect().x, e.getBoundingClientRect().width]));
    return cols.find(([, x, w]) => box.x + box.width / 2 >= x && box.x + box.width / 2 < x + w)?.[0];
  };
  const drag = async (text, date) => {
    const ev = week.locator('.fc-timegrid-event', { hasText: text }).first();
    await ev.scrollIntoViewIfNeeded();
    const col = await week.locator(`.fc-timegrid-col[data-date="${date}"]`).boundingBox();
    const { x, y } = await reachable(ev);
    await pa.mouse.move(x, y);
    await pa.mouse.down();
    await pa.mouse.move(x + 10, y, { steps: 3 });
    await pa.mouse.move(col.x + col.width / 2, y, { steps: 10 });
    await pa.mouse.up();
  };

  // Made in the week view: Monday 08:00–09:00 Madrid, four Mondays.
  await pa.evaluate(() => document.activeElement?.blur());
  await pa.keyboard.press('w');
  await pa.keyboard.press('t');
  await visible(week.locator(`.fc-col-header-cell[data-date="${mon(0)}"]`));
  await pa.getByRole('button', { name: /New event/ }).click();
  await visible(d.getByRole('heading', { name: 'New event' }));
  await d.getByLabel('Title').fill(name);
  await d.getByLabel('Starts').fill(`${mon(0)}T08:00`);
  await d.getByLabel('Ends').fill(`${mon(0)}T09:00`);
  await d.getByLabel('Recurrence rule (RRULE)').fill('FREQ=WEEKLY;COUNT=4');
  const created = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()), { timeout: T });
  await d.getByRole('button', { name: 'Create event' }).click();
  const { event } = await (await created).json();
  const id = event.id;
  const occ = (week) => `${id}_${stamp(week)}`;
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the event to be saved');
  if (await d.isVisible()) await closeDialog(pa);
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: name }));
  let now = await listed();
  const want0 = [0, 1, 2, 3].map((w) => [occ(w), at(mon(w), 8).toMillis(), name]);
  if (JSON.stringify(now) !== JSON.stringify(want0)) throw new Error(`the series lists ${JSON.stringify(now)}, wanted ${JSON.stringify(want0)}`);
  await dismissToasts(pa);

  // A drag asks first; Cancel (Escape) puts it back and sends nothing.
  const patches = [];
  const onRequest = (r) => { if (r.method() === 'PATCH' || r.method() === 'DELETE') patches.push(`${r.method()} ${r.url()}`); };
  pa.on('request', onRequest);
  await drag(name, tue);
  await visible(prompt);
  await visible(prompt.getByRole('heading', { name: 'Change recurring event' }));
  await pa.keyboard.press('Escape');
  await prompt.waitFor({ state: 'hidden', timeout: T });
  await waitFor(pa, (text) => [...document.querySelectorAll('.fc-timegrid-event')].some((e) => e.textContent.includes(text)), name, 'the event back');
  if ((await columnOf(name)) !== mon(0)) throw new Error(`after Cancel the occurrence is in ${await columnOf(name)}'s column, not Monday's`);
  if (patches.length) throw new Error(`Cancel still sent ${patches.join(', ')}`);

  // Dragged to Wednesday, "This event" by keyboard: the occurrence alone.
  await drag(name, wed);
  await visible(prompt);
  await waitFor(pa, () => document.activeElement?.id === 'scope-this' && document.activeElement.checked, null, 'focus on "This event", chosen');
  const radio = (label) => prompt.getByRole('radio', { name: label, exact: true });
  if (await radio('This event').isDisabled()) throw new Error('"This event" is disabled for a drag');
  await pa.keyboard.press('ArrowDown');
  if (!(await radio('This and following events').isChecked())) throw new Error('ArrowDown did not choose "This and following events"');
  await pa.keyboard.press('ArrowUp');
  if (!(await radio('This event').isChecked())) throw new Error('ArrowUp did not choose "This event" again');
  await shot(pa, 'recurring-prompt');
  await axe(pa, 'the "This event / This and following / All events" prompt');
  const moveReq = pa.waitForRequest((r) => r.method() === 'PATCH', { timeout: T });
  const moveRes = pa.waitForResponse((r) => r.request().method() === 'PATCH', { timeout: T });
  await pa.keyboard.press('Enter');
  await prompt.waitFor({ state: 'hidden', timeout: T });
  const sent = await moveReq;
  if (!sent.url().endsWith(`/v1/events/${occ(0)}`)) throw new Error(`the move went to ${sent.url()}, wanted /v1/events/${occ(0)}`);
  const body = JSON.parse(sent.postData());
  if (JSON.stringify(body) !== JSON.stringify({ start: utc(at(wed, 8)), end: utc(at(wed, 9)) })) throw new Error(`the move sent ${JSON.stringify(body)}`);
  if ((await moveRes).status() !== 200) throw new Error(`the move answered ${(await moveRes).status()}`);
  await visible(pa.locator('.toast'), `Moved this occurrence of “${name}”`);
  now = await listed();
  const want1 = [[occ(0), at(wed, 8).toMillis(), name], ...want0.slice(1)];
  if (JSON.stringify(now) !== JSON.stringify(want1)) throw new Error(`after the move the series lists ${JSON.stringify(now)}, wanted ${JSON.stringify(want1)}`);
  // Read again ("r"): once, on Wednesday at 08:00.
  await pa.keyboard.press('r');
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: name }), '08:00');
  if ((await week.locator('.fc-timegrid-event', { hasText: name }).count()) !== 1) throw new Error('the moved occurrence shows more than once');
  if ((await columnOf(name)) !== wed) throw new Error(`the moved occurrence is in ${await columnOf(name)}'s column, not Wednesday's`);
  // The next one did not move.
  await pa.keyboard.press('n');
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: name }), '08:00');
  if ((await columnOf(name)) !== mon(1)) throw new Error('the next week\'s occurrence moved');

  // The third: the dialog shows it; a series-only change cannot be for it alone.
  await pa.keyboard.press('n');
  await agendaLoaded();
  await week.locator('.fc-timegrid-event', { hasText: name }).first().click();
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  const starts = await d.getByLabel('Starts').inputValue();
  if (starts !== `${mon(2)}T08:00`) throw new Error(`the dialog shows the occurrence starting ${starts}, wanted ${mon(2)}T08:00`);
  await visible(d.locator('.occurrence-note'), 'One event of a series');
  await d.getByLabel('Visibility').selectOption('private');
  await d.getByRole('button', { name: 'Save changes' }).click();
  await visible(prompt);
  if (!(await radio('This event').isDisabled())) throw new Error('"This event" is offered for a change of visibility');
  await visible(prompt.locator('#scope-this-why'), 'the visibility');
  if (!(await radio('This and following events').isChecked())) throw new Error('"This and following events" is not chosen when "This event" cannot be');
  await axe(pa, 'the prompt with "This event" disabled');
  await prompt.getByRole('button', { name: 'Cancel' }).click();
  await prompt.waitFor({ state: 'hidden', timeout: T });
  if (!(await d.isVisible())) throw new Error('Cancel closed the event dialog');
  if (patches.length !== 1) throw new Error(`Cancel still sent: ${patches.join(', ')}`);
  await d.getByLabel('Visibility').selectOption('default');
  // Renamed from here on: "This and following events".
  await d.getByLabel('Title').fill(renamed);
  await d.getByRole('button', { name: 'Save changes' }).click();
  await visible(prompt);
  await radio('This and following events').focus();
  await pa.keyboard.press('Space');
  const renameReq = pa.waitForRequest((r) => r.method() === 'PATCH', { timeout: T });
  const renameRes = pa.waitForResponse((r) => r.request().method() === 'PATCH', { timeout: T });
  await prompt.getByRole('button', { name: 'OK' }).click();
  const renameSent = await renameReq;
  if (!renameSent.url().endsWith(`/v1/events/${occ(2)}?scope=following`)) throw new Error(`the rename went to ${renameSent.url()}, wanted /v1/events/${occ(2)}?scope=following`);
  if (renameSent.postData() !== JSON.stringify({ title: renamed })) throw new Error(`the rename sent ${renameSent.postData()}`);
  const split = await (await renameRes).json();
  if (!split.event?.id || split.event.id === id) throw new Error(`"This and following" answered ${JSON.stringify(split).slice(0, 300)}`);
  await d.waitFor({ state: 'hidden', timeout: T });
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: renamed }));
  now = await listed();
  const newOcc = (week) => `${split.event.id}_${stamp(week)}`;
  const want2 = [want1[0], want1[1], [newOcc(2), at(mon(2), 8).toMillis(), renamed], [newOcc(3), at(mon(3), 8).toMillis(), renamed]];
  if (JSON.stringify(now) !== JSON.stringify(want2)) throw new Error(`after the rename the occurrences list ${JSON.stringify(now)}, wanted ${JSON.stringify(want2)}`);
  await pa.keyboard.press('n');
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: renamed }));

  // The second deleted alone: "This event".
  await pa.keyboard.press('p');
  await pa.keyboard.press('p');
  await agendaLoaded();
  await week.locator('.fc-timegrid-event', { hasText: name }).first().click();
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  if ((await d.getByLabel('Starts').inputValue()) !== `${mon(1)}T08:00`) throw new Error('the dialog does not show the second occurrence');
  await d.getByRole('button', { name: 'Delete…' }).click();
  await visible(prompt.getByRole('heading', { name: 'Delete recurring event' }));
  if (!(await radio('This event').isChecked())) throw new Error('"This event" is not chosen first for a deletion');
  const delReq = pa.waitForRequest((r) => r.method() === 'DELETE', { timeout: T });
  const delRes = pa.waitForResponse((r) => r.request().method() === 'DELETE', { timeout: T });
  await prompt.getByRole('button', { name: 'OK' }).click();
  if (!(await delReq).url().endsWith(`/v1/events/${occ(1)}`)) throw new Error(`the deletion went to ${(await delReq).url()}, wanted /v1/events/${occ(1)}`);
  if ((await delRes).status() !== 204) throw new Error(`the deletion answered ${(await delRes).status()}`);
  await d.waitFor({ state: 'hidden', timeout: T });
  await visible(pa.locator('.toast'), `Deleted this occurrence of “${name}”`);
  await agendaLoaded();
  await waitFor(pa, (text) => ![...document.querySelectorAll('.fc-timegrid-event')].some((e) => e.textContent.includes(text)), name, 'the occurrence gone from the week');
  now = await listed();
  const want3 = [want2[0], want2[2], want2[3]];
  if (JSON.stringify(now) !== JSON.stringify(want3)) throw new Error(`after the deletion the occurrences list ${JSON.stringify(now)}, wanted ${JSON.stringify(want3)}`);
  pa.off('request', onRequest);
  await pa.keyboard.press('t');
  await agendaLoaded();
  await visible(week.locator('.fc-timegrid-event', { hasText: name }));
});

await step('a 503 is retried quietly after Retry-After', async () => {
  const seen = []; // [url, time]
  await pa.route(/\/v1\/events\?/, async (route) => {
    seen.push([route.request().url(), Date.now()]);
    if (seen.length === 1) {
      await route.fulfill({ status: 503, headers: { 'retry-after': '1', 'content-type': 'application/json' }, body: JSON.stringify({ error: { code: 'unavailable', message: 'overloaded', details: { reason: 'overloaded', retry_after: 1 } } }) });
    } else {
      await route.continue();
    }
  });
  const errorsBefore = await pa.locator('.toast-error').count();
  await pa.keyboard.press('r');
  await waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to load');
  await pa.unroute(/\/v1\/events\?/);
  const retry = seen.slice(1).find(([url]) => url === seen[0][0]);
  if (!retry) throw new Error(`the refused request was not repeated (${seen.length} request(s))`);
  if (retry[1] - seen[0][1] < 900) throw new Error(`retried after ${retry[1] - seen[0][1]} ms, before Retry-After`);
  if ((await pa.locator('.toast-error').count()) !== errorsBefore) throw new Error('an error was shown');
  await visible(calEvent(pa, title));
});

await step('a 401 renews the access token once and the stream gets the new token', async () => {
  let refused = false;
  await pa.route(/\/v1\/events\?/, async (route) => {
    if (!refused) {
      refused = true;
      await route.fulfill({ status: 401, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: { code: 'unauthenticated', message: 'token expired', details: {} } }) });
    } else {
      await route.continue();
    }
  });
  const accepted = framesA.filter((f) => f.includes('token_accepted')).length;
  const renewed = pa.waitForResponse((r) => r.url().endsWith('/v1/auth/refresh') && r.status() === 200, { timeout: T });
  await pa.keyboard.press('r');
  await renewed;
  await waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to load');
  await pa.unroute(/\/v1\/events\?/);
  await visible(calEvent(pa, title));
  const deadline = Date.now() + T;
  while (framesA.filter((f) => f.includes('token_accepted')).length === accepted) {
    if (Date.now() > deadline) throw new Error('the stream never acknowledged the renewed token');
    await new Promise((r) => setTimeout(r, 100));
  }
});

await step('B\'s stream drops, reconnects with last_id and catches up', async () => {
  const before = streamUrls.length;
  let release;
  holdNext = new Promise((r) => { release = r; });
  currentStream.close({ code: 4000, reason: 'test: dropped' });
  // The next try is held back (offline); meanwhile someone invites B.
  const deadline = Date.now() + T;
  while (streamUrls.length <= before) {
    if (Date.now() > deadline) throw new Error('B did not try to reconnect');
    await new Promise((r) => setTimeout(r, 50));
  }
  carol = await apiPerson(`carol_${run}`);
  const start = new Date(Date.now() + 2 * 86400e3);
  start.setUTCHours(15, 0, 0, 0);
  await carol.call('POST', '/v1/events', {
    title: `Missed ${run}`, start: start.toISOString(), end: new Date(start.getTime() + 3600e3).toISOString(),
    time_zone: 'UTC', attendees: [B.name],
  });
  release();
  await visible(pb.locator('.toast'), `Missed ${run}`, 20_000);
  const url = streamUrls[streamUrls.length - 1];
  if (!/[?&]last_id=/.test(url)) throw new Error(`reconnected without last_id: ${url}`);
  await waitFor(pb, () => document.body.dataset.stream === 'live', null, 'the stream to be live again');
});

await step('A moves the weekly event: B is told to answer again, sees it in the dialog, and accepts again', async () => {
  await pa.keyboard.press('w');
  await dismissToasts(pa);
  await openEvent(pa, title);
  const d = dialog(pa);
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  await d.getByLabel('Starts').fill(dayAt(A.zone, 9));
  await d.getByLabel('Ends').fill(dayAt(A.zone, 10));
  await d.getByRole('button', { name: 'Save changes' }).click();
  // Opened on today's occurrence: "All events" moves the series (its id).
  const prompt = await visible(pa.locator('#scope-prompt'));
  await prompt.getByRole('radio', { name: 'All events' }).check();
  const patched = pa.waitForRequest((r) => r.method() === 'PATCH', { timeout: T });
  await prompt.getByRole('button', { name: 'OK' }).click();
  const url = (await patched).url();
  if (url.includes('_') || url.includes('scope=')) throw new Error(`"All events" went to ${url}, not the series' id`);
  const moved = JSON.parse((await patched).postData());
  if (Date.parse(moved.start) !== Date.parse(DateTime.fromISO(dayAt(A.zone, 9), { zone: A.zone }).toISO())) throw new Error(`"All events" sent ${JSON.stringify(moved)}`);
  // Saved: the dialog closes, or stays to show what the new time overlaps.
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the move to be saved');
  if (await d.isVisible()) await closeDialog(pa);
  const toastB = await visible(pb.locator('.toast'), `${A.name} moved “${title}”`);
  if (!(await toastB.textContent()).includes('Please answer again')) throw new Error(`B's toast: ${await toastB.textContent()}`);
  await toastB.getByRole('button', { name: 'Open and answer' }).click();
  const db = dialog(pb);
  await visible(db.locator('.rsvp-current'), 'Not answered yet');
  await db.getByRole('button', { name: 'Accept' }).click();
  await visible(db.locator('.rsvp-current'), 'Accepted');
  await closeDialog(pb);
  const want = `${B.name} accepted “${title}”`;
  await waitFor(pa, (text) => window.__toasts.log.filter((t) => t.text.includes(text)).length >= 2, want, `a second toast "${want}"`);
});

let reminderEvent = null; // { id, name, start } of A's event with a reminder
await step('reminders: A sets "5 minutes before" in the dialog on an event starting in 5 min 25 s (at most 5, removed by keyboard), the PUT carries it and no PATCH, the dialog shows it again, and the reminder arrives live about 25 s on (toast, unread count, panel)', async () => {
  const t0 = Date.now();
  const unreadBefore = Number(await pa.evaluate(() => document.querySelector('.bell')?.dataset.unread));
  // Made through the API, to the second (the dialog's fields hold
  // minutes), inviting B: the reminder is due 25 s from now.
  const name = `Reminder ${run}`;
  const start = DateTime.now().plus({ minutes: 5, seconds: 25 }).startOf('second');
  const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: A.name, password: PASSWORD }) })).json();
  const made = await fetch(`${BASE}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${login.access_token}` },
    body: JSON.stringify({ title: name, time_zone: A.zone, attendees: [B.name], start: start.toUTC().toISO({ suppressMilliseconds: true }), end: start.plus({ minutes: 30 }).toUTC().toISO({ suppressMilliseconds: true }) }),
  });
  if (made.status !== 201) throw new Error(`POST /v1/events: ${made.status} ${await made.text()}`);
  const id = (await made.json()).event.id;
  reminderEvent = { id, name, start };
  // A's week (the next one when it starts after Sunday midnight in Madrid).
  await pa.keyboard.press('w');
  await pa.evaluate(() => document.activeElement?.blur());
  await pa.keyboard.press('t');
  if (start.setZone(A.zone).startOf('week') > DateTime.now().setZone(A.zone).startOf('week')) await pa.keyboard.press('n');
  else await pa.keyboard.press('r');
  await visible(calEvent(pa, name));
  // Opened with Enter: the event made at the next whole hour by keyboard
  // may lie over the middle of this one, where a click would land.
  await calEvent(pa, name).focus();
  await pa.keyboard.press('Enter');
  const d = dialog(pa);
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  const section = d.locator('section.reminders');
  await visible(section.getByRole('heading', { name: 'Your reminders' }));
  await visible(section.locator('.reminder-none'), 'No reminders.');
  // Five with the keyboard, then no more.
  const add = section.getByRole('button', { name: 'Add reminder' });
  for (let i = 1; i <= 5; i += 1) {
    await add.focus();
    await pa.keyboard.press('Enter');
    await waitFor(pa, (n) => document.activeElement?.id && document.activeElement === document.querySelectorAll('#event-dialog .reminder select')[n - 1], i, `focus on reminder ${i}`);
  }
  if (!(await add.isDisabled())) throw new Error('"Add reminder" is still enabled with 5 reminders');
  await visible(section.locator('#reminders-hint'), 'At most 5');
  await axe(pa, 'event dialog with five reminders');
  // Remove the last four with the keyboard: focus goes to a neighbour.
  for (let i = 5; i >= 2; i -= 1) {
    await section.getByRole('button', { name: new RegExp(`^Remove reminder ${i} `) }).focus();
    await pa.keyboard.press('Enter');
    await waitFor(pa, () => document.activeElement?.matches('#event-dialog .reminder select'), null, 'focus on a remaining reminder');
  }
  if ((await section.locator('select').count()) !== 1) throw new Error('four reminders were not removed');
  if (await add.isDisabled()) throw new Error('"Add reminder" is still disabled');
  await section.getByLabel('Reminder 1', { exact: true }).selectOption({ label: '5 minutes before' });
  const patches = [];
  const onRequest = (r) => { if (r.method() === 'PATCH') patches.push(r.url()); };
  pa.on('request', onRequest);
  const putReq = pa.waitForRequest((r) => r.method() === 'PUT' && r.url().endsWith(`/v1/events/${id}/reminders`), { timeout: T });
  const putRes = pa.waitForResponse((r) => r.request().method() === 'PUT' && r.url().endsWith(`/v1/events/${id}/reminders`), { timeout: T });
  await d.getByRole('button', { name: 'Save changes' }).click();
  const sent = JSON.parse((await putReq).postData());
  if (JSON.stringify(sent) !== JSON.stringify({ minutes_before: [5] })) throw new Error(`the PUT sent ${JSON.stringify(sent)}`);
  const res = await putRes;
  const saved = await res.json();
  if (res.status() !== 200 || JSON.stringify(saved.reminders) !== '[5]') throw new Error(`the PUT answered ${res.status()} ${JSON.stringify(saved).slice(0, 300)}`);
  await d.waitFor({ state: 'hidden', timeout: T });
  pa.off('request', onRequest);
  if (patches.length) throw new Error(`only the reminders changed, but a PATCH was sent: ${patches}`);
  // Opened again (Enter, as above): the reminder is there.
  await calEvent(pa, name).focus();
  await pa.keyboard.press('Enter');
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  const again = await section.locator('select').evaluateAll((els) => els.map((e) => [e.value, e.selectedOptions[0]?.textContent]));
  if (JSON.stringify(again) !== JSON.stringify([['5', '5 minutes before']])) throw new Error(`reopened, the reminders read ${JSON.stringify(again)}`);
  await section.scrollIntoViewIfNeeded();
  await shot(pa, 'reminders-dialog');
  await closeDialog(pa);
  // Live, no reload: the toast (polled, with a deadline), the count, the panel.
  const navs = await pa.evaluate(() => performance.getEntriesByType('navigation').length);
  const clock = await pa.evaluate(([iso, zone]) => new Intl.DateTimeFormat(undefined, { timeZone: zone, hour: '2-digit', minute: '2-digit' }).format(new Date(iso)), [start.toISO(), A.zone]);
  const want = `Reminder: “${name}” starts at ${clock} (in 5 min).`;
  const due = start.minus({ minutes: 5 }).toMillis();
  await waitFor(pa, (text) => window.__toasts.log.some((t) => t.text.startsWith(`Reminder: “${text}”`)), name, `the reminder toast (due ${Math.round((due - t0) / 1000)} s after the step began)`, Math.max(T, due - Date.now() + 60_000));
  const arrived = Date.now();
  const entry = (await toastLog(pa)).log.find((t) => t.text.startsWith(`Reminder: “${name}”`));
  if (entry.text !== want) throw new Error(`the reminder toast reads "${entry.text}", wanted "${want}"`);
  if (entry.added < due - 1000) throw new Error(`the reminder came ${due - entry.added} ms early`);
  if (entry.unread !== unreadBefore + 1) throw new Error(`the unread count was ${entry.unread} when the reminder came, wanted ${unreadBefore + 1}`);
  const toastA = await visible(pa.locator('.toast'), want);
  if ((await pa.evaluate(() => performance.getEntriesByType('navigation').length)) !== navs) throw new Error('the page reloaded');
  await pa.mouse.move(2, 890);
  notes.push(`reminder: due ${Math.round((due - t0) / 1000)} s into the step, toast ${entry.added - due} ms after it was due; screenshot ${await shot(pa, 'reminder-toast')}`);
  // In the panel, unread; "Open event" on the toast opens it (and reads it).
  await openPanel(pa);
  const row = await visible(pa.locator('#notifications-panel .notification[data-kind="reminder"]'), name);
  if ((await row.locator('.notification-text').textContent()) !== want) throw new Error(`the panel reads "${await row.textContent()}"`);
  if (!(await row.getAttribute('class')).includes('unread')) throw new Error('the reminder is not unread in the panel');
  await pa.keyboard.press('Escape');
  await toastA.getByRole('button', { name: 'Open event' }).click();
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  if ((await d.getByLabel('Title').inputValue()) !== name) throw new Error('"Open event" opened another event');
  await closeDialog(pa);
  await waitFor(pa, (n) => Number(document.querySelector('.bell')?.dataset.unread) === n, unreadBefore, 'the reminder to be read');
  if (arrived - t0 > 60_000) notes.push(`reminder step: the toast came ${Math.round((arrived - t0) / 1000)} s after the step began`);
});

await step('reminders: B opens A\'s invitation (A\'s reminder not shown), picks "1 hour before", accepts (the PUT goes with the answer; a 422 shows next to the field), saves, and sees only their own', async () => {
  if (!reminderEvent) throw new Error('no event from the previous step');
  const { id, name } = reminderEvent;
  await openPanel(pb);
  const row = await visible(pb.locator('#notifications-panel .notification[data-kind="event_invited"]'), name);
  await row.getByRole('button', { name: 'Open and answer' }).click();
  const d = dialog(pb);
  await visible(d.getByRole('heading', { name }));
  const section = d.locator('section.reminders');
  // A's "5 minutes before" is A's own.
  await visible(section.locator('.reminder-none'), 'No reminders.');
  if (await section.locator('select').count()) throw new Error('B sees reminders B did not set');
  await section.getByRole('button', { name: 'Add reminder' }).click();
  await section.getByLabel('Reminder 1', { exact: true }).selectOption({ label: '1 hour before' });
  // The answer carries the reminders; the API refusing them (faked once
  // here: the dialog offers nothing it would refuse) shows next to them.
  let faked = null;
  await pb.route(`**/v1/events/${id}/reminders`, async (route) => {
    faked = route.request().postData();
    await route.fulfill({ status: 422, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ error: { code: 'invalid_field', message: 'at most 5 reminders per person and event', details: { field: 'reminders' } } }) });
  });
  const answered = pb.waitForResponse((r) => r.url().endsWith(`/v1/events/${id}/rsvp`), { timeout: T });
  await d.getByRole('button', { name: 'Accept' }).click();
  if ((await answered).status() !== 200) throw new Error(`the answer got ${(await answered).status()}`);
  const err = await visible(section.locator('.field-error'), 'at most 5 reminders');
  await pb.unroute(`**/v1/events/${id}/reminders`);
  if (JSON.stringify(JSON.parse(faked)) !== JSON.stringify({ minutes_before: [60] })) throw new Error(`the PUT with the answer sent ${faked}`);
  const select = section.getByLabel('Reminder 1', { exact: true });
  if ((await select.getAttribute('aria-invalid')) !== 'true' || (await select.getAttribute('aria-errormessage')) !== (await err.getAttribute('id'))) throw new Error('the error is not tied to the reminder');
  await visible(d.locator('.rsvp-current'), 'Accepted');
  await axe(pb, 'event dialog (attendee) with a reminder error');
  // "Save reminders": the real PUT.
  const putRes = pb.waitForResponse((r) => r.request().method() === 'PUT' && r.url().endsWith(`/v1/events/${id}/reminders`), { timeout: T });
  await d.getByRole('button', { name: 'Save reminders' }).click();
  const res = await putRes;
  if (JSON.stringify(JSON.parse(res.request().postData())) !== JSON.stringify({ minutes_before: [60] })) throw new Error(`the PUT sent ${res.request().postData()}`);
  const saved = await res.json();
  if (res.status() !== 200 || JSON.stringify(saved.reminders) !== '[60]') throw new Error(`the PUT answered ${res.status()} ${JSON.stringify(saved).slice(0, 300)}`);
  await d.waitFor({ state: 'hidden', timeout: T });
  await visible(pb.locator('.toast'), `Saved your reminders for “${name}”`);
  // Opened again: B's own only; and A's are still A's.
  await openPanel(pb);
  await (await visible(pb.locator('#notifications-panel .notification[data-kind="event_invited"]'), name)).getByRole('button', { name: /^Open/ }).click();
  await visible(d.getByRole('heading', { name }));
  const shown = await section.locator('select').evaluateAll((els) => els.map((e) => e.value));
  if (JSON.stringify(shown) !== '["60"]') throw new Error(`B's dialog shows reminders ${JSON.stringify(shown)}`);
  await closeDialog(pb);
  await pb.getByRole('button', { name: 'Close notifications' }).click();
  await pb.locator('#notifications-panel').waitFor({ state: 'hidden', timeout: T });
  const read = async (who) => {
    const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: who.name, password: PASSWORD }) })).json();
    return (await (await fetch(`${BASE}/v1/events/${id}`, { headers: { authorization: `Bearer ${login.access_token}` } })).json()).reminders;
  };
  const [ra, rb] = [await read(A), await read(B)];
  if (JSON.stringify(ra) !== '[5]' || JSON.stringify(rb) !== '[60]') throw new Error(`the API reads A's reminders ${JSON.stringify(ra)} and B's ${JSON.stringify(rb)}`);
});

await step('notifications panel: A has B\'s answer', async () => {
  await pa.getByRole('button', { name: /Notifications/ }).click();
  const panel = pa.locator('#notifications-panel');
  await visible(panel.locator('.notification'), `${B.name} accepted “${title}”`);
  if (await panel.getByRole('button', { name: 'Load older' }).isVisible()) throw new Error('"Load older" is shown with everything on one page');
  await shot(pa, 'notifications-panel');
  await axe(pa, 'notifications panel');
  await panel.getByRole('button', { name: 'Mark all read' }).click();
  await waitFor(pa, () => document.querySelector('.bell')?.dataset.unread === '0', null, 'no unread notifications');
  await pa.keyboard.press('Escape');
});

await step('B\'s panel: "Mark all read" is one request (read-all) and the unread count goes to 0', async () => {
  await waitFor(pb, () => Number(document.querySelector('.bell')?.dataset.unread) >= 1, null, 'B to have unread notifications');
  const posts = [];
  const onRequest = (r) => { if (r.method() === 'POST' && r.url().includes('/v1/notifications')) posts.push(r.url()); };
  pb.on('request', onRequest);
  await pb.getByRole('button', { name: /Notifications/ }).click();
  const panel = pb.locator('#notifications-panel');
  await visible(panel.locator('.notification.unread'));
  // Everything stored fit in the first page: no "Load older".
  if (await panel.getByRole('button', { name: 'Load older' }).isVisible()) throw new Error('"Load older" is shown with everything on one page');
  const answered = pb.waitForResponse((r) => r.url().endsWith('/v1/notifications/read-all'), { timeout: T });
  await panel.getByRole('button', { name: 'Mark all read' }).click();
  const res = await answered;
  const marked = res.status() === 200 ? (await res.json()).marked : null;
  if (!(marked >= 1)) throw new Error(`read-all answered ${res.status()} ${JSON.stringify(marked)}`);
  await waitFor(pb, () => document.querySelector('.bell')?.dataset.unread === '0' && !document.querySelector('#notifications-panel .notification.unread'), null, 'no unread notifications');
  pb.off('request', onRequest);
  if (posts.length !== 1 || !posts[0].endsWith('/v1/notifications/read-all')) throw new Error(`"Mark all read" sent ${JSON.stringify(posts)}`);
  await pb.keyboard.press('Escape');
  await panel.waitFor({ state: 'hidden', timeout: T });
});

await step('groups: A creates a hierarchical group and invites B', async () => {
  await pa.getByRole('link', { name: 'Groups' }).click();
  const form = pa.locator('form[aria-labelledby="new-group-title"]');
  await form.getByLabel('Name').fill(`Team ${run}`);
  await form.getByLabel('Kind').selectOption('hierarchical');
  await form.getByRole('button', { name: 'Create group' }).click();
  await visible(pa.getByRole('heading', { name: `Team ${run}` }));
  const invite = pa.locator('form.invite-form');
  await invite.getByLabel('Username').fill(B.name);
  await invite.getByRole('button', { name: 'Send invitation' }).click();
  await visible(pa.locator('.toast'), `Invited ${B.name}`);
});

await step('groups: B joins from the live notification', async () => {
  await visible(pb.locator('.toast'), `Team ${run}`);
  await pb.locator('.toast').filter({ hasText: `Team ${run}` }).getByRole('button', { name: 'Join group' }).click();
  await visible(pb.locator('.toast'), 'You joined');
  // A is told too, and the group page shows B at rank 1.
  await visible(pa.locator('.toast'), `${B.name} joined`);
  await visible(pa.locator('table.members tr', { hasText: B.name }), '1');
});

await step('groups: the group agenda shows both members, A\'s all-day event in the all-day row (screenshot, axe)', async () => {
  const agenda = pa.locator('.group-agenda-calendar');
  await visible(agenda.locator('.fc-event'), `${B.name}: ${title}`);
  await visible(agenda.locator('.fc-event'), `${A.name}: ${title}`);
  // A day-long marker in the all-day row, not a 24-hour block.
  await visible(agenda.locator('.fc-daygrid-body .fc-event'), `${A.name}: Offsite ${run}`);
  if (await agenda.locator('.fc-timegrid-event', { hasText: `Offsite ${run}` }).count()) throw new Error('the all-day event is a block in the hours');
  await dismissToasts(pa);
  await pa.locator('.group-agenda').scrollIntoViewIfNeeded();
  notes.push(`screenshot ${await shot(pa, 'group-agenda')}`);
  await axe(pa, 'groups page with the group agenda');
});

await step('toasts: never more than three at once, none gone before its time', async () => {
  for (const [who, p] of [['A', pa], ['B', pb]]) {
    const { log, most } = await toastLog(p);
    if (most > 3) throw new Error(`${who} saw ${most} toasts at once`);
    const timedOut = log.filter((t) => t.gone === 'timeout');
    // 6 s, 12 s with an action or for an error; hover and focus only add.
    const early = timedOut.filter((t) => t.removed - t.added < (t.actions || t.kind.includes('toast-error') ? 11_900 : 5_900));
    if (early.length) throw new Error(`${who}: toasts gone too early: ${JSON.stringify(early)}`);
  }
});

await step('B logs out and stays logged out across a reload', async () => {
  await pb.getByRole('button', { name: 'Log out' }).click();
  await visible(pb.getByRole('heading', { name: 'Sign in' }));
  await pb.reload({ waitUntil: 'load' });
  await visible(pb.getByRole('heading', { name: 'Sign in' }));
  const stored = await pb.evaluate(() => localStorage.getItem('agenda.refresh_token'));
  if (stored) throw new Error('a refresh token is still stored');
});

await step('B signs in again', async () => {
  // The test switch for a smaller page of notifications (README): the
  // next step pages through them with "Load older".
  await pb.evaluate(() => localStorage.setItem('agenda.notifications.page_size', '2'));
  const form = pb.locator('form[aria-labelledby="login-title"]');
  await form.getByLabel('Username or email').fill(B.name);
  await form.getByLabel('Password').fill(PASSWORD);
  await form.getByRole('button', { name: 'Sign in' }).click();
  await visible(pb.locator('.fc-view-harness'));
  await visible(calEvent(pb, title));
});

await step('B\'s panel: "Load older" (pages of 2 by the test switch) reads every older page, then goes', async () => {
  const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: B.name, password: PASSWORD }) })).json();
  const r = await fetch(`${BASE}/v1/notifications?limit=200`, { headers: { authorization: `Bearer ${login.access_token}` } });
  if (!r.ok) throw new Error(`GET /v1/notifications: ${r.status} ${await r.text()}`);
  const stored = (await r.json()).items.length;
  if (stored <= 2) throw new Error(`B has only ${stored} notifications`);
  await pb.getByRole('button', { name: /Notifications/ }).click();
  const panel = pb.locator('#notifications-panel');
  const more = panel.getByRole('button', { name: 'Load older' });
  await visible(more);
  const rows = panel.locator('.notification');
  if ((await rows.count()) !== 2) throw new Error(`the first page shows ${await rows.count()} rows`);
  for (let pages = 1; await more.isVisible(); pages += 1) {
    if (pages > stored) throw new Error('"Load older" never goes');
    const before = await rows.count();
    const read = pb.waitForResponse((x) => x.url().includes('/v1/notifications?') && x.url().includes('before='), { timeout: T });
    await more.click();
    await read;
    await waitFor(pb, (n) => document.querySelectorAll('#notifications-panel .notification').length > n || document.querySelector('.load-older')?.hidden, before, 'the older page');
  }
  if ((await rows.count()) !== stored) throw new Error(`the panel shows ${await rows.count()} of ${stored} notifications`);
  // Newest first throughout; focus went to the first row the last page added.
  const ids = await rows.evaluateAll((els) => els.map((e) => e.dataset.id));
  if (JSON.stringify(ids) !== JSON.stringify([...ids].sort().reverse())) throw new Error('the rows are not newest first');
  await waitFor(pb, () => document.activeElement?.classList.contains('notification') || document.activeElement?.id === 'notifications-panel', null, 'focus on the rows');
  await pb.keyboard.press('Escape');
  await panel.waitFor({ state: 'hidden', timeout: T });
});

await step('attendees: A adds carol to an event with B and takes B off; B loses it and is told, carol is invited; the PATCH names attendees only when they change', async () => {
  if (!carol) throw new Error('carol was not made (B\'s stream step)');
  const name = `Review ${run}`;
  await pa.getByRole('link', { name: 'Calendar', exact: true }).click();
  await visible(pa.locator('.fc-view-harness'));
  // Today 13:00 in B's zone (B's week in view always holds it), in an
  // event zone of its own: B is in A's group now, so added at once.
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(name);
  await d.getByLabel('Time zone').selectOption(B.zone);
  await d.getByLabel('Starts').fill(dayAt(B.zone, 13));
  await d.getByLabel('Ends').fill(dayAt(B.zone, 14));
  const who = d.getByLabel('Invite people (username)');
  await who.fill(B.name);
  await who.press('Enter');
  await visible(d.locator('.chip'), B.name);
  const created = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()), { timeout: T });
  await d.getByRole('button', { name: 'Create event' }).click();
  const res = await created;
  if (res.status() !== 201) throw new Error(`the creation answered ${res.status()}`);
  const id = (await res.json()).event.id;
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the event to be saved');
  if (await d.isVisible()) await closeDialog(pa);
  await visible(calEvent(pb, name));
  // A's week: the event's day in Madrid is in last week when Monday has
  // begun in Madrid but not yet in New York.
  const startsAt = DateTime.fromISO(dayAt(B.zone, 13), { zone: B.zone }).setZone(A.zone);
  const lastWeek = startsAt.startOf('week') < DateTime.now().setZone(A.zone).startOf('week');
  if (lastWeek) await pa.keyboard.press('p');
  await openEvent(pa, name);
  await visible(d.getByRole('heading', { name: 'Edit event' }));
  // The saved attendees are chips to edit; the rows keep the answers.
  await visible(d.locator('.chip'), B.name);
  await visible(d.locator('.attendee', { hasText: B.name }), 'Not answered yet');
  await who.fill(carol.name);
  await who.press('Enter');
  await visible(d.locator('.chip'), carol.name);
  await d.getByRole('button', { name: `Remove ${B.name}` }).click();
  await waitFor(pa, () => document.activeElement?.name === 'attendee', null, 'focus back in the attendee field');
  await axe(pa, 'event dialog (organizer editing attendees)');
  let patched = pa.waitForRequest((r) => r.method() === 'PATCH' && r.url().endsWith(`/v1/events/${id}`), { timeout: T });
  await d.getByRole('button', { name: 'Save changes' }).click();
  let sent = JSON.parse((await patched).postData());
  if (JSON.stringify(sent) !== JSON.stringify({ attendees: [carol.name] })) throw new Error(`the PATCH sent ${JSON.stringify(sent)}, wanted only the new attendees [carol]`);
  // B is told, and the event leaves B's calendar and agenda.
  await visible(pb.locator('.toast'), `${A.name} cancelled “${name}”`);
  await waitFor(pb, (text) => ![...document.querySelectorAll('.fc-event')].some((e) => e.textContent.includes(text)), name, 'the event to leave B\'s calendar');
  const loginB = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: B.name, password: PASSWORD }) })).json();
  const q = new URLSearchParams({ from: DateTime.now().minus({ days: 2 }).toUTC().toISO(), to: DateTime.now().plus({ days: 2 }).toUTC().toISO() });
  const agendaB = await (await fetch(`${BASE}/v1/events?${q}`, { headers: { authorization: `Bearer ${loginB.access_token}` } })).json();
  if (agendaB.items.some((e) => e.id === id)) throw new Error('the event is still in B\'s agenda');
  // Carol shares no group with A: invited (told, not yet in her agenda).
  const told = (await carol.call('GET', '/v1/notifications?limit=50')).items;
  if (!told.some((n) => n.kind === 'event_invited' && n.data?.event_id === id)) throw new Error(`carol was not invited: ${JSON.stringify(told.map((n) => n.kind))}`);
  // The rows after the save (the dialog shows them at once when it stays
  // open for conflicts; opened again otherwise): B's row is gone.
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the change to be saved');
  if (!(await d.isVisible())) await openEvent(pa, name);
  await visible(d.locator('.attendee', { hasText: carol.name }), 'Invited, not answered yet');
  if (await d.locator('.attendee', { hasText: B.name }).count()) throw new Error('B\'s row is still shown');
  const chips = await d.locator('.chip').allTextContents();
  if (chips.length !== 1 || !chips[0].includes(carol.name)) throw new Error(`the chips read ${JSON.stringify(chips)}`);
  await shot(pa, 'attendees-edited');
  // Another change leaves the attendees out of the PATCH.
  await d.getByLabel('Location').fill('Room 7');
  patched = pa.waitForRequest((r) => r.method() === 'PATCH' && r.url().endsWith(`/v1/events/${id}`), { timeout: T });
  await d.getByRole('button', { name: 'Save changes' }).click();
  sent = JSON.parse((await patched).postData());
  if (JSON.stringify(sent) !== JSON.stringify({ location: 'Room 7' })) throw new Error(`the PATCH sent ${JSON.stringify(sent)}, wanted only the location`);
  await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the location to be saved');
  if (await d.isVisible()) await closeDialog(pa);
  if (lastWeek) await pa.keyboard.press('t');
});

await step('find a time: for A and carol on a day carol is busy until 14:00 (Madrid), the first slot avoids it, stepping days by keyboard, picking fills start and end, and the event is saved without conflicts', async () => {
  // Three days on (never today's weekday: the weekly event stays out).
  const day = DateTime.now().setZone(A.zone).plus({ days: 3 }).startOf('day');
  const busy = { start: day.set({ hour: 9 }), end: day.set({ hour: 14 }) };
  await carol.call('POST', '/v1/events', {
    title: `Busy ${run}`, time_zone: 'UTC',
    start: busy.start.toUTC().toISO({ suppressMilliseconds: true }), end: busy.end.toUTC().toISO({ suppressMilliseconds: true }),
  });
  const name = `Planning ${run}`;
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(name);
  await d.getByLabel('Starts').fill(`${day.toISODate()}T10:00`);
  await d.getByLabel('Ends').fill(`${day.toISODate()}T11:00`);
  const who = d.getByLabel('Invite people (username)');
  await who.fill(carol.name);
  await who.press('Enter');
  await visible(d.locator('.chip'), carol.name);
  const finder = pa.locator('#find-time-dialog');
  const open = async () => {
    const asked = pa.waitForResponse((r) => r.url().includes('/v1/freebusy?'), { timeout: T });
    await d.getByRole('button', { name: 'Find a time' }).click();
    await visible(finder.getByRole('heading', { name: 'Find a time' }));
    return asked;
  };
  const res = await open();
  if (res.status() !== 200) throw new Error(`free/busy answered ${res.status()}`);
  const url = new URL(res.url());
  if (url.searchParams.get('users') !== `${A.name},${carol.name}`) throw new Error(`free/busy asked for ${url.searchParams.get('users')}`);
  if (Date.parse(url.searchParams.get('from')) !== day.toMillis()) throw new Error(`free/busy from ${url.searchParams.get('from')}, wanted ${day.toISO()}`);
  // Each person's time line, in their own zone: carol's block in UTC.
  const hhmm = (t) => t.setZone('UTC').toFormat('HH:mm');
  await visible(finder.locator('.timeline-row', { hasText: carol.name }).locator('.timeline-text'), `Busy ${hhmm(busy.start)}–${hhmm(busy.end)} (UTC).`);
  await visible(finder.locator('.timeline-row', { hasText: A.name }).locator('.timeline-text'), `Free all day (${A.zone}).`);
  // The slots: none overlaps carol's block; the first is 14:00 (Madrid):
  // carol's working day (from 08:00 UTC) begins inside her block.
  const first = day.set({ hour: 14 }).toUTC().toISO({ suppressMilliseconds: true });
  await visible(finder.locator(`button.slot[data-start="${first}"]`));
  const slots = await finder.locator('button.slot').evaluateAll((els) => els.map((e) => [e.dataset.start, e.dataset.end]));
  if (slots[0][0] !== first) throw new Error(`the first slot starts ${slots[0][0]}, wanted ${first}`);
  const clash = slots.filter(([s, e]) => Date.parse(s) < busy.end.toMillis() && busy.start.toMillis() < Date.parse(e));
  if (clash.length) throw new Error(`slots overlap carol's busy time: ${JSON.stringify(clash)}`);
  if (slots.some(([s, e]) => Date.parse(e) - Date.parse(s) !== 3600e3)) throw new Error(`slots are not one hour long: ${JSON.stringify(slots)}`);
  await shot(pa, 'find-a-time');
  await axe(pa, 'find a time');
  // Day by day with the keyboard, and back.
  const dayField = finder.getByLabel('Day', { exact: true });
  await finder.getByRole('button', { name: 'Next day ›' }).focus();
  let asked = pa.waitForResponse((r) => r.url().includes('/v1/freebusy?'), { timeout: T });
  await pa.keyboard.press('Enter');
  if (Date.parse(new URL((await asked).url()).searchParams.get('from')) !== day.plus({ days: 1 }).toMillis()) throw new Error('"Next day" did not ask for the next day');
  if ((await dayField.inputValue()) !== day.plus({ days: 1 }).toISODate()) throw new Error(`the day field reads ${await dayField.inputValue()}`);
  await visible(finder.locator('.timeline-row', { hasText: carol.name }).locator('.timeline-text'), 'Free all day (UTC).');
  await finder.getByRole('button', { name: '‹ Previous day' }).focus();
  asked = pa.waitForResponse((r) => r.url().includes('/v1/freebusy?'), { timeout: T });
  await pa.keyboard.press('Enter');
  await asked;
  await visible(finder.locator(`button.slot[data-start="${first}"]`));
  // Escape closes it (the event dialog stays), focus back on the button.
  await pa.keyboard.press('Escape');
  await finder.waitFor({ state: 'hidden', timeout: T });
  if (!(await d.isVisible())) throw new Error('Escape closed the event dialog too');
  await waitFor(pa, () => document.activeElement?.textContent === 'Find a time', null, 'focus back on "Find a time"');
  await open();
  const slot = finder.locator(`button.slot[data-start="${first}"]`);
  await visible(slot);
  await slot.focus();
  await pa.keyboard.press('Enter');
  await finder.waitFor({ state: 'hidden', timeout: T });
  await waitFor(pa, () => document.activeElement?.textContent === 'Find a time', null, 'focus back on "Find a time"');
  const got = [await d.getByLabel('Starts').inputValue(), await d.getByLabel('Ends').inputValue()];
  if (got.join(' ') !== `${day.toISODate()}T14:00 ${day.toISODate()}T15:00`) throw new Error(`start and end read ${got.join(' ')}`);
  await visible(d.locator('#find-time-note'), 'Start and end set to');
  const created = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()), { timeout: T });
  await d.getByRole('button', { name: 'Create event' }).click();
  const reply = await (await created).json();
  if (!reply.event || reply.conflicts.length) throw new Error(`the creation answered ${JSON.stringify(reply).slice(0, 300)}`);
  if (Date.parse(reply.event.start) !== day.set({ hour: 14 }).toMillis()) throw new Error(`the event starts ${reply.event.start}`);
  await d.waitFor({ state: 'hidden', timeout: T });
  await visible(pa.locator('.toast'), `Created “${name}”`);
});

// Calendar apps: app passwords against the CalDAV server, the private
// feed, an .ics import, and a group's feed.
const appsNav = () => pa.getByRole('navigation', { name: 'Sections' }).getByRole('link', { name: 'Calendar apps' });
/** A request to the server from Node (outside the browser), with its body as text. */
async function fromNode(url, init = {}) {
  const r = await fetch(url, init);
  return { status: r.status, type: r.headers.get('content-type') || '', text: await r.text() };
}
/** An iCalendar body unfolded (RFC 5545 folds long lines). */
const unfold = (ics) => ics.replace(/\r?\n[ \t]/g, '');
const basic = (user, password) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const propfind = (user, password) => fromNode(`${BASE}/dav/`, { method: 'PROPFIND', headers: { authorization: basic(user, password), depth: '0' } });

await step('calendar apps: A opens "Calendar apps" from the header: the feed, CalDAV details (server URL, username) and import (axe)', async () => {
  await appsNav().focus();
  await pa.keyboard.press('Enter');
  await visible(pa.getByRole('heading', { name: 'Subscribe from another calendar app' }));
  if ((await appsNav().getAttribute('aria-current')) !== 'page') throw new Error('the "Calendar apps" link is not marked as the current page');
  await visible(pa.getByRole('heading', { name: 'CalDAV (Thunderbird, DAVx5, Apple Calendar)' }));
  await visible(pa.getByRole('heading', { name: 'Import an .ics file' }));
  const server = await pa.getByRole('textbox', { name: 'Server URL' }).inputValue();
  if (server !== `${BASE}/dav/`) throw new Error(`the server URL reads ${server}, wanted ${BASE}/dav/`);
  const user = await pa.getByRole('textbox', { name: 'Username' }).inputValue();
  if (user !== A.name) throw new Error(`the username reads ${user}`);
  await visible(pa.locator('.app-password-list'), 'No app passwords yet.');
  if (await pa.locator('#calendar-view').isVisible()) throw new Error('the calendar is still shown');
  await axe(pa, 'calendar apps page');
});

await step('calendar apps: A makes an app password ("Thunderbird"), shown once with Copy; it signs in to /dav/ (PROPFIND 207), and revoked by keyboard it no longer does (401)', async () => {
  const form = pa.locator('form.app-password-form');
  await form.getByLabel('Name').fill('Thunderbird');
  const made = pa.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/v1/me/app-passwords'), { timeout: T });
  await form.getByLabel('Name').press('Enter');
  if ((await made).status() !== 201) throw new Error(`POST /v1/me/app-passwords answered ${(await made).status()}`);
  const field = pa.getByRole('textbox', { name: 'App password for “Thunderbird”' });
  await visible(field);
  await waitFor(pa, () => document.activeElement?.closest('.new-password'), null, 'focus on the new password');
  const password = await field.inputValue();
  if (password.length < 16) throw new Error(`the password shown is "${password}"`);
  await visible(pa.locator('.new-password'), 'it will not be shown again');
  // Copy puts it on the clipboard (the context may read it: permission granted).
  await pa.locator('.new-password').getByRole('button', { name: /^Copy/ }).press('Enter');
  await visible(pa.locator('.new-password .copy-status'), 'Copied.');
  const clip = await pa.evaluate(() => navigator.clipboard.readText());
  if (clip !== password) throw new Error(`the clipboard holds "${clip}"`);
  const row = await visible(pa.locator('table.app-passwords tbody tr'), 'Thunderbird');
  const today = new Intl.DateTimeFormat('en-US', { timeZone: A.zone, day: 'numeric', month: 'short', year: 'numeric' }).format(new Date());
  if (!(await row.textContent()).includes(today)) throw new Error(`the row reads "${await row.textContent()}", wanted the date ${today}`);
  await dismissToasts(pa);
  notes.push(`screenshot ${await shot(pa, 'calendar-apps')}`);
  await axe(pa, 'calendar apps page with a new app password');
  // CalDAV with it, from outside the browser (as Thunderbird would).
  const ok = await propfind(A.name, password);
  if (ok.status !== 207) throw new Error(`PROPFIND /dav/ with the app password answered ${ok.status} ${ok.text.slice(0, 200)}`);
  if (!ok.text.includes(`/dav/principals/${A.name}/`)) throw new Error(`the PROPFIND answer does not name A's principal: ${ok.text.slice(0, 300)}`);
  const wrong = await propfind(A.name, PASSWORD);
  if (wrong.status !== 401) throw new Error(`PROPFIND /dav/ with the account password answered ${wrong.status}`);
  // "Done" puts the password away; revoke by keyboard.
  await pa.locator('.new-password').getByRole('button', { name: 'Done' }).press('Enter');
  await pa.locator('.new-password').waitFor({ state: 'hidden', timeout: T });
  if (await pa.getByText(password).count()) throw new Error('the password is still on the page');
  const revoked = pa.waitForResponse((r) => r.request().method() === 'DELETE' && r.url().includes('/v1/me/app-passwords/'), { timeout: T });
  await row.getByRole('button', { name: 'Revoke Thunderbird' }).focus();
  await pa.keyboard.press('Enter');
  if ((await revoked).status() !== 204) throw new Error(`DELETE answered ${(await revoked).status()}`);
  await visible(pa.locator('.toast'), 'Revoked “Thunderbird”');
  await visible(pa.locator('.app-password-list'), 'No app passwords yet.');
  await waitFor(pa, () => document.activeElement?.name === 'name', null, 'focus on the new password\'s name (no rows left)');
  const after = await propfind(A.name, password);
  if (after.status !== 401) throw new Error(`PROPFIND /dav/ with the revoked password answered ${after.status}`);
});

let feedUrl = null;
await step('calendar apps: A creates the feed URL: text/calendar with the weekly event; "Make a new URL…" warns, and the old URL stops working', async () => {
  const made = pa.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/v1/me/calendar-feed'), { timeout: T });
  await pa.getByRole('button', { name: 'Create feed URL' }).focus();
  await pa.keyboard.press('Enter');
  if ((await made).status() !== 201) throw new Error(`POST /v1/me/calendar-feed answered ${(await made).status()}`);
  const url = pa.getByRole('textbox', { name: 'Feed URL of your agenda' });
  await visible(url);
  await waitFor(pa, () => document.activeElement?.classList.contains('copy-value'), null, 'focus on the URL');
  feedUrl = await url.inputValue();
  if (!feedUrl.startsWith(`${BASE}/v1/calendar.ics?key=`)) throw new Error(`the feed URL is ${feedUrl}`);
  const feed = await fromNode(feedUrl);
  if (feed.status !== 200 || !feed.type.startsWith('text/calendar')) throw new Error(`the feed answered ${feed.status} ${feed.type}`);
  const ics = unfold(feed.text);
  if (!ics.startsWith('BEGIN:VCALENDAR')) throw new Error(`the feed begins "${ics.slice(0, 40)}"`);
  if (!ics.includes(`SUMMARY:${title}`)) throw new Error(`the feed has no "${title}": ${ics.slice(0, 400)}`);
  // A new URL: asked first, then the old one is refused.
  await pa.getByRole('button', { name: 'Make a new URL…' }).press('Enter');
  const ask = await visible(pa.getByRole('group', { name: 'Make a new URL' }), 'stops working');
  await waitFor(pa, () => document.activeElement?.textContent === 'Replace the URL', null, 'focus on "Replace the URL"');
  await axe(pa, 'calendar apps page, new feed URL asked');
  await pa.keyboard.press('Enter');
  await ask.waitFor({ state: 'hidden', timeout: T });
  await waitFor(pa, (old) => { const v = document.querySelector('#apps-view .feed-url .copy-value')?.value; return v && v !== old; }, feedUrl, 'a new URL');
  const old = feedUrl;
  feedUrl = await url.inputValue();
  const gone = await fromNode(old);
  if (gone.status !== 404) throw new Error(`the old feed URL answered ${gone.status}`);
  const now = await fromNode(feedUrl);
  if (now.status !== 200 || !unfold(now.text).includes(`SUMMARY:${title}`)) throw new Error(`the new feed URL answered ${now.status}`);
});

await step('calendar apps: A imports an .ics file (one event this week): "1 imported", the event is in the calendar; the same file again: "0 imported", skipped as already imported', async () => {
  const name = `Imported ${run}`;
  const uidValue = `import-${run}@example.com`;
  // Today 07:00–07:30 in Madrid (the week in view), in that zone.
  const start = DateTime.now().setZone(A.zone).startOf('day').set({ hour: 7 });
  const local = (d) => d.toFormat("yyyyLLdd'T'HHmmss");
  const stamp = (d) => d.toUTC().toFormat("yyyyLLdd'T'HHmmss'Z'");
  const ics = [
    'BEGIN:VCALENDAR', 'VERSION:2.0', 'PRODID:-//Agenda browser test//EN',
    'BEGIN:VEVENT', `UID:${uidValue}`, `DTSTAMP:${stamp(DateTime.utc())}`,
    `DTSTART;TZID=${A.zone}:${local(start)}`, `DTEND;TZID=${A.zone}:${local(start.plus({ minutes: 30 }))}`, `SUMMARY:${name}`,
    'END:VEVENT', 'END:VCALENDAR', '',
  ].join('\r\n');
  const dir = mkdtempSync(join(tmpdir(), 'agenda-import-'));
  const path = join(dir, `import-${run}.ics`);
  writeFileSync(path, ics);
  const form = pa.locator('form[aria-labelledby="import-title"]');
  const importOnce = async () => {
    await form.getByLabel('iCalendar file (.ics)').setInputFiles(path);
    const sent = pa.waitForRequest((r) => r.method() === 'POST' && r.url().endsWith('/v1/events/import'), { timeout: T });
    const answered = pa.waitForResponse((r) => r.request().method() === 'POST' && r.url().endsWith('/v1/events/import'), { timeout: T });
    await form.getByRole('button', { name: 'Import' }).focus();
    await pa.keyboard.press('Enter');
    const req = await sent;
    if (!req.headers()['content-type']?.startsWith('text/calendar') || req.postData() !== ics) throw new Error(`the import sent ${req.headers()['content-type']}: ${req.postData()?.slice(0, 100)}`);
    const res = await answered;
    if (res.status() !== 200) throw new Error(`the import answered ${res.status()} ${await res.text()}`);
    return res.json();
  };
  const first = await importOnce();
  if (first.imported !== 1 || first.events[0]?.uid !== uidValue) throw new Error(`the import answered ${JSON.stringify(first)}`);
  await visible(form.locator('.import-summary'), `“import-${run}.ics”: 1 imported, 0 skipped.`);
  await axe(pa, 'calendar apps page with an import report');
  // In the calendar (read again), this week, by keyboard.
  await form.getByRole('link', { name: 'Go to the calendar' }).focus();
  await pa.keyboard.press('Enter');
  await visible(pa.locator('.fc-view-harness'));
  await pa.evaluate(() => document.activeElement?.blur());
  await pa.keyboard.press('w');
  await pa.keyboard.press('t');
  await visible(calEvent(pa, name));
  await openEvent(pa, name);
  await visible(dialog(pa).getByRole('heading', { name: 'Edit event' }));
  if ((await dialog(pa).getByLabel('Title').inputValue()) !== name) throw new Error('another event opened');
  const starts = await dialog(pa).getByLabel('Starts').inputValue();
  if (starts !== `${start.toISODate()}T07:00`) throw new Error(`the imported event starts ${starts}, wanted ${start.toISODate()} 07:00 (Madrid)`);
  const zone = await dialog(pa).getByLabel('Time zone', { exact: true }).inputValue();
  if (zone !== A.zone) throw new Error(`the imported event's time zone is ${zone}`);
  await closeDialog(pa);
  // The same file again: nothing new.
  await appsNav().focus();
  await pa.keyboard.press('Enter');
  await visible(pa.getByRole('heading', { name: 'Import an .ics file' }));
  const again = await importOnce();
  if (again.imported !== 0 || again.skipped?.length !== 1) throw new Error(`the second import answered ${JSON.stringify(again)}`);
  await visible(form.locator('.import-summary'), `“import-${run}.ics”: 0 imported, 1 skipped.`);
  await visible(form.locator('.skipped li'), `${uidValue}: already imported`);
  rmSync(dir, { recursive: true, force: true });
});

await step('groups: the group\'s "Feed URL" gives the group agenda\'s feed (text/calendar, the group\'s name, the weekly event)', async () => {
  // The page is drawn anew (the agenda read last): wait for it, not the
  // copy left from the last visit.
  const drawn = pa.waitForResponse((r) => /\/v1\/groups\/[^/]+\/agenda\?/.test(r.url()), { timeout: T });
  await pa.getByRole('link', { name: 'Groups' }).click();
  await drawn;
  await visible(pa.getByRole('heading', { name: `Team ${run}` }));
  const made = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/groups\/[^/]+\/calendar-feed$/.test(r.url()), { timeout: T });
  await pa.getByRole('button', { name: 'Feed URL', exact: true }).focus();
  await pa.keyboard.press('Enter');
  if ((await made).status() !== 201) throw new Error(`POST /v1/groups/{id}/calendar-feed answered ${(await made).status()}`);
  const url = await visible(pa.getByRole('textbox', { name: `Feed URL of “Team ${run}”` }));
  const groupUrl = await url.inputValue();
  if (!groupUrl.startsWith(`${BASE}/v1/calendar.ics?key=`) || groupUrl === feedUrl) throw new Error(`the group feed URL is ${groupUrl}`);
  const feed = await fromNode(groupUrl);
  if (feed.status !== 200 || !feed.type.startsWith('text/calendar')) throw new Error(`the group feed answered ${feed.status} ${feed.type}`);
  const ics = unfold(feed.text);
  if (!ics.startsWith('BEGIN:VCALENDAR') || !ics.includes(`Team ${run}`) || !ics.includes(title)) throw new Error(`the group feed reads: ${ics.slice(0, 600)}`);
  await visible(pa.getByRole('button', { name: 'Make a new URL…' }));
  await axe(pa, 'group page with its feed URL');
});

/** Whether process `pid` has ended (gone, or a zombie not yet reaped). */
function ended(pid) {
  if (!existsSync(`/proc/${pid}`)) return true;
  try {
    return /^\d+ \(.*\) [ZX] /s.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return true;
  }
}

// Last: the killed replica stays down; the other one serves from here on.
await step('a users replica killed during a save: the event is saved once, no error shown', async () => {
  const pids = (process.env.AGENDA_USERS_PIDS || '').split(',').map((x) => Number(x.trim())).filter((x) => x > 0);
  if (!pids.length) {
    notes.push('the failover step was skipped: AGENDA_USERS_PIDS is not set');
    return;
  }
  const victim = pids[0];
  if (ended(victim)) throw new Error(`users replica pid ${victim} is not running`);
  await pa.getByRole('link', { name: 'Calendar', exact: true }).click();
  await visible(pa.locator('.fc-view-harness'));
  const name = `Failover ${run}`;
  const { log: before } = await toastLog(pa);
  await pa.getByRole('button', { name: /New event/ }).click();
  const d = dialog(pa);
  await visible(d);
  await d.getByLabel('Title').fill(name);
  await d.getByLabel('Starts').fill(dayAt(A.zone, 23));
  await d.getByLabel('Ends').fill(dayAt(A.zone, 23, 30));
  // The save is held until the replica is dead, then let through: the
  // gateway meets a dead replica and must carry the request to the other.
  const posts = [];
  await pa.route(/\/v1\/events(\?.*)?$/, async (route) => {
    if (route.request().method() !== 'POST') return route.fallback();
    posts.push(route.request().headers()['idempotency-key']);
    if (posts.length === 1) {
      process.kill(victim, 'SIGKILL');
      const deadline = Date.now() + T;
      while (!ended(victim)) {
        if (Date.now() > deadline) throw new Error(`pid ${victim} still alive after SIGKILL`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    await route.continue();
  });
  const created = pa.waitForResponse((r) => r.request().method() === 'POST' && /\/v1\/events(\?|$)/.test(r.url()) && r.status() === 201, { timeout: 20_000 });
  await d.getByRole('button', { name: 'Create event' }).click();
  try {
    await created;
    // Saved: the dialog closes, or stays to show what the event overlaps
    // (23:00 may be the keyboard event's slot).
    await waitFor(pa, () => !document.querySelector('#event-dialog')?.open || !document.querySelector('#event-dialog .conflicts')?.hidden, null, 'the event to be saved');
  } finally {
    await pa.unroute(/\/v1\/events(\?.*)?$/);
  }
  if (!ended(victim)) throw new Error('the replica was not killed');
  const formError = await d.locator('.form-error:not([hidden]), .field-error:not([hidden])').allTextContents();
  if (formError.some((t) => t.trim())) throw new Error(`the dialog shows an error: ${formError.join(' | ')}`);
  if (await d.isVisible()) await closeDialog(pa);
  const { log: after } = await toastLog(pa);
  const errors = after.slice(before.length).filter((t) => t.kind.includes('toast-error'));
  if (errors.length) throw new Error(`an error was shown: ${errors.map((t) => t.text).join(' | ')}`);
  if (new Set(posts).size !== 1) throw new Error(`the retries changed the Idempotency-Key: ${JSON.stringify(posts)}`);
  // Exactly once: in the calendar after a reload, and in GET /v1/events.
  await pa.reload({ waitUntil: 'load' });
  await visible(calEvent(pa, name), null, 20_000);
  await waitFor(pa, () => document.querySelector('.calendar')?.getAttribute('aria-busy') === 'false', null, 'the agenda to load');
  const shownTimes = await pa.locator('.fc-event', { hasText: name }).count();
  if (shownTimes !== 1) throw new Error(`the calendar shows the event ${shownTimes} times`);
  const login = await (await fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: A.name, password: PASSWORD }) })).json();
  const day = new Date(Date.now() - 2 * 86400e3).toISOString();
  const until = new Date(Date.now() + 3 * 86400e3).toISOString();
  const r = await fetch(`${BASE}/v1/events?${new URLSearchParams({ from: day, to: until })}`, { headers: { authorization: `Bearer ${login.access_token}` } });
  if (!r.ok) throw new Error(`GET /v1/events: ${r.status} ${await r.text()}`);
  const found = (await r.json()).items.filter((e) => e.title === name);
  if (found.length !== 1) throw new Error(`GET /v1/events lists the event ${found.length} times`);
  notes.push(`failover: users replica pid ${victim} killed during the save; ${posts.length} POST(s) from the browser, the event saved once`);
});

await step('no script errors in either page', async () => {
  if (consoleErrors.length) throw new Error(consoleErrors.join('\n'));
});

await browser.close();
for (const n of notes) console.log(`note ${n}`);
console.log(`first load: load event ${Math.round(loadMs.load)} ms after navigation start (DOMContentLoaded ${Math.round(loadMs.dcl)} ms, ${loadMs.bytes} bytes transferred)`);
console.log(`${results.length} passed, 0 failed`);
