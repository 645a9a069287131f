//! The console's entry point: mounts the app. No inline scripts anywhere (strict CSP).

// First: a usable navigator.language before uPlot reads it (WebKitGTK under LANG=C).
import './locale-guard';
import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import './styles.css';

const root = document.getElementById('root');
if (root) {
  createRoot(root).render(
    <StrictMode>
      <App />
    </StrictMode>,
  );
}
