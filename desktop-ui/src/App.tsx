//! The shell: header (box, language), navigation, the disconnected banner, and the screen
//! the hash names. Without a paired box the console shows the Connect screen.

import { useEffect, useState, type ReactNode } from 'react';
import { ConnectionProvider, useConnection } from './connection';
import { I18nProvider, LOCALES, useI18n, type MessageKey } from './i18n';
import { navigate, useRoute, type Route } from './lib/router';
import { Loading } from './components/States';
import { Dot } from './components/Widgets';
import { Connect } from './screens/Connect';
import { Overview } from './screens/Overview';
import { Gpus } from './screens/Gpus';
import { Models } from './screens/Models';
import { Keys } from './screens/Keys';
import { Experts } from './screens/Experts';
import { Profile } from './screens/Profile';
import { Audit } from './screens/Audit';

export function App() {
  return (
    <I18nProvider>
      <ConnectionProvider>
        <Shell />
      </ConnectionProvider>
    </I18nProvider>
  );
}

const NAV: { route: Route; label: MessageKey }[] = [
  { route: 'overview', label: 'nav.overview' },
  { route: 'gpus', label: 'nav.gpus' },
  { route: 'models', label: 'nav.models' },
  { route: 'keys', label: 'nav.keys' },
  { route: 'experts', label: 'nav.experts' },
  { route: 'profile', label: 'nav.profile' },
  { route: 'audit', label: 'nav.audit' },
  { route: 'connect', label: 'nav.connect' },
];

const SCREENS: Record<Route, () => ReactNode> = {
  connect: () => <Connect />,
  overview: () => <Overview />,
  gpus: () => <Gpus />,
  models: () => <Models />,
  keys: () => <Keys />,
  experts: () => <Experts />,
  profile: () => <Profile />,
  audit: () => <Audit />,
};

function Shell() {
  const { t } = useI18n();
  const conn = useConnection();
  const hashRoute = useRoute();
  const route: Route = !conn.active ? 'connect' : (hashRoute ?? 'overview');

  useEffect(() => {
    if (conn.loaded && conn.active && hashRoute === null) navigate('overview');
  }, [conn.loaded, conn.active, hashRoute]);

  if (!conn.loaded) return <Loading what={t('state.loadingBoxes')} />;
  return (
    <div className="shell" data-route={route}>
      <Header route={route} />
      <DisconnectedBanner />
      <main className="screen" data-testid={`screen-${route}`} key={`${route}-${conn.active?.id ?? ''}`}>
        {SCREENS[route]()}
      </main>
    </div>
  );
}

function Header({ route }: { route: Route }) {
  const { t, locale, setLocale } = useI18n();
  const conn = useConnection();
  const paired = conn.boxes.filter((b) => b.paired);
  return (
    <header className="topbar">
      <div className="brand">
        <span className="logo" aria-hidden>
          ◐
        </span>{' '}
        Oasis <span className="muted">{t('app.subtitle')}</span>
      </div>
      {paired.length > 0 && (
        <label className="box-select">
          <Dot state={conn.health[conn.active?.id ?? ''] ?? 'unknown'} label={t('connect.health')} />
          <select
            data-testid="box-select"
            value={conn.active?.id ?? ''}
            onChange={(e) => conn.select(e.target.value)}
            aria-label={t('connect.activeBox')}
          >
            {paired.map((b) => (
              <option key={b.id} value={b.id}>
                {b.name}
              </option>
            ))}
          </select>
        </label>
      )}
      <div className="lang" role="group" aria-label={t('app.language')}>
        {LOCALES.map((l) => (
          <button
            key={l}
            className={`small${l === locale ? ' active' : ''}`}
            data-testid={l === 'en' ? 'lang-en' : 'lang-zh'}
            onClick={() => setLocale(l)}
            aria-pressed={l === locale}
          >
            {l === 'en' ? 'English' : '中文'}
          </button>
        ))}
      </div>
      {conn.active && (
        <nav className="nav">
          {NAV.map((n) => (
            <a
              key={n.route}
              href={`#/${n.route}`}
              data-testid={`nav-${n.route}`}
              className={n.route === route ? 'active' : ''}
              aria-current={n.route === route ? 'page' : undefined}
            >
              {t(n.label)}
            </a>
          ))}
        </nav>
      )}
    </header>
  );
}

function DisconnectedBanner() {
  const { t } = useI18n();
  const { link, active, retryNow } = useConnection();
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    if (link.state !== 'down') return;
    const timer = setInterval(() => setNow(Date.now()), 500);
    return () => clearInterval(timer);
  }, [link.state]);
  if (link.state !== 'down' || !active) return null;
  const secs = link.retryAt ? Math.max(0, Math.ceil((link.retryAt - now) / 1000)) : 0;
  return (
    <div className="banner down" data-testid="disconnected-banner" role="alert">
      <strong>{t('banner.disconnected', { box: active.name })}</strong> <span>{link.error}</span>{' '}
      <span className="muted">{secs > 0 ? t('banner.retryIn', { s: secs }) : t('banner.retrying')}</span>
      <button className="small" onClick={retryNow}>
        {t('action.retryNow')}
      </button>
    </div>
  );
}
