/**
 * How long to wait before the next try after `failures` failures in a row: 1 s, 2 s, 4 s,
 * ... capped at 30 s. Reconnecting to a box that restarts should be quick; to one that is
 * down for maintenance, it should not hammer it.
 */
export function backoffMs(failures: number, baseMs = 1000, capMs = 30_000): number {
  const n = Math.max(0, Math.min(failures, 16));
  return Math.min(capMs, baseMs * 2 ** n);
}
