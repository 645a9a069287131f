//! GPUs: live charts per GPU from the telemetry stream, history over 1 h / 24 h / 30 d,
//! each GPU's health, the alerts with their recommended actions (silenced for 1 h / 24 h /
//! 7 d from here), and recent GPU events (XID errors).

import { useEffect, useMemo, useState } from 'react';
import type { Options } from 'uplot';
import { watchTelemetry, type FeedState } from '../api/client';
import type { GpuEvent, GpuSample, HistoryReport } from '../api/types';
import { useApi } from '../connection';
import { useI18n, type I18n } from '../i18n';
import { uplotFmtDate } from '../lib/chartTime';
import { groupEvents } from '../lib/events';
import { appendSample, prependHistory, type SeriesByGpu } from '../lib/series';
import { usePoll } from '../lib/usePoll';
import { AlertList } from '../components/AlertList';
import { Chart } from '../components/Chart';
import { Async, Card, Empty, ErrorBox, Loading } from '../components/States';
import { Badge } from '../components/Widgets';

/** Points kept per live chart: two minutes at the default 500 ms sampling. */
const LIVE_POINTS = 240;

export const RANGES = {
  '1h': { span_ms: 3_600_000, step_ms: 30_000 },
  '24h': { span_ms: 86_400_000, step_ms: 600_000 },
  '30d': { span_ms: 30 * 86_400_000, step_ms: 6 * 3_600_000 },
} as const;
export type RangeKey = keyof typeof RANGES;

export function Gpus() {
  const { t, te } = useI18n();
  const api = useApi();
  const [series, setSeries] = useState<SeriesByGpu>(new Map());
  const [latest, setLatest] = useState<GpuSample[]>([]);
  const [feed, setFeed] = useState<{ state: FeedState | 'connecting'; error: string | null }>({ state: 'connecting', error: null });

  useEffect(() => {
    const ctl = new AbortController();
    watchTelemetry(
      api,
      (s) => {
        setSeries((prev) => appendSample(prev, s, LIVE_POINTS));
        setLatest(s.gpus);
      },
      (state, error) => setFeed({ state, error }),
      ctl.signal,
    );
    return () => ctl.abort();
  }, [api]);

  // Fill the charts with the last minutes at full resolution once the GPUs are known.
  const seeded = latest.length > 0;
  useEffect(() => {
    if (!seeded) return;
    let alive = true;
    (async () => {
      try {
        const [sys, now] = await Promise.all([api.get<{ sampler?: { interval_ms?: number } }>('/admin/v1/system'), api.gpus()]);
        const step = Math.max(100, sys.sampler?.interval_ms ?? 1000);
        const to = Date.now();
        const from = to - step * LIVE_POINTS;
        for (const g of now.gpus) {
          const h = await api.history(g.index, from, to, step);
          if (!alive) return;
          setSeries((prev) => prependHistory(prev, g.index, h.buckets, g.mem_total_bytes ?? null, LIVE_POINTS));
        }
      } catch {
        // Without history the charts simply start from the first live sample.
      }
    })();
    return () => {
      alive = false;
    };
  }, [api, seeded]);

  const alerts = usePoll(() => api.alerts(), 5000, [api]);
  const events = usePoll(() => api.gpus(), 10000, [api]);

  return (
    <div>
      <h1>
        {t('gpus.title')}{' '}
        <Badge kind={feed.state === 'live' ? 'ok' : 'warn'} testid="feed-state">
          {te('feed', feed.state)}
        </Badge>
      </h1>
      {feed.state === 'reconnecting' && feed.error && <ErrorBox error={feed.error} compact />}
      {latest.length === 0 ? (
        feed.state === 'connecting' ? <Loading what={t('gpus.waitingForSamples')} /> : <Empty>{t('gpus.none')}</Empty>
      ) : (
        <div className="gpu-live">
          {latest.map((g) => (
            <LiveGpu key={g.index} g={g} series={series} />
          ))}
        </div>
      )}

      <History gpus={latest.map((g) => g.index)} />

      <div className="grid two">
        <Card title={t('gpus.alerts')} testid="gpu-alerts">
          <Async {...alerts} retry={alerts.reload}>
            {(a) => (a.alerts.length === 0 ? <Empty>{t('alerts.none')}</Empty> : <AlertList alerts={a.alerts} showState actions onChanged={alerts.reload} />)}
          </Async>
        </Card>
        <Card title={t('gpus.events')} testid="gpu-events">
          <Async {...events} retry={events.reload}>
            {(g) =>
              g.events.length === 0 ? (
                <Empty>{t('gpus.noEvents')}</Empty>
              ) : (
                <EventList events={g.events} />
              )
            }
          </Async>
        </Card>
      </div>
    </div>
  );
}

