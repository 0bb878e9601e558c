// Level-triggered reconcile of one MemoryErrorEvent, in the kubebuilder shape: read the cached state,
// decide once with the containment model and record the decision in status (the desired state), then
// carry out each action the decision holds, recording it before and after, so a crash at any moment
// resumes without repeating or losing an action. Every choice (what to do, whether the budget allows a
// node action now, whether a held one is due) is the model's; this file does bookkeeping and I/O only.
import type { MemoryErrorEvent, MemoryErrorEventStatus, MemoryErrorEventStatusPod, MemoryErrorEventStatusQuarantine } from "../../crds/generated.ts";
import { lostRangesAnnotation } from "../../crds/naming.ts";
import { formatBytes } from "../../crds/quantity.ts";
import { parseHex } from "../../kernel/pfn.ts";
import { ApiError } from "../../runtime/api.ts";
import type { EvictionOutcome } from "../actions.ts";
import type { Logger } from "../../runtime/log.ts";
import { decideContainment, kernelAlreadySignalled, plannedEvictions } from "../model/containment.ts";
import type { Decision } from "../model/containment.ts";
import { formatDuration, parseDuration, policyDuration, RETRY_FLOOR_MS } from "../model/duration.ts";
import { breaker, decideNodeAction, heldActionDue, nodeActionHold } from "../model/escalation.ts";
import { quarantinesToRelease } from "../model/quarantine.ts";
import { replacementPause } from "../model/replacement.ts";
import { decidePrevention } from "../model/risk.ts";
import { selectorMatches } from "../model/selector.ts";
import type { Policy } from "../model/types.ts";
import type { WorkResult } from "../../runtime/queue.ts";
import { ClusterState, defaultPolicy, nodeInfo } from "../state.ts";
import { iso, nodeRef, podRef, quarantinePodName, recordEvent, sameStatus, setCondition, words, writeEventStatus } from "./context.ts";
import { decidedStatus, failedStatus, phaseOf, terminalPodStates, undecidedStatus } from "./decision.ts";
import type { ReconcileContext } from "./context.ts";

type NodeAction = MemoryErrorEventStatus["nodeAction"];

/** What one pass will do: the status with actions marked InProgress, and the side effects to make. */
interface Plan {
  status: MemoryErrorEventStatus;
  evictions: MemoryErrorEventStatusPod[];
  toCreate: MemoryErrorEventStatusQuarantine[];
  toRelease: MemoryErrorEventStatusQuarantine[];
  applyNodeAction: boolean;
}

const maxBackoffMs = 300_000;

/** An answer that no retry can change: the request itself is wrong (400, 422) or its object is gone (404). */
const refusedForGood = (error: unknown): boolean => error instanceof ApiError && [400, 404, 422].includes(error.status);

export class EventReconciler {
  private readonly context: ReconcileContext;
  private readonly state: ClusterState;

  constructor(context: ReconcileContext) {
    this.context = context;
    this.state = context.state;
  }

  private async writeStatus(event: MemoryErrorEvent, status: MemoryErrorEventStatus): Promise<void> {
    await writeEventStatus(this.context, event, status);
  }

