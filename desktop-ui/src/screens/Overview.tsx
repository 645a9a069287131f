//! Overview: the box at a glance — its GPUs, the engine's load per served model
//! (running and waiting requests, tokens per second, KV cache use), firing alerts and the
//! served models.

import { useRef } from 'react';
import type { DeploymentView, GpuSample, ModelStatus } from '../api/types';
import { useApi } from '../connection';
import { useI18n } from '../i18n';
import { kvUse, parsePrometheus } from '../lib/prometheus';
import { memPct, tokenRates } from '../lib/series';
import { usePoll } from '../lib/usePoll';
import { AlertList } from '../components/AlertList';
import { Async, Card, Empty } from '../components/States';
import { Badge, Meter, Stat } from '../components/Widgets';

export function Overview() {
  const { t, te, duration, num } = useI18n();
  const api = useApi();
  const status = usePoll(() => api.status(), 3000, [api]);
  const gpus = usePoll(() => api.gpus(), 3000, [api]);
  const alerts = usePoll(() => api.alerts(), 5000, [api]);
  const deployments = usePoll(() => api.deployments(), 5000, [api]);
  const metrics = usePoll(async () => kvUse(parsePrometheus(await api.metrics())), 5000, [api]);

  // Tokens per second from successive status readings.
  const prev = useRef<{ at: number; models: ModelStatus[] } | null>(null);
  const rates = useRef<Map<string, number | null>>(new Map());
  if (status.data) {
    const now = performance.now();
    const p = prev.current;
    if (!p || p.models !== status.data.models) {
      if (p) rates.current = tokenRates(p.models, status.data.models, (now - p.at) / 1000);
      prev.current = { at: now, models: status.data.models };
    }
  }

  const firing = alerts.data?.alerts.filter((a) => a.state === 'firing') ?? [];
  return (
    <div>
      <h1>{t('overview.title')}</h1>
      <Async {...status} retry={status.reload}>
        {(s) => (
          <div className="stats" data-testid="box-stats">
            <Stat label={t('overview.state')} value={<Badge kind={s.state === 'ready' ? 'ok' : 'warn'}>{te('boxState', s.state)}</Badge>} />
            <Stat label={t('overview.version')} value={s.version} />
            <Stat label={t('overview.uptime')} value={duration(s.uptime_s)} />
            <Stat label={t('overview.served')} value={num(s.models.filter((m) => m.state === 'ready').length)} />
            <Stat
              label={t('overview.firing')}
              value={num(alerts.data?.firing ?? null)}
              sub={alerts.data?.silenced ? t('overview.silenced', { n: num(alerts.data.silenced) }) : undefined}
              testid="firing-count"
            />
          </div>
        )}
      </Async>

      <Card title={t('overview.gpus')} testid="overview-gpus">
        <Async {...gpus} retry={gpus.reload}>
          {(g) =>
            g.gpus.length === 0 ? (
              <Empty>{g.reason ?? t('gpus.none')}</Empty>
            ) : (
              <div className="gpu-grid">
                {g.gpus.map((x) => (
                  <GpuTile key={x.index} g={x} />
                ))}
              </div>
            )
          }
        </Async>
      </Card>

      <div className="grid two">
        <Card title={t('overview.engine')} testid="overview-engine">
          <Async {...status} retry={status.reload}>
            {(s) =>
              s.models.length === 0 ? (
                <Empty>{t('overview.noModels')}</Empty>
              ) : (
                <table className="table">
                  <thead>
                    <tr>
                      <th>{t('models.name')}</th>
                      <th className="num">{t('overview.running')}</th>
                      <th className="num">{t('overview.waiting')}</th>
                      <th className="num">{t('overview.tokensPerS')}</th>
                      <th>{t('overview.kvCache')}</th>
                    </tr>
                  </thead>
                  <tbody>
                    {s.models.map((m) => {
                      const kv = metrics.data?.get(m.id);
                      const rate = rates.current.get(m.id);
                      return (
                        <tr key={m.id} data-testid="engine-row" data-model={m.id}>
                          <td>
                            {m.id} {m.state !== 'ready' && <Badge kind="bad">{t('state.unavailable')}</Badge>}
                          </td>
                          <td className="num" data-testid="engine-running">{num(m.running)}</td>
                          <td className="num" data-testid="engine-waiting">{num(m.waiting)}</td>
                          <td className="num">{rate === undefined || rate === null ? '—' : num(rate, 1)}</td>
                          <td>
                            {kv ? (
                              <div className="meter-row" title={t('overview.kvBlocks', { used: num(kv.used), total: num(kv.total) })}>
                                <Meter pct={kv.ratio * 100} />
                                <span>{num(kv.ratio * 100, 1)}%</span>
                              </div>
                            ) : (
                              '—'
                            )}
                          </td>
                        </tr>
                      );
                    })}
                  </tbody>
                </table>
              )
            }
          </Async>
        </Card>
        <Card title={t('overview.alerts')} testid="overview-alerts">
          <Async {...alerts} retry={alerts.reload}>
            {() => (firing.length === 0 ? <Empty>{t('alerts.none')}</Empty> : <AlertList alerts={firing} />)}
          </Async>
        </Card>
      </div>

      <Card title={t('overview.servedModels')} testid="overview-served">
        <Async {...deployments} retry={deployments.reload}>
          {(d) => (d.data.length === 0 ? <Empty>{t('overview.noModels')}</Empty> : <ServedList list={d.data} />)}
        </Async>
      </Card>
    </div>
  );
}

