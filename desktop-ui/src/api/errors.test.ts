import { describe, expect, it } from 'vitest';
import { ApiError, messageOf, parseBody, parseError } from './errors';

describe('parseError', () => {
  it("keeps the daemon's message, code, type and param", () => {
    const e = parseError(400, {
      error: { message: '`max_tokens` must be between 1 and 4096, got 0', type: 'invalid_request_error', code: 'bad', param: 'max_tokens' },
    });
    expect(e).toBeInstanceOf(ApiError);
    expect(e.message).toBe('`max_tokens` must be between 1 and 4096, got 0');
    expect(e.status).toBe(400);
    expect(e.code).toBe('bad');
    expect(e.type).toBe('invalid_request_error');
    expect(e.param).toBe('max_tokens');
  });

  it('flags 401 as unauthorized and 0 as unreachable', () => {
    const e = parseError(401, { error: { message: 'This API key has been revoked', type: 'invalid_request_error', code: 'revoked_api_key', param: null } });
    expect(e.unauthorized).toBe(true);
    expect(e.code).toBe('revoked_api_key');
    expect(new ApiError('down', 0).unreachable).toBe(true);
  });

  it('reads a bare string error and a short text body', () => {
    expect(parseError(500, { error: 'boom' }).message).toBe('boom');
    expect(parseError(502, 'upstream went away\n').message).toBe('upstream went away');
  });

  it('falls back to the status for HTML pages and empty bodies', () => {
    expect(parseError(502, '<html><body>Bad gateway</body></html>').message).toBe('HTTP 502');
    expect(parseError(404, null).message).toBe('HTTP 404');
    expect(parseError(500, { error: { type: 'x' } }).message).toBe('HTTP 500');
  });
});

describe('parseBody', () => {
  it('parses JSON by content type or by shape, else keeps the text', () => {
    expect(parseBody('{"a":1}', 'application/json')).toEqual({ a: 1 });
    expect(parseBody('[1]', null)).toEqual([1]);
    expect(parseBody('# HELP x\nx 1\n', 'text/plain')).toBe('# HELP x\nx 1\n');
    expect(parseBody('{not json', 'application/json')).toBe('{not json');
    expect(parseBody('', 'application/json')).toBeNull();
  });
});

describe('messageOf', () => {
  it('reads errors, strings and anything else', () => {
    expect(messageOf(new Error('x'))).toBe('x');
    expect(messageOf('y')).toBe('y');
    expect(messageOf(3)).toBe('3');
  });
});
