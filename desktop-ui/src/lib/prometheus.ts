/**
 * A small reader of the Prometheus text format, for the few engine figures `/metrics`
 * has and `/admin/v1/status` does not (KV cache blocks).
 */

export interface MetricSample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parsePrometheus(text: string): MetricSample[] {
  const out: MetricSample[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    if (m[3]) {
      for (const l of m[3].matchAll(LABEL)) {
        labels[l[1]] = l[2].replace(/\\n/g, '\n').replace(/\\"/g, '"').replace(/\\\\/g, '\\');
      }
    }
    const value = Number(m[4]);
    if (!Number.isNaN(value)) out.push({ name: m[1], labels, value });
  }
  return out;
}

/** `name{label=value}` for each value of `label`: `oasis_kv_blocks` by model. */
export function byLabel(samples: MetricSample[], name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples) {
    if (s.name === name && label in s.labels) out.set(s.labels[label], s.value);
  }
  return out;
}

/** KV cache use per model, 0-1, from `oasis_kv_blocks_used` over `oasis_kv_blocks`. */
export function kvUse(samples: MetricSample[]): Map<string, { used: number; total: number; ratio: number }> {
  const total = byLabel(samples, 'oasis_kv_blocks', 'model');
  const used = byLabel(samples, 'oasis_kv_blocks_used', 'model');
  const out = new Map<string, { used: number; total: number; ratio: number }>();
  for (const [model, t] of total) {
    const u = used.get(model) ?? 0;
    out.set(model, { used: u, total: t, ratio: t > 0 ? u / t : 0 });
  }
  return out;
}
