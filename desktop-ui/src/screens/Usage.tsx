//! Usage: tokens and requests per key, model or day over a range of UTC days, as a chart
//! and a table, with a CSV export of the same rows.

import { useMemo, useState } from 'react';
import type { Options } from 'uplot';
import type { BoxApi } from '../api/client';
import type { KeyView, UsageReport } from '../api/types';
import { useI18n, type I18n } from '../i18n';
import { uplotFmtDate } from '../lib/chartTime';
import { utcDay } from '../lib/format';
import { usePoll } from '../lib/usePoll';
import { Chart } from '../components/Chart';
import { Async, Card, Empty, ErrorBox } from '../components/States';

type Group = 'key' | 'model' | 'day';

export function Usage({ api, keys }: { api: BoxApi; keys: KeyView[] }) {
  const i18n = useI18n();
  const { t } = i18n;
  const [group, setGroup] = useState<Group>('key');
  const [from, setFrom] = useState(() => utcDay(Date.now() - 30 * 86_400_000));
  const [to, setTo] = useState(() => utcDay(Date.now()));
  const usage = usePoll(() => api.usage(group, from, to), 10000, [api, group, from, to]);
  const [csvError, setCsvError] = useState<unknown>(null);

  const download = async () => {
    setCsvError(null);
    try {
      const csv = await api.usageCsv(group, from, to);
      const url = URL.createObjectURL(new Blob([csv], { type: 'text/csv;charset=utf-8' }));
      const a = document.createElement('a');
      a.href = url;
      a.download = `oasis-usage-${group}-${from}-${to}.csv`;
      document.body.appendChild(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setCsvError(e);
    }
  };

  const names = new Map(keys.map((k) => [k.id, k.name]));
  return (
    <Card
      title={t('usage.title')}
      testid="usage"
      actions={
        <>
          <div className="tabs" role="tablist">
            {(['key', 'model', 'day'] as Group[]).map((g) => (
              <button key={g} role="tab" aria-selected={g === group} className={`small${g === group ? ' active' : ''}`} data-testid={`usage-group-${g}`} onClick={() => setGroup(g)}>
                {t(`usage.by.${g}`)}
              </button>
            ))}
          </div>
          <input type="date" value={from} onChange={(e) => e.target.value && setFrom(e.target.value)} aria-label={t('usage.from')} />
          <input type="date" value={to} onChange={(e) => e.target.value && setTo(e.target.value)} aria-label={t('usage.to')} />
          <button className="small" data-testid="usage-csv" onClick={download}>
            {t('usage.csv')}
          </button>
        </>
      }
    >
      {csvError ? <ErrorBox error={csvError} compact /> : null}
      <p className="muted small">{t('usage.utc')}</p>
      <Async {...usage} retry={usage.reload}>
        {(u) =>
          u.data.length === 0 ? (
            <Empty>{t('usage.none')}</Empty>
          ) : (
            <>
              {u.group_by === 'day' ? <DayChart u={u} i18n={i18n} /> : <Bars u={u} names={names} />}
              <UsageTable u={u} names={names} />
            </>
          )
        }
      </Async>
    </Card>
  );
}

function label(group: string, name: string | null | undefined, names: Map<string, string>) {
  return name ?? names.get(group) ?? group;
}

/** Horizontal bars for keys and models: prompt and completion tokens stacked. */
function Bars({ u, names }: { u: UsageReport; names: Map<string, string> }) {
  const { t, num } = useI18n();
  const max = Math.max(1, ...u.data.map((r) => r.total_tokens));
  return (
    <div className="bars" data-testid="usage-chart">
      {u.data.map((r) => (
        <div className="bar-row" key={r.group} title={`${num(r.prompt_tokens)} + ${num(r.completion_tokens)}`}>
          <span className="bar-label">{label(r.group, r.name, names)}</span>
          <span className="bar-track">
            <span className="bar prompt" style={{ width: `${(100 * r.prompt_tokens) / max}%` }} />
            <span className="bar completion" style={{ width: `${(100 * r.completion_tokens) / max}%` }} />
          </span>
          <span className="bar-value">{num(r.total_tokens)}</span>
        </div>
      ))}
      <div className="legend small">
        <span className="swatch prompt" /> {t('usage.prompt')} <span className="swatch completion" /> {t('usage.completion')}
      </div>
    </div>
  );
}

function DayChart({ u, i18n }: { u: UsageReport; i18n: I18n }) {
  const options = useMemo<Omit<Options, 'width' | 'height'>>(
    () => ({
      fmtDate: uplotFmtDate(i18n.locale),
      legend: { show: true },
      scales: { x: { time: true } },
      axes: [{}, { size: 60, values: (_u, vals) => vals.map((v) => i18n.compact(v)) }],
      series: [
        { label: i18n.t('usage.by.day') },
        { label: i18n.t('usage.prompt'), stroke: '#6366f1', fill: 'rgba(99,102,241,0.15)', width: 2, value: (_u, v) => i18n.num(v) },
        { label: i18n.t('usage.completion'), stroke: '#0f766e', fill: 'rgba(15,118,110,0.15)', width: 2, value: (_u, v) => i18n.num(v) },
      ],
    }),
    [i18n],
  );
  const data = useMemo(
    () =>
      [u.data.map((r) => Date.parse(`${r.group}T00:00:00Z`) / 1000), u.data.map((r) => r.prompt_tokens), u.data.map((r) => r.completion_tokens)] as [
        number[],
        number[],
        number[],
      ],
    [u],
  );
  return (
    <div data-testid="usage-chart">
      <Chart options={options} data={data} height={180} />
    </div>
  );
}

function UsageTable({ u, names }: { u: UsageReport; names: Map<string, string> }) {
  const { t, num } = useI18n();
  return (
    <table className="table">
      <thead>
        <tr>
          <th>{t(`usage.by.${u.group_by}`)}</th>
          <th className="num">{t('usage.requests')}</th>
          <th className="num">{t('usage.prompt')}</th>
          <th className="num">{t('usage.completion')}</th>
          <th className="num">{t('usage.total')}</th>
          <th className="num">{t('usage.failed')}</th>
        </tr>
      </thead>
      <tbody>
        {u.data.map((r) => (
          <tr key={r.group} data-testid="usage-row" data-group={r.group} data-total={r.total_tokens}>
            <td>
              {label(r.group, r.name, names)}
              {u.group_by === 'key' && <span className="muted small"> {r.group}</span>}
            </td>
            <td className="num">{num(r.requests)}</td>
            <td className="num">{num(r.prompt_tokens)}</td>
            <td className="num">{num(r.completion_tokens)}</td>
            <td className="num">
              <strong>{num(r.total_tokens)}</strong>
            </td>
            <td className="num">{num(r.failed)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
