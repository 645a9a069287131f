//! Audit log: the newest entries of the daemon's hash-chained log, filterable by actor,
//! action and result, with whether the chain verifies.

import { useMemo, useState } from 'react';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { filterAudit, type AuditFilter } from '../lib/audit';
import { usePoll } from '../lib/usePoll';
import { Async, Card, Empty } from '../components/States';
import { Badge } from '../components/Widgets';

export function Audit() {
  const { t, num, dateTime } = useI18n();
  const api = useApi();
  const audit = usePoll(() => api.audit(1000), 10000, [api]);
  const [f, setF] = useState<AuditFilter>({ actor: '', action: '', result: '' });
  const entries = useMemo(() => (audit.data ? filterAudit([...audit.data.data].reverse(), f) : []), [audit.data, f]);
  return (
    <div>
      <h1>{t('audit.title')}</h1>
      <Async {...audit} retry={audit.reload}>
        {(a) => (
          <>
            <div className={`banner ${a.chain_ok ? 'ok' : 'down'}`} data-testid="chain-status" data-ok={a.chain_ok}>
              <strong>{a.chain_ok ? t('audit.chainOk') : t('audit.chainBroken')}</strong>{' '}
              <span className="muted">{t('audit.entriesTotal', { n: num(a.entries_total) })}</span>
              {a.chain_error && <div>{a.chain_error}</div>}
            </div>
            <Card
              title={t('audit.entries')}
              testid="audit"
              actions={
                <div className="filters">
                  {(['actor', 'action', 'result'] as const).map((k) => (
                    <input
                      key={k}
                      data-testid={`audit-filter-${k}`}
                      placeholder={t(`audit.filter.${k}`)}
                      aria-label={t(`audit.filter.${k}`)}
                      value={f[k]}
                      onChange={(e) => setF({ ...f, [k]: e.target.value })}
                    />
                  ))}
                </div>
              }
            >
              {entries.length === 0 ? (
                <Empty>{a.data.length === 0 ? t('audit.none') : t('audit.noMatch')}</Empty>
              ) : (
                <table className="table">
                  <thead>
                    <tr>
                      <th className="num">#</th>
                      <th>{t('audit.when')}</th>
                      <th>{t('audit.actor')}</th>
                      <th>{t('audit.action')}</th>
                      <th>{t('audit.result')}</th>
                      <th>{t('audit.from')}</th>
                      <th>{t('audit.detail')}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {entries.map((e) => (
                      <tr key={e.seq} data-testid="audit-row" data-action={e.action}>
                        <td className="num">{e.seq}</td>
                        <td>{dateTime(e.ts_ms)}</td>
                        <td>{e.actor}</td>
                        <td>
                          <code>{e.action}</code>
                        </td>
                        <td>
                          <Badge kind={e.detail?.outcome === 'ok' ? 'ok' : 'bad'}>{e.detail?.outcome ?? '—'}</Badge>
                        </td>
                        <td>{e.detail?.from ?? ''}</td>
                        <td className="small detail">
                          <code>{e.detail?.what === undefined ? '' : JSON.stringify(e.detail.what)}</code>
                        </td>
                      </tr>
                    ))}
                  </tbody>
                </table>
              )}
            </Card>
          </>
        )}
      </Async>
    </div>
  );
}
