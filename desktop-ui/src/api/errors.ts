/**
 * Errors from a box, carrying the daemon's own message.
 *
 * The daemon answers errors as `{"error": {"message", "type", "code", "param"}}`; the UI
 * shows `message` as is and branches only on `status` and `code`, never on the text.
 */

export class ApiError extends Error {
  /** HTTP status, or 0 when the box could not be reached at all. */
  readonly status: number;
  /** The daemon's stable `code` (`invalid_api_key`, `model_not_found`, ...), if any. */
  readonly code: string | null;
  /** The daemon's `type` (`invalid_request_error`, ...), if any. */
  readonly type: string | null;
  /** The request parameter at fault, if the daemon named one. */
  readonly param: string | null;

  constructor(
    message: string,
    status: number,
    code: string | null = null,
    type: string | null = null,
    param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.type = type;
    this.param = param;
  }

  /** The box did not answer (network error, refused, timed out). */
  get unreachable(): boolean {
    return this.status === 0;
  }

  /** The key is missing, unknown, revoked or expired: pairing again is the way out. */
  get unauthorized(): boolean {
    return this.status === 401;
  }
}

function str(v: unknown): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

/**
 * Turns a non-2xx answer into an [`ApiError`]. `body` is the parsed JSON when the answer
 * was JSON, else its text.
 */
export function parseError(status: number, body: unknown): ApiError {
  if (body && typeof body === 'object' && 'error' in body) {
    const e = (body as { error: unknown }).error;
    if (e && typeof e === 'object') {
      const o = e as Record<string, unknown>;
      const message = str(o.message) ?? `HTTP ${status}`;
      return new ApiError(message, status, str(o.code), str(o.type), str(o.param));
    }
    if (typeof e === 'string' && e !== '') return new ApiError(e, status);
  }
  if (typeof body === 'string' && body.trim() !== '') {
    const text = body.trim();
    // A proxy's HTML page says nothing useful; a short plain text does.
    if (!text.startsWith('<') && text.length <= 500) return new ApiError(text, status);
  }
  return new ApiError(`HTTP ${status}`, status);
}

/** Parses a response body as JSON when it is JSON, else keeps the text. */
export function parseBody(text: string, contentType: string | null): unknown {
  if (text === '') return null;
  if (contentType?.includes('json') || /^[[{]/.test(text.trimStart())) {
    try {
      return JSON.parse(text);
    } catch {
      return text;
    }
  }
  return text;
}

/** Any thrown value as a message for the UI. */
export function messageOf(e: unknown): string {
  if (e instanceof Error) return e.message;
  if (typeof e === 'string') return e;
  return String(e);
}
