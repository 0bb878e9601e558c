// The risk model: what to do about a page that takes corrected errors, before anything is lost. Pure, like
// the rest of the model. The agent counts corrected errors per 4 KiB page and per DIMM in hourly buckets
// (NodeMemoryHealth spec.correctedErrorPages, spec.dimms); this counts them in the policy's window and
// says, with a reason: keep watching, soft-offline the page's hugepage (the kernel migrates its contents
// and retires the 4 KiB page, nobody is signalled), or evict the pods that map it while they still can.
// What soft offline does was measured on 6.12 (test/e2e/kernel/README.md): a private or shared in-use
// hugepage migrates to a free hugepage of its pool, or, with none free, to one the kernel takes from the
// buddy allocator; a free hugepage is dissolved. A gigantic (1 GiB) page is never allocated for migration.
import { HOUR_MS, MAX_HOURS } from "../../crds/hourly.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { formatPfn } from "../../kernel/pfn.ts";
import { formatDuration, policyDuration } from "./duration.ts";
import type { HourlyCount, NodeState, Policy } from "./types.ts";

export type { HourlyCount } from "./types.ts";

/** The agent keeps a week of hours. */
const MAX_WINDOW_MS = MAX_HOURS * HOUR_MS;

/** The policy's prevention window, floored at an hour and capped at the week the agent keeps. */
export function preventionWindowMs(policy: Policy): number {
  return Math.min(policyDuration(policy.prevention.window, "spec.prevention.window", HOUR_MS), MAX_WINDOW_MS);
}

export interface CorrectedPage {
  pfn: number;
  hugepage?: { size: HugepageSize; headPfn: number; numaNode?: number | undefined } | undefined;
  dimm?: string | undefined;
  hourly: readonly HourlyCount[];
  /** Retired already: by the kernel's own collector or by an earlier soft offline. */
  softOfflined: boolean;
}

export interface DimmCounts {
  name: string;
  label?: string | undefined;
  hourly: readonly HourlyCount[];
}

/** What the kernel offers for soft offline on the node, as its agent reports it. */
export interface SoftOfflineSupport {
  /** /sys/devices/system/memory/soft_offline_page exists. */
  available?: boolean | undefined;
  /** vm.enable_soft_offline (6.11+): 0 turns it off, bit 1 skips hugetlb pages. */
  enableSoftOffline?: number | undefined;
}

export interface PreventionInput {
  /** The page as the agent counts it; undefined until the agent's report carries it (the event is its first error). */
  page: CorrectedPage | undefined;
  pfn: number;
  hugepage?: CorrectedPage["hugepage"];
  dimms: readonly DimmCounts[];
  node: Pick<NodeState, "pools" | "numaMemory">;
  support: SoftOfflineSupport;
  /** Pods that map the page's hugepage. */
  mapperPods: number;
  /** The node's other pages with corrected errors: those in the same hugepage count toward it. */
  otherPages?: readonly CorrectedPage[] | undefined;
  policy: Policy;
  now: number;
}

export type Prevention =
  | { action: "None"; state: "Watching" | "Skipped"; reason: string; correctedErrors: number }
  | { action: "SoftOffline"; reason: string; correctedErrors: number }
  | { action: "Evict"; reason: string; correctedErrors: number };

/**
 * Corrected errors in the window ending `now`, counted in whole hours: an hour counts when any of it lies
 * in the window, so a count can be at most one hour's errors early, never late.
 */
export function countInWindow(hourly: readonly HourlyCount[], windowMs: number, now: number): number {
  return hourly.filter((h) => h.hour + HOUR_MS > now - windowMs && h.hour <= now).reduce((sum, h) => sum + h.count, 0);
}

/** The node's corrected errors per hour: its DIMMs' where they are counted, else its pages'. */
export function correctedHourly(dimms: readonly DimmCounts[], pages: readonly CorrectedPage[]): HourlyCount[] {
  return (dimms.length > 0 ? dimms : pages).flatMap((d) => d.hourly);
}

/** The DIMM (or, without DIMM counters, the page) with the most corrected errors in the window. */
export function worstDimm(
  dimms: readonly DimmCounts[],
  pages: readonly CorrectedPage[],
  windowMs: number,
  now: number,
): { name: string; correctedErrors: number } | undefined {
  const named = [
    ...dimms.map((d) => ({ name: d.label ? `${d.name} (${d.label})` : d.name, hourly: d.hourly })),
    // Without DIMM counters the pages stand in for their DIMM: a retired page's errors still say how it fares.
    ...(dimms.length === 0 ? pages.map((p) => ({ name: `page ${formatPfn(p.pfn)}`, hourly: p.hourly })) : []),
  ];
  let worst: { name: string; correctedErrors: number } | undefined;
  for (const { name, hourly } of named) {
    const correctedErrors = countInWindow(hourly, windowMs, now);
    if (correctedErrors > (worst?.correctedErrors ?? 0)) worst = { name, correctedErrors };
  }
  return worst;
}

