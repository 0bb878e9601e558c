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
import type { ClusterActions, ObjectRef } from "./actions.ts";
import type { Logger } from "./log.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { decideContainment } from "./model/containment.ts";
import type { Decision } from "./model/containment.ts";
import { formatDuration, parseDuration } from "./model/duration.ts";
import { policyForNode, selectorMatches } from "./model/selector.ts";
import type { WorkResult } from "./queue.ts";
import { ClusterState, defaultTaintKey } from "./state.ts";

type Condition = NonNullable<MemoryErrorEventStatus["conditions"]>[number];
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
const mceRef = (event: MemoryErrorEvent): ObjectRef => ({ kind: "MemoryErrorEvent", name: event.metadata.name, uid: event.metadata.uid, apiVersion: `${group}/${version}` });
const nodeRef = (name: string): ObjectRef => ({ kind: "Node", name, apiVersion: "v1" });

export function quarantinePodName(eventName: string, size: string): string {
  return `mce-quarantine-${createHash("sha256").update(eventName).digest("hex").slice(0, 16)}-${size.toLowerCase()}`;
}

function setCondition(conditions: Condition[] | undefined, next: Omit<Condition, "lastTransitionTime">, now: number, generation: number | undefined): Condition[] {
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
    await this.actions.applyEventStatus(event.metadata.name, status);
    // Keep the cache ahead of the watch, so the next step and the budget see what was just recorded.
    this.state.upsertEvent({ ...event, status });
  }

  async reconcileEvent(name: string): Promise<WorkResult> {
    const event = this.state.events.get(name);
    if (!event) return undefined;
    const log = this.log.child({ memoryErrorEvent: name, node: event.spec.nodeName });
    let status = event.status ?? {};
    if (!status.decidedAt || status.observedGeneration !== event.metadata.generation) {
      const decided = await this.decide(event, log);
      if (!decided) return { requeueAfterMs: 30_000 };
      status = decided;
    }
    const policy = status.policy ? this.state.policies.get(status.policy) : undefined;
    const requeue: number[] = [];
    status = await this.carryOutPods(event, status, policy, requeue, log);
    status = await this.carryOutQuarantine(event, status, log);
    status = await this.carryOutNodeAction(event, status, policy, log);
    const phase = phaseOf(status);
    if (phase !== status.phase) {
      const contained = phase === "Contained" || phase === "Escalated" || phase === "Ignored";
      status = {
        ...status,
        phase,
        conditions: setCondition(
          status.conditions,
          { type: "Contained", status: contained ? "True" : "False", reason: phase, message: contained ? "every action is carried out" : phase === "Failed" ? "an action could not be carried out: see pods[]" : "actions in progress" },
          this.options.now(),
          event.metadata.generation,
        ),
      };
      await this.writeStatus(event, status);
      log.info("memory error phase", { phase });
    }
    this.options.enqueueNode(event.spec.nodeName);
    return requeue.length > 0 ? { requeueAfterMs: Math.min(...requeue) } : undefined;
  }

  /** Decides with the model and records the decision before anything is carried out. */
  private async decide(event: MemoryErrorEvent, log: Logger): Promise<MemoryErrorEventStatus | undefined> {
    const now = this.options.now();
    const nodeName = event.spec.nodeName;
    const match = policyForNode([...this.state.policies.values()], this.state.nodes.get(nodeName)?.labels ?? {});
    const generation = event.metadata.generation;
    if (match.kind !== "matched") {
      const conflict = match.kind === "conflict";
      const message = conflict ? `policies ${match.policies.join(", ")} select node ${nodeName} equally specifically` : `no ContainmentPolicy selects node ${nodeName}`;
      const status: MemoryErrorEventStatus = {
        ...event.status,
        observedGeneration: generation,
        phase: conflict ? "Pending" : "Ignored",
        decidedAt: conflict ? undefined : iso(now),
        conditions: setCondition(event.status?.conditions, { type: "Decided", status: "False", reason: conflict ? "PolicyConflict" : "NoPolicy", message }, now, generation),
      };
      await this.writeStatus(event, status);
      log.warn("memory error not decided", { reason: message });
      return conflict ? undefined : status;
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
      const status: MemoryErrorEventStatus = {
        observedGeneration: generation,
        phase: "Failed",
        decidedAt: iso(now),
        conditions: setCondition(event.status?.conditions, { type: "Decided", status: "False", reason: "DecisionFailed", message: (e as Error).message }, now, generation),
      };
      await this.writeStatus(event, status);
      log.error("cannot decide", { error: e });
      return status;
    }
    const { prediction } = decision;
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
      conditions: setCondition(event.status?.conditions, { type: "Decided", status: "True", reason: decision.dryRun ? "DryRun" : "Enforce", message: prediction.reason.slice(0, 1024) }, now, generation),
    };
    status.phase = phaseOf(status);
    await this.writeStatus(event, status);
    this.metrics.memoryErrors.inc({ severity: event.spec.severity, page_type: event.spec.pageType ?? "", result: event.spec.result ?? "" });
    const created = Date.parse(event.metadata.creationTimestamp ?? event.spec.observedAt);
    this.metrics.decisionLatency.observe(Math.max(0, now - created) / 1000);
    if (decision.nodeAction.state === "HeldByBudget") {
      this.metrics.nodeActionsHeld.inc({ action: decision.nodeAction.action });
      this.metrics.breakerOpen.set(/circuit breaker/.test(decision.nodeAction.reason ?? "") ? 1 : 0);
    }
    const summary = `${prediction.reason}; ${decision.pods.length} pod action(s), ${decision.quarantine.map((q) => `${formatBytes(q.bytes)} hugepages-${q.size} quarantined`).join(", ") || "no quarantine"}, node ${decision.nodeAction.action}${decision.dryRun ? " (DryRun: nothing is carried out)" : ""}`;
    await this.event(mceRef(event), "Warning", "MemoryErrorDecided", summary);
    log.info("memory error decided", { policy: match.policy.metadata.name, dryRun: decision.dryRun, poolEffect: prediction.poolEffect, pods: decision.pods.length, nodeAction: decision.nodeAction.action });
    return status;
  }

  private budget(): ReturnType<ClusterState["budget"]> {
    const budget = this.state.budget();
    const actioned = new Set([...budget.actionedNodes, ...this.reservedNodes.keys()]);
    return { ...budget, actionedNodes: actioned, nodeActionTimes: [...budget.nodeActionTimes, ...this.reservedNodes.values()] };
  }

  private async event(about: ObjectRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    // A Kubernetes Event is for people; failing to record one must not stop containment.
    await this.actions.recordEvent(about, type, reason, message).catch((e: unknown) => {
      this.log.warn("cannot record event", { reason, object: `${about.kind}/${about.name}`, error: e });
    });
  }

  private async carryOutPods(event: MemoryErrorEvent, status: MemoryErrorEventStatus, policy: ContainmentPolicy | undefined, requeue: number[], log: Logger): Promise<MemoryErrorEventStatus> {
    let current = status;
    for (const entry of status.pods ?? []) {
      if (terminalPodStates.has(entry.state)) continue;
      const update = (next: Partial<MemoryErrorEventStatusPod>): MemoryErrorEventStatus => ({ ...current, pods: (current.pods ?? []).map((p) => (p.uid === entry.uid ? { ...p, ...next } : p)) });
      if (entry.action === "EarlySignal") current = await this.trackEarlySignal(event, current, entry, policy, update, requeue);
      else if (entry.action === "Evict" || entry.action === "Delete") current = await this.evict(event, current, entry, policy, update, requeue, log);
    }
    return current;
  }

  /** The agent of the node sends the signal; the operator marks it InProgress and waits for the outcome. */
  private async trackEarlySignal(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    entry: MemoryErrorEventStatusPod,
    policy: ContainmentPolicy | undefined,
    update: (next: Partial<MemoryErrorEventStatusPod>) => MemoryErrorEventStatus,
    requeue: number[],
  ): Promise<MemoryErrorEventStatus> {
    const outcome = status.earlySignals?.find((s) => s.uid === entry.uid) ?? event.status?.earlySignals?.find((s) => s.uid === entry.uid);
    const now = this.options.now();
    let next: Partial<MemoryErrorEventStatusPod> | undefined;
    if (outcome) {
      next = { state: outcome.state, reason: `${entry.reason ?? ""}; agent: ${outcome.message ?? outcome.state}`.slice(0, 1024), lastAttemptAt: outcome.at };
      this.metrics.actions.inc({ action: "early_signal", outcome: outcome.state.toLowerCase() });
      await this.event({ kind: "Pod", name: entry.name, namespace: entry.namespace, uid: entry.uid, apiVersion: "v1" }, outcome.state === "Done" ? "Normal" : "Warning", "EarlySignal", `memory error ${event.metadata.name}: ${outcome.message ?? outcome.state}`);
    } else {
      const timeoutMs = parseDuration(policy?.spec.podActions?.earlySignal?.timeout ?? "60s", "spec.podActions.earlySignal.timeout");
      const deadline = Date.parse(status.decidedAt ?? iso(now)) + timeoutMs;
      if (now >= deadline) {
        next = { state: "TimedOut", reason: `${entry.reason ?? ""}; the node's agent did not report within ${formatDuration(timeoutMs)}` };
        this.metrics.actions.inc({ action: "early_signal", outcome: "timed_out" });
      } else {
        if (entry.state === "Planned") next = { state: "InProgress", attempts: 1, lastAttemptAt: iso(now) };
        requeue.push(deadline - now);
      }
    }
    if (!next) return status;
    const updated = update(next);
    await this.writeStatus(event, updated);
    return updated;
  }

  private async evict(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    entry: MemoryErrorEventStatusPod,
    policy: ContainmentPolicy | undefined,
    update: (next: Partial<MemoryErrorEventStatusPod>) => MemoryErrorEventStatus,
    requeue: number[],
    log: Logger,
  ): Promise<MemoryErrorEventStatus> {
    const now = this.options.now();
    const pod = this.state.podByUid(event.spec.nodeName, entry.uid);
    const podRef: ObjectRef = { kind: "Pod", name: entry.name, namespace: entry.namespace, uid: entry.uid, apiVersion: "v1" };
    const eviction = policy?.spec.podActions?.eviction;
    if (!pod || pod.deleting) {
      // Gone or going: either our earlier eviction went through before a crash, or something else removed it.
      const done = update({ state: "Done", reason: `${entry.reason ?? ""}; the pod is gone`.slice(0, 1024) });
      await this.writeStatus(event, done);
      return done;
    }
    const attempts = entry.attempts ?? 0;
    const limit = policy?.spec.safety?.maxEvictionsInFlight ?? 10;
    if (entry.state === "Planned" && this.state.budget().evictionsInFlight >= limit) {
      requeue.push(1000);
      return status;
    }
    if (entry.state === "Blocked" && entry.lastAttemptAt) {
      const backoffMs = Math.min(parseDuration(eviction?.backoff ?? "5s", "spec.podActions.eviction.backoff") * 2 ** Math.max(0, attempts - 1), maxBackoffMs);
      const due = Date.parse(entry.lastAttemptAt) + backoffMs;
      if (now < due) {
        requeue.push(due - now);
        return status;
      }
    }
    // Evictions start when the decision is made, so the refusals have lasted since then.
    const firstAttemptAt = status.decidedAt;
    const deleteAfterMs = eviction?.fallbackToDelete && eviction.deleteAfter ? parseDuration(eviction.deleteAfter, "spec.podActions.eviction.deleteAfter") : undefined;
    const fallback = entry.state === "Blocked" && deleteAfterMs !== undefined && firstAttemptAt !== undefined && now - Date.parse(firstAttemptAt) >= deleteAfterMs;
    // Recorded before it is done: after a crash, InProgress with the pod still there means try again.
    const inProgress = update({ action: fallback ? "Delete" : entry.action, state: "InProgress", attempts: attempts + 1, lastAttemptAt: iso(now) });
    await this.writeStatus(event, inProgress);
    let next: Partial<MemoryErrorEventStatusPod>;
    if (fallback) {
      await this.actions.deletePod(entry.namespace, entry.name);
      next = { state: "Done", reason: `${entry.reason ?? ""}; eviction stayed refused for ${eviction?.deleteAfter ?? ""}: deleted by the policy's fallback` };
      this.metrics.actions.inc({ action: "delete", outcome: "done" });
      await this.event(podRef, "Warning", "DeletedForMemoryError", `deleted after eviction stayed refused: memory error ${event.metadata.name} poisoned a hugepage it maps`);
    } else {
      const outcome = await this.actions.evictPod(entry.namespace, entry.name);
      if (outcome.kind === "blocked") {
        const pdb = [...this.state.pdbs.values()].find((b) => b.namespace === pod.namespace && selectorMatches(b.selector, pod.labels))?.name;
        const timedOut = attempts + 1 >= (eviction?.maxAttempts ?? 30) && deleteAfterMs === undefined;
        next = { state: timedOut ? "TimedOut" : "Blocked", blockedBy: pdb, reason: `${(entry.reason ?? "").split("; blocked")[0] ?? ""}; blocked: ${outcome.message}`.slice(0, 1024) };
        this.metrics.evictionsBlocked.inc();
        this.metrics.actions.inc({ action: "evict", outcome: timedOut ? "timed_out" : "blocked" });
        if (!timedOut) requeue.push(parseDuration(eviction?.backoff ?? "5s", "backoff") * 2 ** attempts);
      } else {
        next = { state: "Done" };
        this.metrics.actions.inc({ action: "evict", outcome: outcome.kind === "gone" ? "gone" : "done" });
        await this.event(podRef, "Warning", "EvictedForMemoryError", `evicted early: memory error ${event.metadata.name} poisoned hugepage ${event.spec.hugepage?.headPfn ?? event.spec.pfn} that this pod maps; it would crash with SIGBUS on access`);
      }
    }
    return this.finishPod(event, inProgress, entry, next, podRef, log);
  }

  private async finishPod(event: MemoryErrorEvent, status: MemoryErrorEventStatus, entry: MemoryErrorEventStatusPod, next: Partial<MemoryErrorEventStatusPod>, podRef: ObjectRef, log: Logger): Promise<MemoryErrorEventStatus> {
    const done: MemoryErrorEventStatus = { ...status, pods: (status.pods ?? []).map((p) => (p.uid === entry.uid ? { ...p, ...next } : p)) };
    await this.writeStatus(event, done);
    log.info("pod action", { pod: `${podRef.namespace ?? ""}/${podRef.name}`, action: entry.action, state: next.state, blockedBy: next.blockedBy });
    return done;
  }

  private async carryOutQuarantine(event: MemoryErrorEvent, status: MemoryErrorEventStatus, log: Logger): Promise<MemoryErrorEventStatus> {
    const quarantine = status.quarantine ?? [];
    if (!quarantine.some((q) => q.state === "Planned" || q.state === "Quarantined")) return status;
    const stale = this.state.staleCapacity(event.spec.nodeName);
    const next: MemoryErrorEventStatusQuarantine[] = [];
    for (const q of quarantine) {
      const name = quarantinePodName(event.metadata.name, q.size);
      const namespace = this.options.namespace;
      const present = this.state.pods.has(`${namespace}/${name}`);
      if (q.state === "Quarantined" && stale[q.size] === 0 && this.state.health.has(event.spec.nodeName)) {
        await this.actions.deletePod(namespace, name);
        this.metrics.actions.inc({ action: "release", outcome: "done" });
        await this.event(nodeRef(event.spec.nodeName), "Normal", "HugepageQuarantineReleased", `released ${formatBytes(q.bytes)} of hugepages-${q.size}: the kubelet's advertised capacity caught up`);
        log.info("quarantine released", { size: q.size, bytes: q.bytes });
        next.push({ ...q, state: "Released" });
      } else if (q.state === "Planned" || (q.state === "Quarantined" && !present)) {
        await this.actions.createQuarantinePod({ namespace, name, eventName: event.metadata.name, eventUID: event.metadata.uid ?? "", nodeName: event.spec.nodeName, size: q.size, bytes: q.bytes });
        if (q.state === "Planned") {
          this.metrics.actions.inc({ action: "quarantine", outcome: "done" });
          await this.event(nodeRef(event.spec.nodeName), "Warning", "HugepageQuarantined", `holding ${formatBytes(q.bytes)} of hugepages-${q.size} out of scheduling: the kernel removed it after memory error ${event.metadata.name}, the kubelet still advertises it`);
        }
        next.push({ ...q, state: "Quarantined" });
      } else next.push(q);
    }
    if (JSON.stringify(next) === JSON.stringify(quarantine)) return status;
    const updated = { ...status, quarantine: next };
    await this.writeStatus(event, updated);
    return updated;
  }

  private async carryOutNodeAction(event: MemoryErrorEvent, status: MemoryErrorEventStatus, policy: ContainmentPolicy | undefined, log: Logger): Promise<MemoryErrorEventStatus> {
    const action = status.nodeAction;
    if (action?.state !== "Planned" || action.action === "None") return status;
    const nodeName = event.spec.nodeName;
    const safety = policy?.spec.safety;
    // Checked and reserved in one synchronous step, so two reconciles can never both take the last slot.
    const budget = this.budget();
    const allowed = Math.floor((budget.totalNodes * (safety?.maxUnavailableNodesPercent ?? 10)) / 100);
    const now = this.options.now();
    const breakerMs = parseDuration(safety?.circuitBreaker?.window ?? "1h", "spec.safety.circuitBreaker.window");
    const recent = budget.nodeActionTimes.filter((t) => t > now - breakerMs).length;
    const over = !budget.actionedNodes.has(nodeName) && budget.actionedNodes.size + 1 > allowed;
    const breaker = recent >= (safety?.circuitBreaker?.maxNodeActions ?? 5);
    if (over || breaker) {
      const held = { ...status, nodeAction: { ...action, state: "HeldByBudget" as const, reason: `${action.reason ?? ""}; held at action time: ${over ? `the budget of ${allowed} node(s) is taken` : "the circuit breaker is open"}` } };
      this.metrics.nodeActionsHeld.inc({ action: action.action });
      this.metrics.breakerOpen.set(breaker ? 1 : 0);
      await this.writeStatus(event, held);
      return held;
    }
    this.reservedNodes.set(nodeName, now);
    try {
      if (action.action === "Cordon") await this.actions.cordonNode(nodeName);
      else await this.actions.taintNode(nodeName, policy?.spec.escalation?.taintKey ?? defaultTaintKey, "HugepageMemoryFailing");
    } catch (e) {
      this.reservedNodes.delete(nodeName);
      throw e;
    }
    this.metrics.actions.inc({ action: action.action.toLowerCase(), outcome: "done" });
    await this.event(nodeRef(nodeName), "Warning", action.action === "Cordon" ? "CordonedForMemoryErrors" : "TaintedForMemoryErrors", action.reason ?? "");
    log.warn(`node ${action.action === "Cordon" ? "cordoned" : "tainted"}`, { reason: action.reason });
    const done = { ...status, nodeAction: { ...action, state: "Done" as const } };
    await this.writeStatus(event, done);
    return done;
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
    const uncorrected = recent.filter((e) => e.spec.severity !== "Corrected" && e.spec.severity !== "SoftOffline").length;
    const corrected = recent.length - uncorrected;
    const cordonAfter = policy?.spec.escalation?.cordonAfter ?? 4;
    const healthWord = uncorrected === 0 ? "Healthy" : uncorrected < cordonAfter ? "Degraded" : "Failing";
    const quarantined = HUGEPAGE_SIZES.map((size) => ({
      size,
      bytes: events.flatMap((e) => e.status?.quarantine ?? []).filter((q) => q.size === size && q.state === "Quarantined").reduce((sum, q) => sum + q.bytes, 0),
    })).filter((q) => q.bytes > 0);
    for (const size of HUGEPAGE_SIZES) this.metrics.quarantinedBytes.set({ node: nodeName, size }, quarantined.find((q) => q.size === size)?.bytes ?? 0);
    const boot = health?.spec.bootID;
    const poisoned = new Set(events.filter((e) => e.spec.hugepage && (!boot || e.spec.bootID === boot) && e.status?.prediction?.poolEffect !== "None").map((e) => `${e.spec.hugepage?.size ?? ""}/${e.spec.hugepage?.headPfn ?? ""}`));
    const nodeAction = node?.cordonedByUs ? "Cordon" : node && this.state.taintedByUs(node) ? "Taint" : "None";
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
        conditions: setCondition(health.status?.conditions, { type: "Degraded", status: healthWord === "Healthy" ? "False" : "True", reason: healthWord, message }, now, health.metadata.generation),
      };
      if (JSON.stringify({ ...status, conditions: undefined }) !== JSON.stringify({ ...health.status, conditions: undefined })) {
        await this.actions.applyHealthStatus(nodeName, status);
        this.state.health.set(nodeName, { ...health, status });
      }
    }
    const wanted = { status: healthWord === "Healthy" ? ("False" as const) : ("True" as const), reason: healthWord, message };
    if (node && (events.length > 0 || node.degradedCondition) && (node.degradedCondition?.status !== wanted.status || node.degradedCondition.message !== wanted.message)) {
      await this.actions.setNodeCondition(nodeName, wanted);
      this.state.nodes.set(nodeName, { ...node, degradedCondition: wanted });
    }
    return undefined;
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
          ? { type: "Conflict", status: "True", reason: "EquallySpecific", message: `selects nodes as specifically as ${conflicting.join(", ")}: events on those nodes are not decided until one is made more specific` }
          : { type: "Conflict", status: "False", reason: "MostSpecific", message: "no other policy ties with this one" },
        now,
        policy.metadata.generation,
      ),
    };
    if (JSON.stringify({ ...status, conditions: undefined }) !== JSON.stringify({ ...policy.status, conditions: undefined }) || policy.status?.conditions === undefined) {
      await this.actions.applyPolicyStatus(name, status);
      this.state.policies.set(name, { ...policy, status });
    }
    return undefined;
  }
}
