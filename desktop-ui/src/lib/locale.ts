//! The browser's language as a tag `Intl` accepts. WebKitGTK (the desktop app's webview on
//! Linux) turns `LANG=C.UTF-8` into the language `C`, which `Intl` rejects with a
//! RangeError: a chart library that formats with `navigator.language` at load time would
//! then stop the whole bundle.

/** `tag` canonicalised, or `fallback` when it is missing or not a BCP 47 tag. */
export function safeLanguage(tag: string | undefined | null, fallback = 'en-US'): string {
  if (!tag) return fallback;
  try {
    return Intl.getCanonicalLocales(tag)[0] ?? fallback;
  } catch {
    return fallback;
  }
}
