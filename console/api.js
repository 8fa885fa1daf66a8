// The daemon's HTTP API, as the console calls it.  The token lives in this tab's
// sessionStorage only (never in a URL, never in a cookie) and goes out as
// "Authorization: Bearer <token>" on same-origin requests.

const KEY = "waguard.console.token";
const TIMEOUT_MS = 15000;      // a request not answered by then counts as no answer

export function getToken() {
  try { return sessionStorage.getItem(KEY); } catch { return null; }
}

export function setToken(t) {
  sessionStorage.setItem(KEY, t);
}

export function dropToken() {
  try { sessionStorage.removeItem(KEY); } catch { /* nothing kept */ }
}

// Called when the daemon answers 401 to a request made with the stored token.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

// One answer: {status, ok, data (parsed JSON or null), error (text for a person or null)}.
// A network failure is status 0.
export async function call(method, path, body, token = getToken()) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  const init = { method, headers, cache: "no-store", credentials: "omit", redirect: "error",
                 referrerPolicy: "no-referrer", signal: AbortSignal.timeout(TIMEOUT_MS) };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    // A token with characters a header cannot carry ends here too.
    return { status: 0, ok: false, data: null, error: "waguard did not answer (" + (e && e.message || e) + ")" };
  }
  let data = null;
  const text = await res.text().catch(() => "");
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  const out = { status: res.status, ok: res.ok, data, error: res.ok ? null : errorText(res.status, data, text) };
  if (res.status === 401 && token && token === getToken()) onUnauthorized(out);
  return out;
}

export function errorText(status, data, raw) {
  const e = data && Array.isArray(data.errors) && data.errors[0];
  if (e && (e.details || e.title)) return String(e.details || e.title);
  if (data && data.error && data.error.message) return String(data.error.message);
  return "HTTP " + status + (raw ? ": " + String(raw).slice(0, 200) : "");
}

export const enc = (s) => encodeURIComponent(String(s));

export function query(params) {
  const parts = [];
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    parts.push(enc(k) + "=" + enc(v));
  }
  return parts.length ? "?" + parts.join("&") : "";
}

export const get = (path, token) => call("GET", path, undefined, token);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
