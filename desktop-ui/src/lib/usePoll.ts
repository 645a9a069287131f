/**
 * Loads something now and again every `intervalMs`, keeping the last good answer on
 * screen while a later one fails (the error shows beside it, not instead of it).
 */

import { useCallback, useEffect, useRef, useState } from 'react';

export interface Polled<T> {
  data: T | null;
  error: unknown;
  loading: boolean;
  reload(): void;
}

export function usePoll<T>(fn: (() => Promise<T>) | null, intervalMs: number | null, deps: unknown[]): Polled<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const [tick, setTick] = useState(0);
  const fnRef = useRef(fn);
  fnRef.current = fn;

  useEffect(() => {
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      const f = fnRef.current;
      if (!f) return;
      try {
        const v = await f();
        if (!alive) return;
        setData(v);
        setError(null);
      } catch (e) {
        if (!alive) return;
        setError(e);
      } finally {
        if (alive) {
          setLoading(false);
          if (intervalMs) timer = setTimeout(run, intervalMs);
        }
      }
    };
    setLoading(true);
    run();
    return () => {
      alive = false;
      if (timer) clearTimeout(timer);
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [...deps, intervalMs, tick]);

  const reload = useCallback(() => setTick((n) => n + 1), []);
  return { data, error, loading: loading && data === null, reload };
}
