//! Connect: the boxes this console knows with their health, and pairing a new one with
//! the one-time code the box printed. The desktop app shows the certificate's fingerprint
//! and pairs only once the admin confirms it; the browser has verified the certificate
//! itself (or says the link is plain HTTP), and lists the fingerprint the box sent in its
//! pairing answer over HTTPS beside the box.

import { useEffect, useState } from 'react';
import { messageOf } from '../api/errors';
import type { Probe } from '../api/transport';
import { useConnection } from '../connection';
import { useI18n } from '../i18n';
import { navigate } from '../lib/router';
import { Card, Empty, ErrorBox } from '../components/States';
import { Badge, ConfirmButton, Dot } from '../components/Widgets';

export function Connect() {
  const { t } = useI18n();
  const conn = useConnection();
  const tauri = conn.transport.kind === 'tauri';
  const [address, setAddress] = useState(tauri ? '' : window.location.origin);
  const [code, setCode] = useState('');
  const [name, setName] = useState(tauri ? t('connect.defaultNameDesktop') : t('connect.defaultNameBrowser'));
  const [probe, setProbe] = useState<Probe | null>(null);
  const [probing, setProbing] = useState(false);
  const [confirmed, setConfirmed] = useState(false);
  const [pairing, setPairing] = useState(false);
  const [error, setError] = useState<unknown>(null);

  const check = async (a: string) => {
    setProbing(true);
    setError(null);
    setConfirmed(false);
    try {
      setProbe(await conn.transport.probe(a));
    } catch (e) {
      setProbe(null);
      setError(e);
    } finally {
      setProbing(false);
    }
  };

  // In the browser, the box serving the page is the likely one: check it straight away.
  useEffect(() => {
    if (!tauri) check(window.location.origin);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, []);

  const needsConfirm = tauri && !!probe?.fingerprint;
  const canPair = code.trim() !== '' && address.trim() !== '' && !pairing && (!needsConfirm || confirmed) && (!tauri || !!probe);

  const pair = async () => {
    setPairing(true);
    setError(null);
    try {
      const entry = await conn.transport.pair(probe?.address ?? address, probe?.fingerprint ?? null, code, name.trim() || 'console');
      await conn.reloadBoxes();
      conn.select(entry.id);
      setCode('');
      navigate('overview');
    } catch (e) {
      setError(e);
    } finally {
      setPairing(false);
    }
  };

  return (
    <div className="connect">
      <h1>{t('connect.title')}</h1>
      <p className="muted">{t('connect.intro')}</p>
      <div className="grid two">
        <Card title={t('connect.add')} testid="pair-card">
          <form
            className="form"
            onSubmit={(e) => {
              e.preventDefault();
              if (canPair) pair();
            }}
          >
            <label>
              {t('connect.address')}
              <span className="row">
                <input
                  data-testid="box-address"
                  value={address}
                  placeholder="https://10.0.0.5:8080"
                  onChange={(e) => {
                    setAddress(e.target.value);
                    setProbe(null);
                  }}
                />
                <button type="button" className="small" data-testid="box-check" disabled={probing || address.trim() === ''} onClick={() => check(address)}>
                  {probing ? t('state.checking') : t('connect.check')}
                </button>
              </span>
            </label>
            {probe && <ProbeResult probe={probe} tauri={tauri} confirmed={confirmed} setConfirmed={setConfirmed} />}
            <label>
              {t('connect.code')}
              <input
                data-testid="pair-code"
                value={code}
                autoComplete="off"
                placeholder="XXXX-XXXX-XXXX-XXXX"
                onChange={(e) => setCode(e.target.value.toUpperCase())}
              />
              <span className="hint">{t('connect.codeHint')}</span>
            </label>
            <label>
              {t('connect.name')}
              <input data-testid="pair-name" value={name} onChange={(e) => setName(e.target.value)} />
            </label>
            <button type="submit" className="primary" data-testid="pair-submit" disabled={!canPair}>
              {pairing ? t('state.pairing') : t('connect.pair')}
            </button>
            {error ? <ErrorBox error={error} /> : null}
          </form>
        </Card>
        <BoxList />
      </div>
    </div>
  );
}

function ProbeResult({
  probe,
  tauri,
  confirmed,
  setConfirmed,
}: {
  probe: Probe;
  tauri: boolean;
  confirmed: boolean;
  setConfirmed: (v: boolean) => void;
}) {
  const { t } = useI18n();
  return (
    <div className="probe" data-testid="probe-result" data-healthy={probe.healthy}>
      <div>
        <Dot state={probe.healthy ? 'up' : 'down'} label={t('connect.health')} />{' '}
        {probe.healthy ? t('connect.answers', { address: probe.address }) : t('connect.noAnswer', { address: probe.address })}
        {probe.error && <span className="muted"> — {probe.error}</span>}
      </div>
      {probe.fingerprint ? (
        <div className="fingerprint">
          <div>{t('connect.fingerprint')}</div>
          <code data-testid="fingerprint">{probe.fingerprint}</code>
          {tauri && (
            <label className="check">
              <input type="checkbox" data-testid="fingerprint-confirm" checked={confirmed} onChange={(e) => setConfirmed(e.target.checked)} />{' '}
              {t('connect.fingerprintConfirm')}
            </label>
          )}
        </div>
      ) : probe.tls ? (
        <div className="muted">{tauri ? t('connect.noFingerprint') : t('connect.browserVerified')}</div>
      ) : (
        <div className="warn-text">{t('connect.plainHttp')}</div>
      )}
    </div>
  );
}

function BoxList() {
  const { t, te } = useI18n();
  const conn = useConnection();
  const [error, setError] = useState<string | null>(null);
  return (
    <Card title={t('connect.boxes')} testid="box-list">
      {conn.listError && <ErrorBox error={conn.listError} />}
      {conn.boxes.length === 0 ? (
        <Empty>{t('connect.noBoxes')}</Empty>
      ) : (
        <ul className="boxes">
          {conn.boxes.map((b) => (
            <li key={b.id} data-testid="box-item" data-paired={b.paired} className={b.id === conn.active?.id ? 'active' : ''}>
              <Dot state={conn.health[b.id] ?? 'unknown'} label={te('health', conn.health[b.id] ?? 'unknown')} />
              <div className="box-main">
                <div>
                  <strong>{b.name}</strong> <span className="muted">{b.address}</span>
                </div>
                <div className="muted small">
                  {b.paired ? <Badge kind="ok">{t('connect.paired')}</Badge> : <Badge kind="none">{t('connect.notPaired')}</Badge>}{' '}
                  {t('connect.tokenStore', { store: b.token_store })}
                  {b.fingerprint && (
                    <div className="fingerprint" title={t('connect.fingerprint')}>
                      {t('connect.fingerprint')}{' '}
                      <code className="small" data-testid="box-fingerprint">
                        {b.fingerprint}
                      </code>
                    </div>
                  )}
                </div>
              </div>
              <div className="box-actions">
                {b.paired && b.id !== conn.active?.id && (
                  <button className="small" onClick={() => conn.select(b.id)}>
                    {t('connect.use')}
                  </button>
                )}
                {b.id === conn.active?.id && <Badge kind="info">{t('connect.current')}</Badge>}
                {(b.paired || conn.transport.kind === 'tauri') && (
                  <ConfirmButton
                    onConfirm={async () => {
                      try {
                        await conn.transport.removeBox(b.id);
                        await conn.reloadBoxes();
                      } catch (e) {
                        setError(messageOf(e));
                      }
                    }}
                  >
                    {conn.transport.kind === 'tauri' ? t('connect.remove') : t('connect.forget')}
                  </ConfirmButton>
                )}
              </div>
            </li>
          ))}
        </ul>
      )}
      {error && <ErrorBox error={error} />}
    </Card>
  );
}
