/**
 * The seam between the console and its boxes: one interface, two implementations.
 *
 * - Browser (the console served by a daemon at `/`): `fetch()` to the box's address
 *   (relative paths for the box serving the page), the token in `sessionStorage`, the box
 *   list (without tokens) in `localStorage`. Live streams are read as SSE over `fetch()`.
 * - Tauri (the desktop app, detected by `__TAURI_INTERNALS__`): every call goes through
 *   the app's commands (`boxes_list`, `box_probe`, `box_pair`, `box_remove`,
 *   `api_request`), which pin the certificate and keep tokens in the OS keyring. Streams
 *   are polled there.
 */

import { ApiError, messageOf, parseBody, parseError } from './errors';
import { SseParser, type SseEvent } from './sse';

/** A box the console knows (the Tauri command's shape, shared by both transports). */
export interface BoxEntry {
  id: string;
  name: string;
  /** Normalised base URL, `https://host:port`. */
  address: string;
  /** SHA-256 of the box's certificate as `AB:CD:...`, pinned at pairing (Tauri). */
  fingerprint: string | null;
  paired: boolean;
  /** Where the token lives: `keyring`, `keyutils`, `session` (browser), ... */
  token_store: string;
}

/** What a box answered before pairing. */
export interface Probe {
  address: string;
  tls: boolean;
  fingerprint: string | null;
  healthy: boolean;
  error: string | null;
}

export interface RawResponse {
  status: number;
  /** Parsed JSON, else text. */
  body: unknown;
}

export type Method = 'GET' | 'POST' | 'PATCH' | 'DELETE';

export interface Transport {
  readonly kind: 'browser' | 'tauri';
  /** True when `stream` works (SSE); false means the caller polls instead. */
  readonly streams: boolean;
  listBoxes(): Promise<BoxEntry[]>;
  probe(address: string): Promise<Probe>;
  pair(address: string, fingerprint: string | null, code: string, name: string): Promise<BoxEntry>;
  removeBox(id: string): Promise<void>;
  request(boxId: string, method: Method, path: string, body?: unknown): Promise<RawResponse>;
  /** Reads an SSE stream until it ends or `signal` aborts; throws `ApiError` on failure. */
  stream(boxId: string, path: string, onEvent: (e: SseEvent) => void, signal: AbortSignal): Promise<void>;
}

/** `host:port`, `http://host:port/anything` -> `scheme://host:port`. */
export function normaliseAddress(input: string, defaultScheme = 'https:'): string {
  let a = input.trim();
  if (a === '') throw new ApiError('Enter the box address, for example https://10.0.0.5:8080', 0);
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(a)) a = `${defaultScheme}//${a}`;
  let url: URL;
  try {
    url = new URL(a);
  } catch {
    throw new ApiError(`\`${input}\` is not an address`, 0);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ApiError(`\`${input}\`: only http and https addresses work`, 0);
  }
  return `${url.protocol}//${url.host}`;
}

/** Minimal slices of `window` the transports use, so tests can hand in fakes. */
export interface BrowserEnv {
  location: { origin: string; protocol: string; host: string };
  localStorage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
  sessionStorage: Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;
  fetch: typeof fetch;
}

const BOXES_KEY = 'oasis.boxes';
const tokenKey = (id: string) => `oasis.token.${id}`;

export function boxIdFor(address: string): string {
  return `box-${address.replace(/^https?:\/\//, '').replace(/[^a-zA-Z0-9]+/g, '-')}`;
}

export class BrowserTransport implements Transport {
  readonly kind = 'browser' as const;
  readonly streams = true;
  constructor(private readonly env: BrowserEnv) {}

  private stored(): BoxEntry[] {
    try {
      const v = JSON.parse(this.env.localStorage.getItem(BOXES_KEY) ?? '[]');
      return Array.isArray(v) ? (v as BoxEntry[]) : [];
    } catch {
      return [];
    }
  }

  private save(list: BoxEntry[]) {
    this.env.localStorage.setItem(BOXES_KEY, JSON.stringify(list.map((b) => ({ ...b, paired: false }))));
  }

  private token(id: string): string | null {
    return this.env.sessionStorage.getItem(tokenKey(id));
  }

  async listBoxes(): Promise<BoxEntry[]> {
    const origin = this.env.location.origin;
    const list = this.stored();
    // The box serving the page is always on the list.
    if (!list.some((b) => b.address === origin)) {
      list.unshift({
        id: boxIdFor(origin),
        name: this.env.location.host,
        address: origin,
        fingerprint: null,
        paired: false,
        token_store: 'session',
      });
    }
    return list.map((b) => ({ ...b, paired: this.token(b.id) !== null }));
  }

  async probe(address: string): Promise<Probe> {
    const a = normaliseAddress(address, this.env.location.protocol);
    const tls = a.startsWith('https:');
    try {
      const r = await this.raw(a, 'GET', '/healthz', undefined, null);
      const healthy = r.status >= 200 && r.status < 300;
      return { address: a, tls, fingerprint: null, healthy, error: healthy ? null : `HTTP ${r.status}` };
    } catch (e) {
      return { address: a, tls, fingerprint: null, healthy: false, error: messageOf(e) };
    }
  }

