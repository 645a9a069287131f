//! Loading, empty and error states: every screen shows one of these rather than nothing.

import type { ReactNode } from 'react';
import { ApiError, messageOf } from '../api/errors';
import { useConnection } from '../connection';
import { useI18n } from '../i18n';

export function Loading({ what }: { what?: string }) {
  const { t } = useI18n();
  return (
    <div className="state loading" data-testid="loading" role="status">
      <span className="spinner" aria-hidden /> {what ?? t('state.loading')}
    </div>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return (
    <div className="state empty" data-testid="empty">
      {children}
    </div>
  );
}

/** The daemon's own message, and what to do about the common cases. */
export function ErrorBox({ error, retry, compact }: { error: unknown; retry?: () => void; compact?: boolean }) {
  const { t } = useI18n();
  const e = error instanceof ApiError ? error : null;
  const hint = e?.unauthorized ? t('error.unauthorized') : e?.unreachable ? t('error.unreachable') : null;
  return (
    <div className={`state error${compact ? ' compact' : ''}`} data-testid="error" role="alert">
      <strong>{e && e.status > 0 ? t('error.status', { status: e.status }) : t('error.title')}</strong>{' '}
      <span data-testid="error-message">{messageOf(error)}</span>
      {hint && <div className="hint">{hint}</div>}
      {e?.unauthorized && (
        <a href="#/connect" className="button small">
          {t('connect.pairAgain')}
        </a>
      )}
      {retry && (
        <button className="small" onClick={retry}>
          {t('action.retry')}
        </button>
      )}
    </div>
  );
}

/** Renders `children(data)` once there is data; loading and error states otherwise. */
export function Async<T>({
  data,
  error,
  loading,
  retry,
  children,
}: {
  data: T | null;
  error: unknown;
  loading: boolean;
  retry?: () => void;
  children: (data: T) => ReactNode;
}) {
  // While the whole box is down the banner says so once; each panel keeps its last data,
  // dimmed, instead of repeating the same error.
  const down = useConnection().link.state === 'down';
  if (data !== null)
    return (
      <div className={down ? 'stale' : undefined}>
        {error && !down ? <ErrorBox error={error} retry={retry} compact /> : null}
        {children(data)}
      </div>
    );
  if (error) return <ErrorBox error={error} retry={retry} />;
  if (loading) return <Loading />;
  return <Loading />;
}

export function Card({ title, children, actions, testid }: { title?: ReactNode; children: ReactNode; actions?: ReactNode; testid?: string }) {
  return (
    <section className="card" data-testid={testid}>
      {(title || actions) && (
        <header className="card-head">
          {title && <h2>{title}</h2>}
          {actions && <div className="card-actions">{actions}</div>}
        </header>
      )}
      {children}
    </section>
  );
}
