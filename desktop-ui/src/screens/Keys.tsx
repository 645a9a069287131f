//! Keys & usage: create keys (role, models, rate limits, quotas, expiry) with the token
//! shown once, revoke them; their usage below (`Usage.tsx`).

import { useState } from 'react';
import type { BoxApi } from '../api/client';
import type { CreateKey, KeyView } from '../api/types';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { usePoll } from '../lib/usePoll';
import { Async, Card, Empty, ErrorBox } from '../components/States';
import { Usage } from './Usage';
import { Badge, ConfirmButton, CopyButton } from '../components/Widgets';

export function Keys() {
  const { t } = useI18n();
  const api = useApi();
  const keys = usePoll(() => api.keys(), 10000, [api]);
  const [created, setCreated] = useState<KeyView | null>(null);
  const [error, setError] = useState<unknown>(null);

  return (
    <div>
      <h1>{t('keys.title')}</h1>
      <div className="grid two">
        <CreateKeyForm
          api={api}
          onCreated={(k) => {
            setCreated(k);
            keys.reload();
          }}
        />
        {created?.key ? (
          <Card title={t('keys.createdTitle')} testid="key-created">
            <p className="warn-text">{t('keys.shownOnce')}</p>
            <div className="token">
              <code data-testid="new-key-token">{created.key}</code>
              <CopyButton text={created.key} testid="copy-token" />
            </div>
            <p className="muted small">
              {created.name} · {created.id} · {created.prefix}
            </p>
            <button className="small" onClick={() => setCreated(null)} data-testid="dismiss-token">
              {t('keys.copiedDone')}
            </button>
          </Card>
        ) : (
          <Card title={t('keys.aboutTitle')}>
            <p className="muted">{t('keys.about')}</p>
          </Card>
        )}
      </div>
      {error ? <ErrorBox error={error} /> : null}
      <Card title={t('keys.list')} testid="keys">
        <Async {...keys} retry={keys.reload}>
          {(k) =>
            k.data.length === 0 ? (
              <Empty>{t('keys.none')}</Empty>
            ) : (
              <KeyTable
                keys={k.data}
                onRevoke={async (id) => {
                  setError(null);
                  try {
                    await api.revokeKey(id);
                  } catch (e) {
                    setError(e);
                  }
                  keys.reload();
                }}
              />
            )
          }
        </Async>
      </Card>
      <Usage api={api} keys={keys.data?.data ?? []} />
    </div>
  );
}

function numberOrUndefined(s: string): number | undefined {
  const n = Number(s.trim());
  return s.trim() === '' || !Number.isFinite(n) ? undefined : n;
}

