// Talking to the API: the token kept in this tab's session storage, JSON calls with a
// bearer header, and WebSockets (browsers cannot set headers there: `?access_token=`).

const KEY = 'jobledger.token';

export const session = {
  token: () => sessionStorage.getItem(KEY),
  signIn: (token) => sessionStorage.setItem(KEY, token),
  signOut: () => { sessionStorage.removeItem(KEY); dispatchEvent(new Event('jobledger:signout')); },
};

// What tests (and a curious user in the console) can reach: the page's open WebSockets.
export const debug = (window.jobledger = { sockets: new Set() });

export class ApiError extends Error {
  constructor(status, body) {
    const err = (body && body.error) || {};
    super(err.message || `HTTP ${status}`);
    this.status = status;
    this.code = err.code;
    this.details = err.details || {};
  }
}

export async function api(path, { method = 'GET', body, token } = {}) {
  const headers = { Authorization: `Bearer ${token || session.token()}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(`/api/v1${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = resp.headers.get('Content-Type')?.includes('json') ? await resp.json() : null;
  if (!resp.ok) {
    if (resp.status === 401 && !token) session.signOut();
    throw new ApiError(resp.status, data);
  }
  return data;
}

// The text of a route (logs.txt), with the token in a header, never in the URL.
export async function apiText(path) {
  const resp = await fetch(`/api/v1${path}`, { headers: { Authorization: `Bearer ${session.token()}` } });
  if (!resp.ok) throw new ApiError(resp.status, null);
  return resp.text();
}

// Query string from an object (arrays repeat the key; empty values are left out).
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    for (const one of Array.isArray(v) ? v : [v]) {
      if (one !== undefined && one !== null && one !== '') q.append(k, one);
    }
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

// A WebSocket to an API route that reconnects after a drop (backing off up to 5 s) until
// stop() is called. `url()` is asked at each (re)connection, so a caller resumes from
// where it got to; `onMessage(data)` gets each decoded message; `onStatus` hears
// 'connecting' | 'open' | 'closed' | 'ended'. A handler returning 'end' stops it.
export function liveSocket({ url, onMessage, onStatus = () => {} }) {
  let ws = null;
  let stopped = false;
  let delay = 250;
  let timer = null;
  const connect = () => {
    if (stopped) return;
    onStatus('connecting');
    const u = new URL(`/api/v1${url()}`, location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.searchParams.set('access_token', session.token() || '');
    ws = new WebSocket(u);
    debug.sockets.add(ws);
    ws.onopen = () => { delay = 250; onStatus('open'); };
    ws.onmessage = (ev) => {
      let data;
      try { data = JSON.parse(ev.data); } catch { return; }
      if (onMessage(data) === 'end') { stopped = true; onStatus('ended'); }
    };
    ws.onclose = () => {
      debug.sockets.delete(ws);
      if (stopped) return;
      onStatus('closed');
      timer = setTimeout(connect, delay);
      delay = Math.min(delay * 2, 5000);
    };
  };
  connect();
  return {
    stop() {
      stopped = true;
      clearTimeout(timer);
      if (ws) { debug.sockets.delete(ws); ws.close(); }
    },
  };
}
