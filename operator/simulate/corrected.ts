// Corrected errors in the simulator. Two halves, kept apart as they are in the cluster: the counts a
// node's agent would publish in NodeMemoryHealth (corrected errors per 4 KiB page and per DIMM in hourly
// buckets, spec.correctedErrorPages and spec.dimms), and each page's corrected-error event with its
// prevention as the event reconciler records it: decided by the risk model (model/risk.ts) with the same
// inputs, Watching until a threshold, then decided once. No agent code: the simulator is operator side.
import type { MemoryErrorEventStatusPod, MemoryErrorEventStatusPrevention } from "../../crds/generated.ts";
import { addToHour, type HourlyCount } from "../../crds/hourly.ts";
import { formatPfn } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { plannedEvictions } from "../model/containment.ts";
import { countInWindow, decidePrevention, preventionWindowMs } from "../model/risk.ts";
import type { CorrectedPage, DimmCounts, SoftOfflineSupport } from "../model/risk.ts";
import type { ClusterBudget, DisruptionBudgetState, Mapper, NodeState, PodState, Policy } from "../model/types.ts";

/** What the agent keeps: at most 64 pages (the one seen longest ago goes), a week of hours each (crds/hourly.ts). */
export const MAX_PAGES = 64;
/** The reconciler's words for a planned move (reconcile/event.ts planPrevention). */
const MOVE_WHY = "maps a hugepage at risk of an uncorrected error (corrected errors past the policy's threshold): move early";

/** `count` more corrected errors at `at`, in a copy of the buckets: the simulator keeps each step's. */
function counted(hourly: readonly HourlyCount[], at: number, count: number): HourlyCount[] {
  const copy = hourly.map((h) => ({ ...h }));
  addToHour(copy, at, count);
  return copy;
}

interface PageCount extends CorrectedPage {
  lastAt: number;
}

/** One node's corrected errors as its agent counts them. */
export class AgentCounts {
  readonly #pages = new Map<number, PageCount>();
  readonly #dimms = new Map<string, DimmCounts>();

