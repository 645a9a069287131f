/**
 * The admin API of one box, over whichever transport the console runs on: typed calls
 * that throw [`ApiError`] with the daemon's message, and the two live feeds (telemetry,
 * job progress) as SSE in the browser or polling in the desktop app.
 */

import { ApiError, messageOf, parseError } from './errors';
import type { Method, Transport } from './transport';
import type {
  Alert,
  AlertsReport,
  AuditReport,
  CatalogModel,
  CreateKey,
  DeploymentView,
  FitAnswer,
  GpusReport,
  HistoryReport,
  JobView,
  KeyView,
  ModelExperts,
  ProfileDoc,
  RebalanceReport,
  StatusReport,
  TelemetrySample,
  UsageReport,
} from './types';
import { silencePath } from '../lib/alerts';
import { backoffMs } from '../lib/backoff';

const enc = encodeURIComponent;

export class BoxApi {
  constructor(
    readonly transport: Transport,
    readonly boxId: string,
  ) {}

  async call<T>(method: Method, path: string, body?: unknown): Promise<T> {
    const r = await this.transport.request(this.boxId, method, path, body);
    if (r.status < 200 || r.status >= 300) throw parseError(r.status, r.body);
    return r.body as T;
  }

  get<T>(path: string) {
    return this.call<T>('GET', path);
  }

  healthz() {
    return this.get<{ status: string; models: string[] }>('/healthz');
  }
  status() {
    return this.get<StatusReport>('/admin/v1/status');
  }
  gpus() {
    return this.get<GpusReport>('/admin/v1/gpus');
  }
  alerts() {
    return this.get<AlertsReport>('/admin/v1/alerts');
  }
  /** Holds the alert's notifications for `minutes` (1 to 43200); answers the alert. */
  silenceAlert(key: string, minutes: number) {
    return this.call<Alert>('POST', silencePath(key), { minutes });
  }
  unsilenceAlert(key: string) {
    return this.call<Alert>('DELETE', silencePath(key));
  }
  history(gpu: number, from: number, to: number, step: number) {
    return this.get<HistoryReport>(`/admin/v1/gpus/${gpu}/history?from=${from}&to=${to}&step=${step}`);
  }
  async metrics(): Promise<string> {
    const body = await this.get<unknown>('/metrics');
    return typeof body === 'string' ? body : '';
  }
  profile() {
    return this.get<ProfileDoc>('/admin/v1/profile');
  }
  models() {
    return this.get<{ data: CatalogModel[] }>('/admin/v1/models');
  }
  deleteModel(id: string) {
    return this.call<{ deleted: string; freed_bytes: number }>('DELETE', `/admin/v1/models/${enc(id)}`);
  }
  fit(name: string) {
    return this.get<FitAnswer>(`/admin/v1/models/${enc(name)}/fit`);
  }
  importModel(path: string, name: string | null, inPlace: boolean) {
    return this.call<JobView>('POST', '/admin/v1/models/import', {
      path,
      ...(name ? { name } : {}),
      in_place: inPlace,
    });
  }
  jobs() {
    return this.get<{ data: JobView[] }>('/admin/v1/jobs');
  }
  job(id: string) {
    return this.get<JobView>(`/admin/v1/jobs/${enc(id)}`);
  }
  cancelJob(id: string) {
    return this.call<JobView>('POST', `/admin/v1/jobs/${enc(id)}/cancel`);
  }
  deployments() {
    return this.get<{ data: DeploymentView[] }>('/admin/v1/deployments');
  }
  deploy(model: string, name: string | null) {
    return this.call<DeploymentView>('POST', '/admin/v1/deployments', { model, ...(name ? { name } : {}) });
  }
  swap(name: string, model: string) {
    return this.call<DeploymentView>('PATCH', `/admin/v1/deployments/${enc(name)}`, { model });
  }
  undeploy(name: string) {
    return this.call<unknown>('DELETE', `/admin/v1/deployments/${enc(name)}`);
  }
  keys() {
    return this.get<{ data: KeyView[] }>('/admin/v1/keys');
  }
  createKey(req: CreateKey) {
    return this.call<KeyView>('POST', '/admin/v1/keys', req);
  }
  revokeKey(id: string) {
    return this.call<KeyView>('DELETE', `/admin/v1/keys/${enc(id)}`);
  }
  usage(groupBy: string, from: string, to: string) {
    return this.get<UsageReport>(`/admin/v1/usage?group_by=${enc(groupBy)}&from=${enc(from)}&to=${enc(to)}`);
  }
  async usageCsv(groupBy: string, from: string, to: string): Promise<string> {
    const body = await this.get<unknown>(
      `/admin/v1/usage?format=csv&group_by=${enc(groupBy)}&from=${enc(from)}&to=${enc(to)}`,
    );
    return typeof body === 'string' ? body : JSON.stringify(body);
  }
  audit(limit: number) {
    return this.get<AuditReport>(`/admin/v1/audit?limit=${limit}`);
  }
  experts() {
    return this.get<{ models: ModelExperts[] }>('/admin/v1/engine/experts');
  }
  rebalance(model: string) {
    return this.call<RebalanceReport>('POST', '/admin/v1/engine/rebalance', { model });
  }
}

