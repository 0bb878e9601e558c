// Level-triggered reconcile of one MemoryErrorEvent, one node and one policy, in the kubebuilder shape:
// read the cached state, decide (once, with the containment model), record the decision in status,
// then carry out each action, recording it before and after, so a crash at any moment resumes
// without repeating or losing an action. Nothing here talks to the API except through ClusterActions.
import { createHash } from "node:crypto";
import type {
  ContainmentPolicy,
  MemoryErrorEvent,
  MemoryErrorEventStatus,
  MemoryErrorEventStatusPod,
  MemoryErrorEventStatusQuarantine,
  NodeMemoryHealthStatus,
} from "../crds/generated.ts";
import { group, version } from "../crds/naming.ts";
import { formatBytes } from "../crds/quantity.ts";
import { HUGEPAGE_SIZES } from "../kernel/pfn.ts";
import type { ClusterActions, EvictionOutcome, ObjectRef } from "./actions.ts";
import type { Logger } from "../runtime/log.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { decideContainment, isUncorrected } from "./model/containment.ts";
import type { Decision } from "./model/containment.ts";
import { formatDuration, parseDuration } from "./model/duration.ts";
import { quarantinesToRelease } from "./model/quarantine.ts";
import { replacementPause } from "./model/replacement.ts";
import { policyForNode, selectorMatches } from "./model/selector.ts";
import type { WorkResult } from "../runtime/queue.ts";
import { ClusterState, defaultTaintKey } from "./state.ts";

type Condition = NonNullable<MemoryErrorEventStatus["conditions"]>[number];

/** What one pass will do: the status with actions marked InProgress, and the side effects to make. */
interface Plan {
  status: MemoryErrorEventStatus;
  changed: boolean;
  evictions: MemoryErrorEventStatusPod[];
  toCreate: MemoryErrorEventStatusQuarantine[];
  toRelease: MemoryErrorEventStatusQuarantine[];
  taintOrCordon: boolean;
}
type Phase = NonNullable<MemoryErrorEventStatus["phase"]>;

export interface ReconcilerOptions {
  /** Namespace of the quarantine placeholder pods. */
  namespace: string;
  now: () => number;
  /** Called when a node's or a policy's status may have changed. */
  enqueueNode: (name: string) => void;
}

const terminalPodStates = new Set(["Done", "Skipped", "DryRun", "TimedOut", "Failed"]);
const maxBackoffMs = 300_000;
const iso = (ms: number): string => new Date(ms).toISOString();
const mceRef = (event: MemoryErrorEvent): ObjectRef => ({
  kind: "MemoryErrorEvent",
  name: event.metadata.name,
  uid: event.metadata.uid,
  apiVersion: `${group}/${version}`,
});
const nodeRef = (name: string): ObjectRef => ({ kind: "Node", name, apiVersion: "v1" });

export function quarantinePodName(eventName: string, size: string): string {
  return `mce-quarantine-${createHash("sha256").update(eventName).digest("hex").slice(0, 16)}-${size.toLowerCase()}`;
}

function setCondition(
  conditions: Condition[] | undefined,
  next: Omit<Condition, "lastTransitionTime">,
  now: number,
  generation: number | undefined,
): Condition[] {
  const old = conditions?.find((c) => c.type === next.type);
  const condition: Condition = {
    ...next,
    observedGeneration: generation,
    lastTransitionTime: old && old.status === next.status ? old.lastTransitionTime : iso(now),
  };
  return [...(conditions ?? []).filter((c) => c.type !== next.type), condition];
}

/** The phase an event is in, from how far its actions have got. */
export function phaseOf(status: MemoryErrorEventStatus): Phase {
  const pods = status.pods ?? [];
  const quarantine = status.quarantine ?? [];
  const node = status.nodeAction;
  const pending = pods.some((p) => !terminalPodStates.has(p.state)) || quarantine.some((q) => q.state === "Planned") || node?.state === "Planned";
  if (pending) return "Pending";
  if (pods.some((p) => p.state === "TimedOut" || p.state === "Failed")) return "Failed";
  if (node && node.action !== "None" && (node.state === "Done" || node.state === "DryRun")) return "Escalated";
  const effect = status.prediction?.poolEffect;
  if (pods.length === 0 && quarantine.length === 0 && (effect === "None" || effect === "NotHugepage")) return "Ignored";
  return "Contained";
}

export class Reconciler {
  private readonly state: ClusterState;
  private readonly actions: ClusterActions;
  private readonly metrics: OperatorMetrics;
  private readonly log: Logger;
  private readonly options: ReconcilerOptions;
  /** Nodes a taint or cordon is being applied to: counted against the budget before the API confirms. */
  private readonly reservedNodes = new Map<string, number>();