  async pair(address: string, fingerprint: string | null, code: string, name: string): Promise<BoxEntry> {
    const a = normaliseAddress(address, this.env.location.protocol);
    const r = await this.raw(a, 'POST', '/admin/v1/pair', { code: code.trim(), name }, null);
    if (r.status < 200 || r.status >= 300) {
      throw parseError(r.status, r.body);
    }
    const token = (r.body as { key?: unknown })?.key;
    if (typeof token !== 'string' || token === '') {
      throw new ApiError('The box paired but sent no token', r.status);
    }
    const id = boxIdFor(a);
    const host = a.replace(/^https?:\/\//, '');
    const served = (r.body as { tls_fingerprint?: unknown })?.tls_fingerprint;
    const fp = fingerprint ?? (typeof served === 'string' ? served : null);
    const entry: BoxEntry = { id, name: host, address: a, fingerprint: fp, paired: true, token_store: 'session' };
    this.env.sessionStorage.setItem(tokenKey(id), token);
    const list = this.stored().filter((b) => b.id !== id);
    list.push(entry);
    this.save(list);
    return entry;
  }

  async removeBox(id: string): Promise<void> {
    this.env.sessionStorage.removeItem(tokenKey(id));
    this.save(this.stored().filter((b) => b.id !== id));
  }

  private base(address: string): string {
    // Same origin: relative paths, so a dev proxy or a reverse proxy keeps working.
    return address === this.env.location.origin ? '' : address;
  }

  private async addressOf(boxId: string): Promise<string> {
    const box = (await this.listBoxes()).find((b) => b.id === boxId);
    if (!box) throw new ApiError(`No box \`${boxId}\` on this console`, 0);
    return box.address;
  }

  private async raw(
    address: string,
    method: Method,
    path: string,
    body: unknown,
    token: string | null,
  ): Promise<RawResponse> {
    const headers: Record<string, string> = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res: Response;
    try {
      res = await this.env.fetch(this.base(address) + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      throw new ApiError(`Cannot reach ${address}: ${messageOf(e)}`, 0);
    }
    const text = await res.text();
    return { status: res.status, body: parseBody(text, res.headers.get('content-type')) };
  }

  async request(boxId: string, method: Method, path: string, body?: unknown): Promise<RawResponse> {
    const address = await this.addressOf(boxId);
    return this.raw(address, method, path, body, this.token(boxId));
  }

  async stream(boxId: string, path: string, onEvent: (e: SseEvent) => void, signal: AbortSignal) {
    const address = await this.addressOf(boxId);
    const headers: Record<string, string> = { Accept: 'text/event-stream' };
    const token = this.token(boxId);
    if (token) headers.Authorization = `Bearer ${token}`;
    let res: Response;
    try {
      res = await this.env.fetch(this.base(address) + path, { headers, signal });
    } catch (e) {
      if (signal.aborted) return;
      throw new ApiError(`Cannot reach ${address}: ${messageOf(e)}`, 0);
    }
    if (!res.ok || !res.body) {
      const text = await res.text();
      throw parseError(res.status, parseBody(text, res.headers.get('content-type')));
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    const parser = new SseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(decoder.decode(value, { stream: true }))) onEvent(ev);
      }
    } catch (e) {
      if (signal.aborted) return;
      throw new ApiError(`The stream from ${address} broke: ${messageOf(e)}`, 0);
    } finally {
      reader.releaseLock();
    }
  }
}

export type Invoke = (cmd: string, args?: Record<string, unknown>) => Promise<unknown>;

/** Loads Tauri's `invoke` only in the desktop app (the browser bundle never needs it). */
const tauriInvoke: Invoke = async (cmd, args) => {
  const core = await import('@tauri-apps/api/core');
  return core.invoke(cmd, args);
};

export class TauriTransport implements Transport {
  readonly kind = 'tauri' as const;
  readonly streams = false;
  constructor(private readonly invoke: Invoke = tauriInvoke) {}

  private async call<T>(cmd: string, args?: Record<string, unknown>): Promise<T> {
    try {
      return (await this.invoke(cmd, args)) as T;
    } catch (e) {
      throw new ApiError(messageOf(e), 0);
    }
  }

  listBoxes() {
    return this.call<BoxEntry[]>('boxes_list');
  }
  probe(address: string) {
    return this.call<Probe>('box_probe', { address });
  }
  pair(address: string, fingerprint: string | null, code: string, name: string) {
    return this.call<BoxEntry>('box_pair', { address, fingerprint, code: code.trim(), name });
  }
  async removeBox(id: string) {
    await this.call<null>('box_remove', { id });
  }
  request(boxId: string, method: Method, path: string, body?: unknown) {
    return this.call<RawResponse>('api_request', { boxId, method, path, body: body ?? null });
  }
  async stream(): Promise<void> {
    throw new ApiError('Streams are polled in the desktop app', 0);
  }
}

/** Picks the transport for this window: Tauri's when the app's internals are present. */
export function selectTransport(win: object & Partial<BrowserEnv>, invoke?: Invoke): Transport {
  if ('__TAURI_INTERNALS__' in win) return new TauriTransport(invoke);
  return new BrowserTransport(win as BrowserEnv);
}
