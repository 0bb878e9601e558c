// What a decision looks like in an event's status, and the phase an event is in: pure mappings from the
// model's output to the API's words, beside the event reconciler that writes them.
import type { MemoryErrorEvent, MemoryErrorEventStatus } from "../../crds/generated.ts";
import { formatBytes } from "../../crds/quantity.ts";
import { clip } from "../../crds/validate.ts";
import type { Decision } from "../model/containment.ts";
import type { PolicyMatch } from "../model/selector.ts";
import { iso, setCondition, words } from "./context.ts";

type Phase = NonNullable<MemoryErrorEventStatus["phase"]>;

export const terminalPodStates = new Set(["Done", "Skipped", "DryRun", "TimedOut", "Failed"]);

/** The phase an event is in, from how far its actions have got. */
export function phaseOf(status: MemoryErrorEventStatus): Phase {
  const pods = status.pods ?? [];
  const quarantine = status.quarantine ?? [];
  const node = status.nodeAction;
  const pending =
    pods.some((p) => !terminalPodStates.has(p.state)) ||
    quarantine.some((q) => q.state === "Planned") ||
    node?.state === "Planned" ||
    node?.state === "InProgress" ||
    status.prevention?.state === "Requested";
  if (pending) return "Pending";
  if (pods.some((p) => p.state === "TimedOut" || p.state === "Failed") || node?.state === "Failed" || status.prevention?.state === "Failed") return "Failed";
  if (node && node.action !== "None" && (node.state === "Done" || node.state === "DryRun")) return "Escalated";
  const effect = status.prediction?.poolEffect;
  const prevented = status.prevention !== undefined && status.prevention.action !== "None";
  if (pods.length === 0 && quarantine.length === 0 && !prevented && (effect === "None" || effect === "NotHugepage")) return "Ignored";
  return "Contained";
}

/** The status of an event no single policy governs: Ignored with no policy, Pending (retried) on a tie. */
export function undecidedStatus(
  event: MemoryErrorEvent,
  match: Exclude<PolicyMatch, { kind: "matched" }>,
  now: number,
): { status: MemoryErrorEventStatus; undecided: "conflict" | "none"; message: string } {
  const conflict = match.kind === "conflict";
  const nodeName = event.spec.nodeName;
  const message = conflict
    ? `policies ${match.policies.join(", ")} select node ${nodeName} equally specifically`
    : `no ContainmentPolicy selects node ${nodeName}`;
  const generation = event.metadata.generation;
  return {
    undecided: conflict ? "conflict" : "none",
    message,
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

/** The status of an event the model could not decide (a policy it refuses): Failed, with why. */
export function failedStatus(event: MemoryErrorEvent, error: Error, now: number): { status: MemoryErrorEventStatus; undecided: "none" } {
  const generation = event.metadata.generation;
  return {
    undecided: "none",
    status: {
      observedGeneration: generation,
      phase: "Failed",
      decidedAt: iso(now),
      conditions: setCondition(
        event.status?.conditions,
        { type: "Decided", status: "False", reason: "DecisionFailed", message: words(error.message) },
        now,
        generation,
      ),
    },
  };
}

/** The decision as recorded: the desired state every later pass carries out. */
export function decidedStatus(event: MemoryErrorEvent, decision: Decision, policyName: string, now: number): MemoryErrorEventStatus {
  const { prediction } = decision;
  const generation = event.metadata.generation;
  const status: MemoryErrorEventStatus = {
    observedGeneration: generation,
    phase: "Pending",
    decidedAt: iso(now),
    dryRun: decision.dryRun,
    policy: policyName,
    prediction: {
      kernelProfile: prediction.kernelProfile,
      verified: prediction.verified,
      poolEffect: prediction.poolEffect,
      lostBytes: prediction.lostBytes,
      memoryLostBytes: prediction.memoryLostBytes,
      kernelResult: prediction.kernelResult,
      reason: clip(prediction.reason, 2048),
    },
    pods: decision.pods,
    quarantine: decision.quarantine,
    nodeAction: decision.nodeAction,
    poolReplacement: decision.poolReplacement,
    earlySignals: event.status?.earlySignals,
    poolReplacementResult: event.status?.poolReplacementResult,
    conditions: setCondition(
      event.status?.conditions,
      { type: "Decided", status: "True", reason: decision.dryRun ? "DryRun" : "Enforce", message: decisionSummary(decision) },
      now,
      generation,
    ),
  };
  return { ...status, phase: phaseOf(status) };
}

/**
 * The decision in one sentence, the Decided condition's message: what `kubectl describe` shows of it (an
 * Event would say it again, one request more for every memory error).
 */
function decisionSummary(decision: Decision): string {
  const replacement =
    decision.poolReplacement?.action === "Replace" ? `, one replacement hugepages-${decision.poolReplacement.size ?? ""} asked of the agent` : "";
  const quarantined = decision.quarantine.map((q) => `${formatBytes(q.bytes)} hugepages-${q.size} quarantined`).join(", ") || "no quarantine";
  const dryRun = decision.dryRun ? " (DryRun: nothing is carried out)" : "";
  return words(
    `${decision.prediction.reason}; ${decision.pods.length} pod action(s), ${quarantined}${replacement}, node ${decision.nodeAction.action}${dryRun}`,
  );
}
