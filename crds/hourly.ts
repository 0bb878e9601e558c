// NodeMemoryHealth's corrected errors per hour (spec.correctedErrorPages[].hourly, spec.dimms[].hourly):
// one bucket per hour that had any, oldest first, for a week. The agent fills them from the kernel and
// rasdaemon, the simulator as the agent would; the operator's risk model counts them in a window.

export const HOUR_MS = 3_600_000;
/** A week of hours, the current one included: the CRD's maxItems. */
export const MAX_HOURS = 168;

export interface HourlyCount {
  /** Start of the hour, ms since the epoch. */
  hour: number;
  count: number;
}

/** The start of the hour `at` falls in. */
export const hourOf = (at: number): number => Math.floor(at / HOUR_MS) * HOUR_MS;

/**
 * Adds `count` errors at `at` to its hour's bucket, in place, keeping the buckets in order; hours more than
 * a week before `now`'s go, and an hour after `now`'s (a clock set back since) is not counted.
 */
export function addToHour(hourly: HourlyCount[], at: number, count: number, now = at): void {
  const hour = hourOf(at);
  const oldest = hourOf(now) - (MAX_HOURS - 1) * HOUR_MS;
  if (count > 0 && hour >= oldest && hour <= hourOf(now)) {
    // Errors come in time order: the bucket is the last one, or goes after it, almost always.
    let i = hourly.length;
    while (i > 0 && (hourly[i - 1]?.hour ?? 0) > hour) i--;
    const before = hourly[i - 1];
    if (before?.hour === hour) before.count += count;
    else hourly.splice(i, 0, { hour, count });
  }
  while ((hourly[0]?.hour ?? oldest) < oldest) hourly.shift();
}

/** The buckets as the CRD writes them. */
export const hourlyOut = (hourly: readonly HourlyCount[]): { hour: string; count: number }[] =>
  hourly.map(({ hour, count }) => ({ hour: new Date(hour).toISOString(), count }));
