//! Experts: for each mixture-of-experts model, a heatmap of tokens per expert per layer,
//! where each expert sits across the engine ranks with each rank's load, the imbalance
//! ratio, and a "rebalance now" action that asks the daemon for a new placement.

import { useState } from 'react';
import type { BoxApi } from '../api/client';
import type { ModelExperts, RebalanceReport } from '../api/types';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { expertsByRank, heat, heatColour, summarise } from '../lib/experts';
import { usePoll } from '../lib/usePoll';
import { Async, Card, Empty, ErrorBox } from '../components/States';
import { Badge, Stat } from '../components/Widgets';

export function Experts() {
  const { t } = useI18n();
  const api = useApi();
  const experts = usePoll(() => api.experts(), 5000, [api]);
  return (
    <div>
      <h1>{t('experts.title')}</h1>
      <p className="muted">{t('experts.intro')}</p>
      <Async {...experts} retry={experts.reload}>
        {(e) =>
          e.models.length === 0 ? (
            <Empty>{t('experts.none')}</Empty>
          ) : (
            e.models.map((m) => <ModelCard key={m.id} m={m} api={api} onChange={experts.reload} />)
          )
        }
      </Async>
    </div>
  );
}

function ModelCard({ m, api, onChange }: { m: ModelExperts; api: BoxApi; onChange: () => void }) {
  const { t, num } = useI18n();
  const hasWindow = m.window_tokens.length > 0;
  const [view, setView] = useState<'total' | 'window'>('total');
  const loads = view === 'window' && hasWindow ? m.window_tokens : m.expert_tokens;
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<RebalanceReport | null>(null);
  const [error, setError] = useState<unknown>(null);

  const rebalance = async () => {
    setBusy(true);
    setError(null);
    setResult(null);
    try {
      setResult(await api.rebalance(m.id));
      onChange();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const summary = summarise(m.placement, loads, m.slots_per_rank, m.ranks);
  const total = loads.reduce((a, row) => a + row.reduce((x, y) => x + y, 0), 0);
  return (
    <Card
      title={m.id}
      testid={`experts-${m.id}`}
      actions={
        <button className="primary small" data-testid="rebalance" disabled={busy} onClick={rebalance}>
          {busy ? t('state.working') : t('experts.rebalance')}
        </button>
      }
    >
      <div className="stats">
        <Stat label={t('experts.imbalance')} value={<span data-testid="imbalance">{num(m.imbalance, 2)}</span>} sub={t('experts.imbalanceHint')} />
        <Stat label={t('experts.layers')} value={num(m.expert_tokens.length)} />
        <Stat label={t('experts.experts')} value={num(m.expert_tokens[0]?.length ?? 0)} />
        <Stat label={t('experts.ranks')} value={num(m.ranks)} sub={t('experts.slotsPerRank', { n: num(m.slots_per_rank) })} />
        <Stat label={t('experts.rebalances')} value={num(m.rebalances)} />
        <Stat label={t('experts.tokens')} value={num(total)} />
      </div>
      {error ? <ErrorBox error={error} /> : null}
      {result && <RebalanceResult r={result} />}
      <div className="tabs">
        <button className={`small${view === 'total' ? ' active' : ''}`} onClick={() => setView('total')}>
          {t('experts.sinceStart')}
        </button>
        <button className={`small${view === 'window' ? ' active' : ''}`} disabled={!hasWindow} onClick={() => setView('window')}>
          {t('experts.window')}
        </button>
      </div>
      <h3>{t('experts.heatmap')}</h3>
      {total === 0 && <p className="muted small">{t('experts.noLoad')}</p>}
      <Heatmap loads={loads} />
      <h3>{t('experts.placement')}</h3>
      {m.placement.length === 0 ? (
        <Empty>{t('experts.noPlacement')}</Empty>
      ) : (
        <table className="table placement" data-testid="placement">
          <thead>
            <tr>
              <th>{t('experts.layer')}</th>
              {Array.from({ length: m.ranks }, (_, r) => (
                <th key={r}>{t('experts.rank', { n: r })}</th>
              ))}
              <th className="num">{t('experts.imbalance')}</th>
            </tr>
          </thead>
          <tbody>
            {m.placement.map((p, layer) => {
              const byRank = expertsByRank(p, m.slots_per_rank, m.ranks);
              const s = summary[layer];
              const max = Math.max(1, ...(s?.rank_loads ?? [1]));
              return (
                <tr key={layer}>
                  <td>{layer}</td>
                  {byRank.map((ex, r) => (
                    <td key={r} style={{ background: heatColour((s?.rank_loads[r] ?? 0) / max) }} title={num(s?.rank_loads[r] ?? 0)}>
                      {ex.map((e) => `E${e}`).join(' ')}
                    </td>
                  ))}
                  <td className="num">{num(s?.imbalance ?? 1, 2)}</td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </Card>
  );
}

function Heatmap({ loads }: { loads: number[][] }) {
  const { t, num } = useI18n();
  const h = heat(loads);
  const experts = loads[0]?.length ?? 0;
  return (
    <div className="heatmap" data-testid="heatmap" data-layers={loads.length} data-experts={experts}>
      <div className="heat-row heat-head" style={{ gridTemplateColumns: `5em repeat(${experts}, minmax(1.6em, 1fr))` }}>
        <span />
        {Array.from({ length: experts }, (_, e) => (
          <span key={e} className="heat-col">
            E{e}
          </span>
        ))}
      </div>
      {loads.map((row, layer) => (
        <div key={layer} className="heat-row" data-testid="heat-layer" style={{ gridTemplateColumns: `5em repeat(${experts}, minmax(1.6em, 1fr))` }}>
          <span className="heat-label">{t('experts.layerN', { n: layer })}</span>
          {row.map((v, e) => (
            <span key={e} className="heat-cell" style={{ background: heatColour(h[layer][e]) }} title={`${t('experts.layerN', { n: layer })} E${e}: ${num(v)}`}>
              {v > 0 ? num(v) : ''}
            </span>
          ))}
        </div>
      ))}
    </div>
  );
}

function RebalanceResult({ r }: { r: RebalanceReport }) {
  const { t, num } = useI18n();
  const changed = r.before.some((b, i) => Math.abs(b - (r.after[i] ?? b)) > 1e-9);
  return (
    <div className="result" data-testid="rebalance-result" data-changed={changed}>
      <strong>{changed ? t('experts.rebalanced') : t('experts.alreadyBalanced')}</strong>{' '}
      <span className="muted">{t('experts.windowTokens', { n: num(r.window_tokens) })}</span>
      <table className="table compact">
        <thead>
          <tr>
            <th>{t('experts.layer')}</th>
            <th className="num">{t('experts.before')}</th>
            <th className="num">{t('experts.after')}</th>
          </tr>
        </thead>
        <tbody>
          {r.before.map((b, i) => (
            <tr key={i}>
              <td>{i}</td>
              <td className="num">{num(b, 2)}</td>
              <td className="num">
                {num(r.after[i], 2)} {r.after[i] < b && <Badge kind="ok">↓</Badge>}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}