function CreateKeyForm({ api, onCreated }: { api: BoxApi; onCreated: (k: KeyView) => void }) {
  const { t } = useI18n();
  const served = usePoll(() => api.healthz(), null, [api]);
  const [f, setF] = useState({ name: '', owner: '', role: 'user', rpm: '', tpm: '', tpd: '', tpmonth: '', expires: '' });
  const [models, setModels] = useState<string[]>([]);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const set = (k: keyof typeof f) => (e: { target: { value: string } }) => setF({ ...f, [k]: e.target.value });

  const submit = async () => {
    setBusy(true);
    setError(null);
    const req: CreateKey = { name: f.name.trim(), role: f.role };
    if (f.owner.trim()) req.owner = f.owner.trim();
    if (models.length > 0) req.models = models;
    const rpm = numberOrUndefined(f.rpm);
    const tpm = numberOrUndefined(f.tpm);
    const tpd = numberOrUndefined(f.tpd);
    const tpmonth = numberOrUndefined(f.tpmonth);
    if (rpm !== undefined) req.rpm = rpm;
    if (tpm !== undefined) req.tpm = tpm;
    if (tpd !== undefined) req.tokens_per_day = tpd;
    if (tpmonth !== undefined) req.tokens_per_month = tpmonth;
    // The end of the chosen day, local time.
    if (f.expires) req.expires_at = Math.floor(new Date(`${f.expires}T23:59:59`).getTime() / 1000);
    try {
      const k = await api.createKey(req);
      onCreated(k);
      setF({ ...f, name: '' });
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Card title={t('keys.create')} testid="key-form">
      <form
        className="form"
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <div className="form-grid">
          <label>
            {t('keys.name')}
            <input data-testid="key-name" value={f.name} onChange={set('name')} required />
          </label>
          <label>
            {t('keys.owner')}
            <input data-testid="key-owner" value={f.owner} onChange={set('owner')} />
          </label>
          <label>
            {t('keys.role')}
            <select data-testid="key-role" value={f.role} onChange={set('role')}>
              <option value="user">{t('role.user')}</option>
              <option value="viewer">{t('role.viewer')}</option>
              <option value="admin">{t('role.admin')}</option>
            </select>
          </label>
          <label>
            {t('keys.expires')}
            <input type="date" data-testid="key-expires" value={f.expires} onChange={set('expires')} />
          </label>
          <label>
            {t('keys.rpm')}
            <input inputMode="numeric" data-testid="key-rpm" value={f.rpm} onChange={set('rpm')} placeholder={t('keys.noLimit')} />
          </label>
          <label>
            {t('keys.tpm')}
            <input inputMode="numeric" data-testid="key-tpm" value={f.tpm} onChange={set('tpm')} placeholder={t('keys.noLimit')} />
          </label>
          <label>
            {t('keys.tpd')}
            <input inputMode="numeric" data-testid="key-tpd" value={f.tpd} onChange={set('tpd')} placeholder={t('keys.noLimit')} />
          </label>
          <label>
            {t('keys.tpmonth')}
            <input inputMode="numeric" data-testid="key-tpmonth" value={f.tpmonth} onChange={set('tpmonth')} placeholder={t('keys.noLimit')} />
          </label>
        </div>
        <fieldset className="models-pick">
          <legend>{t('keys.models')}</legend>
          {(served.data?.models ?? []).map((m) => (
            <label key={m} className="check">
              <input
                type="checkbox"
                checked={models.includes(m)}
                onChange={(e) => setModels(e.target.checked ? [...models, m] : models.filter((x) => x !== m))}
              />{' '}
              {m}
            </label>
          ))}
          <span className="hint">{t('keys.modelsHint')}</span>
        </fieldset>
        <button type="submit" className="primary" data-testid="key-create" disabled={busy || f.name.trim() === ''}>
          {t('keys.createButton')}
        </button>
        {error ? <ErrorBox error={error} /> : null}
      </form>
    </Card>
  );
}

function keyStatus(k: KeyView, nowS: number): 'revoked' | 'expired' | 'active' {
  if (k.revoked_at) return 'revoked';
  if (k.expires_at && k.expires_at <= nowS) return 'expired';
  return 'active';
}

function KeyTable({ keys, onRevoke }: { keys: KeyView[]; onRevoke: (id: string) => Promise<void> }) {
  const { t, te, num, date } = useI18n();
  const nowS = Date.now() / 1000;
  const limit = (v?: number | null) => (v == null ? '∞' : num(v));
  return (
    <table className="table">
      <thead>
        <tr>
          <th>{t('keys.name')}</th>
          <th>{t('keys.role')}</th>
          <th>{t('keys.prefix')}</th>
          <th>{t('keys.models')}</th>
          <th>{t('keys.limits')}</th>
          <th>{t('keys.expires')}</th>
          <th>{t('keys.status')}</th>
          <th />
        </tr>
      </thead>
      <tbody>
        {keys.map((k) => {
          const s = keyStatus(k, nowS);
          return (
            <tr key={k.id} data-testid={`key-row-${k.id}`} data-status={s} data-name={k.name}>
              <td>
                <strong>{k.name}</strong>
                <div className="muted small">
                  {k.id}
                  {k.owner ? ` · ${k.owner}` : ''} · {date(k.created_at * 1000)}
                </div>
              </td>
              <td>{te('role', k.role)}</td>
              <td>
                <code>{k.prefix}…</code>
              </td>
              <td>{k.models ? k.models.join(', ') : t('keys.allModels')}</td>
              <td className="small">
                {t('keys.limitsLine', {
                  rpm: limit(k.limits.rpm),
                  tpm: limit(k.limits.tpm),
                  tpd: limit(k.limits.tokens_per_day),
                  tpmonth: limit(k.limits.tokens_per_month),
                })}
              </td>
              <td>{k.expires_at ? date(k.expires_at * 1000) : t('keys.never')}</td>
              <td>
                <Badge kind={s === 'active' ? 'ok' : 'none'}>{te('keyStatus', s)}</Badge>
              </td>
              <td>
                {s === 'active' && (
                  <ConfirmButton testid={`revoke-${k.id}`} onConfirm={() => onRevoke(k.id)}>
                    {t('keys.revoke')}
                  </ConfirmButton>
                )}
              </td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
