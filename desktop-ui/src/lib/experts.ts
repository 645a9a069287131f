/**
 * The Experts screen's arithmetic: expert load per layer as a heatmap, how the placement
 * spreads that load over the engine ranks, and the imbalance ratio (the busiest rank's
 * load over the mean; 1.0 is perfect balance) the daemon's balancer works to lower.
 */

/** Each layer's loads scaled to 0-1 by that layer's busiest expert (0 when idle). */
export function heat(loads: number[][]): number[][] {
  return loads.map((row) => {
    const max = Math.max(0, ...row);
    return row.map((v) => (max > 0 ? v / max : 0));
  });
}

/** Busiest over mean; 1 when there is no load at all (nothing to balance). */
export function imbalance(loads: number[]): number {
  if (loads.length === 0) return 1;
  const sum = loads.reduce((a, b) => a + b, 0);
  if (sum <= 0) return 1;
  return Math.max(...loads) / (sum / loads.length);
}

/**
 * Load per rank in one layer. `placement[slot]` is the logical expert in physical slot
 * `slot`; rank `r` holds slots `r * slotsPerRank ..`. A replicated expert's load is split
 * evenly between its copies, as the router spreads tokens over them. Without a placement
 * (a model not run expert-parallel) everything is on rank 0.
 */
export function rankLoads(placement: number[], loads: number[], slotsPerRank: number, ranks: number): number[] {
  const n = Math.max(1, ranks);
  const out = new Array<number>(n).fill(0);
  if (placement.length === 0 || slotsPerRank <= 0) {
    out[0] = loads.reduce((a, b) => a + b, 0);
    return out;
  }
  const copies = new Map<number, number>();
  for (const e of placement) copies.set(e, (copies.get(e) ?? 0) + 1);
  placement.forEach((e, slot) => {
    const rank = Math.min(n - 1, Math.floor(slot / slotsPerRank));
    out[rank] += (loads[e] ?? 0) / (copies.get(e) ?? 1);
  });
  return out;
}

/** Which logical experts each rank holds in one layer. */
export function expertsByRank(placement: number[], slotsPerRank: number, ranks: number): number[][] {
  const n = Math.max(1, ranks);
  const out: number[][] = Array.from({ length: n }, () => []);
  if (slotsPerRank <= 0) return out;
  placement.forEach((e, slot) => {
    out[Math.min(n - 1, Math.floor(slot / slotsPerRank))].push(e);
  });
  return out;
}

export interface LayerSummary {
  layer: number;
  /** Tokens per rank. */
  rank_loads: number[];
  imbalance: number;
  /** The expert with the most tokens, or null when idle. */
  hottest: number | null;
}

export function summarise(
  placement: number[][],
  loads: number[][],
  slotsPerRank: number,
  ranks: number,
): LayerSummary[] {
  return loads.map((row, layer) => {
    const rl = rankLoads(placement[layer] ?? [], row, slotsPerRank, ranks);
    const max = Math.max(0, ...row);
    return {
      layer,
      rank_loads: rl,
      imbalance: imbalance(rl),
      hottest: max > 0 ? row.indexOf(max) : null,
    };
  });
}

/** A colour for a heat value 0-1: pale teal to deep orange through yellow. */
export function heatColour(v: number): string {
  const x = Math.max(0, Math.min(1, Number.isFinite(v) ? v : 0));
  const hue = 190 - 170 * x;
  const light = 94 - 44 * x;
  return `hsl(${hue.toFixed(0)} 80% ${light.toFixed(0)}%)`;
}
