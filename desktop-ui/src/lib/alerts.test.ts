import { describe, expect, it } from 'vitest';
import type { Alert } from '../api/types';
import { SILENCE_CHOICES, UPDATE_HOLD_MS, isSilenced, silencePath, withUpdates } from './alerts';

const alert = (key: string, over: Partial<Alert> = {}): Alert => ({
  key,
  rule: key.split(':')[0],
  subject: key.split(':')[1] ?? '',
  severity: 'warning',
  state: 'firing',
  message: key,
  action: null,
  fired: 1,
  first_seen_ms: 1,
  last_seen_ms: 2,
  resolved_ms: null,
  silenced_until_ms: null,
  silenced_by: null,
  ...over,
});

describe('isSilenced', () => {
  it('holds until the end of the silence only', () => {
    expect(isSilenced(alert('a:b', { silenced_until_ms: 2000 }), 1999)).toBe(true);
    expect(isSilenced(alert('a:b', { silenced_until_ms: 2000 }), 2000)).toBe(false);
    expect(isSilenced(alert('a:b'), 0)).toBe(false);
  });

  it('treats a daemon that sends no silence fields as not silenced', () => {
    expect(isSilenced({} as Alert, 0)).toBe(false);
  });
});

describe('SILENCE_CHOICES', () => {
  it('offers 1 h, 24 h and 7 d within the daemon limit', () => {
    expect(SILENCE_CHOICES.map((c) => [c.id, c.minutes])).toEqual([
      ['1h', 60],
      ['24h', 1440],
      ['7d', 10080],
    ]);
    for (const c of SILENCE_CHOICES) expect(c.minutes >= 1 && c.minutes <= 43200).toBe(true);
  });
});

describe('withUpdates', () => {
  it('replaces the answered alerts by key and keeps the order', () => {
    const list = [alert('gpu_temperature:gpu0'), alert('xid_critical:gpu1')];
    const silenced = alert('gpu_temperature:gpu0', { silenced_until_ms: 9, silenced_by: 'ops' });
    const updates = new Map([
      [silenced.key, { alert: silenced, at: 1000 }],
      ['gone:gpu9', { alert: alert('gone:gpu9'), at: 1000 }],
    ]);
    const out = withUpdates(list, updates, 2000);
    expect(out.map((a) => a.key)).toEqual(['gpu_temperature:gpu0', 'xid_critical:gpu1']);
    expect(out[0]).toBe(silenced);
    expect(out[1]).toBe(list[1]);
  });

  it('lets the poll win once the answer is older than the hold', () => {
    const list = [alert('a:b')];
    const updates = new Map([['a:b', { alert: alert('a:b', { silenced_until_ms: 9 }), at: 0 }]]);
    expect(withUpdates(list, updates, UPDATE_HOLD_MS - 1)[0].silenced_until_ms).toBe(9);
    expect(withUpdates(list, updates, UPDATE_HOLD_MS)[0]).toBe(list[0]);
  });

  it('returns the list itself when nothing changed', () => {
    const list = [alert('a:b')];
    expect(withUpdates(list, new Map(), 0)).toBe(list);
  });
});

describe('silencePath', () => {
  it('encodes the colon of the key', () => {
    expect(silencePath('gpu_temperature:gpu0')).toBe('/admin/v1/alerts/gpu_temperature%3Agpu0/silence');
  });
});