export type FeedState = 'live' | 'reconnecting';

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => {
      clearTimeout(t);
      resolve();
    });
  });

/**
 * Feeds telemetry samples until `signal` aborts: the SSE stream in the browser (reopened
 * with backoff when it breaks), `GET /admin/v1/gpus` every 2 s in the desktop app.
 */
export async function watchTelemetry(
  api: BoxApi,
  onSample: (s: TelemetrySample) => void,
  onState: (s: FeedState, error: string | null) => void,
  signal: AbortSignal,
): Promise<void> {
  let failures = 0;
  while (!signal.aborted) {
    try {
      if (api.transport.streams) {
        await api.transport.stream(
          api.boxId,
          '/admin/v1/telemetry/stream',
          (ev) => {
            if (ev.event !== 'sample') return;
            try {
              onSample(JSON.parse(ev.data) as TelemetrySample);
              if (failures > 0) failures = 0;
              onState('live', null);
            } catch {
              // A torn or foreign event: skip it, the next sample follows.
            }
          },
          signal,
        );
        if (signal.aborted) return;
        throw new ApiError('The telemetry stream ended', 0);
      } else {
        const r = await api.gpus();
        onSample({ ts_ms: r.ts_ms, gpus: r.gpus });
        failures = 0;
        onState('live', null);
        await sleep(2000, signal);
      }
    } catch (e) {
      if (signal.aborted) return;
      onState('reconnecting', messageOf(e));
      await sleep(backoffMs(failures++), signal);
    }
  }
}

const FINAL = new Set(['ready', 'failed', 'cancelled']);
export const jobIsFinal = (j: JobView) => FINAL.has(j.state);

/**
 * Follows an import job until it finishes: its SSE feed in the browser (falling back to
 * polling if the feed breaks), `GET /admin/v1/jobs/{id}` every second in the desktop app.
 */
export async function watchJob(
  api: BoxApi,
  id: string,
  onJob: (j: JobView) => void,
  signal: AbortSignal,
  pollMs = 1000,
): Promise<void> {
  let last: JobView | null = null;
  if (api.transport.streams) {
    try {
      await api.transport.stream(
        api.boxId,
        `/admin/v1/jobs/${enc(id)}/events`,
        (ev) => {
          if (ev.event !== 'job') return;
          try {
            last = JSON.parse(ev.data) as JobView;
            onJob(last);
          } catch {
            // Skip a torn event.
          }
        },
        signal,
      );
    } catch {
      // Fall through to polling.
    }
    if (signal.aborted || (last && jobIsFinal(last))) return;
  }
  let failures = 0;
  while (!signal.aborted) {
    try {
      const j = await api.job(id);
      onJob(j);
      failures = 0;
      if (jobIsFinal(j)) return;
      await sleep(pollMs, signal);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) throw e;
      await sleep(backoffMs(failures++), signal);
    }
  }
}