function EventList({ events }: { events: GpuEvent[] }) {
  const { t, num, dateTime } = useI18n();
  return (
    <table className="table">
      <thead>
        <tr>
          <th>GPU</th>
          <th>{t('gpus.event')}</th>
          <th className="num">{t('gpus.count')}</th>
          <th>{t('gpus.first')}</th>
          <th>{t('gpus.last')}</th>
        </tr>
      </thead>
      <tbody>
        {groupEvents(events).map((e) => (
          <tr key={`${e.gpu}/${e.kind}/${e.xid}`} data-testid="gpu-event" data-gpu={e.gpu} data-xid={e.xid ?? ''}>
            <td>{e.gpu}</td>
            <td>{e.kind === 'xid' ? `XID ${e.xid}` : e.kind}</td>
            <td className="num">{num(e.count)}</td>
            <td>{dateTime(e.first_ms)}</td>
            <td>{dateTime(e.last_ms)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function percentOptions(i18n: I18n): Omit<Options, 'width' | 'height'> {
  return {
    fmtDate: uplotFmtDate(i18n.locale),
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, pct: { range: [0, 100] } },
    axes: [{}, { scale: 'pct', size: 56, values: (_u, vals) => vals.map((v) => i18n.pct(v)) }],
    series: [
      { label: i18n.t('chart.time') },
      { label: i18n.t('gpu.util'), scale: 'pct', stroke: '#0f766e', width: 2, value: (_u, v) => i18n.pct(v) },
      { label: i18n.t('gpu.memory'), scale: 'pct', stroke: '#6366f1', width: 2, value: (_u, v) => i18n.pct(v) },
    ],
  };
}

function thermalOptions(i18n: I18n): Omit<Options, 'width' | 'height'> {
  return {
    fmtDate: uplotFmtDate(i18n.locale),
    legend: { show: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, c: { range: (_u, min, max) => [Math.min(20, min ?? 20), Math.max(100, max ?? 100)] }, w: {} },
    axes: [
      {},
      { scale: 'c', size: 56, values: (_u, vals) => vals.map((v) => i18n.celsius(v)) },
      { scale: 'w', side: 1, size: 60, grid: { show: false }, values: (_u, vals) => vals.map((v) => i18n.watts(v)) },
    ],
    series: [
      { label: i18n.t('chart.time') },
      { label: i18n.t('gpu.temperature'), scale: 'c', stroke: '#ea580c', width: 2, value: (_u, v) => i18n.celsius(v) },
      { label: i18n.t('gpu.power'), scale: 'w', stroke: '#ca8a04', width: 2, value: (_u, v) => i18n.watts(v) },
    ],
  };
}

function LiveGpu({ g, series }: { g: GpuSample; series: SeriesByGpu }) {
  const i18n = useI18n();
  const { t, pct, celsius, watts, bytes, num } = i18n;
  const s = series.get(g.index);
  const pctOpts = useMemo(() => percentOptions(i18n), [i18n]);
  const thermOpts = useMemo(() => thermalOptions(i18n), [i18n]);
  const points = s?.t.length ?? 0;
  const lastTs = points > 0 ? Math.round((s?.t[points - 1] ?? 0) * 1000) : 0;
  return (
    <Card
      title={
        <>
          GPU {g.index} <span className="muted small">{g.name}</span>
        </>
      }
      testid={`gpu-live-${g.index}`}
    >
      <div className="gpu-health">
        {g.error ? (
          <Badge kind="bad" testid={`gpu-health-${g.index}`}>
            {g.error}
          </Badge>
        ) : (g.throttle_reasons?.length ?? 0) > 0 ? (
          <Badge kind="warn" testid={`gpu-health-${g.index}`}>
            {t('gpu.throttled', { reasons: g.throttle_reasons?.join(', ') ?? '' })}
          </Badge>
        ) : (
          <Badge kind="ok" testid={`gpu-health-${g.index}`}>
            {t('gpu.healthy')}
          </Badge>
        )}
        <span>
          {t('gpu.util')} <strong>{pct(g.gpu_util_pct)}</strong>
        </span>
        <span>
          {t('gpu.memory')} <strong>{bytes(g.mem_used_bytes)}</strong> / {bytes(g.mem_total_bytes)}
        </span>
        <span>
          {t('gpu.temperature')} <strong>{celsius(g.temp_gpu_c)}</strong>
        </span>
        <span>
          {t('gpu.power')} <strong>{watts(g.power_w)}</strong>
        </span>
        {g.ecc_uncorrected_volatile != null && (
          <span>
            {t('gpu.eccUncorrected')} <strong>{num(g.ecc_uncorrected_volatile)}</strong>
          </span>
        )}
        {g.nvlink_links != null && (
          <span>
            NVLink <strong>{num(g.nvlink_active)}</strong> / {num(g.nvlink_links)}
          </span>
        )}
      </div>
      {s ? (
        <div className="grid two tight">
          <Chart
            options={pctOpts}
            data={[s.t, s.util_pct, s.mem_pct]}
            testid={`live-chart-${g.index}`}
            attrs={{ points, 'last-ts': lastTs }}
          />
          <Chart options={thermOpts} data={[s.t, s.temp_c, s.power_w]} testid={`live-thermal-${g.index}`} />
        </div>
      ) : (
        <Loading />
      )}
    </Card>
  );
}

function History({ gpus }: { gpus: number[] }) {
  const i18n = useI18n();
  const { t } = i18n;
  const api = useApi();
  const [range, setRange] = useState<RangeKey>('1h');
  const key = gpus.join(',');
  const hist = usePoll(
    async () => {
      const to = Date.now();
      const { span_ms, step_ms } = RANGES[range];
      return Promise.all(gpus.map((g) => api.history(g, to - span_ms, to, step_ms)));
    },
    60_000,
    [api, range, key],
  );
  const opts = useMemo(() => historyOptions(i18n, range), [i18n, range]);
  return (
    <Card
      title={t('gpus.history')}
      testid="gpu-history"
      actions={
        <div className="tabs" role="tablist">
          {(Object.keys(RANGES) as RangeKey[]).map((r) => (
            <button key={r} role="tab" aria-selected={r === range} className={`small${r === range ? ' active' : ''}`} data-testid={`range-${r}`} onClick={() => setRange(r)}>
              {t(`range.${r}`)}
            </button>
          ))}
        </div>
      }
    >
      {gpus.length === 0 ? (
        <Empty>{t('gpus.none')}</Empty>
      ) : (
        <Async {...hist} retry={hist.reload}>
          {(list) => (
            <div className="grid two tight">
              {list.map((h) => (
                <HistoryChart key={h.gpu} h={h} options={opts} />
              ))}
            </div>
          )}
        </Async>
      )}
    </Card>
  );
}

function historyOptions(i18n: I18n, range: RangeKey): Omit<Options, 'width' | 'height'> {
  void range;
  return {
    fmtDate: uplotFmtDate(i18n.locale),
    legend: { show: true },
    cursor: { drag: { x: true, y: false } },
    scales: { x: { time: true }, v: { range: [0, 100] }, w: {} },
    axes: [
      {},
      { scale: 'v', size: 44 },
      { scale: 'w', side: 1, size: 60, grid: { show: false }, values: (_u, vals) => vals.map((v) => i18n.watts(v)) },
    ],
    series: [
      { label: i18n.t('chart.time') },
      { label: i18n.t('gpu.utilAvg'), scale: 'v', stroke: '#0f766e', width: 2, value: (_u, v) => i18n.pct(v) },
      { label: i18n.t('gpu.tempMax'), scale: 'v', stroke: '#ea580c', width: 2, value: (_u, v) => i18n.celsius(v) },
      { label: i18n.t('gpu.powerAvg'), scale: 'w', stroke: '#ca8a04', width: 2, value: (_u, v) => i18n.watts(v) },
    ],
  };
}

function HistoryChart({ h, options }: { h: HistoryReport; options: Omit<Options, 'width' | 'height'> }) {
  const { t } = useI18n();
  const data = useMemo(
    () =>
      [
        h.buckets.map((b) => b.ts_ms / 1000),
        h.buckets.map((b) => b.gpu_util_avg),
        h.buckets.map((b) => b.temp_gpu_c_max),
        h.buckets.map((b) => b.power_w_avg),
      ] as [number[], (number | null)[], (number | null)[], (number | null)[]],
    [h],
  );
  return (
    <div data-testid={`history-${h.gpu}`} data-buckets={h.buckets.length}>
      <div className="chart-title">GPU {h.gpu}</div>
      {h.buckets.length === 0 ? <Empty>{t('gpus.noHistory')}</Empty> : <Chart options={options} data={data} height={160} />}
    </div>
  );
}