  constructor(state: ClusterState, actions: ClusterActions, metrics: OperatorMetrics, log: Logger, options: ReconcilerOptions) {
    this.state = state;
    this.actions = actions;
    this.metrics = metrics;
    this.log = log;
    this.options = options;
  }

  private async writeStatus(event: MemoryErrorEvent, status: MemoryErrorEventStatus): Promise<void> {
    // earlySignals and poolReplacementResult belong to the node's agent: the operator's apply never claims them.
    const held = await this.actions.applyEventStatus(event.metadata.name, { ...status, earlySignals: undefined, poolReplacementResult: undefined });
    // Keep the cache ahead of the watch with what the API server now holds (the agent may have
    // added its earlySignals meanwhile), so the next step and the budget see what was just recorded.
    this.state.upsertEvent(held);
  }

  /**
   * One pass over an event: decide if not yet decided; mark every action about to be carried out
   * InProgress and record that (with the decision) in one status write; carry the actions out; record
   * their outcomes and the phase in a second write. A crash between the two leaves InProgress actions
   * that the next pass checks against the cluster before trying again.
   */
  async reconcileEvent(name: string): Promise<WorkResult> {
    const event = this.state.events.get(name);
    if (!event) return undefined;
    const log = this.log.child({ memoryErrorEvent: name, node: event.spec.nodeName });
    const now = this.options.now();
    let status = event.status ?? {};
    let decidedNow = false;
    if (!status.decidedAt || status.observedGeneration !== event.metadata.generation) {
      const decided = this.decide(event, now, log);
      if (decided.undecided) {
        if (JSON.stringify(decided.status) !== JSON.stringify(event.status)) await this.writeStatus(event, decided.status);
        return decided.undecided === "conflict" ? { requeueAfterMs: 30_000 } : undefined;
      }
      status = decided.status;
      decidedNow = true;
    }
    const policy = status.policy ? this.state.policies.get(status.policy) : undefined;
    const requeue: number[] = [];
    const plan = this.plan(event, status, policy, now, requeue);
    if (decidedNow || plan.changed) await this.writeStatus(event, plan.status);
    let after: MemoryErrorEventStatus;
    try {
      after = await this.act(event, plan, policy, requeue, log);
    } catch (e) {
      this.options.enqueueNode(event.spec.nodeName);
      throw e;
    }
    const phase = phaseOf(after);
    if (phase !== after.phase) {
      const contained = phase === "Contained" || phase === "Escalated" || phase === "Ignored";
      const message = contained ? "every action is carried out" : phase === "Failed" ? "an action could not be carried out: see pods[]" : "actions in progress";
      after = {
        ...after,
        phase,
        conditions: setCondition(
          after.conditions,
          { type: "Contained", status: contained ? "True" : "False", reason: phase, message },
          now,
          event.metadata.generation,
        ),
      };
      if (phase !== "Pending") log.info("memory error phase", { phase });
    }
    if (JSON.stringify(after) !== JSON.stringify(plan.status)) await this.writeStatus(event, after);
    this.options.enqueueNode(event.spec.nodeName);
    return requeue.length > 0 ? { requeueAfterMs: Math.max(1, Math.min(...requeue)) } : undefined;
  }

