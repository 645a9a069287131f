import { describe, expect, it } from 'vitest';
import type { AuditEntry } from '../api/types';
import { filterAudit } from './audit';
import { backoffMs } from './backoff';
import { groupEvents } from './events';
import { byLabel, kvUse, parsePrometheus } from './prometheus';
import { parseHash } from './router';

describe('backoffMs', () => {
  it('doubles from 1 s up to 30 s', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 50].map((n) => backoffMs(n))).toEqual([1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
  });
});

describe('parseHash', () => {
  it('reads known routes only', () => {
    expect(parseHash('#/gpus')).toBe('gpus');
    expect(parseHash('#keys')).toBe('keys');
    expect(parseHash('#/models/x?y=1')).toBe('models');
    expect(parseHash('')).toBeNull();
    expect(parseHash('#/nope')).toBeNull();
  });
});

describe('parsePrometheus', () => {
  const text = [
    '# HELP oasis_kv_blocks Blocks in the key/value cache pool.',
    '# TYPE oasis_kv_blocks gauge',
    'oasis_kv_blocks{model="SmolLM2"} 1456',
    'oasis_kv_blocks{model="qwen2-moe"} 65536',
    'oasis_kv_blocks_used{model="SmolLM2"} 364',
    'oasis_up 1',
    'weird{a="x\\"y",b="2"} 3.5e2',
  ].join('\n');

  it('reads names, labels and values', () => {
    const s = parsePrometheus(text);
    expect(s).toHaveLength(5);
    expect(s[4]).toEqual({ name: 'weird', labels: { a: 'x"y', b: '2' }, value: 350 });
    expect(byLabel(s, 'oasis_kv_blocks', 'model').get('qwen2-moe')).toBe(65536);
  });

  it('gives KV cache use per model', () => {
    const kv = kvUse(parsePrometheus(text));
    expect(kv.get('SmolLM2')).toEqual({ used: 364, total: 1456, ratio: 0.25 });
    expect(kv.get('qwen2-moe')?.ratio).toBe(0);
  });
});

describe('filterAudit', () => {
  const e = (seq: number, actor: string, action: string, outcome: string): AuditEntry => ({
    seq, ts_ms: seq, actor, action, detail: { outcome, from: '127.0.0.1', what: {} }, hash: '', prev: '',
  });
  const all = [
    e(1, 'key-1 (ops)', 'key.create', 'ok'),
    e(2, 'anonymous (loopback)', 'model.import', 'ok'),
    e(3, 'key-1 (ops)', 'model.delete', 'refused (409): model `m` is deployed'),
  ];

  it('matches each field case-insensitively', () => {
    expect(filterAudit(all, { actor: 'OPS', action: '', result: '' }).map((x) => x.seq)).toEqual([1, 3]);
    expect(filterAudit(all, { actor: '', action: 'model.', result: 'refused' }).map((x) => x.seq)).toEqual([3]);
    expect(filterAudit(all, { actor: ' ', action: '', result: '' })).toHaveLength(3);
  });
});

describe('groupEvents', () => {
  it('folds repeats into one row with a count, newest first', () => {
    const g = groupEvents([
      { gpu: 1, kind: 'xid', xid: 79, ts_ms: 10 },
      { gpu: 0, kind: 'xid', xid: 48, ts_ms: 15 },
      { gpu: 1, kind: 'xid', xid: 79, ts_ms: 20 },
      { gpu: 1, kind: 'xid', xid: 79, ts_ms: 30 },
    ]);
    expect(g).toEqual([
      { gpu: 1, kind: 'xid', xid: 79, count: 3, first_ms: 10, last_ms: 30 },
      { gpu: 0, kind: 'xid', xid: 48, count: 1, first_ms: 15, last_ms: 15 },
    ]);
  });
});
