import { describe, expect, it } from 'vitest';
import { uplotFmtDate } from './chartTime';
import {
  MISSING,
  formatBytes,
  formatCelsius,
  formatCompact,
  formatDate,
  formatDateTime,
  formatDuration,
  formatNumber,
  formatPercent,
  formatWatts,
  utcDay,
} from './format';

// Intl output may use narrow no-break spaces; compare with plain spaces.
const plain = (s: string) => s.replace(/[\u00a0\u202f]/g, ' ');

describe('formatBytes', () => {
  it('uses decimal units in English', () => {
    expect(plain(formatBytes('en', 0))).toBe('0 byte');
    expect(plain(formatBytes('en', 98_362_432))).toBe('98.4 MB');
    expect(plain(formatBytes('en', 153_545_080_832))).toBe('154 GB');
    expect(plain(formatBytes('en', 1_500))).toBe('1.5 kB');
  });

  it('localises the number and unit in Chinese', () => {
    const s = plain(formatBytes('zh-CN', 98_362_432));
    expect(s).toContain('98.4');
    expect(s).toMatch(/MB|兆字节/);
  });

  it('shows a dash for missing values', () => {
    expect(formatBytes('en', null)).toBe(MISSING);
    expect(formatBytes('en', Number.NaN)).toBe(MISSING);
  });
});

describe('formatPercent', () => {
  it('takes 0-100 values', () => {
    expect(formatPercent('en', 62)).toBe('62%');
    expect(formatPercent('en', 12.34)).toBe('12.3%');
    expect(formatPercent('zh-CN', 62)).toBe('62%');
    expect(formatPercent('en', undefined)).toBe(MISSING);
  });
});

describe('numbers and units', () => {
  it('groups digits per locale', () => {
    expect(formatNumber('en', 100000)).toBe('100,000');
    expect(formatNumber('zh-CN', 100000)).toBe('100,000');
    expect(formatCompact('en', 134_515_008)).toBe('134.5M');
    expect(formatCompact('zh-CN', 134_515_008)).toBe('1.3亿');
  });

  it('formats temperature and power', () => {
    expect(plain(formatCelsius('en', 72.4))).toBe('72°C');
    expect(plain(formatCelsius('zh-CN', 72.4))).toMatch(/^72/);
    expect(formatWatts('en', 465.2)).toBe('465 W');
    expect(formatCelsius('en', null)).toBe(MISSING);
  });
});

describe('dates', () => {
  const ms = Date.UTC(2026, 11, 2, 0, 35, 21);

  it('reads naturally in English and in Chinese', () => {
    expect(formatDate('en', ms)).toMatch(/Dec \d+, 2026/);
    expect(formatDate('zh-CN', ms)).toMatch(/2026年12月\d+日/);
    expect(plain(formatDateTime('en', ms))).toMatch(/2026, \d+:\d\d:\d\d (AM|PM)/);
    expect(formatDateTime('zh-CN', ms)).toMatch(/2026年12月\d+日 \d\d:\d\d:\d\d/);
  });

  it('gives UTC days for the usage API', () => {
    expect(utcDay(ms)).toBe('2026-12-02');
  });
});

describe('formatDuration', () => {
  it('shows the two largest parts', () => {
    expect(plain(formatDuration('en', 93_784))).toBe('1d 2h');
    expect(plain(formatDuration('en', 456))).toBe('7m 36s');
    expect(plain(formatDuration('zh-CN', 467))).toBe('7分钟 47秒');
    expect(plain(formatDuration('en', 0))).toBe('0s');
  });
});

describe('uplotFmtDate', () => {
  const d = new Date(2026, 11, 2, 14, 5, 9);

  it('maps uPlot templates to Intl in each language', () => {
    expect(plain(uplotFmtDate('en')('{h}:{mm}{aa}')(d))).toBe('2:05 PM');
    expect(uplotFmtDate('zh-CN')('{h}:{mm}{aa}')(d)).toBe('14:05');
    expect(uplotFmtDate('en')('{M}/{D}')(d)).toBe('Dec 2');
    expect(uplotFmtDate('zh-CN')('{M}/{D}')(d)).toBe('12月2日');
    expect(uplotFmtDate('en')(':{ss}')(d)).toBe('05:09');
    expect(uplotFmtDate('en')('\n{M}/{D}/{YY}')(d)).toBe('\nDec 2, 2026');
    expect(plain(uplotFmtDate('en')('{YYYY}-{MM}-{DD} {h}:{mm}{aa}')(d))).toBe('Dec 2, 2:05 PM');
    expect(uplotFmtDate('zh-CN')('{YYYY}-{MM}-{DD} {h}:{mm}{aa}')(d)).toBe('12月2日 14:05');
  });
});
