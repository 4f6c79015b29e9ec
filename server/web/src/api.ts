// The server's HTTP API as typed functions. Mutations carry the session's
// CSRF token; a 401 anywhere sends the app back to the login screen.

export type Role = 'admin' | 'viewer';
export interface Account { id: number; name: string; role: Role }
export interface SessionInfo {
  account: Account;
  csrf: string;
  setup_pending: boolean;
  map_tile_url: string | null;
}
export interface Camera {
  id: string;
  name: string;
  online: boolean;
  last_seen: string | null;
  recording: boolean;
  fragments_dropped: number;
}
export interface CameraStatus {
  id: string; name: string; online: boolean; last_seen: string;
  firmware: string; width: number; height: number; fps: number; bitrate_kbps: number;
}
export interface Segment {
  id: number; start: string; end: string; bytes: number; frames: number;
  width: number; height: number; recording: boolean; url: string;
}
export interface Recordings { camera: string; start: string; end: string; segments: Segment[]; gaps: { start: string; end: string }[] }
export interface AuxItem<T = Record<string, unknown>> { time: string; data: T }
export interface AuxList<T = Record<string, unknown>> { camera: string; items: AuxItem<T>[]; truncated: boolean }

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

let csrf = '';
let onUnauthorized: () => void = () => {};

export function setCsrf(token: string): void { csrf = token; }
export function setUnauthorizedHandler(f: () => void): void { onUnauthorized = f; }

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET') headers['X-CSRF-Token'] = csrf;
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: 'same-origin' });
  const text = await r.text();
  let json: Record<string, unknown> = {};
  try { json = text ? JSON.parse(text) : {}; } catch { /* not JSON */ }
  if (!r.ok) {
    const err = new ApiError(r.status, String(json.error ?? r.status), String(json.message ?? r.statusText));
    if (r.status === 401 && !path.endsWith('/login') && !path.endsWith('/session')) onUnauthorized();
    throw err;
  }
  return json as T;
}

const iso = (d: Date) => d.toISOString();
const range = (a: Date, b: Date) => `start=${encodeURIComponent(iso(a))}&end=${encodeURIComponent(iso(b))}`;
const cam = (id: string) => `/api/v1/cameras/${encodeURIComponent(id)}`;

export const api = {
  session: () => call<SessionInfo>('GET', '/api/v1/session'),
  setup: (token: string, name: string, password: string) => call<SessionInfo>('POST', '/api/v1/setup', { token, name, password }),
  login: (name: string, password: string) => call<SessionInfo>('POST', '/api/v1/login', { name, password }),
  logout: () => call<unknown>('POST', '/api/v1/logout'),
  logoutAll: () => call<{ ended: number }>('POST', '/api/v1/logout-all'),
  accounts: () => call<{ accounts: Account[] }>('GET', '/api/v1/accounts'),
  createAccount: (name: string, role: Role, password: string) => call<Account>('POST', '/api/v1/accounts', { name, role, password }),
  deleteAccount: (id: number) => call<unknown>('DELETE', `/api/v1/accounts/${id}`),
  cameras: () => call<{ cameras: Camera[] }>('GET', '/api/v1/cameras'),
  status: (id: string) => call<CameraStatus>('GET', `${cam(id)}/status`),
  recordings: (id: string, a: Date, b: Date) => call<Recordings>('GET', `${cam(id)}/recordings?${range(a, b)}`),
  events: (id: string, a: Date, b: Date) => call<AuxList>('GET', `${cam(id)}/events?${range(a, b)}`),
  telemetry: (id: string, a: Date, b: Date) => call<AuxList<Telemetry>>('GET', `${cam(id)}/telemetry?${range(a, b)}`),
  rename: (id: string, name: string) => call<unknown>('POST', `${cam(id)}/rename`, { name }),
  remove: (id: string) => call<unknown>('DELETE', cam(id)),
  exportUrl: (id: string, a: Date, b: Date) => `${cam(id)}/export?${range(a, b)}`,
  thumbnailUrl: (id: string, t: Date) => `${cam(id)}/thumbnail?time=${encodeURIComponent(iso(new Date(Math.floor(t.getTime() / 1000) * 1000)))}`,
  liveUrl: (id: string) => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}${cam(id)}/live`,
};

export interface Telemetry {
  cpu_percent?: number | null;
  soc_temp_c?: number | null;
  /** The camera firmware's own process (resident memory, CPU of one core). */
  process?: { rss_kib: number; peak_rss_kib: number; cpu_percent?: number | null } | null;
  storage?: { free_bytes: number; total_bytes: number } | null;
  link?: { kind: string; iface?: string | null } | null;
  modem?: { signal_dbm?: number | null; technology?: string | null; operator?: string | null; state?: string } | null;
  gnss?: { lat?: number | null; lon?: number | null; satellites?: number | null } | null;
  bitrate_kbps?: number | null;
  motion?: boolean;
  stream?: { uplink?: string | null; tier?: string | null; kbps?: number; estimate_kbps?: number | null; rtt_ms?: number | null; limit?: string } | null;
}
