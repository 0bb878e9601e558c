// Reconciles one node's NodeMemoryHealth status, its HugepageMemoryDegraded Node condition and its gauges
// from the node's events. The health is the model's (escalation.ts's nodeHealth, the same count the taint
// and cordon decisions use), so the three never disagree. The worst DIMM and the corrected-error gauges
// count the agent's hourly buckets in the policy's prevention window (risk.ts), the window the prevention
// decisions use; they move with the clock, so each reconcile (at least one per resync) recounts them.
import type { MemoryErrorEvent, NodeMemoryHealth, NodeMemoryHealthStatus } from "../../crds/generated.ts";
import { formatBytes } from "../../crds/quantity.ts";
import { clip } from "../../crds/validate.ts";
import { HUGEPAGE_SIZES } from "../../kernel/pfn.ts";
import { policyDuration, WINDOW_FLOOR_MS } from "../model/duration.ts";
import { replacementPause } from "../model/replacement.ts";
import { countInWindow, preventionWindowMs, worstDimm } from "../model/risk.ts";
import type { Policy } from "../model/types.ts";
import { ClusterState, defaultPolicy } from "../state.ts";
import type { NodeInfo } from "../state.ts";
import type { WorkResult } from "../../runtime/queue.ts";
import { iso, nodeRef, recordEvent, sameStatus, setCondition, writeEventStatus } from "./context.ts";
import type { ReconcileContext } from "./context.ts";

export class NodeReconciler {
  private readonly context: ReconcileContext;

  constructor(context: ReconcileContext) {
    this.context = context;
  }

  async reconcile(nodeName: string): Promise<WorkResult> {
    const { state, metrics, actions } = this.context;
    const health = state.health.get(nodeName);
    const node = state.nodes.get(nodeName);
    const events = state.eventsOn(nodeName);
    const match = state.policyFor(nodeName);
    const now = this.context.now();
    if (node) await this.noticeUndone(node, events, now);
    const verdict = state.nodeHealth(nodeName, now);
    const quarantined = HUGEPAGE_SIZES.map((size) => ({
      size,
      bytes: events
        .flatMap((e) => e.status?.quarantine ?? [])
        .filter((q) => q.size === size && q.state === "Quarantined")
        .reduce((sum, q) => sum + q.bytes, 0),
    })).filter((q) => q.bytes > 0);
    for (const size of HUGEPAGE_SIZES) metrics.quarantinedBytes.set({ node: nodeName, size }, quarantined.find((q) => q.size === size)?.bytes ?? 0);
    const boot = health?.spec.bootID;
    const thisBoot = events.filter((e) => !boot || e.spec.bootID === boot);
    const poisoned = new Set(
      thisBoot.filter((e) => e.spec.hugepage && e.status?.prediction?.poolEffect !== "None").map((e) => `${e.spec.hugepage?.size}/${e.spec.hugepage?.headPfn}`),
    );
    const nodeAction = node?.cordonedByUs ? "Cordon" : node && state.taintedByUs(node) ? "Taint" : "None";
    // Capacity a pool lost and no replacement gave back.
    const lostForGood = HUGEPAGE_SIZES.map((size) => ({
      size,
      bytes: thisBoot
        .filter((e) => e.spec.hugepage?.size === size && e.status?.poolReplacement?.state !== "Given")
        .reduce((sum, e) => sum + (e.status?.prediction?.lostBytes ?? 0), 0),
    })).filter((l) => l.bytes > 0);
    for (const size of HUGEPAGE_SIZES) metrics.capacityLostBytes.set({ node: nodeName, size }, lostForGood.find((l) => l.size === size)?.bytes ?? 0);
    const policy = match.kind === "matched" ? match.policy.spec : undefined;
    const poolReplacements = policy?.poolReplacement.enabled ? this.replacementCounts(nodeName, policy, now) : undefined;
    const worst = this.correctedErrors(nodeName, health, node !== undefined, policy ?? defaultPolicy, now);
    const held = quarantined.map((q) => `${formatBytes(q.bytes)} hugepages-${q.size}`).join(", ") || "nothing";
    const message = clip(`${verdict.words}; ${poisoned.size} poisoned hugepage(s); ${held} quarantined`, 1024);
    if (health) {
      const status: NodeMemoryHealthStatus = {
        observedGeneration: health.metadata.generation,
        health: verdict.health,
        uncorrectedErrors: verdict.uncorrectedErrors,
        correctedErrors: verdict.correctedErrors,
        countedErrors: verdict.countedErrors,
        window: verdict.window,
        worstDimm: worst && clip(worst.name, 128),
        worstDimmCorrectedErrors: worst?.correctedErrors,
        poisonedHugepages: poisoned.size,
        quarantinedCapacity: formatBytes(quarantined.reduce((sum, q) => sum + q.bytes, 0)),
        quarantined,
        nodeAction,
        poolReplacements,
        capacityLostForGood: lostForGood,
        conditions: setCondition(
          health.status?.conditions,
          { type: "Degraded", status: verdict.health === "Healthy" ? "False" : "True", reason: verdict.health, message },
          now,
          health.metadata.generation,
        ),
      };
      if (!sameStatus({ ...status, conditions: undefined }, { ...health.status, conditions: undefined })) {
        await actions.applyHealthStatus(nodeName, status);
        // The copy read before the write is stale by now: an agent report may have arrived meanwhile.
        const current = state.health.get(nodeName);
        if (current) state.health.set(nodeName, { ...current, status });
      }
    }
    const old = node?.degradedCondition;
    // The Node's words change only with its health: a Node write fans out to every watcher of nodes, so
    // the counts that move with each error stay in NodeMemoryHealth.
    const nodeMessage =
      verdict.health === "Healthy"
        ? `no hugepage memory errors counted in the last ${verdict.window}`
        : `hugepage memory errors counted in the last ${verdict.window} (${verdict.health}); counts, poisoned hugepages and quarantined capacity: NodeMemoryHealth ${nodeName}`;
    const wanted = { status: verdict.health === "Healthy" ? ("False" as const) : ("True" as const), reason: verdict.health, message: nodeMessage };
    if (node && (events.length > 0 || old) && !sameStatus({ ...old, lastTransitionTime: undefined }, wanted)) {
      const lastTransitionTime = old?.status === wanted.status && old.lastTransitionTime ? old.lastTransitionTime : iso(now);
      await actions.setNodeCondition(nodeName, { ...wanted, lastTransitionTime });
      // Onto the node as cached now, not the copy read before the write: a taint or cordon an event's
      // pass applied meanwhile must stay in the budget's view.
      const current = state.nodes.get(nodeName);
      if (current) state.nodes.set(nodeName, { ...current, degradedCondition: { ...wanted, lastTransitionTime } });
    }
    return undefined;
  }

