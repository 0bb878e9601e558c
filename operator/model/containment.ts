// The containment model's policy decision: one pure function from a memory error and the cluster around
// it to a decision, with a reason for every part. No I/O and no clock: `now` is an input. It builds on
// the kernel prediction (prediction.ts) and decides the pods' actions, the capacity quarantine
// (quarantine.ts), the node action (escalation.ts) and a replacement hugepage (replacement.ts). The
// operator, the simulator and the kernel tier all call it, so what the cluster does and what we predict
// the kernel did never drift.
import type {
  MemoryErrorEventStatusNodeAction,
  MemoryErrorEventStatusPod,
  MemoryErrorEventStatusPoolReplacement,
  MemoryErrorEventStatusQuarantine,
} from "../../crds/generated.ts";
import { decideNodeAction, nodeHealth } from "./escalation.ts";
import type { NodeHealth } from "./escalation.ts";
import { predictKernelOutcome } from "./prediction.ts";
import type { KernelPrediction } from "./prediction.ts";
import { quarantineFor } from "./quarantine.ts";
import { decidePoolReplacement } from "./replacement.ts";
import { selectorMatches } from "./selector.ts";
import type { ClusterBudget, DisruptionBudgetState, Mapper, MemoryError, NodeState, PodState, Policy } from "./types.ts";

export interface ContainmentInput {
  error: MemoryError;
  node: NodeState;
  /** Pods on the error's node. */
  pods: readonly PodState[];
  pdbs: readonly DisruptionBudgetState[];
  /** The matching policy's spec, with the CRD's defaults applied. */
  policy: Policy;
  budget: ClusterBudget;
  now: number;
}

export interface Decision {
  prediction: KernelPrediction;
  pods: MemoryErrorEventStatusPod[];
  quarantine: MemoryErrorEventStatusQuarantine[];
  nodeAction: MemoryErrorEventStatusNodeAction;
  /** A replacement hugepage for the one the pool lost; absent when the policy leaves replacement off. */
  poolReplacement?: MemoryErrorEventStatusPoolReplacement | undefined;
  /** The node's health with this error counted. */
  health: NodeHealth;
  /** The phase the event reaches once every action is carried out. */
  phase: "Contained" | "Escalated" | "Ignored";
  dryRun: boolean;
}

/**
 * Every process of the pod that maps the page touched it and already got BUS_MCEERR_AR from the kernel:
 * on an action-required error its kill lines name them, and on a later access the agent records them
 * (status.kernelSignals). A warning would come after the fact, and an eviction adds nothing: each process
 * died (its container restarts on healthy memory, the poisoned page out of the pool) or handled it.
 */
export function kernelAlreadySignalled(error: MemoryError, podUID: string): boolean {
  const own = error.mappers.filter((m) => m.podUID === podUID);
  const hit = (m: Mapper): boolean => (error.severity === "ActionRequired" && m.signalledByKernel === true) || (error.signalledLater?.includes(m.pid) ?? false);
  return own.length > 0 && own.every(hit);
}

function decidePods(input: ContainmentInput, prediction: KernelPrediction, dryRun: boolean): MemoryErrorEventStatusPod[] {
  const { error, policy } = input;
  if (prediction.poolEffect === "None" || prediction.poolEffect === "Migrated" || prediction.poolEffect === "NotHugepage") return [];
  const { earlySignal: early, eviction } = policy.podActions;
  const planned = dryRun ? "DryRun" : "Planned";
  const evict = evictions(input, dryRun);
  return mapperPods(input.pods, error.mappers).map((pod): MemoryErrorEventStatusPod => {
    const own = prediction.mappers.filter((m) => m.podUID === pod.uid);
    const hitAtError = kernelAlreadySignalled(error, pod.uid);
    const kernelSignal = hitAtError ? "ARAtError" : own.some((m) => m.atError === "AO") ? "AO" : "AROnAccess";
    const base = { uid: pod.uid, namespace: pod.namespace, name: pod.name, kernelSignal, attempts: 0 } as const;
    if (hitAtError)
      return {
        ...base,
        action: "None",
        state: "Skipped",
        reason: "the kernel already sent BUS_MCEERR_AR to its process(es), which touched the page: a warning or an eviction now would only add a disruption",
      };
    const excluded = exclusion(pod, policy);
    if (excluded !== undefined) return { ...base, action: "None", state: "Skipped", reason: excluded };
    const annotation = early.optInAnnotation;
    if (early.enabled && pod.annotations[annotation] === "true") {
      const ranges = error.mappers.filter((m) => m.podUID === pod.uid && m.virtualStart).map((m) => `${m.virtualStart ?? ""}-${m.virtualEnd ?? ""}`);
      const signal = early.signal;
      return {
        ...base,
        action: "EarlySignal",
        state: planned,
        signal,
        reason: `opted in by ${annotation}: the agent sends ${signal} to ${own.length} process(es) and publishes the lost range(s) ${[...new Set(ranges)].join(", ") || "(unknown)"}`,
      };
    }
    if (!eviction.enabled)
      return { ...base, action: "None", state: "Skipped", reason: "eviction is disabled by the policy: the pod will crash with BUS_MCEERR_AR on access" };
    return evict(pod, base, "maps the poisoned hugepage and will crash with BUS_MCEERR_AR on access: evict early");
  });
}

