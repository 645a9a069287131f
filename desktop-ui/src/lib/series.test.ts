import { describe, expect, it } from 'vitest';
import type { GpuSample, ModelStatus } from '../api/types';
import { appendSample, prependHistory, tokenRates } from './series';

const gpu = (index: number, util: number | null): GpuSample => ({
  index, uuid: `GPU-${index}`, name: 'H200', pci_bus_id: '', throttle_reasons: [], processes: [], error: util === null ? 'lost' : null,
  gpu_util_pct: util, mem_used_bytes: util === null ? null : 50, mem_total_bytes: util === null ? null : 200,
  temp_gpu_c: 60, power_w: 400,
});

describe('appendSample', () => {
  it('adds points per GPU, keeps at most `cap`, and drops stale samples', () => {
    let s = new Map();
    for (let i = 1; i <= 5; i++) s = appendSample(s, { ts_ms: i * 1000, gpus: [gpu(0, i), gpu(1, null)] }, 3);
    s = appendSample(s, { ts_ms: 4000, gpus: [gpu(0, 99)] }, 3);
    const g0 = s.get(0)!;
    expect(g0.t).toEqual([3, 4, 5]);
    expect(g0.util_pct).toEqual([3, 4, 5]);
    expect(g0.mem_pct).toEqual([25, 25, 25]);
    expect(s.get(1)!.util_pct).toEqual([null, null, null]);
  });

  it('returns new arrays so React sees the change', () => {
    const a = appendSample(new Map(), { ts_ms: 1000, gpus: [gpu(0, 1)] }, 10);
    const b = appendSample(a, { ts_ms: 2000, gpus: [gpu(0, 2)] }, 10);
    expect(b).not.toBe(a);
    expect(b.get(0)!.t).not.toBe(a.get(0)!.t);
    expect(a.get(0)!.t).toEqual([1]);
  });
});

describe('tokenRates', () => {
  const m = (id: string, completion: number): ModelStatus => ({
    id, state: 'ready', path: null, error: null, architecture: null, parameters: null, context_length: null,
    waiting: 0, running: 0, requests_total: 0, prompt_tokens_total: 0, completion_tokens_total: completion,
  });

  it('is completion tokens per second between readings', () => {
    const r = tokenRates([m('a', 100), m('b', 5)], [m('a', 160), m('b', 5), m('c', 9)], 3);
    expect(r.get('a')).toBe(20);
    expect(r.get('b')).toBe(0);
    expect(r.get('c')).toBeNull();
  });

  it('gives no rate when a counter went back (the daemon restarted)', () => {
    expect(tokenRates([m('a', 100)], [m('a', 3)], 3).get('a')).toBeNull();
  });
});

describe('prependHistory', () => {
  const b = (s: number, util: number) => ({ ts_ms: s * 1000, gpu_util_avg: util, mem_used_bytes_avg: 100, temp_gpu_c_avg: 50, power_w_avg: 300 });

  it('puts older buckets before the live points and keeps the cap', () => {
    let s = appendSample(new Map(), { ts_ms: 10_000, gpus: [gpu(0, 9)] }, 4);
    s = prependHistory(s, 0, [b(7, 7), b(10, 99), b(8, 8), b(6, 6), b(5, 5)], 200, 4);
    const g = s.get(0)!;
    expect(g.t).toEqual([6, 7, 8, 10]);
    expect(g.util_pct).toEqual([6, 7, 8, 9]);
    expect(g.mem_pct).toEqual([50, 50, 50, 25]);
  });

  it('seeds a GPU with no live points yet', () => {
    const s = prependHistory(new Map(), 1, [b(1, 1)], null, 10);
    expect(s.get(1)!.mem_pct).toEqual([null]);
  });
});