  /** Decides with the model. Nothing is written here: the caller records the decision with its plan. */
  private decide(event: MemoryErrorEvent, now: number, log: Logger): { status: MemoryErrorEventStatus; undecided?: "conflict" | "none" } {
    const nodeName = event.spec.nodeName;
    const match = policyForNode([...this.state.policies.values()], this.state.nodes.get(nodeName)?.labels ?? {});
    const generation = event.metadata.generation;
    if (match.kind !== "matched") {
      const conflict = match.kind === "conflict";
      const message = conflict
        ? `policies ${match.policies.join(", ")} select node ${nodeName} equally specifically`
        : `no ContainmentPolicy selects node ${nodeName}`;
      log.warn("memory error not decided", { reason: message });
      return {
        undecided: conflict ? "conflict" : "none",
        status: {
          ...event.status,
          observedGeneration: generation,
          phase: conflict ? "Pending" : "Ignored",
          decidedAt: conflict ? undefined : iso(now),
          conditions: setCondition(
            event.status?.conditions,
            { type: "Decided", status: "False", reason: conflict ? "PolicyConflict" : "NoPolicy", message },
            now,
            generation,
          ),
        },
      };
    }
    let decision: Decision;
    try {
      decision = decideContainment({
        error: ClusterState.memoryError(event),
        node: this.state.nodeState(nodeName, event.metadata.name),
        pods: this.state.podsOn(nodeName).filter((p) => !p.quarantineFor),
        pdbs: [...this.state.pdbs.values()],
        policy: match.policy.spec,
        budget: this.budget(),
        now,
      });
    } catch (e) {
      log.error("cannot decide", { error: e });
      return {
        undecided: "none",
        status: {
          observedGeneration: generation,
          phase: "Failed",
          decidedAt: iso(now),
          conditions: setCondition(
            event.status?.conditions,
            { type: "Decided", status: "False", reason: "DecisionFailed", message: (e as Error).message },
            now,
            generation,
          ),
        },
      };
    }
    const { prediction } = decision;
    this.metrics.memoryErrors.inc({ severity: event.spec.severity, page_type: event.spec.pageType ?? "", result: event.spec.result ?? "" });
    this.metrics.decisionLatency.observe(Math.max(0, now - Date.parse(event.spec.observedAt)) / 1000);
    if (decision.nodeAction.state === "HeldByBudget") {
      this.metrics.nodeActionsHeld.inc({ action: decision.nodeAction.action });
      this.metrics.breakerOpen.set(/circuit breaker/.test(decision.nodeAction.reason ?? "") ? 1 : 0);
    }
    const replacement =
      decision.poolReplacement?.action === "Replace" ? `, one replacement hugepages-${decision.poolReplacement.size ?? ""} asked of the agent` : "";
    const summary = `${prediction.reason}; ${decision.pods.length} pod action(s), ${decision.quarantine.map((q) => `${formatBytes(q.bytes)} hugepages-${q.size} quarantined`).join(", ") || "no quarantine"}${replacement}, node ${decision.nodeAction.action}${decision.dryRun ? " (DryRun: nothing is carried out)" : ""}`;
    this.event(mceRef(event), "Warning", "MemoryErrorDecided", summary);
    log.info("memory error decided", {
      policy: match.policy.metadata.name,
      dryRun: decision.dryRun,
      poolEffect: prediction.poolEffect,
      pods: decision.pods.length,
      nodeAction: decision.nodeAction.action,
    });
    const status: MemoryErrorEventStatus = {
      observedGeneration: generation,
      phase: "Pending",
      decidedAt: iso(now),
      dryRun: decision.dryRun,
      policy: match.policy.metadata.name,
      prediction: {
        kernelProfile: prediction.kernelProfile,
        verified: prediction.verified,
        poolEffect: prediction.poolEffect,
        lostBytes: prediction.lostBytes,
        memoryLostBytes: prediction.memoryLostBytes,
        kernelResult: prediction.kernelResult,
        reason: prediction.reason.slice(0, 2048),
      },
      pods: decision.pods,
      quarantine: decision.quarantine,
      nodeAction: decision.nodeAction,
      poolReplacement: decision.poolReplacement,
      earlySignals: event.status?.earlySignals,
      poolReplacementResult: event.status?.poolReplacementResult,
      conditions: setCondition(
        event.status?.conditions,
        { type: "Decided", status: "True", reason: decision.dryRun ? "DryRun" : "Enforce", message: prediction.reason.slice(0, 1024) },
        now,
        generation,
      ),
    };
    status.phase = phaseOf(status);
    return { status };
  }

  private budget(): ReturnType<ClusterState["budget"]> {
    const budget = this.state.budget();
    const actioned = new Set([...budget.actionedNodes, ...this.reservedNodes.keys()]);
    return { ...budget, actionedNodes: actioned, nodeActionTimes: [...budget.nodeActionTimes, ...this.reservedNodes.values()] };
  }

  /** A Kubernetes Event is for people: recording one never holds up or stops containment. */
  private event(about: ObjectRef, type: "Normal" | "Warning", reason: string, message: string): void {
    this.actions.recordEvent(about, type, reason, message).catch((e: unknown) => {
      this.log.warn("cannot record event", { reason, object: `${about.kind}/${about.name}`, error: e });
    });
  }

