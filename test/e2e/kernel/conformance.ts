// The conformance record: what the kernel did and what the containment model predicted, in one shape,
// so "agreed" is a plain comparison; and the table and JSON the run leaves behind.
import { mkdirSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import type { HugepageSize } from "../../../kernel/pfn.ts";
import type { KernelPrediction } from "../../../operator/model/prediction.ts";

export interface Outcome {
  /** The kernel's page-type and result words; undefined where it prints no verdict. */
  pageType?: string | undefined;
  result?: string | undefined;
  /** Workloads sent BUS_MCEERR_AO at the error. */
  ao: string[];
  /** Workloads sent BUS_MCEERR_AR when they touched the hugepage. */
  ar: string[];
  /** si_addr_lsb of those signals. */
  lsb?: number | undefined;
  /** The pool once every mapper is gone, against before the workloads started. */
  pool: { size: HugepageSize; total: number; free: number };
  hardwareCorruptedBytes: number;
  /**
   * A replacement hugepage asked of the agent: what the kernel gave (Given, Refused); predicted, what the
   * model expects (Given where likely, "Given|Refused" where uncertain). The pool then counts it.
   */
  replacement?: string | undefined;
}

export interface Row {
  scenario: string;
  /** The kernel release the row was measured on. */
  kernel: string;
  node: string;
  observed: Outcome;
  predicted: Outcome;
  agreed: boolean;
  /** From the injection to the MemoryErrorEvent readable in the API, as the host saw it; absent when the kernel logs nothing. */
  injectionToEventMs?: number | undefined;
  /**
   * Corrected errors: from the injection of the error that reached a threshold (the policy's or the
   * kernel collector's) to the operator's decision, and to the page retired or its mappers moved, as the
   * host saw them.
   */
  prevention?: { decidedMs?: number | undefined; doneMs?: number | undefined } | undefined;
  /** The model's kernel profile and whether it was measured. */
  profile: string;
  notes: string[];
}

/** The model's prediction in the shape of an observation: `names` maps a mapper's pid to its workload. */
export function predictedOutcome(prediction: KernelPrediction, names: ReadonlyMap<number, string>, size: HugepageSize, touched: readonly string[]): Outcome {
  const named = (pids: number[]): string[] => pids.map((pid) => names.get(pid) ?? `pid ${pid}`).sort();
  return {
    pageType: prediction.pageType,
    result: prediction.kernelResult,
    ao: named(prediction.mappers.filter((m) => m.atError === "AO").map((m) => m.pid)),
    // Only the workloads the scenario touches can show it.
    ar: named(prediction.mappers.filter((m) => m.onAccess === "AR").map((m) => m.pid)).filter((n) => touched.includes(n)),
    lsb: prediction.mappers.some((m) => m.onAccess === "AR") && touched.length > 0 ? prediction.signalAddressLsb : undefined,
    pool: { size, total: prediction.pool?.totalDelta ?? 0, free: prediction.pool?.freeDelta ?? 0 },
    hardwareCorruptedBytes: prediction.hardwareCorruptedDelta,
  };
}

const canonical = (o: Outcome): string => JSON.stringify([o.pageType, o.result, [...o.ao].sort(), [...o.ar].sort(), o.lsb, o.pool, o.hardwareCorruptedBytes]);

export function agree(observed: Outcome, predicted: Outcome): boolean {
  const replacementAgrees =
    observed.replacement === predicted.replacement ||
    (observed.replacement !== undefined && (predicted.replacement?.split("|") ?? []).includes(observed.replacement));
  return replacementAgrees && canonical(observed) === canonical(predicted);
}

const signed = (n: number): string => (n > 0 ? `+${n}` : String(n));

export function describeOutcome(o: Outcome): string {
  const verdict = o.pageType === undefined ? "no verdict line" : `${o.pageType}: ${o.result ?? "?"}`;
  const list = (names: string[]): string => (names.length === 0 ? "none" : names.join(", "));
  return [
    verdict,
    `AO ${list(o.ao)}`,
    `AR ${list(o.ar)}${o.lsb === undefined ? "" : ` (lsb ${o.lsb})`}`,
    `${o.pool.size} total ${signed(o.pool.total)} free ${signed(o.pool.free)}`,
    `HardwareCorrupted ${signed(o.hardwareCorruptedBytes / 1024)} kB`,
    ...(o.replacement === undefined ? [] : [`replacement ${o.replacement.replace("|", " or ")}`]),
  ].join("; ");
}

export function renderTable(rows: readonly Row[]): string {
  const lines = ["| scenario | kernel observed | model predicted | agreed | injection → event |", "|---|---|---|---|---|"];
  for (const row of rows) {
    const seconds = (ms: number | undefined): string => (ms === undefined ? "?" : `${(ms / 1000).toFixed(2)} s`);
    const event = row.injectionToEventMs === undefined ? "no event (nothing logged)" : seconds(row.injectionToEventMs);
    const latency =
      row.prevention === undefined ? event : `${event}; threshold → decision ${seconds(row.prevention.decidedMs)}, → done ${seconds(row.prevention.doneMs)}`;
    const predicted = row.agreed ? "same" : describeOutcome(row.predicted);
    lines.push(`| ${row.scenario} | ${describeOutcome(row.observed)} | ${predicted} | ${row.agreed ? "yes" : "**NO**"} | ${latency} |`);
  }
  return lines.join("\n");
}

export function writeResults(file: string, meta: Record<string, unknown>, rows: readonly Row[]): void {
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify({ ...meta, agreed: rows.filter((r) => r.agreed).length, scenarios: rows }, null, 2)}\n`);
}
