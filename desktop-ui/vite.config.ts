// The console's build: one bundle with relative asset paths (`base: './'`), so the same
// `dist/` works at `/` in the daemon and as Tauri's `frontendDist`. Nothing is loaded from
// a CDN: the box and the admin may be offline.
import { defineConfig } from 'vitest/config';
import react from '@vitejs/plugin-react';

const daemon = process.env.OASIS_DEV_DAEMON || 'http://127.0.0.1:8091';

// The daemon's policy for the console (appliance-daemon/src/server/console.rs), applied by
// `vite preview` too so a CSP problem shows before the daemon serves the build. (The dev
// server cannot use it: its hot reload injects an inline script.)
const CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
  "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; " +
  "object-src 'none'; base-uri 'self'; frame-ancestors 'none'; form-action 'self'";
const proxied = ['/admin', '/v1', '/healthz', '/readyz', '/metrics', '/openapi.json'];

export default defineConfig({
  base: './',
  plugins: [
    react(),
    {
      name: 'oasis-preview-csp',
      configurePreviewServer(server) {
        server.middlewares.use((_req, res, next) => {
          res.setHeader('Content-Security-Policy', CSP);
          next();
        });
      },
    },
  ],
  build: {
    outDir: 'dist',
    emptyOutDir: true,
    // The daemon serves these files under a strict CSP (no inline scripts).
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    chunkSizeWarningLimit: 800,
  },
  server: {
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: daemon, changeOrigin: false }])),
  },
  preview: {
    proxy: Object.fromEntries(proxied.map((p) => [p, { target: daemon, changeOrigin: false }])),
  },
  test: {
    include: ['src/**/*.test.ts', 'src/**/*.test.tsx'],
    environment: 'node',
  },
});
