/**
 * uPlot's time labels through `Intl`, so chart axes read `14:05` / `12月2日` in Chinese as
 * they read `2:05 PM` / `Dec 2` in English. uPlot asks for a formatter per template
 * (`{h}:{mm}{aa}`, `{M}/{D}`, `:{ss}`, with `\n` between lines); each line is mapped to
 * the `Intl.DateTimeFormat` fields it shows.
 */

type Fmt = (d: Date) => string;

function lineFormatter(locale: string, line: string): Fmt {
  const has = (s: string) => line.includes(s);
  const hour = has('{h}') || has('{H}') || has('{HH}');
  const sec = has('{ss}');
  const ms = has('{fff}');
  const day = has('{D}') || has('{DD}');
  const month = has('{M}') || has('{MM}') || has('{MMM}') || has('{MMMM}');
  const year = has('{YY}') || has('{YYYY}');
  let opts: Intl.DateTimeFormatOptions | null = null;
  // Date and time on one line (the legend, or an axis's second line): no year, to stay short.
  if (hour && day) opts = { month: 'short', day: 'numeric', hour: 'numeric', minute: '2-digit', second: sec ? '2-digit' : undefined };
  else if (hour) opts = { hour: 'numeric', minute: '2-digit', second: sec ? '2-digit' : undefined };
  else if (ms) opts = { minute: '2-digit', second: '2-digit', fractionalSecondDigits: 3 };
  else if (sec) opts = { minute: '2-digit', second: '2-digit' };
  else if (day) opts = { year: year ? 'numeric' : undefined, month: 'short', day: 'numeric' };
  else if (month) opts = { year: year ? 'numeric' : undefined, month: 'short' };
  else if (year) opts = { year: 'numeric' };
  if (!opts) return () => line;
  const f = new Intl.DateTimeFormat(locale, opts);
  return (d) => f.format(d);
}

export function uplotFmtDate(locale: string): (tpl: string) => Fmt {
  return (tpl) => {
    const lines = tpl.split('\n').map((l) => (l.trim() === '' ? () => '' : lineFormatter(locale, l)));
    return (d) => lines.map((f) => f(d)).join('\n');
  };
}
