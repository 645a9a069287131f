/**
 * Which boxes the console knows, which one it shows, and whether that box answers.
 *
 * The active box's `/healthz` is checked every few seconds; when it stops answering the
 * console shows a banner and retries with backoff (1 s, 2 s, 4 s ... 30 s) until it is
 * back. Other boxes on the list are checked less often, for their dots on the Connect
 * screen.
 */

import { createContext, useCallback, useContext, useEffect, useMemo, useRef, useState, type ReactNode } from 'react';
import { BoxApi } from './api/client';
import { messageOf } from './api/errors';
import { selectTransport, type BoxEntry, type Transport } from './api/transport';
import { backoffMs } from './lib/backoff';

export type Health = 'up' | 'down' | 'unknown';

export interface Connection {
  transport: Transport;
  boxes: BoxEntry[];
  /** Null until the box list has been read. */
  loaded: boolean;
  listError: string | null;
  active: BoxEntry | null;
  api: BoxApi | null;
  health: Record<string, Health>;
  /** The active box: reachable, or down with when the next try is. */
  link: { state: 'up' | 'down' | 'unknown'; error: string | null; retryAt: number | null };
  select(id: string): void;
  reloadBoxes(): Promise<BoxEntry[]>;
  retryNow(): void;
}

const ACTIVE_KEY = 'oasis.activeBox';
const Ctx = createContext<Connection | null>(null);

const CHECK_MS = 5000;
const OTHERS_MS = 15000;

function readActive(): string | null {
  try {
    return localStorage.getItem(ACTIVE_KEY);
  } catch {
    return null;
  }
}

export function ConnectionProvider({ children }: { children: ReactNode }) {
  const transport = useMemo(() => selectTransport(window), []);
  const [boxes, setBoxes] = useState<BoxEntry[]>([]);
  const [loaded, setLoaded] = useState(false);
  const [listError, setListError] = useState<string | null>(null);
  const [activeId, setActiveId] = useState<string | null>(readActive);
  const [health, setHealth] = useState<Record<string, Health>>({});
  const [link, setLink] = useState<Connection['link']>({ state: 'unknown', error: null, retryAt: null });
  const [kick, setKick] = useState(0);
  const failures = useRef(0);

  const reloadBoxes = useCallback(async () => {
    try {
      const list = await transport.listBoxes();
      setBoxes(list);
      setListError(null);
      return list;
    } catch (e) {
      setListError(messageOf(e));
      return [];
    } finally {
      setLoaded(true);
    }
  }, [transport]);

  useEffect(() => {
    reloadBoxes();
  }, [reloadBoxes]);

  // The active box: the chosen one if still paired, else the first paired one.
  const active = useMemo(() => {
    const paired = boxes.filter((b) => b.paired);
    return paired.find((b) => b.id === activeId) ?? paired[0] ?? null;
  }, [boxes, activeId]);
  const api = useMemo(() => (active ? new BoxApi(transport, active.id) : null), [transport, active]);

  const select = useCallback((id: string) => {
    setActiveId(id);
    try {
      localStorage.setItem(ACTIVE_KEY, id);
    } catch {
      // The choice lasts this page only.
    }
  }, []);

  // Watch the active box.
  useEffect(() => {
    if (!api || !active) return;
    let alive = true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    failures.current = 0;
    const check = async () => {
      try {
        await api.healthz();
        if (!alive) return;
        failures.current = 0;
        setLink({ state: 'up', error: null, retryAt: null });
        setHealth((h) => ({ ...h, [active.id]: 'up' }));
        timer = setTimeout(check, CHECK_MS);
      } catch (e) {
        if (!alive) return;
        const wait = backoffMs(failures.current++);
        setLink({ state: 'down', error: messageOf(e), retryAt: Date.now() + wait });
        setHealth((h) => ({ ...h, [active.id]: 'down' }));
        timer = setTimeout(check, wait);
      }
    };
    check();
    return () => {
      alive = false;
      if (timer) clearTimeout(timer);
    };
  }, [api, active, kick]);

  // The others, for their dots.
  useEffect(() => {
    const others = boxes.filter((b) => b.id !== active?.id);
    if (others.length === 0) return;
    let alive = true;
    const checkAll = () =>
      others.forEach(async (b) => {
        let h: Health = 'down';
        try {
          const r = await transport.request(b.id, 'GET', '/healthz');
          h = r.status >= 200 && r.status < 300 ? 'up' : 'down';
        } catch {
          h = 'down';
        }
        if (alive) setHealth((prev) => ({ ...prev, [b.id]: h }));
      });
    checkAll();
    const timer = setInterval(checkAll, OTHERS_MS);
    return () => {
      alive = false;
      clearInterval(timer);
    };
  }, [boxes, active, transport]);

  const retryNow = useCallback(() => setKick((n) => n + 1), []);

  const value: Connection = {
    transport,
    boxes,
    loaded,
    listError,
    active,
    api,
    health,
    link,
    select,
    reloadBoxes,
    retryNow,
  };
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useConnection(): Connection {
  const c = useContext(Ctx);
  if (!c) throw new Error('useConnection outside ConnectionProvider');
  return c;
}

/** The active box's API; screens render only when there is one. */
export function useApi(): BoxApi {
  const { api } = useConnection();
  if (!api) throw new Error('no active box');
  return api;
}
