// A policy's durations (windows, timeouts and backoffs), in milliseconds, parsed by the one Go-duration
// parser (runtime/duration.ts), with the field named when one is not a duration.
import { goDurationMs } from "../../runtime/duration.ts";

export { formatDuration } from "../../runtime/duration.ts";
/** A policy's duration in milliseconds; an error naming the field when it is not one. */
export function parseDuration(text: string, field: string): number {
  const ms = goDurationMs(text);
  if (ms === undefined) throw new Error(`${field}: ${JSON.stringify(text)} is not a duration such as 90s, 10m or 1h30m`);
  return ms;
}

/**
 * The CRD's CEL floors on a policy's durations. A policy stored before those rules existed may hold less,
 * so the operator applies them again: no window shorter than a minute (a 0s window disables the breaker
 * and escalation), no backoff or timeout shorter than a second (a 0s backoff hammers the API server).
 */
export const WINDOW_FLOOR_MS = 60_000;
export const RETRY_FLOOR_MS = 1000;

export function policyDuration(text: string, field: string, floorMs: number): number {
  return Math.max(floorMs, parseDuration(text, field));
}
