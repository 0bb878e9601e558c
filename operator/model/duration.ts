// Go-style durations (the policy's windows, timeouts and backoffs), in milliseconds.
const unitMs: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

export function parseDuration(text: string, field: string): number {
  const parts = [...text.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)];
  if (parts.length === 0 || parts.map((p) => p[0]).join("") !== text)
    throw new Error(`${field}: ${JSON.stringify(text)} is not a duration such as 90s, 10m or 1h30m`);
  return parts.reduce((sum, [, n, unit]) => sum + Number(n) * (unitMs[unit ?? ""] ?? 0), 0);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
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
