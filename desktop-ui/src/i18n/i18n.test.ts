import { describe, expect, it } from 'vitest';
import { en } from './en';
import { zhCN } from './zh-CN';
import { dictionaries, initialLocale, translate, translateEnum } from './index';

const placeholders = (s: string) => [...s.matchAll(/\{(\w+)\}/g)].map((m) => m[1]).sort();

describe('dictionaries', () => {
  it('have the same keys', () => {
    expect(Object.keys(zhCN).sort()).toEqual(Object.keys(en).sort());
  });

  it('have no empty strings', () => {
    for (const [locale, dict] of Object.entries(dictionaries)) {
      for (const [k, v] of Object.entries(dict)) {
        expect(v.trim(), `${locale} ${k}`).not.toBe('');
      }
    }
  });

  it('use the same placeholders for each key', () => {
    for (const k of Object.keys(en) as (keyof typeof en)[]) {
      expect(placeholders(zhCN[k]), k).toEqual(placeholders(en[k]));
    }
  });

  it('translate the navigation into Chinese', () => {
    expect(zhCN['nav.overview']).toBe('概览');
    for (const k of Object.keys(en).filter((k) => k.startsWith('nav.')) as (keyof typeof en)[]) {
      expect(zhCN[k], k).not.toBe(en[k] === 'GPUs' ? 'GPUs' : en[k]);
    }
  });
});

describe('translate', () => {
  it('fills placeholders and leaves unknown ones', () => {
    expect(translate('en', 'banner.retryIn', { s: 4 })).toBe('Retrying in 4 s.');
    expect(translate('zh-CN', 'banner.retryIn', { s: 4 })).toBe('4 秒后重试。');
    expect(translate('en', 'banner.retryIn')).toBe('Retrying in {s} s.');
  });

  it('maps daemon enums and keeps unknown values as sent', () => {
    expect(translateEnum('zh-CN', 'verdict', 'warn')).toBe('警告');
    expect(translateEnum('en', 'verdict', 'mystery')).toBe('mystery');
  });
});

describe('initialLocale', () => {
  it('prefers the stored choice, then the browser language', () => {
    expect(initialLocale('zh-CN', 'en-US')).toBe('zh-CN');
    expect(initialLocale(null, 'zh-TW')).toBe('zh-CN');
    expect(initialLocale('fr', 'de-DE')).toBe('en');
  });
});