  /** Works out, without side effects, what to do now; marks it InProgress in the returned status. */
  private plan(event: MemoryErrorEvent, status: MemoryErrorEventStatus, policy: ContainmentPolicy | undefined, now: number, requeue: number[]): Plan {
    const nodeName = event.spec.nodeName;
    const eviction = policy?.spec.podActions?.eviction;
    const backoffMs = parseDuration(eviction?.backoff ?? "5s", "spec.podActions.eviction.backoff");
    const deleteAfterMs =
      eviction?.fallbackToDelete && eviction.deleteAfter ? parseDuration(eviction.deleteAfter, "spec.podActions.eviction.deleteAfter") : undefined;
    let slots = (policy?.spec.safety?.maxEvictionsInFlight ?? 10) - this.state.budget().evictionsInFlight;
    const evictions: MemoryErrorEventStatusPod[] = [];
    const pods = (status.pods ?? []).map((entry): MemoryErrorEventStatusPod => {
      if (terminalPodStates.has(entry.state)) return entry;
      if (entry.action === "EarlySignal") return this.planEarlySignal(status, entry, policy, now, requeue);
      const pod = this.state.podByUid(nodeName, entry.uid);
      // Gone or going: our own eviction went through before a crash, or something else removed it.
      if (!pod || pod.deleting) return { ...entry, state: "Done", reason: `${entry.reason ?? ""}; the pod is gone`.slice(0, 1024) };
      const attempts = entry.attempts ?? 0;
      if (entry.state === "Blocked" && entry.lastAttemptAt) {
        const due = Date.parse(entry.lastAttemptAt) + Math.min(backoffMs * 2 ** Math.max(0, attempts - 1), maxBackoffMs);
        if (now < due) {
          requeue.push(due - now);
          return entry;
        }
      }
      if (entry.state === "Planned" && slots <= 0) {
        requeue.push(1000);
        return entry;
      }
      if (entry.state === "Planned") slots -= 1;
      // Evictions start when the decision is made, so refusals have lasted since then.
      const fallback =
        entry.state === "Blocked" && deleteAfterMs !== undefined && status.decidedAt !== undefined && now - Date.parse(status.decidedAt) >= deleteAfterMs;
      const next: MemoryErrorEventStatusPod = {
        ...entry,
        action: fallback ? "Delete" : entry.action,
        state: "InProgress",
        attempts: attempts + 1,
        lastAttemptAt: iso(now),
      };
      evictions.push(next);
      return next;
    });
    const stale = this.state.staleCapacity(nodeName);
    const quarantine = status.quarantine ?? [];
    const toRelease = quarantine.filter((q) => {
      const staleBytes = stale[q.size];
      // Unknown until the node reports after its last change: release nothing then.
      return (
        q.state === "Quarantined" &&
        staleBytes !== undefined &&
        quarantinesToRelease(this.state.heldQuarantines(nodeName, q.size), staleBytes).has(event.metadata.name)
      );
    });
    // A lost placeholder is made again, unless this pass releases it.
    const toCreate = quarantine.filter(
      (q) =>
        q.state === "Planned" ||
        (q.state === "Quarantined" &&
          !this.state.pods.has(`${this.options.namespace}/${quarantinePodName(event.metadata.name, q.size)}`) &&
          !toRelease.includes(q)),
    );
    let nodeAction = status.nodeAction;
    let taintOrCordon = false;
    const retryHeld = nodeAction?.state === "HeldByBudget" && this.heldActionStillDue(event, nodeAction.action, policy, now);
    if ((nodeAction?.state === "Planned" || retryHeld) && nodeAction && nodeAction.action !== "None") {
      const held = this.checkNodeBudget(nodeName, policy, now);
      if (held) {
        if (!retryHeld) {
          nodeAction = { ...nodeAction, state: "HeldByBudget", reason: `${nodeAction.reason ?? ""}; held at action time: ${held}` };
          this.metrics.nodeActionsHeld.inc({ action: nodeAction.action });
        }
      } else {
        // Reserved in the same synchronous step as the check: two passes can never both take the last slot.
        this.reservedNodes.set(nodeName, now);
        taintOrCordon = true;
        if (retryHeld) nodeAction = { ...nodeAction, state: "Planned", reason: `${nodeAction.reason ?? ""}; the budget allows it now` };
      }
    }
    const poolReplacement = this.planPoolReplacement(event, status, policy, now);
    const next: MemoryErrorEventStatus = { ...status, pods, nodeAction, poolReplacement };
    return { status: next, changed: JSON.stringify(next) !== JSON.stringify(status), evictions, toCreate, toRelease, taintOrCordon };
  }

  private planEarlySignal(
    status: MemoryErrorEventStatus,
    entry: MemoryErrorEventStatusPod,
    policy: ContainmentPolicy | undefined,
    now: number,
    requeue: number[],
  ): MemoryErrorEventStatusPod {
    const outcome = status.earlySignals?.find((s) => s.uid === entry.uid);
    if (outcome) {
      this.metrics.actions.inc({ action: "early_signal", outcome: outcome.state.toLowerCase() });
      this.event(
        { kind: "Pod", name: entry.name, namespace: entry.namespace, uid: entry.uid, apiVersion: "v1" },
        outcome.state === "Done" ? "Normal" : "Warning",
        "EarlySignal",
        outcome.message ?? outcome.state,
      );
      return {
        ...entry,
        state: outcome.state,
        reason: `${entry.reason ?? ""}; agent: ${outcome.message ?? outcome.state}`.slice(0, 1024),
        lastAttemptAt: outcome.at,
      };
    }
    const timeoutMs = parseDuration(policy?.spec.podActions?.earlySignal?.timeout ?? "60s", "spec.podActions.earlySignal.timeout");
    const deadline = Date.parse(status.decidedAt ?? iso(now)) + timeoutMs;
    if (now >= deadline) {
      this.metrics.actions.inc({ action: "early_signal", outcome: "timed_out" });
      return {
        ...entry,
        state: "TimedOut",
        reason: `${entry.reason ?? ""}; the node's agent did not report within ${formatDuration(timeoutMs)}`.slice(0, 1024),
      };
    }
    requeue.push(deadline - now);
    return entry.state === "Planned" ? { ...entry, state: "InProgress", attempts: 1, lastAttemptAt: iso(now) } : entry;
  }