export function GpuTile({ g }: { g: GpuSample }) {
  const { t, pct, bytes, celsius, watts } = useI18n();
  const mp = memPct(g);
  return (
    <div className={`gpu-tile${g.error ? ' failed' : ''}`} data-testid="gpu-card" data-index={g.index} data-util={g.gpu_util_pct ?? ''}>
      <div className="gpu-head">
        <strong>GPU {g.index}</strong> <span className="muted small">{g.name}</span>
      </div>
      {g.error && (
        <div className="bad-text small" data-testid="gpu-error">
          {g.error}
        </div>
      )}
      <div className="kv">
        <span>{t('gpu.util')}</span>
        <span data-testid={`gpu-util-${g.index}`}>{pct(g.gpu_util_pct)}</span>
      </div>
      <Meter pct={g.gpu_util_pct} warnAt={101} badAt={101} />
      <div className="kv">
        <span>{t('gpu.memory')}</span>
        <span>
          {bytes(g.mem_used_bytes)} / {bytes(g.mem_total_bytes)}
        </span>
      </div>
      <Meter pct={mp} />
      <div className="kv">
        <span>{t('gpu.temperature')}</span>
        <span data-testid={`gpu-temp-${g.index}`}>{celsius(g.temp_gpu_c)}</span>
      </div>
      <div className="kv">
        <span>{t('gpu.power')}</span>
        <span>
          {watts(g.power_w)}
          {g.power_limit_w ? ` / ${watts(g.power_limit_w)}` : ''}
        </span>
      </div>
      {g.throttle_reasons && g.throttle_reasons.length > 0 && (
        <div className="small warn-text">
          {t('gpu.throttled', { reasons: g.throttle_reasons.join(', ') })}
        </div>
      )}
    </div>
  );
}

function ServedList({ list }: { list: DeploymentView[] }) {
  const { t, te, num, bytes } = useI18n();
  return (
    <table className="table">
      <thead>
        <tr>
          <th>{t('deploy.name')}</th>
          <th>{t('deploy.model')}</th>
          <th>{t('deploy.state')}</th>
          <th className="num">{t('deploy.ranks')}</th>
          <th className="num">{t('deploy.context')}</th>
          <th className="num">{t('deploy.kvBytes')}</th>
        </tr>
      </thead>
      <tbody>
        {list.map((d) => (
          <tr key={d.name} data-testid="served-model" data-name={d.name}>
            <td>
              <strong>{d.name}</strong>
              {d.aliases.length > 0 && <span className="muted small"> ({d.aliases.join(', ')})</span>}
            </td>
            <td>{d.model}</td>
            <td>
              <Badge kind={d.state === 'ready' ? 'ok' : 'bad'}>{te('deployState', d.state)}</Badge>
              {d.error && <div className="bad-text small">{d.error}</div>}
            </td>
            <td className="num">{num(d.engine?.ranks)}</td>
            <td className="num">{num(d.engine?.context_length)}</td>
            <td className="num">{bytes(d.engine?.kv_cache_bytes)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
