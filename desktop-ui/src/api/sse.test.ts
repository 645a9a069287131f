import { describe, expect, it } from 'vitest';
import { SseParser, type SseEvent } from './sse';

const STREAM =
  ': keep-alive\n\n' +
  'event: sample\ndata: {"ts_ms":1,"gpus":[]}\n\n' +
  'event: job\r\ndata: line one\r\ndata: line two\r\nid: 7\r\n\r\n' +
  'data:no space\n\n' +
  'event: lonely\n\n' +
  'event: sample\ndata: {"ts_ms":2}\n\n';

const EXPECTED: SseEvent[] = [
  { event: 'sample', data: '{"ts_ms":1,"gpus":[]}', id: null },
  { event: 'job', data: 'line one\nline two', id: '7' },
  { event: 'message', data: 'no space', id: '7' },
  { event: 'sample', data: '{"ts_ms":2}', id: '7' },
];

function feed(chunks: string[]): SseEvent[] {
  const p = new SseParser();
  return chunks.flatMap((c) => p.push(c));
}

describe('SseParser', () => {
  it('parses a whole stream', () => {
    expect(feed([STREAM])).toEqual(EXPECTED);
  });

  it('parses the same stream fed one character at a time', () => {
    expect(feed(STREAM.split(''))).toEqual(EXPECTED);
  });

  it('parses the same stream cut at every possible point', () => {
    for (let i = 1; i < STREAM.length; i++) {
      expect(feed([STREAM.slice(0, i), STREAM.slice(i)])).toEqual(EXPECTED);
    }
  });

  it('handles a CRLF split across chunks without an empty line between', () => {
    const events = feed(['data: a\r', '\n', '\r', '\n']);
    expect(events).toEqual([{ event: 'message', data: 'a', id: null }]);
  });

  it('holds an unfinished event until its blank line', () => {
    const p = new SseParser();
    expect(p.push('event: sample\ndata: {"a"')).toEqual([]);
    expect(p.push(':1}\n')).toEqual([]);
    expect(p.push('\n')).toEqual([{ event: 'sample', data: '{"a":1}', id: null }]);
  });
});