  /**
   * Hands a planned replacement to the node's agent (unless the kernel has refused twice on the node since
   * it was decided), and copies the agent's outcome in once it reports. Releasing the quarantine needs
   * nothing more: the agent publishes the raised pool, and the capacity is no longer stale.
   */
  private planPoolReplacement(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    policy: ContainmentPolicy | undefined,
    now: number,
  ): MemoryErrorEventStatus["poolReplacement"] {
    const replacement = status.poolReplacement;
    if (replacement?.action !== "Replace" || !replacement.size) return replacement;
    const size = replacement.size;
    const nodeName = event.spec.nodeName;
    if (replacement.state === "Planned") {
      const pause = policy && replacementPause(this.state.nodeState(nodeName, event.metadata.name), policy.spec, now);
      if (pause) {
        this.metrics.poolReplacements.inc({ size, outcome: "skipped" });
        return { ...replacement, state: "Skipped", reason: `${replacement.reason ?? ""}; not asked: ${pause.reason}`.slice(0, 1024) };
      }
      this.metrics.poolReplacements.inc({ size, outcome: "requested" });
      return { ...replacement, state: "Requested", requestedAt: iso(now) };
    }
    const result = status.poolReplacementResult;
    if (replacement.state !== "Requested" || !result) return replacement;
    const agentSays = `agent: ${result.message ?? result.state}`;
    // The reason as decided, without what the agent said last.
    const decided = (replacement.reason ?? "").split("; agent: ")[0] ?? "";
    if (result.state === "Waiting") {
      const reason = `${decided}; ${agentSays}`.slice(0, 1024);
      return reason === replacement.reason ? replacement : { ...replacement, reason };
    }
    this.metrics.poolReplacements.inc({ size, outcome: result.state.toLowerCase() });
    const quarantined = status.quarantine?.find((q) => q.size === size && q.state === "Quarantined");
    const consequence =
      result.state === "Given"
        ? quarantined
          ? "the quarantine is released once the agent's next report shows the pool back"
          : "the pool is back to its size before the error"
        : quarantined
          ? `the quarantine of ${formatBytes(quarantined.bytes)} hugepages-${size} stays: the capacity is lost until the node is repaired or rebooted`
          : "the capacity stays lost";
    const words = result.state === "Given" ? "HugepageReplaced" : result.state === "Refused" ? "HugepageReplacementRefused" : "HugepageReplacementSkipped";
    const message = `${agentSays}; ${consequence}`;
    this.event(nodeRef(nodeName), result.state === "Given" ? "Normal" : "Warning", words, `memory error ${event.metadata.name}: ${message}`);
    this.log.info("pool replacement", {
      memoryErrorEvent: event.metadata.name,
      node: nodeName,
      size,
      state: result.state,
      before: result.before,
      after: result.after,
    });
    return { ...replacement, state: result.state, reason: `${decided}; ${message}`.slice(0, 1024) };
  }

  /**
   * A taint or cordon held back by the budget is taken once the budget allows it, as long as the node's
   * errors still reach the threshold and this is the node's latest error (one retry per node), at the
   * resync after the budget frees up.
   */
  private heldActionStillDue(event: MemoryErrorEvent, action: "None" | "Taint" | "Cordon", policy: ContainmentPolicy | undefined, now: number): boolean {
    if (action === "None" || event.status?.dryRun === true || !policy) return false;
    const events = this.state.eventsOn(event.spec.nodeName);
    if (events.some((e) => Date.parse(e.spec.observedAt) > Date.parse(event.spec.observedAt))) return false;
    const node = this.state.nodes.get(event.spec.nodeName);
    if (!node || (action === "Cordon" ? node.cordonedByUs : node.cordonedByUs || this.state.taintedByUs(node))) return false;
    const windowMs = parseDuration(policy.spec.escalation?.window ?? "24h", "spec.escalation.window");
    const uncorrected = events.filter((e) => Date.parse(e.spec.observedAt) > now - windowMs && isUncorrected(e.spec.severity)).length;
    return uncorrected >= (action === "Cordon" ? (policy.spec.escalation?.cordonAfter ?? 4) : (policy.spec.escalation?.taintAfter ?? 2));
  }

