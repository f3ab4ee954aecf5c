// Who is signed in: the access token (memory only), the refresh token
// (localStorage, so a reload stays signed in), and the renewal of both.
//
// Refresh tokens are single use: presenting a spent one ends the whole
// login (API.md). Several tabs share the stored token, so every refresh
// runs under a Web Lock and reads the token from storage inside it; the
// tab that comes second simply uses the token the first one stored.
// Each stored token has an Idempotency-Key of its own: a refresh whose
// answer was lost (a connection closed mid-request) is sent again with it
// and answered with the same next token instead of ending the login.

import { api, setAuth, ApiError } from './api.js';

const KEY = 'agenda.refresh_token';
const REPEAT_KEY = 'agenda.refresh_key';
// Renew this long before the access token runs out.
const EARLY_MS = 60_000;

let access = null; // { token, expiresAt }
let user = null;
let timer = null;
let inflight = null;
const listeners = new Set();

/** Subscribes to changes: cb({ user, token, reason }). */
export function onChange(cb) { listeners.add(cb); return () => listeners.delete(cb); }
function emit(reason) { for (const cb of listeners) cb({ user, token: access?.token ?? null, reason }); }

export const currentUser = () => user;
export const accessToken = () => access?.token ?? null;
export function setUser(u) { user = u; emit('user'); }

function adopt(reply) {
  access = { token: reply.access_token, expiresAt: Date.now() + reply.expires_in * 1000 };
  user = reply.user;
  localStorage.setItem(KEY, reply.refresh_token);
  localStorage.setItem(REPEAT_KEY, newKey());
  schedule();
}

function newKey() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

function schedule() {
  clearTimeout(timer);
  if (!access) return;
  const left = access.expiresAt - Date.now();
  // Short-lived tokens (tests) renew at two thirds of their life.
  const at = Math.max(1000, Math.min(left - EARLY_MS, left * (2 / 3)));
  timer = setTimeout(() => refresh(), at);
}

function forget(reason) {
  clearTimeout(timer);
  access = null;
  user = null;
  localStorage.removeItem(KEY);
  localStorage.removeItem(REPEAT_KEY);
  emit(reason);
}

async function withLock(fn) {
  if (navigator.locks?.request) return navigator.locks.request('agenda-refresh', fn);
  return fn();
}

/**
 * Gets a new access token with the stored refresh token. Resolves true on
 * success; false when there is no session (then everyone is told
 * 'signed-out') or the server could not be reached (tried again later).
 */
export function refresh() {
  if (inflight) return inflight;
  inflight = withLock(async () => {
    const stored = localStorage.getItem(KEY);
    if (!stored) { if (user) forget('signed-out'); return false; }
    try {
      let repeatKey = localStorage.getItem(REPEAT_KEY);
      if (!repeatKey) { repeatKey = newKey(); localStorage.setItem(REPEAT_KEY, repeatKey); }
      const reply = await api('POST', '/v1/auth/refresh', {
        auth: false, body: { refresh_token: stored }, headers: { 'Idempotency-Key': repeatKey },
      });
      adopt(reply);
      emit('refreshed');
      return true;
    } catch (e) {
      if (e instanceof ApiError && (e.status === 401 || e.status === 400 || e.status === 422)) {
        forget('signed-out');
        return false;
      }
      // Unreachable or overloaded for more than the retry budget: keep the
      // session and try again soon.
      clearTimeout(timer);
      timer = setTimeout(() => refresh(), 10_000);
      return false;
    }
  }).finally(() => { inflight = null; });
  return inflight;
}

setAuth({ token: accessToken, refresh });

/** Resumes a stored session (after a reload). Resolves with the user or null. */
export async function restore() {
  if (!localStorage.getItem(KEY)) return null;
  return (await refresh()) ? user : null;
}

/** `who` is a username or an email address. */
export async function login(who, password) {
  const body = who.includes('@') ? { email: who, password } : { username: who, password };
  adopt(await api('POST', '/v1/auth/login', { auth: false, body }));
  emit('signed-in');
  return user;
}

export async function register({ username, email, password, display_name, time_zone }) {
  const body = { username, email, password, time_zone };
  if (display_name) body.display_name = display_name;
  await api('POST', '/v1/auth/register', { auth: false, body });
  return login(username, password);
}

export async function logout() {
  const stored = localStorage.getItem(KEY);
  try {
    if (stored && access) await api('POST', '/v1/auth/logout', { body: { refresh_token: stored } });
  } catch {
    // Signed out here either way; the server's access token lives out its minutes.
  }
  forget('signed-out');
}

// Another tab signed out (it removed the stored token): follow it.
window.addEventListener('storage', (ev) => {
  if (ev.key === KEY && ev.newValue === null && user) forget('signed-out');
});

// Timers sleep with the laptop: on waking, renew at once if due.
document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && access && access.expiresAt - Date.now() < EARLY_MS) refresh();
});
