//! The alert list (Overview's firing alerts, the GPUs screen's alerts): severity, state,
//! message, the recommended action, whether it is silenced (until when, by whom) and, with
//! `actions`, the controls to silence it for 1 h / 24 h / 7 d or to lift the silence.

import { useState } from 'react';
import type { Alert } from '../api/types';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { SILENCE_CHOICES, isSilenced, withUpdates, type AlertUpdate } from '../lib/alerts';
import { ErrorBox } from './States';
import { Badge } from './Widgets';

export function AlertList({
  alerts,
  showState,
  actions,
  onChanged,
}: {
  alerts: Alert[];
  showState?: boolean;
  /** Show the silence controls. */
  actions?: boolean;
  /** Called after the daemon confirmed a change (to reload the list). */
  onChanged?: () => void;
}) {
  // The daemon's answers to silence requests, shown until the poll catches up.
  const [updates, setUpdates] = useState<Map<string, AlertUpdate>>(new Map());
  const now = Date.now();
  const list = withUpdates(alerts, updates, now);
  const changed = (a: Alert) => {
    setUpdates((m) => new Map(m).set(a.key, { alert: a, at: Date.now() }));
    onChanged?.();
  };
  return (
    <ul className="alerts">
      {list.map((a) => (
        <AlertRow key={a.key} a={a} now={now} showState={showState} actions={actions} onChanged={changed} />
      ))}
    </ul>
  );
}

function AlertRow({
  a,
  now,
  showState,
  actions,
  onChanged,
}: {
  a: Alert;
  now: number;
  showState?: boolean;
  actions?: boolean;
  onChanged: (a: Alert) => void;
}) {
  const { t, te, dateTime } = useI18n();
  const silenced = isSilenced(a, now);
  return (
    <li
      data-testid="alert-row"
      data-key={a.key}
      data-rule={a.rule}
      data-state={a.state}
      data-silenced={silenced}
      className={`alert ${a.severity} ${a.state}${silenced ? ' silenced' : ''}`}
    >
      <div>
        <Badge kind={a.severity === 'critical' ? 'bad' : a.severity === 'warning' ? 'warn' : 'info'}>{te('severity', a.severity)}</Badge>{' '}
        {showState && <Badge kind={a.state === 'firing' ? 'bad' : 'none'}>{te('alertState', a.state)}</Badge>}{' '}
        <strong data-testid="alert-message">{a.message}</strong>
      </div>
      {a.action && (
        <div className="small">
          <span className="muted">{t('alerts.action')}</span> <span data-testid="alert-action">{a.action}</span>
        </div>
      )}
      <div className="muted small">
        {t('alerts.since', { when: dateTime(a.first_seen_ms) })}
        {a.resolved_ms ? ` · ${t('alerts.resolvedAt', { when: dateTime(a.resolved_ms) })}` : ''}
      </div>
      {silenced && (
        <div className="small">
          <Badge kind="info" testid="alert-silenced">
            {a.silenced_by
              ? t('alerts.silencedUntilBy', { when: dateTime(a.silenced_until_ms), who: a.silenced_by })
              : t('alerts.silencedUntil', { when: dateTime(a.silenced_until_ms) })}
          </Badge>
        </div>
      )}
      {actions && <SilenceControls a={a} silenced={silenced} onChanged={onChanged} />}
    </li>
  );
}

function SilenceControls({ a, silenced, onChanged }: { a: Alert; silenced: boolean; onChanged: (a: Alert) => void }) {
  const { t } = useI18n();
  const api = useApi();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async (f: () => Promise<Alert>) => {
    setBusy(true);
    setError(null);
    try {
      onChanged(await f());
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="alert-actions" data-testid="alert-actions">
      {silenced ? (
        <button className="small" data-testid="alert-unsilence" disabled={busy} onClick={() => run(() => api.unsilenceAlert(a.key))}>
          {t('alerts.unsilence')}
        </button>
      ) : (
        <span className="inline" role="group" aria-label={t('alerts.silence')}>
          <span className="muted small">{t('alerts.silence')}</span>
          {SILENCE_CHOICES.map((c) => (
            <button
              key={c.id}
              className="small"
              data-testid={`alert-silence-${c.id}`}
              disabled={busy}
              title={t('alerts.silenceFor', { span: t(`silence.${c.id}`) })}
              onClick={() => run(() => api.silenceAlert(a.key, c.minutes))}
            >
              {t(`silence.${c.id}`)}
            </button>
          ))}
        </span>
      )}
      {error ? <ErrorBox error={error} compact /> : null}
    </div>
  );
}
