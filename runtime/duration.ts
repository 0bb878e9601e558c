// Go-style durations (500ms, 30s, 5m, 1h30m), in milliseconds: the one parser behind the programs' flags
// and the policies' windows, timeouts and backoffs.
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** The duration in milliseconds, or undefined when `text` is not one. */
export function goDurationMs(text: string): number | undefined {
  const term = /(\d+(?:\.\d+)?)(ms|h|m|s)/y;
  let total = 0;
  let terms = 0;
  while (term.lastIndex < text.length) {
    const match = term.exec(text);
    if (match === null) return undefined;
    total += Number(match[1]) * (UNIT_MS[match[2] ?? ""] ?? NaN);
    terms++;
  }
  return terms > 0 && Number.isFinite(total) ? total : undefined;
}

/** The shortest Go-style words for a duration: 24h, 10m, 90s, 250ms. */
export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}
