//! Small shared widgets: a meter, a two-step confirm button, a copy button, a badge.

import { useEffect, useState, type ReactNode } from 'react';
import { useI18n } from '../i18n';

/** A horizontal bar for a 0-100 value; `warnAt`/`badAt` colour it. */
export function Meter({ pct, warnAt = 80, badAt = 95, testid }: { pct: number | null | undefined; warnAt?: number; badAt?: number; testid?: string }) {
  const v = typeof pct === 'number' && Number.isFinite(pct) ? Math.max(0, Math.min(100, pct)) : null;
  const cls = v === null ? 'none' : v >= badAt ? 'bad' : v >= warnAt ? 'warn' : 'ok';
  return (
    <div className={`meter ${cls}`} data-testid={testid} data-value={v ?? ''}>
      <div className="meter-fill" style={{ width: `${v ?? 0}%` }} />
    </div>
  );
}

/** A destructive action asks once more in place (no `window.confirm`: Tauri's webview may not show it). */
export function ConfirmButton({
  onConfirm,
  children,
  testid,
  disabled,
  className = 'danger small',
}: {
  onConfirm: () => void | Promise<void>;
  children: ReactNode;
  testid?: string;
  disabled?: boolean;
  className?: string;
}) {
  const { t } = useI18n();
  const [asking, setAsking] = useState(false);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!asking) return;
    const timer = setTimeout(() => setAsking(false), 6000);
    return () => clearTimeout(timer);
  }, [asking]);
  if (!asking)
    return (
      <button className={className} data-testid={testid} disabled={disabled || busy} onClick={() => setAsking(true)}>
        {children}
      </button>
    );
  return (
    <span className="confirm">
      <button
        className="danger small"
        data-testid={testid ? `${testid}-confirm` : undefined}
        disabled={busy}
        onClick={async () => {
          setBusy(true);
          try {
            await onConfirm();
          } finally {
            setBusy(false);
            setAsking(false);
          }
        }}
      >
        {t('action.confirm')}
      </button>
      <button className="small" onClick={() => setAsking(false)}>
        {t('action.cancel')}
      </button>
    </span>
  );
}

export function CopyButton({ text, testid }: { text: string; testid?: string }) {
  const { t } = useI18n();
  const [done, setDone] = useState<'copied' | 'failed' | null>(null);
  return (
    <button
      className="small"
      data-testid={testid}
      onClick={async () => {
        try {
          await navigator.clipboard.writeText(text);
          setDone('copied');
        } catch {
          setDone('failed');
        }
        setTimeout(() => setDone(null), 2500);
      }}
    >
      {done === 'copied' ? t('action.copied') : done === 'failed' ? t('action.copyFailed') : t('action.copy')}
    </button>
  );
}

export function Badge({ kind, children, testid }: { kind: string; children: ReactNode; testid?: string }) {
  return (
    <span className={`badge ${kind}`} data-testid={testid}>
      {children}
    </span>
  );
}

export function Dot({ state, label }: { state: 'up' | 'down' | 'unknown'; label: string }) {
  return <span className={`dot ${state}`} title={label} aria-label={label} data-state={state} />;
}

export function Stat({ label, value, sub, testid }: { label: string; value: ReactNode; sub?: ReactNode; testid?: string }) {
  return (
    <div className="stat" data-testid={testid}>
      <div className="stat-label">{label}</div>
      <div className="stat-value">{value}</div>
      {sub && <div className="stat-sub">{sub}</div>}
    </div>
  );
}
