// Capacity quarantine: hugepage capacity the kubelet still advertises after the kernel took a page out of
// the pool is held by a placeholder pod, so the scheduler never places a pod on capacity that is not
// there; and which quarantines a node keeps: what they hold together covers that stale capacity, and no
// more. Pure; one node and one hugepage size at a time.
import type { MemoryErrorEventStatusQuarantine } from "../../crds/generated.ts";
import { hugepageBytes } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { countedInPool } from "./prediction.ts";
import type { KernelPrediction } from "./prediction.ts";
import type { MemoryError, NodeState, Policy } from "./types.ts";

/**
 * Hugepage bytes the kubelet advertises beyond what the pools can really give: their total after
 * `totalDelta`, less `poisonedInPool` pages nr_hugepages still counts. Nothing where it advertises none.
 */
export function staleCapacity(size: HugepageSize, node: Pick<NodeState, "pools" | "allocatableBytes">, totalDelta: number, poisonedInPool: number): number {
  const bytes = hugepageBytes(size);
  const total = node.pools.filter((p) => p.size === size).reduce((sum, p) => sum + p.total, 0);
  return Math.max(0, (node.allocatableBytes[size] ?? 0) - (total + totalDelta - poisonedInPool) * bytes);
}

/** The quarantine one error adds: the stale capacity after it, less what was stale before it. */
export function quarantineFor(
  prediction: KernelPrediction,
  error: MemoryError,
  node: NodeState,
  policy: Policy,
  dryRun: boolean,
): MemoryErrorEventStatusQuarantine[] {
  const size = error.hugepage?.size;
  if (!size || prediction.lostBytes === 0 || !policy.capacityQuarantine.enabled) return [];
  const inPool = node.poisonedHugepages.filter((p) => p.size === size && p.inPool).length;
  const before = staleCapacity(size, node, 0, inPool);
  const stillInPool = countedInPool(prediction.poolEffect);
  // A page still counted in nr_hugepages is not subtracted twice: it leaves the total only when unmapped.
  const after = stillInPool ? staleCapacity(size, node, 0, inPool + 1) : staleCapacity(size, node, prediction.pool?.totalDelta ?? 0, inPool);
  const bytes = after - before;
  return bytes > 0 ? [{ size, bytes, state: dryRun ? "DryRun" : "Planned" }] : [];
}

export interface HeldQuarantine {
  eventName: string;
  bytes: number;
  /** A replacement hugepage was given for this error's page. */
  replaced: boolean;
  decidedAt: string;
}

/**
 * The events whose quarantine of one size on one node to release, given the stale capacity of that size:
 * those whose page was replaced go first, then the newest, until what stays held just covers it. Every
 * event's reconcile computes the same answer from the same node, so they agree without coordination, and
 * a replacement on a node with other lost pages still frees its own placeholder (the first real node
 * held 4Mi for 2Mi of stale capacity).
 */
export function quarantinesToRelease(held: readonly HeldQuarantine[], staleBytes: number): Set<string> {
  const keepFirst = [...held].sort(
    (a, b) => Number(a.replaced) - Number(b.replaced) || a.decidedAt.localeCompare(b.decidedAt) || a.eventName.localeCompare(b.eventName),
  );
  const release = new Set<string>();
  let kept = 0;
  for (const q of keepFirst) {
    if (kept >= staleBytes) release.add(q.eventName);
    else kept += q.bytes;
  }
  return release;
}