  /** Corrected errors on a page; a DIMM named for it counts them too (its EDAC counter sees every one). */
  countPage(pfn: number, at: number, count: number, where: { hugepage?: CorrectedPage["hugepage"]; dimm?: string | undefined }): void {
    const known = this.#pages.get(pfn);
    const dimm = where.dimm === undefined ? known?.dimm : this.countDimm(where.dimm, undefined, at, count);
    this.#pages.set(pfn, {
      pfn,
      hugepage: known?.hugepage ?? where.hugepage,
      dimm,
      hourly: counted(known?.hourly ?? [], at, count),
      softOfflined: known?.softOfflined ?? false,
      lastAt: Math.max(known?.lastAt ?? at, at),
    });
    this.#evictPages();
  }

  /** Corrected errors on a DIMM (its EDAC counter rose); returns the DIMM's name. */
  countDimm(name: string, label: string | undefined, at: number, count: number): string {
    const known = this.dimm(name);
    const key = known?.name ?? name;
    this.#dimms.set(key, { name: key, label: label ?? known?.label, hourly: counted(known?.hourly ?? [], at, count) });
    return key;
  }

  /** The page is retired (soft-offlined by the kernel's collector or at the operator's request). */
  retire(pfn: number, at: number): void {
    const known = this.#pages.get(pfn);
    this.#pages.set(pfn, { ...(known ?? { pfn, hourly: [], lastAt: at }), softOfflined: true, lastAt: Math.max(known?.lastAt ?? at, at) });
    this.#evictPages();
  }

  page(pfn: number): CorrectedPage | undefined {
    return this.#pages.get(pfn);
  }

  /** A DIMM by its name or its label, as the risk model finds a page's DIMM. */
  dimm(name: string): DimmCounts | undefined {
    return this.#dimms.get(name) ?? [...this.#dimms.values()].find((d) => d.label === name);
  }

  dimms(): DimmCounts[] {
    return [...this.#dimms.values()];
  }

  pages(): CorrectedPage[] {
    return [...this.#pages.values()];
  }

  #evictPages(): void {
    while (this.#pages.size > MAX_PAGES) {
      const oldest = [...this.#pages.values()].reduce((a, b) => (b.lastAt < a.lastAt ? b : a));
      this.#pages.delete(oldest.pfn);
    }
  }
}

/** A page's corrected-error event (its first corrected error), as the operator keeps it. */
export interface PageEvent {
  pfn: number;
  hugepage: CorrectedPage["hugepage"];
  /** The mappers the agent found at the first error. */
  mappers: readonly Mapper[];
  /** Once the prevention left Watching: when (the timeline's offset) and what. */
  decided?: { at: string; action: MemoryErrorEventStatusPrevention["action"]; state: MemoryErrorEventStatusPrevention["state"] } | undefined;
}

/** What the kernel did to the pool when it soft-offlined the page's hugepage. */
export interface SoftOfflinePool {
  size: HugepageSize;
  totalDelta: number;
  freeDelta: number;
  /** Where the hugepage the contents moved to came from: a free one of the pool, or free memory. */
  from: "Pool" | "FreeMemory";
  /** Free 2 MiB blocks of memory on the NUMA node, after (when the node reports them). */
  free2MiBlocks?: number | undefined;
}

export interface SimulatedPrevention {
  pfn: string;
  action: MemoryErrorEventStatusPrevention["action"];
  state: MemoryErrorEventStatusPrevention["state"];
  reason: string;
  correctedErrors: number;
  /** For a page decided by an earlier entry: that entry's offset. */
  decidedAt?: string | undefined;
  message?: string | undefined;
  pool?: SoftOfflinePool | undefined;
  pods: MemoryErrorEventStatusPod[];
}

/** The node as the prevention reads and changes it. */
export interface PreventionNode {
  pools: NodeState["pools"];
  numaMemory?: NodeState["numaMemory"];
}

export interface PreventionStep {
  event: PageEvent;
  counts: AgentCounts;
  node: PreventionNode;
  support: SoftOfflineSupport;
  /** Pods on the node now. */
  pods: readonly PodState[];
  pdbs: readonly DisruptionBudgetState[];
  policy: Policy;
  budget: ClusterBudget;
  now: number;
  /** The timeline's offset, for a decision later entries refer to. */
  at: string;
}

/**
 * The page's prevention at this point of the timeline, as planPrevention records it: the risk model
 * decides while the event is Watching (a retired page is Skipped by the model itself); a decided event is
 * not decided again. A soft offline is assumed done by the agent and its kernel, which takes the hugepage
 * the contents move to from the pool's free ones or, with none free, from free memory; the node changes.
 */
export function preventPage(step: PreventionStep): SimulatedPrevention {
  const { event, counts, node, policy, now, at } = step;
  const page = counts.page(event.pfn);
  const pfn = formatPfn(event.pfn);
  const decided = event.decided;
  if (decided !== undefined && page?.softOfflined !== true)
    return {
      pfn,
      action: decided.action,
      state: decided.state,
      reason: `the event of pfn ${pfn} was decided at +${decided.at}: later corrected errors on the page are only counted`,
      correctedErrors: Math.max(1, page ? countInWindow(page.hourly, preventionWindowMs(policy), now) : 1),
      decidedAt: decided.at,
      pods: [],
    };
  const mapperUIDs = new Set(event.mappers.map((m) => m.podUID));
  const decision = decidePrevention({
    page,
    pfn: event.pfn,
    hugepage: event.hugepage,
    dimms: counts.dimms(),
    otherPages: counts.pages(),
    node,
    support: step.support,
    mapperPods: step.pods.filter((p) => mapperUIDs.has(p.uid)).length,
    policy,
    now,
  });
  const base = { pfn, action: decision.action, reason: decision.reason, correctedErrors: decision.correctedErrors, pods: [] };
  if (decision.action === "None") {
    if (decision.state === "Skipped") event.decided ??= { at, action: "None", state: "Skipped" };
    return { ...base, state: decision.state };
  }
  const dryRun = policy.mode !== "Enforce";
  if (decision.action === "SoftOffline") {
    if (dryRun) {
      event.decided = { at, action: "SoftOffline", state: "DryRun" };
      return { ...base, state: "DryRun" };
    }
    const pool = softOffline(node, event.hugepage);
    counts.retire(event.pfn, now);
    event.decided = { at, action: "SoftOffline", state: "Done" };
    return { ...base, state: "Done", message: "assumed done by the node's agent and its kernel", pool };
  }
  const state = dryRun ? "DryRun" : "Requested";
  event.decided = { at, action: "Evict", state };
  return { ...base, state, pods: plannedEvictions({ pods: step.pods, mappers: event.mappers, pdbs: step.pdbs, policy, budget: step.budget }, MOVE_WHY) };
}

/**
 * What soft offline does to the node, as the risk model describes it (measured on 6.12): the contents
 * move to a free hugepage of the pool and the old one is dissolved (total -1, free -1); with none free,
 * to a hugepage the kernel allocates from free memory (the pool keeps its size, one free 2 MiB block is
 * used). A page outside any hugepage is migrated at 4 KiB: the pools do not change.
 */
function softOffline(node: PreventionNode, hugepage: CorrectedPage["hugepage"]): SoftOfflinePool | undefined {
  if (hugepage === undefined) return undefined;
  const { size, numaNode } = hugepage;
  const onNuma = (n: number): boolean => numaNode === undefined || n === numaNode;
  const pool = node.pools.find((p) => p.size === size && onNuma(p.numaNode) && p.free > 0);
  if (pool) {
    node.pools = node.pools.map((p) => (p === pool ? { ...p, total: p.total - 1, free: p.free - 1 } : p));
    return { size, totalDelta: -1, freeDelta: -1, from: "Pool" };
  }
  const memory = node.numaMemory?.find((m) => onNuma(m.numaNode) && m.free2MiBlocks !== undefined);
  if (memory?.free2MiBlocks === undefined) return { size, totalDelta: 0, freeDelta: 0, from: "FreeMemory" };
  const free2MiBlocks = Math.max(0, memory.free2MiBlocks - 1);
  node.numaMemory = node.numaMemory?.map((m) => (m === memory ? { ...m, free2MiBlocks } : m));
  return { size, totalDelta: 0, freeDelta: 0, from: "FreeMemory", free2MiBlocks };
}
