import { describe, expect, it } from 'vitest';
import { safeLanguage } from './locale';

describe('safeLanguage', () => {
  it('keeps valid tags, canonicalised', () => {
    expect(safeLanguage('zh-CN')).toBe('zh-CN');
    expect(safeLanguage('en-us')).toBe('en-US');
  });
  it('replaces what Intl rejects or lacks', () => {
    // WebKitGTK under LANG=C.UTF-8.
    expect(safeLanguage('C')).toBe('en-US');
    expect(safeLanguage('')).toBe('en-US');
    expect(safeLanguage(undefined)).toBe('en-US');
    expect(() => new Intl.NumberFormat(safeLanguage('C'))).not.toThrow();
  });
});
