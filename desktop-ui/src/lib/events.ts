/**
 * GPU events grouped by what happened: a looping fault (the same XID every few seconds)
 * is one row with a count and its first and last time, not a screenful of copies.
 */

import type { GpuEvent } from '../api/types';

export interface EventGroup {
  gpu: number;
  kind: string;
  xid: number | null;
  count: number;
  first_ms: number;
  last_ms: number;
}

/** Groups by GPU, kind and XID; newest group first. */
export function groupEvents(events: GpuEvent[]): EventGroup[] {
  const groups = new Map<string, EventGroup>();
  for (const e of events) {
    const key = `${e.gpu}/${e.kind}/${e.xid ?? ''}`;
    const g = groups.get(key);
    if (g) {
      g.count++;
      g.first_ms = Math.min(g.first_ms, e.ts_ms);
      g.last_ms = Math.max(g.last_ms, e.ts_ms);
    } else {
      groups.set(key, { gpu: e.gpu, kind: e.kind, xid: e.xid ?? null, count: 1, first_ms: e.ts_ms, last_ms: e.ts_ms });
    }
  }
  return [...groups.values()].sort((a, b) => b.last_ms - a.last_ms);
}
