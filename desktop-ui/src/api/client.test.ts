import { describe, expect, it } from 'vitest';
import { BoxApi, watchJob, watchTelemetry } from './client';
import type { JobView, TelemetrySample } from './types';
import type { RawResponse, Transport } from './transport';

function fake(answer: (method: string, path: string, body?: unknown) => RawResponse, streams = false): Transport & { paths: string[] } {
  const paths: string[] = [];
  return {
    paths,
    kind: streams ? 'browser' : 'tauri',
    streams,
    listBoxes: async () => [],
    probe: async () => ({ address: '', tls: false, fingerprint: null, healthy: true, error: null }),
    pair: async () => {
      throw new Error('no');
    },
    removeBox: async () => {},
    request: async (_id, method, path, body) => {
      paths.push(`${method} ${path}`);
      return answer(method, path, body);
    },
    stream: async () => {},
  };
}

const job = (state: JobView['state'], done: number): JobView => ({
  id: 'job-1', kind: 'import', state, source: '/m.gguf', model: 'm', in_place: false,
  bytes_done: done, bytes_total: 100, rate_bytes_per_s: 0, eta_s: null, error: null, created_at: 0, finished_at: null,
});

describe('BoxApi', () => {
  it("throws the daemon's message on an error status", async () => {
    const api = new BoxApi(
      fake(() => ({ status: 409, body: { error: { message: 'model `m` is deployed as `m`: undeploy it first', type: 'invalid_request_error', code: null, param: null } } })),
      'b',
    );
    await expect(api.deleteModel('m')).rejects.toMatchObject({ status: 409, message: 'model `m` is deployed as `m`: undeploy it first' });
  });

  it('encodes ids in paths and sends the right bodies', async () => {
    const t = fake(() => ({ status: 200, body: {} }));
    const api = new BoxApi(t, 'b');
    await api.fit('a/b c');
    await api.importModel('/x.gguf', null, false);
    await api.swap('chat', 'new-model');
    expect(t.paths).toEqual(['GET /admin/v1/models/a%2Fb%20c/fit', 'POST /admin/v1/models/import', 'PATCH /admin/v1/deployments/chat']);
  });

  it('silences and unsilences an alert by its encoded key', async () => {
    const bodies: unknown[] = [];
    const t = fake((_m, _p, body) => {
      bodies.push(body);
      return { status: 200, body: { key: 'gpu_temperature:gpu0', silenced_until_ms: 5, silenced_by: 'ops' } };
    });
    const api = new BoxApi(t, 'b');
    const a = await api.silenceAlert('gpu_temperature:gpu0', 60);
    await api.unsilenceAlert('gpu_temperature:gpu0');
    expect(a.silenced_by).toBe('ops');
    expect(t.paths).toEqual(['POST /admin/v1/alerts/gpu_temperature%3Agpu0/silence', 'DELETE /admin/v1/alerts/gpu_temperature%3Agpu0/silence']);
    expect(bodies).toEqual([{ minutes: 60 }, undefined]);
  });
});

describe('watchJob', () => {
  it('polls in the desktop app until the job is final', async () => {
    const states = [job('copying', 10), job('verifying', 100), job('ready', 100)];
    let i = 0;
    const api = new BoxApi(fake(() => ({ status: 200, body: states[Math.min(i++, states.length - 1)] })), 'b');
    const seen: string[] = [];
    const ctl = new AbortController();
    await watchJob(api, 'job-1', (j) => seen.push(j.state), ctl.signal, 5);
    expect(seen).toEqual(['copying', 'verifying', 'ready']);
  });
});

describe('watchTelemetry', () => {
  it('turns polled GPU reports into samples in the desktop app', async () => {
    const api = new BoxApi(fake(() => ({ status: 200, body: { available: true, reason: null, ts_ms: 5, gpus: [{ index: 0 }], events: [] } })), 'b');
    const ctl = new AbortController();
    const samples: TelemetrySample[] = [];
    await watchTelemetry(
      api,
      (s) => {
        samples.push(s);
        ctl.abort();
      },
      () => {},
      ctl.signal,
    );
    expect(samples).toEqual([{ ts_ms: 5, gpus: [{ index: 0 }] }]);
  });

  it('reports reconnecting with the error when the feed fails', async () => {
    const api = new BoxApi(fake(() => ({ status: 503, body: { error: { message: 'draining' } } })), 'b');
    const ctl = new AbortController();
    const states: [string, string | null][] = [];
    await watchTelemetry(
      api,
      () => {},
      (s, e) => {
        states.push([s, e]);
        ctl.abort();
      },
      ctl.signal,
    );
    expect(states).toEqual([['reconnecting', 'draining']]);
  });
});
