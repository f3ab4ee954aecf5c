// The one HTTP client of the app: relative URLs (the app is served by the
// gateway on the API's own origin), JSON in and out, the API's error shape
// turned into ApiError, quiet retries of 503 (Retry-After), and one token
// refresh on a 401. Every other module calls `api()`.

/** An error answer of the API: `{"error":{"code","message","details"}}`. */
export class ApiError extends Error {
  constructor(status, body, fallback) {
    const e = (body && typeof body === 'object' && body.error) || {};
    super(e.message || fallback || `The server answered ${status}.`);
    this.name = 'ApiError';
    this.status = status;
    this.code = e.code || (status === 0 ? 'network' : 'unknown');
    this.details = (e.details && typeof e.details === 'object') ? e.details : {};
    /** The request field the error is about (422), or null. */
    this.field = typeof this.details.field === 'string' ? this.details.field : null;
  }
}

// How long 503s (and, for requests safe to repeat, network failures) are
// retried quietly before the person is shown anything.
const RETRY_BUDGET_MS = 5000;

// The session plugs in here: the current access token, and a refresh that
// resolves true when a new one was obtained.
let auth = { token: () => null, refresh: async () => false };
export function setAuth(provider) { auth = provider; }

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Seconds of a Retry-After header (or the error's details), as ms. */
function retryAfterMs(res, body) {
  const header = Number(res.headers.get('retry-after'));
  const detail = Number(body?.error?.details?.retry_after);
  const s = Number.isFinite(header) && header > 0 ? header : (Number.isFinite(detail) && detail > 0 ? detail : 1);
  return s * 1000;
}

async function readBody(res) {
  if (res.status === 204) return null;
  const text = await res.text();
  if (!text) return null;
  try { return JSON.parse(text); } catch { return text; }
}

/**
 * Calls the API. `opts`: `body` (JSON), or `raw` (a string sent as it is,
 * with the `Content-Type` given in `headers`, e.g. an .ics file), `auth`
 * (default true: send the bearer token), `headers`, `query` (object of
 * query parameters).
 * Resolves with the parsed body (null for 204); rejects with ApiError.
 */
export async function api(method, path, opts = {}) {
  const { body, raw, headers = {}, query } = opts;
  const withAuth = opts.auth !== false;
  let url = path;
  if (query) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) qs.set(k, v);
    url += (url.includes('?') ? '&' : '?') + qs.toString();
  }
  // A request may be repeated after a network failure only if repeating
  // it cannot do something twice.
  const repeatable = method === 'GET' || 'Idempotency-Key' in headers;
  const deadline = Date.now() + RETRY_BUDGET_MS;
  let refreshed = false;
  for (;;) {
    const h = { Accept: 'application/json', ...headers };
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const token = withAuth ? auth.token() : null;
    if (token) h.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await fetch(url, { method, headers: h, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)), credentials: 'omit' });
    } catch (e) {
      if (repeatable && Date.now() + 500 < deadline) { await sleep(500); continue; }
      throw new ApiError(0, null, 'Cannot reach the server. Check your connection and try again.');
    }
    const data = await readBody(res);
    if (res.ok) return data;
    if (res.status === 503) {
      // Overload or a failover in progress: the gateway asks us to wait.
      const wait = Math.min(retryAfterMs(res, data), deadline - Date.now());
      if (wait > 0) { await sleep(wait + Math.random() * 200); continue; }
    }
    if (res.status === 401 && withAuth && !refreshed) {
      refreshed = true;
      if (await auth.refresh()) continue;
    }
    throw new ApiError(res.status, data);
  }
}

export const get = (path, query) => api('GET', path, { query });
export const post = (path, body, opts = {}) => api('POST', path, { ...opts, body });
export const patch = (path, body, opts = {}) => api('PATCH', path, { ...opts, body });
export const put = (path, body, opts = {}) => api('PUT', path, { ...opts, body });
export const del = (path, opts = {}) => api('DELETE', path, opts);
