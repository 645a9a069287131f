/**
 * The shapes of the daemon's admin API answers. Those the daemon's OpenAPI document
 * describes are generated from it (`npm run api-types` turns `openapi.json`, the daemon's
 * `/openapi.json` as a Rust test keeps it, into `schema.gen.ts`, in every build), so the
 * console does not compile against an answer the daemon does not give. The rest are written
 * here until the document types them (the daemon still serves them as open objects).
 */

import type { components } from './schema.gen';

type Schemas = components['schemas'];

export type ModelStatus = Schemas['ModelStatus'];
export type StatusReport = Schemas['StatusReport'];
export type CatalogModel = Schemas['CatalogModel'];
export type JobView = Schemas['JobView'];
export type DeploymentView = Schemas['DeploymentView'];
export type Limits = Schemas['Limits'];
export type KeyView = Schemas['KeyView'];
export type CreateKey = Schemas['CreateKey'];
export type UsageRow = Schemas['UsageRow'];
export type UsageReport = Schemas['UsageReport'];
export type ModelExperts = Schemas['ModelExperts'];
export type RebalanceReport = Schemas['RebalanceReport'];

/** The states a job goes through (`JobView.state`). */
export type JobPhase = 'queued' | 'copying' | 'verifying' | 'ready' | 'failed' | 'cancelled';

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