  /** Why a taint or cordon must wait now, or undefined when the budget and the breaker allow it. */
  private checkNodeBudget(nodeName: string, policy: ContainmentPolicy | undefined, now: number): string | undefined {
    const safety = policy?.spec.safety;
    const budget = this.budget();
    const allowed = Math.floor((budget.totalNodes * (safety?.maxUnavailableNodesPercent ?? 10)) / 100);
    const breakerMs = parseDuration(safety?.circuitBreaker?.window ?? "1h", "spec.safety.circuitBreaker.window");
    const recent = budget.nodeActionTimes.filter((t) => t > now - breakerMs).length;
    const breakerOpen = recent >= (safety?.circuitBreaker?.maxNodeActions ?? 5);
    this.metrics.breakerOpen.set(breakerOpen ? 1 : 0);
    if (!budget.actionedNodes.has(nodeName) && budget.actionedNodes.size + 1 > allowed) return `the budget of ${allowed} node(s) is taken`;
    if (breakerOpen) return "the circuit breaker is open";
    return undefined;
  }

  /** Carries the plan out and returns the status with every outcome. */
  private async act(
    event: MemoryErrorEvent,
    plan: Plan,
    policy: ContainmentPolicy | undefined,
    requeue: number[],
    log: Logger,
  ): Promise<MemoryErrorEventStatus> {
    const nodeName = event.spec.nodeName;
    const maxAttempts = policy?.spec.podActions?.eviction?.maxAttempts ?? 30;
    const fallbackConfigured = policy?.spec.podActions?.eviction?.fallbackToDelete === true && policy.spec.podActions.eviction.deleteAfter !== undefined;
    const backoffMs = parseDuration(policy?.spec.podActions?.eviction?.backoff ?? "5s", "spec.podActions.eviction.backoff");
    const settled = await Promise.allSettled(plan.evictions.map((entry) => this.evictOne(entry)));
    const outcomes = new Map<string, Partial<MemoryErrorEventStatusPod>>();
    settled.forEach((result, i) => {
      const entry = plan.evictions[i];
      if (!entry || result.status === "rejected") return;
      const outcome = result.value;
      if (outcome.kind !== "blocked") {
        outcomes.set(entry.uid, { state: "Done" });
        return;
      }
      const pod = this.state.podByUid(nodeName, entry.uid);
      const pdb = pod && [...this.state.pdbs.values()].find((b) => b.namespace === pod.namespace && selectorMatches(b.selector, pod.labels))?.name;
      const timedOut = (entry.attempts ?? 0) >= maxAttempts && !fallbackConfigured;
      outcomes.set(entry.uid, {
        state: timedOut ? "TimedOut" : "Blocked",
        blockedBy: pdb,
        reason: `${(entry.reason ?? "").split("; blocked")[0] ?? ""}; blocked: ${outcome.message}`.slice(0, 1024),
      });
      this.metrics.evictionsBlocked.inc();
      this.metrics.actions.inc({ action: "evict", outcome: timedOut ? "timed_out" : "blocked" });
      if (!timedOut) requeue.push(Math.min(backoffMs * 2 ** Math.max(0, (entry.attempts ?? 1) - 1), maxBackoffMs));
    });
    let status: MemoryErrorEventStatus = { ...plan.status, pods: (plan.status.pods ?? []).map((p) => ({ ...p, ...outcomes.get(p.uid) })) };
    for (const [uid, o] of outcomes) log.info("pod action", { pod: status.pods?.find((p) => p.uid === uid)?.name, state: o.state, blockedBy: o.blockedBy });

    const quarantine = new Map((status.quarantine ?? []).map((q) => [q.size, q]));
    for (const q of plan.toCreate) {
      await this.actions.createQuarantinePod({
        namespace: this.options.namespace,
        name: quarantinePodName(event.metadata.name, q.size),
        eventName: event.metadata.name,
        eventUID: event.metadata.uid ?? "",
        nodeName,
        size: q.size,
        bytes: q.bytes,
      });
      if (q.state === "Planned") {
        this.metrics.actions.inc({ action: "quarantine", outcome: "done" });
        this.event(
          nodeRef(nodeName),
          "Warning",
          "HugepageQuarantined",
          `holding ${formatBytes(q.bytes)} of hugepages-${q.size} out of scheduling: the kernel removed it after memory error ${event.metadata.name}, the kubelet still advertises it`,
        );
      }
      quarantine.set(q.size, { ...q, state: "Quarantined" });
    }
    for (const q of plan.toRelease) {
      await this.actions.deletePod(this.options.namespace, quarantinePodName(event.metadata.name, q.size));
      this.metrics.actions.inc({ action: "release", outcome: "done" });
      const refilled = status.poolReplacement?.state === "Given" && status.poolReplacement.size === q.size;
      this.event(
        nodeRef(nodeName),
        "Normal",
        "HugepageQuarantineReleased",
        `released ${formatBytes(q.bytes)} of hugepages-${q.size}: ${refilled ? "a replacement hugepage brought the pool back to what the kubelet advertises" : "the kubelet's advertised capacity caught up"}`,
      );
      log.info("quarantine released", { size: q.size, bytes: q.bytes });
      quarantine.set(q.size, { ...q, state: "Released" });
    }
    if (status.quarantine) status = { ...status, quarantine: status.quarantine.map((q) => quarantine.get(q.size) ?? q) };

    const action = status.nodeAction;
    if (plan.taintOrCordon && action) {
      try {
        if (action.action === "Cordon") await this.actions.cordonNode(nodeName);
        else await this.actions.taintNode(nodeName, policy?.spec.escalation?.taintKey ?? defaultTaintKey, "HugepageMemoryFailing");
      } catch (e) {
        this.reservedNodes.delete(nodeName);
        throw e;
      }
      this.metrics.actions.inc({ action: action.action.toLowerCase(), outcome: "done" });
      this.event(nodeRef(nodeName), "Warning", action.action === "Cordon" ? "CordonedForMemoryErrors" : "TaintedForMemoryErrors", action.reason ?? "");
      log.warn(`node ${action.action === "Cordon" ? "cordoned" : "tainted"}`, { reason: action.reason });
      status = { ...status, nodeAction: { ...action, state: "Done" } };
    }
    for (const entry of plan.evictions) {
      const o = outcomes.get(entry.uid);
      if (o?.state !== "Done") continue;
      this.metrics.actions.inc({ action: entry.action === "Delete" ? "delete" : "evict", outcome: "done" });
      const podRef: ObjectRef = { kind: "Pod", name: entry.name, namespace: entry.namespace, uid: entry.uid, apiVersion: "v1" };
      this.event(
        podRef,
        "Warning",
        entry.action === "Delete" ? "DeletedForMemoryError" : "EvictedForMemoryError",
        `memory error ${event.metadata.name} poisoned hugepage ${event.spec.hugepage?.headPfn ?? event.spec.pfn} that this pod maps; it would crash with SIGBUS on access`,
      );
    }
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      // Record what did happen, then let the queue retry the rest with backoff.
      await this.writeStatus(event, status);
      throw failed.reason;
    }
    return status;
  }

  private async evictOne(entry: MemoryErrorEventStatusPod): Promise<EvictionOutcome> {
    if (entry.action === "Delete") {
      await this.actions.deletePod(entry.namespace, entry.name);
      return { kind: "evicted" };
    }
    return this.actions.evictPod(entry.namespace, entry.name);
  }

  /** Node health, the Node condition and the quarantine gauge, from the node's events. */
  async reconcileNode(nodeName: string): Promise<WorkResult> {
    const health = this.state.health.get(nodeName);
    const node = this.state.nodes.get(nodeName);
    const events = this.state.eventsOn(nodeName);
    const match = policyForNode([...this.state.policies.values()], node?.labels ?? {});
    const policy = match.kind === "matched" ? match.policy : undefined;
    const windowText = policy?.spec.escalation?.window ?? "24h";
    const windowMs = parseDuration(windowText, "spec.escalation.window");
    const now = this.options.now();
    const recent = events.filter((e) => Date.parse(e.spec.observedAt) > now - windowMs);
    const uncorrected = recent.filter((e) => isUncorrected(e.spec.severity)).length;
    const corrected = recent.length - uncorrected;
    const cordonAfter = policy?.spec.escalation?.cordonAfter ?? 4;
    const healthWord = uncorrected === 0 ? "Healthy" : uncorrected < cordonAfter ? "Degraded" : "Failing";
    const quarantined = HUGEPAGE_SIZES.map((size) => ({
      size,
      bytes: events
        .flatMap((e) => e.status?.quarantine ?? [])
        .filter((q) => q.size === size && q.state === "Quarantined")
        .reduce((sum, q) => sum + q.bytes, 0),
    })).filter((q) => q.bytes > 0);
    for (const size of HUGEPAGE_SIZES) this.metrics.quarantinedBytes.set({ node: nodeName, size }, quarantined.find((q) => q.size === size)?.bytes ?? 0);
    const boot = health?.spec.bootID;
    const poisoned = new Set(
      events
        .filter((e) => e.spec.hugepage && (!boot || e.spec.bootID === boot) && e.status?.prediction?.poolEffect !== "None")
        .map((e) => `${e.spec.hugepage?.size ?? ""}/${e.spec.hugepage?.headPfn ?? ""}`),
    );
    const nodeAction = node?.cordonedByUs ? "Cordon" : node && this.state.taintedByUs(node) ? "Taint" : "None";
    const thisBoot = events.filter((e) => !boot || e.spec.bootID === boot);
    // Capacity a pool lost and no replacement gave back.
    const lostForGood = HUGEPAGE_SIZES.map((size) => ({
      size,
      bytes: thisBoot
        .filter((e) => e.spec.hugepage?.size === size && e.status?.poolReplacement?.state !== "Given")
        .reduce((sum, e) => sum + (e.status?.prediction?.lostBytes ?? 0), 0),
    })).filter((l) => l.bytes > 0);
    for (const size of HUGEPAGE_SIZES) this.metrics.capacityLostBytes.set({ node: nodeName, size }, lostForGood.find((l) => l.size === size)?.bytes ?? 0);
    const poolReplacements = policy?.spec.poolReplacement?.enabled ? this.replacementCounts(nodeName, policy, now) : undefined;
    const message = `${uncorrected} uncorrected and ${corrected} corrected memory error(s) in ${windowText}; ${poisoned.size} poisoned hugepage(s); ${quarantined.map((q) => `${formatBytes(q.bytes)} hugepages-${q.size}`).join(", ") || "nothing"} quarantined`;
    if (health) {
      const status: NodeMemoryHealthStatus = {
        observedGeneration: health.metadata.generation,
        health: healthWord,
        uncorrectedErrors: uncorrected,
        correctedErrors: corrected,
        window: windowText,
        poisonedHugepages: poisoned.size,
        quarantinedCapacity: formatBytes(quarantined.reduce((sum, q) => sum + q.bytes, 0)),
        quarantined,
        nodeAction,
        poolReplacements,
        capacityLostForGood: lostForGood,
        conditions: setCondition(
          health.status?.conditions,
          { type: "Degraded", status: healthWord === "Healthy" ? "False" : "True", reason: healthWord, message },
          now,
          health.metadata.generation,
        ),
      };
      if (JSON.stringify({ ...status, conditions: undefined }) !== JSON.stringify({ ...health.status, conditions: undefined })) {
        await this.actions.applyHealthStatus(nodeName, status);
        this.state.health.set(nodeName, { ...health, status });
      }
    }
    const wanted = { status: healthWord === "Healthy" ? ("False" as const) : ("True" as const), reason: healthWord, message };
    if (
      node &&
      (events.length > 0 || node.degradedCondition) &&
      (node.degradedCondition?.status !== wanted.status || node.degradedCondition.message !== wanted.message)
    ) {
      await this.actions.setNodeCondition(nodeName, wanted);
      this.state.nodes.set(nodeName, { ...node, degradedCondition: wanted });
    }
    return undefined;
  }

  /** Replacements asked of the node's agent in the policy's window, and the pause after two refusals. */
  private replacementCounts(nodeName: string, policy: ContainmentPolicy, now: number): NonNullable<NodeMemoryHealthStatus["poolReplacements"]> {
    const node = this.state.nodeState(nodeName);
    const windowMs = parseDuration(policy.spec.poolReplacement?.window ?? "24h", "spec.poolReplacement.window");
    const recent = (node.replacements ?? []).filter((r) => r.at > now - windowMs);
    const count = (states: string[]): number => recent.filter((r) => states.includes(r.state)).length;
    const pause = replacementPause(node, policy.spec, now);
    return { tried: count(["Requested", "Given", "Refused"]), given: count(["Given"]), refused: count(["Refused"]), pausedUntil: pause && iso(pause.until) };
  }

  /** How many nodes a policy governs, and with which policies it ties. */
  async reconcilePolicy(name: string): Promise<WorkResult> {
    const policy = this.state.policies.get(name);
    if (!policy) return undefined;
    const policies = [...this.state.policies.values()];
    let matched = 0;
    const conflicts = new Set<string>();
    for (const node of this.state.nodes.values()) {
      const match = policyForNode(policies, node.labels);
      if (match.kind === "matched" && match.policy.metadata.name === name) matched += 1;
      if (match.kind === "conflict" && match.policies.includes(name)) for (const p of match.policies) if (p !== name) conflicts.add(p);
    }
    const now = this.options.now();
    const conflicting = [...conflicts].sort();
    const status = {
      observedGeneration: policy.metadata.generation,
      matchedNodes: matched,
      conflictingPolicies: conflicting,
      conditions: setCondition(
        policy.status?.conditions,
        conflicting.length > 0
          ? {
              type: "Conflict",
              status: "True",
              reason: "EquallySpecific",
              message: `selects nodes as specifically as ${conflicting.join(", ")}: events on those nodes are not decided until one is made more specific`,
            }
          : { type: "Conflict", status: "False", reason: "MostSpecific", message: "no other policy ties with this one" },
        now,
        policy.metadata.generation,
      ),
    };
    if (
      JSON.stringify({ ...status, conditions: undefined }) !== JSON.stringify({ ...policy.status, conditions: undefined }) ||
      policy.status?.conditions === undefined
    ) {
      await this.actions.applyPolicyStatus(name, status);
      this.state.policies.set(name, { ...policy, status });
    }
    return undefined;
  }
}
