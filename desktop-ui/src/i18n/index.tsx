/**
 * English and Simplified Chinese. Every string the UI shows is a key of the English
 * dictionary; the Chinese one has the same keys (a test checks). The choice is kept in
 * `localStorage` and drives `Intl` for numbers, bytes, units and dates.
 */

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from 'react';
import { en, type MessageKey } from './en';
import { zhCN } from './zh-CN';
import * as f from '../lib/format';

export type Locale = 'en' | 'zh-CN';
export const LOCALES: Locale[] = ['en', 'zh-CN'];
export const dictionaries: Record<Locale, Record<MessageKey, string>> = { en, 'zh-CN': zhCN };

const STORAGE_KEY = 'oasis.locale';

export type Vars = Record<string, string | number>;

/** Looks a key up and fills `{name}` placeholders. */
export function translate(locale: Locale, key: MessageKey, vars?: Vars): string {
  const s = dictionaries[locale][key] ?? en[key] ?? key;
  if (!vars) return s;
  return s.replace(/\{(\w+)\}/g, (m, name: string) => (name in vars ? String(vars[name]) : m));
}

/** `prefix.value` when the dictionary has it, else the value as the daemon sent it. */
export function translateEnum(locale: Locale, prefix: string, value: string): string {
  const key = `${prefix}.${value}`;
  return key in en ? translate(locale, key as MessageKey) : value;
}

export function initialLocale(stored: string | null, browser: string | undefined): Locale {
  if (stored === 'en' || stored === 'zh-CN') return stored;
  return browser?.toLowerCase().startsWith('zh') ? 'zh-CN' : 'en';
}

export interface I18n {
  locale: Locale;
  setLocale(l: Locale): void;
  t(key: MessageKey, vars?: Vars): string;
  /** An enum value from the daemon (`ready`, `critical`, ...) in words. */
  te(prefix: string, value: string): string;
  num(v: number | null | undefined, digits?: number): string;
  compact(v: number | null | undefined): string;
  bytes(v: number | null | undefined): string;
  pct(v: number | null | undefined): string;
  ratio(v: number | null | undefined): string;
  celsius(v: number | null | undefined): string;
  watts(v: number | null | undefined): string;
  dateTime(ms: number | null | undefined): string;
  date(ms: number | null | undefined): string;
  time(ms: number | null | undefined): string;
  duration(s: number | null | undefined): string;
}

export function makeI18n(locale: Locale, setLocale: (l: Locale) => void = () => {}): I18n {
  return {
    locale,
    setLocale,
    t: (key, vars) => translate(locale, key, vars),
    te: (prefix, value) => translateEnum(locale, prefix, value),
    num: (v, d) => f.formatNumber(locale, v, d),
    compact: (v) => f.formatCompact(locale, v),
    bytes: (v) => f.formatBytes(locale, v),
    pct: (v) => f.formatPercent(locale, v),
    ratio: (v) => f.formatRatio(locale, v),
    celsius: (v) => f.formatCelsius(locale, v),
    watts: (v) => f.formatWatts(locale, v),
    dateTime: (ms) => f.formatDateTime(locale, ms),
    date: (ms) => f.formatDate(locale, ms),
    time: (ms) => f.formatTime(locale, ms),
    duration: (s) => f.formatDuration(locale, s),
  };
}

const Ctx = createContext<I18n>(makeI18n('en'));

function readStored(): string | null {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

export function I18nProvider({ children }: { children: ReactNode }) {
  const [locale, setLocaleState] = useState<Locale>(() =>
    initialLocale(readStored(), typeof navigator === 'undefined' ? undefined : navigator.language),
  );
  const setLocale = useCallback((l: Locale) => {
    setLocaleState(l);
    try {
      localStorage.setItem(STORAGE_KEY, l);
    } catch {
      // Private mode: the choice lasts this page only.
    }
  }, []);
  useEffect(() => {
    document.documentElement.lang = locale;
    document.title = translate(locale, 'app.title');
  }, [locale]);
  const value = useMemo(() => makeI18n(locale, setLocale), [locale, setLocale]);
  return <Ctx.Provider value={value}>{children}</Ctx.Provider>;
}

export function useI18n(): I18n {
  return useContext(Ctx);
}

export type { MessageKey };
