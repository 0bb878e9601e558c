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