  /**
   * One pass over an event: decide if not yet decided; mark every action about to be carried out
   * InProgress and record that (with the decision) in one status write; carry the actions out; record
   * their outcomes and the phase in a second write. A crash between the two leaves InProgress actions
   * that the next pass checks against the cluster before trying again.
   */
  async reconcile(name: string): Promise<WorkResult> {
    const event = this.state.events.get(name);
    if (!event) return undefined;
    const log = this.context.log.child({ memoryErrorEvent: name, node: event.spec.nodeName });
    const now = this.context.now();
    let status = event.status ?? {};
    let decidedNow = false;
    if (!status.decidedAt || status.observedGeneration !== event.metadata.generation) {
      const decided = this.decide(event, now, log);
      if (decided.undecided) {
        if (!sameStatus(decided.status, event.status)) await this.writeStatus(event, decided.status);
        return decided.undecided === "conflict" ? { requeueAfterMs: 30_000 } : undefined;
      }
      status = decided.status;
      decidedNow = true;
    }
    // A policy deleted since the decision: the actions decided go on under the CRD's defaults.
    const policy = status.policy ? this.state.policies.get(status.policy)?.spec : undefined;
    const requeue: number[] = [];
    const plan = this.plan(event, status, policy, now, requeue, decidedNow);
    try {
      if (decidedNow || !sameStatus(plan.status, status)) await this.writeStatus(event, plan.status);
    } finally {
      // From here the InProgress statuses in the cache hold the budget slot and the pods' evictions.
      this.state.nodeActionsInFlight.delete(name);
      for (const entry of plan.evictions) this.state.evictionsInFlight.delete(entry.uid);
    }
    let after: MemoryErrorEventStatus;
    try {
      after = await this.act(event, plan, policy ?? defaultPolicy, requeue, log);
    } catch (e) {
      this.context.enqueueNode(event.spec.nodeName);
      throw e;
    }
    const phase = phaseOf(after);
    if (phase !== after.phase) {
      const contained = phase === "Contained" || phase === "Escalated" || phase === "Ignored";
      const message = contained
        ? "every action is carried out"
        : phase === "Failed"
          ? "an action could not be carried out: see pods[] and nodeAction"
          : "actions in progress";
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
    if (!sameStatus(after, plan.status)) await this.writeStatus(event, after);
    this.context.enqueueNode(event.spec.nodeName);
    return requeue.length > 0 ? { requeueAfterMs: Math.max(1, Math.min(...requeue)) } : undefined;
  }

  /** Decides with the model. Nothing is written here: the caller records the decision with its plan. */
  private decide(event: MemoryErrorEvent, now: number, log: Logger): { status: MemoryErrorEventStatus; undecided?: "conflict" | "none" } {
    const { metrics } = this.context;
    const nodeName = event.spec.nodeName;
    const match = this.state.policyFor(nodeName);
    if (match.kind !== "matched") {
      const undecided = undecidedStatus(event, match, now);
      log.warn("memory error not decided", { reason: undecided.message });
      return undecided;
    }
    let decision: Decision;
    try {
      decision = decideContainment({
        error: this.state.memoryErrorOf(event),
        node: this.state.nodeState(nodeName, event.metadata.name),
        pods: this.state.podsOn(nodeName).filter((p) => !p.quarantineFor),
        pdbs: [...this.state.pdbs.values()],
        policy: match.policy.spec,
        budget: this.state.budget(),
        now,
      });
    } catch (e) {
      log.error("cannot decide", { error: e });
      return failedStatus(event, e as Error, now);
    }
    const { prediction, nodeAction } = decision;
    metrics.memoryErrors.inc({ severity: event.spec.severity, page_type: event.spec.pageType ?? "", result: event.spec.result ?? "" });
    metrics.decisionLatency.observe(Math.max(0, now - Date.parse(event.spec.observedAt)) / 1000);
    if (nodeAction.state === "HeldByBudget") metrics.nodeActionsHeld.inc({ action: nodeAction.action });
    if (nodeAction.action !== "None") metrics.breakerOpen.set(breaker(this.state.budget(), match.policy.spec.safety, now).open ? 1 : 0);
    log.info("memory error decided", {
      policy: match.policy.metadata.name,
      dryRun: decision.dryRun,
      poolEffect: prediction.poolEffect,
      pods: decision.pods.length,
      nodeAction: nodeAction.action,
    });
    return { status: decidedStatus(event, decision, match.policy.metadata.name, now) };
  }

  /** Works out, without side effects on the cluster, what to do now; marks it InProgress in the returned status. */
  private plan(event: MemoryErrorEvent, status: MemoryErrorEventStatus, policy: Policy | undefined, now: number, requeue: number[], decidedNow: boolean): Plan {
    const nodeName = event.spec.nodeName;
    const { eviction } = (policy ?? defaultPolicy).podActions;
    const backoffMs = policyDuration(eviction.backoff, "spec.podActions.eviction.backoff", RETRY_FLOOR_MS);
    const deleteAfterMs =
      eviction.fallbackToDelete && eviction.deleteAfter ? parseDuration(eviction.deleteAfter, "spec.podActions.eviction.deleteAfter") : undefined;
    let slots = (policy ?? defaultPolicy).safety.maxEvictionsInFlight - this.state.budget().evictionsInFlight;
    const evictions: MemoryErrorEventStatusPod[] = [];
    const error = ClusterState.memoryError(event);
    const pods = (status.pods ?? []).map((entry): MemoryErrorEventStatusPod => {
      if (terminalPodStates.has(entry.state)) return entry;
      // Since the decision the agent saw the kernel signal every process of the pod on a later access.
      if (entry.state !== "InProgress" && kernelAlreadySignalled(error, entry.uid))
        return {
          ...entry,
          action: "None",
          state: "Skipped",
          kernelSignal: "ARAtError",
          message: "the kernel signalled its process(es) with BUS_MCEERR_AR on a later access: a warning or an eviction now would only add a disruption",
        };
      if (entry.action === "EarlySignal") return this.planEarlySignal(event, status, entry, policy ?? defaultPolicy, now, requeue);
      const pod = this.state.podByUid(nodeName, entry.uid);
      // Gone or going: our own eviction went through before a crash, or something else removed it.
      if (!pod || pod.deleting) return { ...entry, state: "Done", message: "the pod is gone" };
      // One pod is evicted once, whatever number of errors name it: another event's eviction is followed.
      const other = this.state.evictionOf(nodeName, entry.uid, event.metadata.name);
      if (other) {
        if (other.state === "Done" || other.state === "TimedOut" || other.state === "Failed")
          return { ...entry, state: other.state, message: words(`carried out for memory error ${other.eventName}: ${other.state}`) };
        requeue.push(1000);
        return entry;
      }
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
      // Claimed in the same synchronous step as the check above; the InProgress status holds it after.
      this.state.evictionsInFlight.set(entry.uid, event.metadata.name);
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
          !this.state.pods.has(`${this.context.namespace}/${quarantinePodName(event.metadata.name, q.size)}`) &&
          !toRelease.includes(q)),
    );
    // A node action the decision just held is not asked about again in the same pass.
    const { nodeAction, apply } =
      decidedNow && status.nodeAction?.state === "HeldByBudget"
        ? { nodeAction: status.nodeAction, apply: false }
        : this.planNodeAction(event, status, policy, now);
    const poolReplacement = this.planPoolReplacement(event, status, policy, now);
    const prevented = this.planPrevention(event, { ...status, pods }, policy, now);
    const escalated = this.planCorrectedEscalation(event, { ...status, nodeAction }, policy, now);
    // A planned move's evictions and a node action the counts called for are carried out from the next
    // pass, like any other Planned entry.
    if (prevented.pods !== pods || escalated !== nodeAction) requeue.push(1);
    return {
      status: { ...status, pods: prevented.pods, nodeAction: escalated, poolReplacement, prevention: prevented.prevention },
      evictions,
      toCreate,
      toRelease,
      applyNodeAction: apply,
    };
  }

  /**
   * A planned taint or cordon, or a held one the model says is due again, is taken if the model's limits
   * allow it now; the slot is reserved in the same synchronous step as the check, and is then held by the
   * InProgress status. An InProgress action (a crash or an API error cut the last pass short) is applied
   * again: it already holds its slot, and applying it twice changes nothing.
   */
  private planNodeAction(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    policy: Policy | undefined,
    now: number,
  ): { nodeAction: NodeAction; apply: boolean } {
    const { metrics } = this.context;
    const action = status.nodeAction;
    if (!action || action.action === "None") return { nodeAction: action, apply: false };
    if (action.state === "InProgress") return { nodeAction: action, apply: true };
    const nodeName = event.spec.nodeName;
    const node = this.state.nodeState(nodeName, event.metadata.name);
    const latest = !this.state.eventsOn(nodeName).some((e) => Date.parse(e.spec.observedAt) > Date.parse(event.spec.observedAt));
    const retry =
      action.state === "HeldByBudget" &&
      policy !== undefined &&
      heldActionDue({ action: action.action, dryRun: status.dryRun === true, latest, node, health: this.state.nodeHealth(nodeName, now) });
    if (action.state !== "Planned" && !retry) return { nodeAction: action, apply: false };
    const { safety } = policy ?? defaultPolicy;
    const budget = this.state.budget();
    metrics.breakerOpen.set(breaker(budget, safety, now).open ? 1 : 0);
    const hold = nodeActionHold(nodeName, node.lastNodeActionAt, budget, safety, now);
    if (hold) {
      if (action.state === "Planned") metrics.nodeActionsHeld.inc({ action: action.action });
      const message = words(`${action.state === "Planned" ? "held at action time" : "still held"}: ${hold.reason}`);
      return { nodeAction: { ...action, state: "HeldByBudget", heldBy: hold.heldBy, message }, apply: false };
    }
    this.state.nodeActionsInFlight.set(event.metadata.name, { eventName: event.metadata.name, node: nodeName, at: now });
    const message = retry ? "taken once the limits allowed it" : action.message;
    return { nodeAction: { ...action, state: "InProgress", heldBy: undefined, appliedAt: iso(now), message }, apply: true };
  }

  private planEarlySignal(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    entry: MemoryErrorEventStatusPod,
    policy: Policy,
    now: number,
    requeue: number[],
  ): MemoryErrorEventStatusPod {
    const { metrics } = this.context;
    const outcome = status.earlySignals?.find((s) => s.uid === entry.uid);
    if (outcome) {
      metrics.actions.inc({ action: "early_signal", outcome: outcome.state.toLowerCase() });
      // The pod's notice is the operator's to post (the agent holds no permission for Events).
      const { spec } = event;
      const hugepage = spec.hugepage ? `${spec.hugepage.size} hugepage ${spec.hugepage.headPfn}` : `the hugepage holding pfn ${spec.pfn}`;
      const notice =
        outcome.state === "Done"
          ? `hardware memory error ${event.metadata.name} at pfn ${spec.pfn}: ${hugepage} is lost; lost virtual ranges ${(outcome.lostRanges ?? []).join(", ")} (annotation ${lostRangesAnnotation}); ${outcome.signal ?? "signal"} sent to pid ${(outcome.pids ?? []).join(", ")}`
          : `early signal for memory error ${event.metadata.name} ${outcome.state}: ${outcome.message ?? ""}`;
      recordEvent(this.context, podRef(entry), outcome.state === "Done" ? "Normal" : "Warning", "EarlySignal", words(notice));
      return { ...entry, state: outcome.state, message: words(`agent: ${outcome.message ?? outcome.state}`), lastAttemptAt: outcome.at };
    }
    const timeoutMs = policyDuration(policy.podActions.earlySignal.timeout, "spec.podActions.earlySignal.timeout", RETRY_FLOOR_MS);
    const deadline = Date.parse(status.decidedAt ?? iso(now)) + timeoutMs;
    if (now >= deadline) {
      metrics.actions.inc({ action: "early_signal", outcome: "timed_out" });
      return { ...entry, state: "TimedOut", message: `the node's agent did not report within ${formatDuration(timeoutMs)}` };
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
    policy: Policy | undefined,
    now: number,
  ): MemoryErrorEventStatus["poolReplacement"] {
    const { metrics, log } = this.context;
    const replacement = status.poolReplacement;
    if (replacement?.action !== "Replace" || !replacement.size) return replacement;
    const size = replacement.size;
    const nodeName = event.spec.nodeName;
    if (replacement.state === "Planned") {
      const pause = policy && replacementPause(this.state.nodeState(nodeName, event.metadata.name), policy, now);
      if (pause) {
        metrics.poolReplacements.inc({ size, outcome: "skipped" });
        return { ...replacement, state: "Skipped", message: words(`not asked: ${pause.reason}`) };
      }
      metrics.poolReplacements.inc({ size, outcome: "requested" });
      return { ...replacement, state: "Requested", requestedAt: iso(now) };
    }
    const result = status.poolReplacementResult;
    if (replacement.state !== "Requested" || !result) return replacement;
    const agentSays = `agent: ${result.message ?? result.state}`;
    if (result.state === "Waiting") return { ...replacement, message: words(agentSays) };
    metrics.poolReplacements.inc({ size, outcome: result.state.toLowerCase() });
    const quarantined = status.quarantine?.find((q) => q.size === size && q.state === "Quarantined");
    const consequence =
      result.state === "Given"
        ? quarantined
          ? "the quarantine is released once the agent's next report shows the pool back"
          : "the pool is back to its size before the error"
        : quarantined
          ? `the quarantine of ${formatBytes(quarantined.bytes)} hugepages-${size} stays: the capacity is lost until the node is repaired or rebooted`
          : "the capacity stays lost";
    const reason = result.state === "Given" ? "HugepageReplaced" : result.state === "Refused" ? "HugepageReplacementRefused" : "HugepageReplacementSkipped";
    const message = words(`${agentSays}; ${consequence}`);
    recordEvent(
      this.context,
      nodeRef(nodeName),
      result.state === "Given" ? "Normal" : "Warning",
      reason,
      words(`memory error ${event.metadata.name}: ${message}`),
    );
    log.info("pool replacement", {
      memoryErrorEvent: event.metadata.name,
      node: nodeName,
      size,
      state: result.state,
      before: result.before,
      after: result.after,
    });
    return { ...replacement, state: result.state, message };
  }

  /**
   * A corrected error's page, while nothing is lost: the risk model decides once a threshold is reached
   * (until then the page is Watching, its count refreshed from the agent's report); a soft offline is
   * handed to the node's agent, whose outcome is copied in, and one the kernel refused falls back to the
   * planned eviction of the hugepage's mappers.
   */
  private planPrevention(
    event: MemoryErrorEvent,
    status: MemoryErrorEventStatus,
    policy: Policy | undefined,
    now: number,
  ): { prevention: MemoryErrorEventStatus["prevention"]; pods: MemoryErrorEventStatusPod[] | undefined } {
    const { spec } = event;
    const current = status.prevention;
    const unchanged = { prevention: current, pods: status.pods };
    if (spec.severity !== "Corrected" || spec.loggedAtBoot === true || policy === undefined) return unchanged;
    const nodeName = spec.nodeName;
    const mappers = spec.mappers ?? [];
    const pods = this.state.podsOn(nodeName).filter((p) => !p.quarantineFor && !p.deleting);
    const move = (why: string): MemoryErrorEventStatusPod[] =>
      plannedEvictions({ pods, mappers, pdbs: [...this.state.pdbs.values()], policy, budget: this.state.budget() }, why);
    if (current?.action === "SoftOffline" && current.state === "Requested") {
      const result = status.softOfflineResult;
      if (!result) return unchanged;
      const agentSays = words(`agent: ${result.message ?? result.state}`);
      this.context.metrics.softOfflines.inc({ outcome: result.state.toLowerCase() });
      if (result.state === "Done") {
        recordEvent(this.context, nodeRef(nodeName), "Normal", "HugepageSoftOfflined", words(`memory error ${event.metadata.name}: ${agentSays}`));
        return { prevention: { ...current, state: "Done", message: agentSays }, pods: status.pods };
      }
      const fallback = policy.prevention.plannedEviction ? move(`soft offline of pfn ${spec.pfn} was not done (${agentSays}): move early`) : [];
      recordEvent(this.context, nodeRef(nodeName), "Warning", "HugepageSoftOfflineFailed", words(`memory error ${event.metadata.name}: ${agentSays}`));
      return fallback.length > 0
        ? {
            prevention: { ...current, action: "Evict", state: "Requested", message: words(`${agentSays}; the mappers' pods are evicted instead`) },
            pods: fallback,
          }
        : { prevention: { ...current, state: "Failed", message: agentSays }, pods: status.pods };
    }
    if (current?.action === "Evict" && current.state === "Requested") {
      const settled = (status.pods ?? []).every((p) => terminalPodStates.has(p.state));
      return settled ? { prevention: { ...current, state: "Done" }, pods: status.pods } : unchanged;
    }
    if (current !== undefined && current.state !== "Watching") return unchanged;
    const health = this.state.health.get(nodeName);
    const pfn = parseHex(spec.pfn, `MemoryErrorEvent ${event.metadata.name} spec.pfn`);
    const error = ClusterState.memoryError(event);
    const mapperUIDs = new Set(mappers.map((m) => m.podUID));
    const { pages, dimms } = ClusterState.correctedOf(health);
    const decided = decidePrevention({
      page: pages.find((p) => p.pfn === pfn),
      otherPages: pages,
      pfn,
      hugepage: error.hugepage,
      dimms,
      node: this.state.nodeState(nodeName, event.metadata.name),
      support: { available: health?.spec.capabilities?.softOffline, enableSoftOffline: health?.spec.capabilities?.enableSoftOffline },
      mapperPods: pods.filter((p) => mapperUIDs.has(p.uid)).length,
      policy,
      now,
    });
    const base = { action: decided.action, reason: words(decided.reason), correctedErrors: decided.correctedErrors };
    if (decided.action === "None") {
      const prevention = { ...base, state: decided.state, ...(decided.state === "Skipped" && { decidedAt: iso(now) }) };
      return { prevention, pods: status.pods };
    }
    const dryRun = status.dryRun === true;
    this.context.log.info("corrected errors: acting before anything is lost", { memoryErrorEvent: event.metadata.name, action: decided.action, dryRun });
    recordEvent(this.context, nodeRef(nodeName), "Warning", "CorrectedErrorsThreshold", words(`memory error ${event.metadata.name}: ${decided.reason}`));
    const prevention = { ...base, state: dryRun ? ("DryRun" as const) : ("Requested" as const), decidedAt: iso(now) };
    if (decided.action === "SoftOffline") return { prevention, pods: status.pods };
    return { prevention, pods: move("maps a hugepage at risk of an uncorrected error (corrected errors past the policy's threshold): move early") };
  }

  /**
   * A node whose memory keeps producing corrected errors: the agent's counts (a page's later errors are
   * never events) may reach the policy's escalation thresholds after every event was decided. The node's
   * latest corrected error takes the node action the model decides then, under the same budget, breaker
   * and cooldown as any other; one already decided is carried out by planNodeAction.
   */
  private planCorrectedEscalation(event: MemoryErrorEvent, status: MemoryErrorEventStatus, policy: Policy | undefined, now: number): NodeAction {
    const current = status.nodeAction;
    const { spec } = event;
    if (spec.severity !== "Corrected" || policy === undefined || (current !== undefined && current.action !== "None")) return current;
    const nodeName = spec.nodeName;
    const at = Date.parse(spec.observedAt);
    if (this.state.eventsOn(nodeName).some((e) => e.spec.severity === "Corrected" && Date.parse(e.spec.observedAt) > at)) return current;
    const health = this.state.nodeHealth(nodeName, now);
    if (health.calledFor === "None") return current;
    const decided = decideNodeAction(this.state.nodeState(nodeName, event.metadata.name), health, policy, this.state.budget(), now, status.dryRun === true);
    // Already there: nothing to record on this error.
    if (decided.state === "Done") return current;
    this.context.log.info("corrected errors call for a node action", { memoryErrorEvent: event.metadata.name, action: decided.action, state: decided.state });
    return decided;
  }

  /** Carries the plan out and returns the status with every outcome. */
  private async act(event: MemoryErrorEvent, plan: Plan, policy: Policy, requeue: number[], log: Logger): Promise<MemoryErrorEventStatus> {
    const { metrics } = this.context;
    const nodeName = event.spec.nodeName;
    const { eviction } = policy.podActions;
    const fallbackConfigured = eviction.fallbackToDelete && eviction.deleteAfter !== undefined;
    const backoffMs = policyDuration(eviction.backoff, "spec.podActions.eviction.backoff", RETRY_FLOOR_MS);
    const settled = await Promise.allSettled(plan.evictions.map((entry) => this.evictOne(entry)));
    const outcomes = new Map<string, Partial<MemoryErrorEventStatusPod>>();
    settled.forEach((result, i) => {
      const entry = plan.evictions[i];
      if (entry && result.status === "rejected" && refusedForGood(result.reason)) {
        outcomes.set(entry.uid, { state: "Failed", message: words(`the API server refused it for good: ${(result.reason as Error).message}`) });
        metrics.actions.inc({ action: entry.action === "Delete" ? "delete" : "evict", outcome: "failed" });
        return;
      }
      if (!entry || result.status === "rejected") return;
      const outcome = result.value;
      if (outcome.kind !== "blocked") {
        outcomes.set(entry.uid, { state: "Done" });
        return;
      }
      const pod = this.state.podByUid(nodeName, entry.uid);
      const pdb = pod && [...this.state.pdbs.values()].find((b) => b.namespace === pod.namespace && selectorMatches(b.selector, pod.labels))?.name;
      const timedOut = (entry.attempts ?? 0) >= eviction.maxAttempts && !fallbackConfigured;
      outcomes.set(entry.uid, { state: timedOut ? "TimedOut" : "Blocked", blockedBy: pdb, message: words(`blocked: ${outcome.message}`) });
      metrics.evictionsBlocked.inc();
      metrics.actions.inc({ action: "evict", outcome: timedOut ? "timed_out" : "blocked" });
      if (!timedOut) requeue.push(Math.min(backoffMs * 2 ** Math.max(0, (entry.attempts ?? 1) - 1), maxBackoffMs));
    });
    let status: MemoryErrorEventStatus = { ...plan.status, pods: (plan.status.pods ?? []).map((p) => ({ ...p, ...outcomes.get(p.uid) })) };
    for (const [uid, o] of outcomes) log.info("pod action", { pod: status.pods?.find((p) => p.uid === uid)?.name, state: o.state, blockedBy: o.blockedBy });
    status = await this.actOnQuarantine(event, plan, status, log);
    const action = status.nodeAction;
    if (plan.applyNodeAction && action) status = { ...status, nodeAction: await this.applyNodeAction(event, action, policy, log) };
    for (const entry of plan.evictions) {
      if (outcomes.get(entry.uid)?.state !== "Done") continue;
      metrics.actions.inc({ action: entry.action === "Delete" ? "delete" : "evict", outcome: "done" });
      const page = event.spec.hugepage?.headPfn ?? event.spec.pfn;
      const message = `memory error ${event.metadata.name} poisoned hugepage ${page} that this pod maps; it would crash with SIGBUS on access`;
      recordEvent(this.context, podRef(entry), "Warning", entry.action === "Delete" ? "DeletedForMemoryError" : "EvictedForMemoryError", message);
    }
    const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected" && !refusedForGood(r.reason));
    if (failed) {
      // Record what did happen, then let the queue retry the rest with backoff.
      await this.writeStatus(event, status);
      throw failed.reason;
    }
    return status;
  }

  /**
   * Taints or cordons the node. An API error that can never succeed (a taint key the API server refuses,
   * a node that is gone) ends the action as Failed, with an Event, and frees its budget slot; any other
   * error is retried by the queue, the action still InProgress and holding its slot.
   */
  private async applyNodeAction(
    event: MemoryErrorEvent,
    action: NonNullable<MemoryErrorEventStatus["nodeAction"]>,
    policy: Policy,
    log: Logger,
  ): Promise<NonNullable<MemoryErrorEventStatus["nodeAction"]>> {
    const { metrics, actions } = this.context;
    const nodeName = event.spec.nodeName;
    const verb = action.action === "Cordon" ? "cordon" : "taint";
    let held: Record<string, unknown>;
    try {
      held =
        action.action === "Cordon"
          ? await actions.cordonNode(nodeName)
          : await actions.taintNode(nodeName, policy.escalation.taintKey, "HugepageMemoryFailing");
    } catch (e) {
      if (!refusedForGood(e)) throw e;
      const message = words(`the API server refused the ${verb} for good: ${(e as Error).message}`);
      metrics.actions.inc({ action: verb, outcome: "failed" });
      recordEvent(this.context, nodeRef(nodeName), "Warning", "NodeActionFailed", words(`memory error ${event.metadata.name}: ${message}`));
      log.error(`cannot ${verb} node`, { error: e });
      return { ...action, state: "Failed", message };
    }
    // The API server's answer is ahead of the watch: the budget sees the node actioned from now on.
    this.state.upsertNode(nodeInfo(held));
    metrics.actions.inc({ action: verb, outcome: "done" });
    recordEvent(
      this.context,
      nodeRef(nodeName),
      "Warning",
      action.action === "Cordon" ? "CordonedForMemoryErrors" : "TaintedForMemoryErrors",
      action.reason ?? "",
    );
    log.warn(`node ${verb === "cordon" ? "cordoned" : "tainted"}`, { reason: action.reason });
    return { ...action, state: "Done" };
  }

  /** Makes the planned and lost placeholders, and deletes the ones the node no longer needs. */
  private async actOnQuarantine(event: MemoryErrorEvent, plan: Plan, status: MemoryErrorEventStatus, log: Logger): Promise<MemoryErrorEventStatus> {
    const { metrics, actions, namespace } = this.context;
    const nodeName = event.spec.nodeName;
    const quarantine = new Map((status.quarantine ?? []).map((q) => [q.size, q]));
    for (const q of plan.toCreate) {
      const name = quarantinePodName(event.metadata.name, q.size);
      await actions.createQuarantinePod({
        namespace,
        name,
        eventName: event.metadata.name,
        eventUID: event.metadata.uid ?? "",
        nodeName,
        size: q.size,
        bytes: q.bytes,
      });
      // No Event: the placeholder on the node says why it holds the capacity (its reason annotation).
      if (q.state === "Planned") metrics.actions.inc({ action: "quarantine", outcome: "done" });
      quarantine.set(q.size, { ...q, state: "Quarantined" });
    }
    for (const q of plan.toRelease) {
      await actions.deletePod(namespace, quarantinePodName(event.metadata.name, q.size));
      metrics.actions.inc({ action: "release", outcome: "done" });
      const refilled = status.poolReplacement?.state === "Given" && status.poolReplacement.size === q.size;
      const why = refilled ? "a replacement hugepage brought the pool back to what the kubelet advertises" : "the kubelet's advertised capacity caught up";
      recordEvent(this.context, nodeRef(nodeName), "Normal", "HugepageQuarantineReleased", `released ${formatBytes(q.bytes)} of hugepages-${q.size}: ${why}`);
      log.info("quarantine released", { size: q.size, bytes: q.bytes });
      quarantine.set(q.size, { ...q, state: "Released" });
    }
    return status.quarantine ? { ...status, quarantine: status.quarantine.map((q) => quarantine.get(q.size) ?? q) } : status;
  }

  private async evictOne(entry: MemoryErrorEventStatusPod): Promise<EvictionOutcome> {
    if (entry.action === "Delete") {
      await this.context.actions.deletePod(entry.namespace, entry.name);
      return { kind: "evicted" };
    }
    return this.context.actions.evictPod(entry.namespace, entry.name);
  }
}
