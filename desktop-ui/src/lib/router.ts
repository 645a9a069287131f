/**
 * A hash router (`#/overview`): works from `file:`-like origins (Tauri) and under any path
 * the daemon serves the console at, with no server-side routes.
 */

import { useEffect, useState } from 'react';

export const ROUTES = ['connect', 'overview', 'gpus', 'models', 'keys', 'experts', 'profile', 'audit'] as const;
export type Route = (typeof ROUTES)[number];

export function parseHash(hash: string): Route | null {
  const name = hash.replace(/^#\/?/, '').split(/[/?]/)[0];
  return (ROUTES as readonly string[]).includes(name) ? (name as Route) : null;
}

export function navigate(route: Route) {
  window.location.hash = `#/${route}`;
}

export function useRoute(): Route | null {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const on = () => setRoute(parseHash(window.location.hash));
    window.addEventListener('hashchange', on);
    return () => window.removeEventListener('hashchange', on);
  }, []);
  return route;
}
