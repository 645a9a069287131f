/** Alert silencing: which alerts are silenced now, the silence lengths offered, and
 * folding the daemon's answer to a silence request into the list on screen. */

import type { Alert } from '../api/types';

/** The lengths the console offers (the daemon takes 1 to 43200 minutes). */
export const SILENCE_CHOICES = [
  { id: '1h', minutes: 60 },
  { id: '24h', minutes: 24 * 60 },
  { id: '7d', minutes: 7 * 24 * 60 },
] as const;
export type SilenceChoice = (typeof SILENCE_CHOICES)[number]['id'];

/** Whether the alert's notifications are held at `nowMs` (a silence that ran out is not). */
export function isSilenced(a: Pick<Alert, 'silenced_until_ms'>, nowMs: number): boolean {
  const until = a.silenced_until_ms;
  return typeof until === 'number' && until > nowMs;
}

/** An alert as the daemon answered a silence request, and when (ms). */
export interface AlertUpdate {
  alert: Alert;
  at: number;
}

/** How long an answer outranks the polled list: a poll already in flight when the
 * daemon answered may still bring the alert as it was. */
export const UPDATE_HOLD_MS = 15_000;

/**
 * The list with the alerts the daemon answered with (by key) in place of the polled ones,
 * so a silence shows as soon as the daemon confirms it, before the next poll; answers
 * older than `holdMs` give way to the poll (someone else may have changed it since).
 */
export function withUpdates(list: Alert[], updates: ReadonlyMap<string, AlertUpdate>, nowMs: number, holdMs = UPDATE_HOLD_MS): Alert[] {
  if (updates.size === 0) return list;
  return list.map((a) => {
    const u = updates.get(a.key);
    return u && nowMs - u.at < holdMs ? u.alert : a;
  });
}

/** The path of an alert's silence; its key holds ':' (`gpu_temperature:gpu0`). */
export const silencePath = (key: string) => `/admin/v1/alerts/${encodeURIComponent(key)}/silence`;