  /**
   * A taint or cordon the operator applied that someone else removed: the node's real state is the truth,
   * so the budget slot is free already; this records it on the event that applied it (nodeAction.undoneAt)
   * and tells people, once. The next error that reaches the threshold applies it again.
   */
  private async noticeUndone(node: NodeInfo, events: readonly MemoryErrorEvent[], now: number): Promise<void> {
    const { state } = this.context;
    for (const event of events) {
      const action = event.status?.nodeAction;
      if (action?.state !== "Done" || !action.appliedAt || action.undoneAt || action.action === "None") continue;
      if (action.action === "Cordon" ? node.cordonedByUs : state.taintedByUs(node)) continue;
      const verb = action.action === "Cordon" ? "cordon" : "taint";
      await writeEventStatus(this.context, event, { ...event.status, nodeAction: { ...action, undoneAt: iso(now) } });
      const message = `the operator's ${verb} for memory error ${event.metadata.name} was removed by someone else: its budget slot is free, and the next memory error that reaches the threshold applies it again`;
      recordEvent(this.context, nodeRef(node.name), "Normal", action.action === "Cordon" ? "CordonRemoved" : "TaintRemoved", message);
      this.context.log.info(`${verb} removed by someone else`, { node: node.name, memoryErrorEvent: event.metadata.name });
    }
  }

  /**
   * The node's corrected errors in the prevention window of its policy (the CRD's defaults where none
   * governs it): the worst DIMM for status, or the worst page where the agent has no DIMM counters
   * (risk.ts's worstDimm); and the gauges, per DIMM with errors and for the worst page not retired yet.
   * A node gone from the cache keeps no series, nor does any other node gone meanwhile: nothing
   * reconciles a deleted node.
   */
  private correctedErrors(
    nodeName: string,
    health: NodeMemoryHealth | undefined,
    nodeExists: boolean,
    policy: Policy,
    now: number,
  ): ReturnType<typeof worstDimm> {
    const { state, metrics } = this.context;
    const windowMs = preventionWindowMs(policy);
    const { dimms, pages } = ClusterState.correctedOf(health);
    metrics.forgetCorrectedErrors((name) => state.nodes.has(name));
    metrics.setCorrectedErrors(
      nodeName,
      nodeExists
        ? {
            dimms: dimms.map((d) => ({ dimm: d.name, label: d.label, correctedErrors: countInWindow(d.hourly, windowMs, now) })),
            worstPage: Math.max(0, ...pages.filter((p) => !p.softOfflined).map((p) => countInWindow(p.hourly, windowMs, now))),
            thresholds: { dimm: policy.prevention.dimmThreshold, page: policy.prevention.pageThreshold },
          }
        : undefined,
    );
    return worstDimm(dimms, pages, windowMs, now);
  }

  /** Replacements asked of the node's agent in the policy's window, and the pause after two refusals. */
  private replacementCounts(nodeName: string, policy: Policy, now: number): NonNullable<NodeMemoryHealthStatus["poolReplacements"]> {
    const node = this.context.state.nodeState(nodeName);
    const windowMs = policyDuration(policy.poolReplacement.window, "spec.poolReplacement.window", WINDOW_FLOOR_MS);
    const recent = (node.replacements ?? []).filter((r) => r.at > now - windowMs);
    const count = (states: string[]): number => recent.filter((r) => states.includes(r.state)).length;
    const pause = replacementPause(node, policy, now);
    return { tried: count(["Requested", "Given", "Refused"]), given: count(["Given"]), refused: count(["Refused"]), pausedUntil: pause && iso(pause.until) };
  }
}
