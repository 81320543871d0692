/*
 * The REST API of this daemon, with the token of the session: JSON in, JSON out, errors sorted
 * into what the page does about them (sign out, show "unreachable", or say the message).
 */

export class ApiError extends Error {
  constructor(kind, status, message) { super(message); this.kind = kind; this.status = status; }
}

/** Reachability listeners: the page's health indicator. */
let onReachable = () => {};
export function watchReachability(fn) { onReachable = fn; }

/** Send a request to this origin with the token. Throws ApiError with kind
 *  'unauthorized' | 'forbidden' | 'network' | 'http'; re-throws AbortError. */
export async function api(path, { token, signal, method = 'GET', body } = {}) {
  let res;
  const headers = { Authorization: 'Bearer ' + token, Accept: 'application/json' };
  if (body !== undefined && body !== null) headers['Content-Type'] = 'application/json';
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body !== undefined && body !== null ? JSON.stringify(body) : undefined,
      cache: 'no-store', credentials: 'omit', signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError('network', 0, 'daemon unreachable');
  }
  if (res.status === 401) throw new ApiError('unauthorized', 401, 'token refused');
  if (res.status === 502 || res.status === 503 || res.status === 504) onReachable(false);
  if (!res.ok) {
    let message = 'HTTP ' + res.status;
    try { message = (await res.json()).error.message || message; } catch (e) { /* not JSON */ }
    throw new ApiError(res.status === 403 ? 'forbidden' : 'http', res.status, message);
  }
  onReachable(true);
  return res.json();
}

/** The active calls snapshot, following cursors if there are more than one page. Resuming from
 *  the smallest last_event_id is safe: later events only move calls forward. */
export async function fetchSnapshot(token) {
  let path = 'v1/calls?active=true&limit=500';
  const calls = [];
  let lastId = null;
  for (let page = 0; page < 20; page++) {
    const body = await api(path, { token });
    if (Array.isArray(body.calls)) calls.push(...body.calls);
    if (typeof body.last_event_id === 'number') {
      lastId = lastId === null ? body.last_event_id : Math.min(lastId, body.last_event_id);
    }
    if (!body.next_cursor) break;
    path = 'v1/calls?active=true&limit=500&cursor=' + encodeURIComponent(body.next_cursor);
  }
  return { calls, lastEventId: lastId ?? 0 };
}

/** A file of this origin as a Blob, with the token in the Authorization header (the recording
 *  route never takes ?token=, so an <audio src> cannot fetch it). Throws ApiError like api(). */
export async function fetchBlob(path, { token, signal } = {}) {
  let res;
  try {
    res = await fetch(path, {
      headers: { Authorization: 'Bearer ' + token },
      cache: 'no-store', credentials: 'omit', signal,
    });
  } catch (e) {
    if (e && e.name === 'AbortError') throw e;
    throw new ApiError('network', 0, 'daemon unreachable');
  }
  if (res.status === 401) throw new ApiError('unauthorized', 401, 'token refused');
  if (!res.ok) {
    let message = 'HTTP ' + res.status;
    try { message = (await res.json()).error.message || message; } catch (e) { /* not JSON */ }
    throw new ApiError(res.status === 403 ? 'forbidden' : 'http', res.status, message);
  }
  return res.blob();
}
