/**
 * Numbers, bytes, percentages, temperatures, dates and durations for the active locale,
 * all through `Intl` so English and Chinese read naturally. A missing value is an em dash,
 * never `NaN` or `null` on screen.
 */

export const MISSING = '—';

type Num = number | null | undefined;

const cache = new Map<string, Intl.NumberFormat>();
function nf(locale: string, opts: Intl.NumberFormatOptions): Intl.NumberFormat {
  const key = locale + JSON.stringify(opts);
  let f = cache.get(key);
  if (!f) {
    f = new Intl.NumberFormat(locale, opts);
    cache.set(key, f);
  }
  return f;
}

const ok = (v: Num): v is number => typeof v === 'number' && Number.isFinite(v);

export function formatNumber(locale: string, v: Num, maxFractionDigits = 1): string {
  return ok(v) ? nf(locale, { maximumFractionDigits: maxFractionDigits }).format(v) : MISSING;
}

/** `12345678` -> `12M` (`1235万` in Chinese): for token counts on tight tiles. */
export function formatCompact(locale: string, v: Num): string {
  return ok(v) ? nf(locale, { notation: 'compact', maximumFractionDigits: 1 }).format(v) : MISSING;
}

const BYTE_UNITS = ['byte', 'kilobyte', 'megabyte', 'gigabyte', 'terabyte', 'petabyte'] as const;

/** Decimal units (1 GB = 10^9 bytes), as the daemon's own messages use. */
export function formatBytes(locale: string, v: Num): string {
  if (!ok(v)) return MISSING;
  let i = 0;
  let x = Math.abs(v);
  while (x >= 1000 && i < BYTE_UNITS.length - 1) {
    x /= 1000;
    i++;
  }
  const digits = i === 0 ? 0 : x < 10 ? 2 : x < 100 ? 1 : 0;
  return nf(locale, {
    style: 'unit',
    unit: BYTE_UNITS[i],
    unitDisplay: 'short',
    maximumFractionDigits: digits,
  }).format(Math.sign(v) * x);
}

/** `pct` is 0-100 (the daemon's `*_pct` fields). */
export function formatPercent(locale: string, pct: Num, maxFractionDigits = 1): string {
  return ok(pct) ? nf(locale, { style: 'percent', maximumFractionDigits: maxFractionDigits }).format(pct / 100) : MISSING;
}

/** A ratio 0-1 as a percentage. */
export function formatRatio(locale: string, r: Num): string {
  return ok(r) ? formatPercent(locale, r * 100) : MISSING;
}

export function formatCelsius(locale: string, c: Num): string {
  return ok(c)
    ? nf(locale, { style: 'unit', unit: 'celsius', unitDisplay: 'short', maximumFractionDigits: 0 }).format(c)
    : MISSING;
}

/** Intl has no watt unit; the symbol is the same in both languages. */
export function formatWatts(locale: string, w: Num): string {
  return ok(w) ? `${formatNumber(locale, w, 0)} W` : MISSING;
}

export function formatDateTime(locale: string, ms: Num): string {
  return ok(ms) ? new Intl.DateTimeFormat(locale, { dateStyle: 'medium', timeStyle: 'medium' }).format(ms) : MISSING;
}

export function formatDate(locale: string, ms: Num): string {
  return ok(ms) ? new Intl.DateTimeFormat(locale, { dateStyle: 'medium' }).format(ms) : MISSING;
}

export function formatTime(locale: string, ms: Num): string {
  return ok(ms) ? new Intl.DateTimeFormat(locale, { timeStyle: 'medium' }).format(ms) : MISSING;
}

/** `93784` s -> `1d 2h 3m` / `1天 2小时 3分钟`: the two largest non-zero parts. */
export function formatDuration(locale: string, seconds: Num): string {
  if (!ok(seconds)) return MISSING;
  const s = Math.max(0, Math.floor(seconds));
  const parts: [number, 'day' | 'hour' | 'minute' | 'second'][] = [
    [Math.floor(s / 86400), 'day'],
    [Math.floor((s % 86400) / 3600), 'hour'],
    [Math.floor((s % 3600) / 60), 'minute'],
    [s % 60, 'second'],
  ];
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return nf(locale, { style: 'unit', unit: 'second', unitDisplay: 'narrow' }).format(0);
  return parts
    .slice(first, first + 2)
    .filter(([n]) => n > 0)
    .map(([n, unit]) => nf(locale, { style: 'unit', unit, unitDisplay: 'narrow' }).format(n))
    .join(' ');
}

/** `YYYY-MM-DD` of a time in UTC (the daemon's usage days are UTC days). */
export function utcDay(ms: number): string {
  return new Date(ms).toISOString().slice(0, 10);
}
