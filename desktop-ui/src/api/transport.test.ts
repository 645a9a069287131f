import { describe, expect, it, vi } from 'vitest';
import { ApiError } from './errors';
import { BrowserTransport, TauriTransport, boxIdFor, normaliseAddress, selectTransport, type BrowserEnv } from './transport';

function storage(): Storage {
  const m = new Map<string, string>();
  return {
    getItem: (k: string) => m.get(k) ?? null,
    setItem: (k: string, v: string) => void m.set(k, v),
    removeItem: (k: string) => void m.delete(k),
    clear: () => m.clear(),
    key: () => null,
    length: 0,
  };
}

type Call = { url: string; init: RequestInit };

function fakeEnv(answer: (url: string, init: RequestInit) => Response): BrowserEnv & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    location: { origin: 'http://box.local:8091', protocol: 'http:', host: 'box.local:8091' },
    localStorage: storage(),
    sessionStorage: storage(),
    fetch: (async (url: string, init: RequestInit = {}) => {
      calls.push({ url, init });
      return answer(url, init);
    }) as typeof fetch,
  };
}

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { 'content-type': 'application/json' } });

describe('selectTransport', () => {
  it('picks Tauri when its internals are on the window', () => {
    const t = selectTransport({ __TAURI_INTERNALS__: {} } as object, async () => null);
    expect(t.kind).toBe('tauri');
    expect(t.streams).toBe(false);
  });

  it('picks the browser otherwise', () => {
    const t = selectTransport(fakeEnv(() => json(200, {})));
    expect(t.kind).toBe('browser');
    expect(t.streams).toBe(true);
  });
});

describe('normaliseAddress', () => {
  it('adds the scheme and drops paths', () => {
    expect(normaliseAddress('10.0.0.5:8443')).toBe('https://10.0.0.5:8443');
    expect(normaliseAddress('10.0.0.5:8091', 'http:')).toBe('http://10.0.0.5:8091');
    expect(normaliseAddress(' http://box:1/admin/ ')).toBe('http://box:1');
  });

  it('refuses what is not an address', () => {
    expect(() => normaliseAddress('')).toThrow(ApiError);
    expect(() => normaliseAddress('ftp://x')).toThrow(/only http and https/);
  });
});

describe('TauriTransport', () => {
  it('maps calls to the app commands', async () => {
    const invoke = vi.fn(async (cmd: string) => (cmd === 'api_request' ? { status: 200, body: { ok: true } } : []));
    const t = new TauriTransport(invoke);
    await t.listBoxes();
    await t.probe('box:8443');
    await t.pair('https://box:8443', 'AB:CD', ' CODE ', 'laptop');
    const r = await t.request('b1', 'POST', '/admin/v1/keys', { name: 'x' });
    await t.request('b1', 'GET', '/admin/v1/status');
    await t.removeBox('b1');
    expect(r).toEqual({ status: 200, body: { ok: true } });
    expect(invoke.mock.calls).toEqual([
      ['boxes_list', undefined],
      ['box_probe', { address: 'box:8443' }],
      ['box_pair', { address: 'https://box:8443', fingerprint: 'AB:CD', code: 'CODE', name: 'laptop' }],
      ['api_request', { boxId: 'b1', method: 'POST', path: '/admin/v1/keys', body: { name: 'x' } }],
      ['api_request', { boxId: 'b1', method: 'GET', path: '/admin/v1/status', body: null }],
      ['box_remove', { id: 'b1' }],
    ]);
  });

  it('turns a rejected command into an ApiError with its message', async () => {
    const t = new TauriTransport(async () => {
      throw 'certificate fingerprint changed';
    });
    await expect(t.request('b', 'GET', '/x')).rejects.toMatchObject({ message: 'certificate fingerprint changed', status: 0 });
  });
});

