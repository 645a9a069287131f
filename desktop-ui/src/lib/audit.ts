/** Filtering the audit log on the client: the daemon returns the newest entries as is. */

import type { AuditEntry } from '../api/types';

export interface AuditFilter {
  actor: string;
  action: string;
  result: string;
}

/** Case-insensitive substring match on each non-empty field; `result` is the outcome text. */
export function filterAudit(entries: AuditEntry[], f: AuditFilter): AuditEntry[] {
  const m = (hay: string | null | undefined, needle: string) =>
    needle.trim() === '' || (hay ?? '').toLowerCase().includes(needle.trim().toLowerCase());
  return entries.filter((e) => m(e.actor, f.actor) && m(e.action, f.action) && m(e.detail?.outcome, f.result));
}
