//! Imported first (src/main.tsx): makes `navigator.language` a tag `Intl` accepts before any
//! module (uPlot formats numbers with it at load time) reads it. See lib/locale.ts.

import { safeLanguage } from './lib/locale';

if (typeof navigator !== 'undefined') {
  const fixed = safeLanguage(navigator.language);
  if (fixed !== navigator.language) {
    Object.defineProperty(navigator, 'language', { value: fixed, configurable: true });
  }
}
