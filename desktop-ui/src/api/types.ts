/**
 * The shapes of the daemon's admin API answers, as read from
 * `appliance-daemon/src/server/*.rs`. Only the fields the console uses are typed.
 */

export interface ModelStatus {
  id: string;
  state: 'ready' | 'unavailable' | string;
  path: string | null;
  error: string | null;
  architecture: string | null;
  parameters: number | null;
  context_length: number | null;
  waiting: number;
  running: number;
  requests_total: number;
  prompt_tokens_total: number;
  completion_tokens_total: number;
}

export interface StatusReport {
  version: string;
  state: string;
  uptime_s: number;
  instance_id: string;
  starts: number;
  data_dir: string;
  listen: string;
  models: ModelStatus[];
}

/** `telemetry::types::GpuSample`: every field but the identity may be null. */
export interface GpuSample {
  index: number;
  uuid: string;
  name: string;
  pci_bus_id?: string | null;
  error: string | null;
  gpu_util_pct: number | null;
  mem_util_pct?: number | null;
  mem_used_bytes: number | null;
  mem_total_bytes: number | null;
  temp_gpu_c: number | null;
  temp_mem_c?: number | null;
  power_w: number | null;
  power_limit_w?: number | null;
  sm_clock_mhz?: number | null;
  throttle_reasons?: string[];
  ecc_uncorrected_volatile?: number | null;
  nvlink_active?: number | null;
  nvlink_links?: number | null;
}

export interface GpuEvent {
  gpu: number;
  kind: string;
  ts_ms: number;
  xid?: number;
}

export interface GpusReport {
  available: boolean;
  reason: string | null;
  ts_ms: number;
  gpus: GpuSample[];
  events: GpuEvent[];
}

/** One `sample` event of the telemetry stream (or a polled `GpusReport`). */
export interface TelemetrySample {
  ts_ms: number;
  gpus: GpuSample[];
}

export interface Alert {
  key: string;
  rule: string;
  severity: 'critical' | 'warning' | 'info' | string;
  state: 'firing' | 'resolved' | string;
  subject: string;
  message: string;
  action: string | null;
  fired: number;
  first_seen_ms: number;
  last_seen_ms: number;
  resolved_ms: number | null;
  /** Notifications are held until then (ms since the epoch); older daemons omit it. */
  silenced_until_ms?: number | null;
  /** Who silenced it (the audit log's actor). */
  silenced_by?: string | null;
}

export interface AlertsReport {
  firing: number;
  /** Firing alerts that are silenced; older daemons omit it. */
  silenced?: number;
  alerts: Alert[];
}

export interface HistoryBucket {
  ts_ms: number;
  samples: number;
  gpu_util_avg: number | null;
  gpu_util_max: number | null;
  mem_used_bytes_avg: number | null;
  mem_used_bytes_max: number | null;
  power_w_avg: number | null;
  power_w_max: number | null;
  temp_gpu_c_avg: number | null;
  temp_gpu_c_max: number | null;
}

export interface HistoryReport {
  gpu: number;
  from: number;
  to: number;
  step: number;
  buckets: HistoryBucket[];
}

export interface CatalogModel {
  id: string;
  name: string;
  format: string;
  architecture: string;
  parameters: number;
  context_length: number;
  digest: string;
  size_bytes: number;
  path: string;
  in_store: boolean;
  license: string | null;
  added_at: number;
  deployed_as: string[];
}

export type JobPhase = 'queued' | 'copying' | 'verifying' | 'ready' | 'failed' | 'cancelled';

export interface JobView {
  id: string;
  kind: string;
  state: JobPhase | string;
  source: string;
  model: string;
  in_place: boolean;
  bytes_done: number;
  bytes_total: number;
  rate_bytes_per_s: number;
  eta_s: number | null;
  error: string | null;
  created_at: number;
  finished_at: number | null;
}

export interface FitReport {
  fits: boolean;
  target: string;
  ranks: number;
  context_tokens: number;
  weights_bytes_per_rank: number;
  kv_bytes_per_rank: number;
  sequences: number;
  needs_bytes: number;
  has_bytes: number;
  summary: string;
}

export interface FitAnswer {
  model: string;
  profile: string;
  fit: FitReport;
}

export interface DeploymentView {
  name: string;
  aliases: string[];
  model: string;
  state: 'ready' | 'unavailable' | string;
  error: string | null;
  ranks: number | null;
  context_length: number | null;
  max_sequences: number | null;
  engine: {
    ranks: number;
    context_length: number;
    kv_cache_bytes: number;
    running: number;
    waiting: number;
  } | null;
  generation: number;
  created_at: number;
  updated_at: number;
}

export interface Limits {
  rpm: number | null;
  tpm: number | null;
  tokens_per_day: number | null;
  tokens_per_month: number | null;
}

export interface KeyView {
  id: string;
  name: string;
  owner: string | null;
  role: 'user' | 'viewer' | 'admin' | string;
  prefix: string;
  models: string[] | null;
  limits: Limits;
  expires_at: number | null;
  revoked_at: number | null;
  created_at: number;
  created_by: string;
  /** Only in the answer that created the key: its token, shown once. */
  key?: string;
}

export interface CreateKey {
  name: string;
  owner?: string;
  role?: string;
  models?: string[];
  rpm?: number;
  tpm?: number;
  tokens_per_day?: number;
  tokens_per_month?: number;
  expires_at?: number;
}

export interface UsageRow {
  group: string;
  name: string | null;
  requests: number;
  prompt_tokens: number;
  completion_tokens: number;
  failed: number;
  latency_ms: number;
  total_tokens: number;
}

export interface UsageReport {
  group_by: 'key' | 'model' | 'day';
  from: string;
  to: string;
  data: UsageRow[];
}

export interface AuditEntry {
  seq: number;
  ts_ms: number;
  actor: string;
  action: string;
  detail: { from?: string; outcome?: string; what?: unknown } | null;
  hash: string;
  prev: string;
}

export interface AuditReport {
  chain_ok: boolean;
  chain_error: string | null;
  entries_total: number;
  data: AuditEntry[];
}

export interface ModelExperts {
  id: string;
  ranks: number;
  slots_per_rank: number;
  /** Per layer: physical slot -> logical expert. */
  placement: number[][];
  /** Per layer, per logical expert: tokens routed since start. */
  expert_tokens: number[][];
  /** The same over the recent window the balancer uses. */
  window_tokens: number[][];
  rank_pairs: number[];
  imbalance: number;
  placement_balance: number[];
  rebalances: number;
}

export interface RebalanceReport {
  model: string;
  before: number[];
  after: number[];
  window_tokens: number;
}

export type Verdict = 'pass' | 'warn' | 'fail' | string;

export interface ComplianceCheck {
  id: string;
  verdict: Verdict;
  expected: string;
  found: string;
  remedy: string | null;
}

export interface ComplianceReport {
  profile: string;
  profile_name: string;
  source: string;
  verdict: Verdict;
  checks: ComplianceCheck[];
}

export interface ProfileDoc {
  how?: string;
  report?: ComplianceReport | null;
  checked_at_ms?: number;
  policy?: unknown;
  profile?: { id?: string; name?: string; description?: string } | null;
  engine?: unknown;
}