describe('BrowserTransport', () => {
  it('lists the box serving the page, unpaired until paired', async () => {
    const t = new BrowserTransport(fakeEnv(() => json(200, {})));
    const boxes = await t.listBoxes();
    expect(boxes).toEqual([
      { id: boxIdFor('http://box.local:8091'), name: 'box.local:8091', address: 'http://box.local:8091', fingerprint: null, paired: false, token_store: 'session' },
    ]);
  });

  it('pairs, keeps the token in session storage and sends it as a bearer token', async () => {
    const env = fakeEnv((url) =>
      url === '/admin/v1/pair' ? json(201, { id: 'key-1', key: 'oasis-secret', role: 'admin' }) : json(200, { state: 'ready' }),
    );
    const t = new BrowserTransport(env);
    const box = await t.pair('http://box.local:8091', null, 'ABCD-EFGH', 'Web console');
    expect(box.paired).toBe(true);
    expect(JSON.parse(String(env.calls[0].init.body))).toEqual({ code: 'ABCD-EFGH', name: 'Web console' });
    expect(env.sessionStorage.getItem(`oasis.token.${box.id}`)).toBe('oasis-secret');
    // The token never goes to localStorage.
    expect(env.localStorage.getItem('oasis.boxes')).not.toContain('oasis-secret');
    expect((await t.listBoxes())[0].paired).toBe(true);

    await t.request(box.id, 'GET', '/admin/v1/status');
    const last = env.calls[env.calls.length - 1];
    // Same origin: a relative path, so dev and reverse proxies keep working.
    expect(last.url).toBe('/admin/v1/status');
    expect((last.init.headers as Record<string, string>).Authorization).toBe('Bearer oasis-secret');
  });

  it("keeps the certificate fingerprint from the pairing answer over HTTPS, none over HTTP", async () => {
    const fp = 'AB:CD:EF';
    const env = fakeEnv((url) =>
      url.endsWith('/admin/v1/pair') ? json(201, { id: 'key-1', key: 'oasis-secret', role: 'admin', tls_fingerprint: fp }) : json(200, {}),
    );
    const t = new BrowserTransport(env);
    const box = await t.pair('https://box.local:8443', null, 'ABCD', 'x');
    expect(box.fingerprint).toBe(fp);
    expect((await t.listBoxes()).find((b) => b.id === box.id)?.fingerprint).toBe(fp);

    const plain = new BrowserTransport(fakeEnv(() => json(201, { id: 'key-2', key: 'oasis-other', role: 'admin' })));
    expect((await plain.pair('http://box.local:8091', null, 'ABCD', 'x')).fingerprint).toBeNull();
  });

  it("reports a failed pairing with the daemon's message", async () => {
    const t = new BrowserTransport(
      fakeEnv(() => json(401, { error: { message: 'Wrong pairing code (4 tries left)', type: 'invalid_request_error', code: 'pairing_failed', param: null } })),
    );
    await expect(t.pair('http://box.local:8091', null, 'NOPE', 'x')).rejects.toMatchObject({
      message: 'Wrong pairing code (4 tries left)',
      status: 401,
      code: 'pairing_failed',
    });
  });

  it('reports an unreachable box as status 0', async () => {
    const env = fakeEnv(() => {
      throw new TypeError('Failed to fetch');
    });
    const t = new BrowserTransport(env);
    const id = (await t.listBoxes())[0].id;
    await expect(t.request(id, 'GET', '/healthz')).rejects.toMatchObject({ status: 0 });
    const p = await t.probe('http://box.local:8091');
    expect(p.healthy).toBe(false);
    expect(p.error).toMatch(/Failed to fetch/);
  });

  it('reads an SSE stream in chunks', async () => {
    const chunks = ['event: sample\nda', 'ta: {"ts_ms":1}\n', '\nevent: sample\ndata: {"ts_ms":2}\n\n'];
    const env = fakeEnv(
      () =>
        new Response(
          new ReadableStream({
            start(c) {
              for (const ch of chunks) c.enqueue(new TextEncoder().encode(ch));
              c.close();
            },
          }),
          { status: 200, headers: { 'content-type': 'text/event-stream' } },
        ),
    );
    const t = new BrowserTransport(env);
    const id = (await t.listBoxes())[0].id;
    const seen: string[] = [];
    await t.stream(id, '/admin/v1/telemetry/stream', (e) => seen.push(e.data), new AbortController().signal);
    expect(seen).toEqual(['{"ts_ms":1}', '{"ts_ms":2}']);
  });
});