/** Why the policy keeps its hands off a pod, or undefined. */
function exclusion(pod: PodState, policy: Policy): string | undefined {
  const { safety } = policy;
  if (safety.excludedNamespaces.includes(pod.namespace)) return `namespace ${pod.namespace} is excluded by the policy`;
  const excludedLabels = safety.excludedPodLabels;
  if (excludedLabels && Object.keys(excludedLabels).length > 0 && selectorMatches({ matchLabels: excludedLabels }, pod.labels))
    return "the pod's labels are excluded by the policy";
  return undefined;
}

type PodEntryBase = Pick<MemoryErrorEventStatusPod, "uid" | "namespace" | "name" | "kernelSignal" | "attempts">;

/** Evictions within the policy's limit on evictions in flight, each saying which PodDisruptionBudget blocks it now. */
function evictions(input: Pick<ContainmentInput, "pdbs" | "policy" | "budget">, dryRun: boolean) {
  const { pdbs, policy, budget } = input;
  const { maxEvictionsInFlight } = policy.safety;
  let slots = Math.max(0, maxEvictionsInFlight - budget.evictionsInFlight);
  return (pod: PodState, base: PodEntryBase, why: string): MemoryErrorEventStatusPod => {
    const blocking = pdbs
      .filter((b) => b.namespace === pod.namespace && b.disruptionsAllowed <= 0 && selectorMatches(b.selector, pod.labels))
      .map((b) => b.name);
    const reason = `${why}${blocking.length > 0 ? `; PodDisruptionBudget ${blocking.join(", ")} allows no disruption now, so eviction is retried with backoff` : ""}`;
    if (!dryRun && slots === 0)
      return { ...base, action: "Evict", state: "Planned", reason: `${reason}; waiting for an eviction slot (${maxEvictionsInFlight} in flight)` };
    slots -= 1;
    return { ...base, action: "Evict", state: dryRun ? "DryRun" : "Planned", reason };
  };
}

/**
 * The planned move of the pods that map a hugepage at risk (corrected errors, nothing lost yet): evicted
 * under the same exclusions, PodDisruptionBudgets and limit on evictions in flight as after a loss.
 */
export function plannedEvictions(
  input: Pick<ContainmentInput, "pods" | "pdbs" | "policy" | "budget"> & { mappers: readonly Mapper[] },
  why: string,
): MemoryErrorEventStatusPod[] {
  const { policy } = input;
  const dryRun = policy.mode !== "Enforce";
  const evict = evictions(input, dryRun);
  return mapperPods(input.pods, input.mappers).map((pod) => {
    const base = { uid: pod.uid, namespace: pod.namespace, name: pod.name, attempts: 0 };
    const excluded = exclusion(pod, policy);
    if (excluded !== undefined) return { ...base, action: "None", state: "Skipped", reason: excluded };
    if (!policy.podActions.eviction.enabled) return { ...base, action: "None", state: "Skipped", reason: "eviction is disabled by the policy" };
    return evict(pod, base, why);
  });
}

/** The pods of the mappers, lowest priority first (the order evictions take the slots in). */
function mapperPods(pods: readonly PodState[], mappers: readonly Mapper[]): PodState[] {
  const uids = new Set(mappers.map((m) => m.podUID).filter((uid): uid is string => Boolean(uid)));
  return pods.filter((p) => uids.has(p.uid)).sort((a, b) => a.priority - b.priority || a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
}

/** The whole decision for one memory error. */
export function decideContainment(input: ContainmentInput): Decision {
  const { error, node, policy, budget, now } = input;
  const dryRun = policy.mode !== "Enforce";
  const prediction = predictKernelOutcome(error, node, policy.kernelProfile);
  const pods = decidePods(input, prediction, dryRun);
  const quarantine = quarantineFor(prediction, error, node, policy, dryRun);
  const health = nodeHealth([...node.history, { at: error.observedAt, severity: error.severity }], policy.escalation, now, node.correctedHourly);
  const nodeAction = decideNodeAction(node, health, policy, budget, now, dryRun);
  const poolReplacement = decidePoolReplacement(prediction, error, node, policy, now, dryRun);
  const escalated = nodeAction.action !== "None" && nodeAction.state !== "HeldByBudget";
  const nothing = pods.length === 0 && quarantine.length === 0 && nodeAction.action === "None";
  const phase = escalated ? "Escalated" : nothing && (prediction.poolEffect === "None" || prediction.poolEffect === "NotHugepage") ? "Ignored" : "Contained";
  return { prediction, pods, quarantine, nodeAction, poolReplacement, health, phase, dryRun };
}
