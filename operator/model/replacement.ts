// Self-healing hugepage pools, the decision half: after the kernel has taken a poisoned hugepage out of
// the pool, one replacement hugepage allocated by the node's agent makes the real capacity equal to what
// the kubelet advertises again. Pure: the node's state, the policy and `now` in, a decision with its
// reason out. The agent does the allocating and the kernel has the last word (it may give nothing).
import type { MemoryErrorEventStatusPoolReplacement } from "../../crds/generated.ts";
import { formatBytes, parseQuantity } from "../../crds/quantity.ts";
import { hugepageBytes, PAGE_SIZE_BYTES } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { policyDuration, WINDOW_FLOOR_MS } from "./duration.ts";
import { countedInPool } from "./prediction.ts";
import type { KernelPrediction } from "./prediction.ts";
import type { MemoryError, NodeState, Policy, ReplacementState } from "./types.ts";

/** After this many refusals by the kernel within the window, the node is not asked again until the window passes. */
export const REFUSALS_BEFORE_PAUSE = 2;

/** Counted against the per-window limit: every replacement asked for, whatever the kernel answered. */
const ASKED = new Set<ReplacementState>(["Planned", "Requested", "Given", "Refused"]);

/**
 * The most hugepages of `size` the pool on `numaNode` may hold: the node's pool before the errors (what
 * the kubelet advertises, read at its start) plus the poisoned pages nr_hugepages still counts (shared
 * hugetlbfs pages the kernel holds for ever), less what the node's other NUMA pools hold now. Undefined
 * when the node does not advertise the size, so its size before the errors is unknown.
 */
export function poolCeiling(node: NodeState, size: HugepageSize, numaNode: number, extraHeld = 0): number | undefined {
  const advertised = node.allocatableBytes[size];
  if (advertised === undefined) return undefined;
  const held = node.poisonedHugepages.filter((p) => p.size === size && p.inPool).length + extraHeld;
  const others = node.pools.filter((p) => p.size === size && p.numaNode !== numaNode).reduce((sum, p) => sum + p.total, 0);
  return Math.max(0, Math.floor(advertised / hugepageBytes(size)) + held - others);
}

/** Why the node is not asked for replacements now (the kernel refused twice in the window), or undefined. */
export function replacementPause(node: Pick<NodeState, "replacements">, policy: Policy, now: number): { until: number; reason: string } | undefined {
  const windowText = policy.poolReplacement.window;
  const windowMs = policyDuration(windowText, "spec.poolReplacement.window", WINDOW_FLOOR_MS);
  const refused = (node.replacements ?? []).filter((r) => r.state === "Refused" && r.at > now - windowMs && r.at <= now).sort((a, b) => a.at - b.at);
  if (refused.length < REFUSALS_BEFORE_PAUSE) return undefined;
  // The pause lasts until enough refusals have left the window.
  const until = (refused[refused.length - REFUSALS_BEFORE_PAUSE]?.at ?? now) + windowMs;
  return {
    until,
    reason: `the kernel refused ${refused.length} replacement(s) on this node in ${windowText}: not asked again before ${new Date(until).toISOString()}`,
  };
}

const none = (reason: string): MemoryErrorEventStatusPoolReplacement => ({ action: "None", reason });

/**
 * Whether to ask the node's agent for one replacement hugepage, for which pool, how far it may raise it,
 * and what the model expects the kernel to give. Undefined when the policy leaves replacement off.
 */
