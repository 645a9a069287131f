/**
 * The shapes of the daemon's admin API answers. Those the daemon's OpenAPI document
 * describes are generated from it (`npm run api-types` turns `openapi.json`, the daemon's
 * `/openapi.json` as a Rust test keeps it, into `schema.gen.ts`, in every build), so the
 * console does not compile against an answer the daemon does not give. The telemetry
 * stream's sample is written here: it is a server-sent event, outside the document.
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
export type GpuSample = Schemas['GpuSample'];
export type GpuEvent = Schemas['GpuEvent'];
export type GpusReport = Schemas['GpusReport'];
export type Alert = Schemas['Alert'];
export type AlertsReport = Schemas['AlertsReport'];
export type HistoryBucket = Schemas['HistoryBucket'];
export type HistoryReport = Schemas['HistoryReport'];
export type SystemReport = Schemas['SystemReport'];
export type FitReport = Schemas['FitReport'];
export type FitAnswer = Schemas['FitAnswer'];
export type AuditEntry = Schemas['AuditEntry'];
export type AuditReport = Schemas['AuditReport'];
export type Verdict = Schemas['Verdict'];
export type ComplianceCheck = Schemas['ComplianceCheck'];
export type ComplianceReport = Schemas['ComplianceReport'];
export type ProfileDoc = Schemas['ProfileAnswer'];

export type JobPhase = Schemas['JobPhase'];

/** One `sample` event of the telemetry stream (or a polled `GpusReport`). */
export interface TelemetrySample {
  ts_ms: number;
  gpus: GpuSample[];
}