/** Why the kernel cannot soft-offline this page's hugepage now, or undefined when it can. */
function softOfflineBlocked(input: PreventionInput): string | undefined {
  const { support, hugepage, node } = input;
  if (support.available === false) return "the kernel has no soft_offline_page";
  if (support.enableSoftOffline === 0) return "vm.enable_soft_offline is 0 on the node";
  if (hugepage === undefined) return undefined;
  if (support.enableSoftOffline !== undefined && (support.enableSoftOffline & 2) !== 0) return "vm.enable_soft_offline skips hugetlb pages (bit 1)";
  const numa = hugepage.numaNode;
  const freeInPool = node.pools.filter((p) => p.size === hugepage.size && (numa === undefined || p.numaNode === numa)).reduce((n, p) => n + p.free, 0);
  if (freeInPool > 0) return undefined;
  if (hugepage.size === "1Gi") return "no free 1Gi hugepage to migrate to, and the kernel never allocates a gigantic page for migration";
  const blocks = (node.numaMemory ?? []).filter((m) => numa === undefined || m.numaNode === numa).map((m) => m.free2MiBlocks);
  // Unknown (an agent that does not read buddyinfo) counts as possible: the kernel says no if it cannot.
  if (blocks.length > 0 && blocks.every((b) => b === 0)) return "no free 2Mi hugepage and no free 2 MiB block of memory to migrate to";
  return undefined;
}

function target(input: PreventionInput): string {
  const { hugepage, node } = input;
  if (hugepage === undefined) return "the kernel migrates the 4 KiB page and retires it";
  const free = node.pools.some((p) => p.size === hugepage.size && (hugepage.numaNode === undefined || p.numaNode === hugepage.numaNode) && p.free > 0);
  const head = formatPfn(hugepage.headPfn);
  return free
    ? `the kernel migrates ${hugepage.size} hugepage ${head} to a free hugepage of its pool and retires the 4 KiB page: the pool loses one hugepage`
    : `the kernel migrates ${hugepage.size} hugepage ${head} to a hugepage it allocates from free memory and retires the 4 KiB page: the pool keeps its size`;
}

/** What to do about a page with corrected errors, now. */
export function decidePrevention(input: PreventionInput): Prevention {
  const { page, pfn, policy, now } = input;
  const { pageThreshold, dimmThreshold, softOffline, plannedEviction } = policy.prevention;
  const windowMs = preventionWindowMs(policy);
  const span = formatDuration(windowMs);
  const where = formatPfn(pfn);
  // The event is the page's first error: the agent's report may not carry the page yet.
  const count = Math.max(1, page ? countInWindow(page.hourly, windowMs, now) : 1);
  if (page?.softOfflined === true)
    return {
      action: "None",
      state: "Skipped",
      reason: `pfn ${where} is already retired (soft-offlined by the kernel's corrected-errors collector or by the agent): its contents were migrated and the pool accounts for the capacity`,
      correctedErrors: count,
    };
  const dimmName = page?.dimm;
  const dimm = dimmName === undefined ? undefined : input.dimms.find((d) => d.name === dimmName || d.label === dimmName);
  const dimmCount = dimm ? countInWindow(dimm.hourly, windowMs, now) : 0;
  // The hugepage is what soft offline moves: errors on its other 4 KiB pages count toward it too.
  const head = input.hugepage;
  const neighbours =
    head === undefined
      ? []
      : (input.otherPages ?? []).filter((p) => p.pfn !== pfn && !p.softOfflined && p.hugepage?.size === head.size && p.hugepage.headPfn === head.headPfn);
  const inHugepage = count + neighbours.reduce((sum, p) => sum + countInWindow(p.hourly, windowMs, now), 0);
  // One page acts for its hugepage: the one with the most errors (the lowest pfn on a tie).
  const actsForHugepage = neighbours.every((p) => {
    const theirs = countInWindow(p.hourly, windowMs, now);
    return theirs < count || (theirs === count && p.pfn > pfn);
  });
  const pagePast = count >= pageThreshold || (inHugepage >= pageThreshold && actsForHugepage);
  const dimmPast = dimm !== undefined && dimmCount >= dimmThreshold;
  const onHugepage = head !== undefined && inHugepage > count ? `, ${inHugepage} on its ${head.size} hugepage ${formatPfn(head.headPfn)}` : "";
  const pageWords = `${count} corrected error(s) on pfn ${where}${onHugepage} in ${span} (page threshold ${pageThreshold})`;
  const dimmWords = dimm ? `; DIMM ${dimm.name} has ${dimmCount} in ${span} (threshold ${dimmThreshold})` : "";
  if (!pagePast && !dimmPast) return { action: "None", state: "Watching", reason: `${pageWords}${dimmWords}`, correctedErrors: count };
  const evict = (why: string): Prevention =>
    plannedEviction && input.mapperPods > 0
      ? {
          action: "Evict",
          reason: `${pageWords}${dimmWords}: ${why}; evict the ${input.mapperPods} pod(s) mapping the hugepage while nothing is lost`,
          correctedErrors: count,
        }
      : {
          action: "None",
          state: "Skipped",
          reason: `${pageWords}${dimmWords}: ${why}; ${plannedEviction ? "no pod maps the page" : "planned eviction is off in the policy"}`,
          correctedErrors: count,
        };
  if (!pagePast) return evict("its DIMM is failing");
  if (!softOffline) return evict("soft offline is off in the policy");
  const blocked = softOfflineBlocked(input);
  if (blocked !== undefined) return evict(`soft offline cannot be done: ${blocked}`);
  return { action: "SoftOffline", reason: `${pageWords}${dimmWords}: soft-offline it; ${target(input)}; nobody is signalled`, correctedErrors: count };
}