export function decidePoolReplacement(
  prediction: KernelPrediction,
  error: MemoryError,
  node: NodeState,
  policy: Policy,
  now: number,
  dryRun: boolean,
): MemoryErrorEventStatusPoolReplacement | undefined {
  const settings = policy.poolReplacement;
  if (!settings.enabled) return undefined;
  const page = error.hugepage;
  const effect = prediction.poolEffect;
  if (!page || effect === "None" || effect === "NotHugepage" || effect === "Unknown")
    return none(
      effect === "Unknown"
        ? "what the kernel did to the pool is unknown under this kernel profile: no replacement"
        : "no hugepage left the pool: nothing to replace",
    );
  const size = page.size;
  const bytes = hugepageBytes(size);
  const limit = settings.sizes.find((s) => s.size === size);
  if (!limit) return none(`the policy names no hugepages-${size} pool for replacement`);
  if (node.poolResize === false)
    return none("the node's agent cannot write its hugepage pools (/sys is read-only to it; the chart's agent.poolReplacement.enabled mounts them writable)");
  const sizePools = node.pools.filter((p) => p.size === size);
  const numaNode = page.numaNode ?? (sizePools.length === 1 ? sizePools[0]?.numaNode : undefined);
  if (numaNode === undefined) return none(`the hugepage's NUMA node is unknown and the node has ${sizePools.length} hugepages-${size} pools`);
  const pause = replacementPause(node, policy, now);
  if (pause) return none(pause.reason);
  const windowText = settings.window;
  const windowMs = policyDuration(windowText, "spec.poolReplacement.window", WINDOW_FLOOR_MS);
  const maxPerWindow = limit.maxPerWindow;
  const asked = (node.replacements ?? []).filter((r) => r.size === size && ASKED.has(r.state) && r.at > now - windowMs && r.at <= now).length;
  if (asked >= maxPerWindow)
    return none(`${asked} hugepages-${size} replacement(s) asked for on this node in ${windowText}: the policy's limit is ${maxPerWindow}`);
  // This error's page, when the kernel still counts it, is not in node.poisonedHugepages yet.
  const maxTotal = poolCeiling(node, size, numaNode, countedInPool(effect) ? 1 : 0);
  if (maxTotal === undefined) return none(`the node does not advertise hugepages-${size}, so the pool's size before the errors is unknown`);
  const minFreeBytes = parseQuantity(settings.minFreeMemory);
  const afterMappersExit = effect === "ReleasedOnUnmap";
  const memory = node.numaMemory?.find((m) => m.numaNode === numaNode);
  // A mapped page's memory, all but the poisoned 4 KiB, returns to the node when its last mapper exits.
  const returning = afterMappersExit ? bytes - PAGE_SIZE_BYTES : 0;
  if (memory && memory.freeBytes + returning - bytes < minFreeBytes)
    return none(
      `NUMA node ${numaNode} has ${formatBytes(memory.freeBytes + returning)} free; a hugepages-${size} replacement would leave less than the policy's floor of ${formatBytes(minFreeBytes)}`,
    );
  let expected: "Likely" | "Uncertain";
  let why: string;
  if (size === "1Gi") {
    expected = "Uncertain";
    why = "a 1 GiB page needs 1 GiB of contiguous free or movable memory, which fragmentation often denies";
  } else if (!memory) {
    expected = "Uncertain";
    why = "the agent has not reported the node's free memory";
  } else if ((memory.free2MiBlocks ?? 0) > 0) {
    expected = "Likely";
    why = `${memory.free2MiBlocks ?? 0} free 2 MiB block(s) on NUMA node ${numaNode}`;
  } else {
    expected = "Uncertain";
    why = `no free 2 MiB block on NUMA node ${numaNode}: the kernel must compact memory first`;
  }
  const when =
    effect === "HeldForever"
      ? "at once: the poisoned page is held for ever, so the pool needs one more page to give back what it had"
      : afterMappersExit
        ? "once every process that mapped the poisoned page has exited"
        : "at once: the kernel has finished with the poisoned page";
  return {
    action: "Replace",
    state: dryRun ? "DryRun" : "Planned",
    size,
    numaNode,
    maxTotal,
    afterMappersExit,
    minFreeBytes,
    expected,
    givesBytes: bytes,
    lostForGoodBytes: prediction.memoryLostBytes,
    reason: `raise the hugepages-${size} pool on NUMA node ${numaNode} by one (to at most ${maxTotal}) ${when}; ${expected.toLowerCase()}: ${why}; gives back ${formatBytes(bytes)} of hugepages, ${formatBytes(prediction.memoryLostBytes)} of memory stays lost`,
  };
}
