/**
 * Live per-GPU series for the charts: a bounded window of telemetry samples, kept as the
 * column arrays uPlot draws (time in seconds, then one array per figure).
 */

import type { GpuSample, ModelStatus, TelemetrySample } from '../api/types';

export interface GpuSeries {
  /** Seconds since the epoch (uPlot's x axis). */
  t: number[];
  util_pct: (number | null)[];
  mem_pct: (number | null)[];
  temp_c: (number | null)[];
  power_w: (number | null)[];
}

export type SeriesByGpu = Map<number, GpuSeries>;

const empty = (): GpuSeries => ({ t: [], util_pct: [], mem_pct: [], temp_c: [], power_w: [] });

export function memPct(g: GpuSample): number | null {
  return g.mem_used_bytes != null && g.mem_total_bytes ? (100 * g.mem_used_bytes) / g.mem_total_bytes : null;
}

/**
 * Adds a sample to every GPU's series, keeping at most `cap` points; a sample not newer
 * than the last one (a replayed or repeated poll) is dropped. Returns a new map with new
 * arrays so React sees the change.
 */
export function appendSample(prev: SeriesByGpu, s: TelemetrySample, cap: number): SeriesByGpu {
  const next: SeriesByGpu = new Map(prev);
  const t = s.ts_ms / 1000;
  for (const g of s.gpus) {
    const old = prev.get(g.index) ?? empty();
    if (old.t.length > 0 && old.t[old.t.length - 1] >= t) continue;
    const cut = old.t.length + 1 > cap ? old.t.length + 1 - cap : 0;
    next.set(g.index, {
      t: [...old.t.slice(cut), t],
      util_pct: [...old.util_pct.slice(cut), g.gpu_util_pct ?? null],
      mem_pct: [...old.mem_pct.slice(cut), memPct(g)],
      temp_c: [...old.temp_c.slice(cut), g.temp_gpu_c ?? null],
      power_w: [...old.power_w.slice(cut), g.power_w ?? null],
    });
  }
  return next;
}

/**
 * Tokens generated (completion tokens) per second per model between two `/admin/v1/status` readings `dt_s`
 * apart. A counter that went down (the daemon restarted) gives no rate rather than a
 * negative one.
 */
export function tokenRates(prev: ModelStatus[], next: ModelStatus[], dtS: number): Map<string, number | null> {
  const before = new Map(prev.map((m) => [m.id, m.completion_tokens_total]));
  const out = new Map<string, number | null>();
  for (const m of next) {
    const b = before.get(m.id);
    const now = m.completion_tokens_total;
    out.set(m.id, b === undefined || dtS <= 0 || now < b ? null : (now - b) / dtS);
  }
  return out;
}

/** The fields of a history bucket the live charts use (`telemetry::history::Bucket`). */
export interface SeedBucket {
  ts_ms: number;
  gpu_util_avg?: number | null;
  mem_used_bytes_avg?: number | null;
  temp_gpu_c_avg?: number | null;
  power_w_avg?: number | null;
}

/**
 * Puts recent history (at the sampling step) in front of a GPU's live series, so a chart
 * opened now shows the last minutes at once instead of starting empty. Only buckets older
 * than the first live point are used; the result keeps at most `cap` points.
 */
export function prependHistory(
  prev: SeriesByGpu,
  gpu: number,
  buckets: SeedBucket[],
  memTotalBytes: number | null,
  cap: number,
): SeriesByGpu {
  const old = prev.get(gpu) ?? empty();
  const first = old.t.length > 0 ? old.t[0] : Infinity;
  const seed = buckets.filter((b) => b.ts_ms / 1000 < first).sort((a, b) => a.ts_ms - b.ts_ms);
  if (seed.length === 0) return prev;
  const merged: GpuSeries = {
    t: [...seed.map((b) => b.ts_ms / 1000), ...old.t],
    util_pct: [...seed.map((b) => b.gpu_util_avg ?? null), ...old.util_pct],
    mem_pct: [
      ...seed.map((b) => (b.mem_used_bytes_avg != null && memTotalBytes ? (100 * b.mem_used_bytes_avg) / memTotalBytes : null)),
      ...old.mem_pct,
    ],
    temp_c: [...seed.map((b) => b.temp_gpu_c_avg ?? null), ...old.temp_c],
    power_w: [...seed.map((b) => b.power_w_avg ?? null), ...old.power_w],
  };
  const cut = Math.max(0, merged.t.length - cap);
  const next: SeriesByGpu = new Map(prev);
  next.set(gpu, {
    t: merged.t.slice(cut),
    util_pct: merged.util_pct.slice(cut),
    mem_pct: merged.mem_pct.slice(cut),
    temp_c: merged.temp_c.slice(cut),
    power_w: merged.power_w.slice(cut),
  });
  return next;
}
