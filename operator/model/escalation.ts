// Escalation: how sick a node is, which node action its errors call for, and whether the cluster-wide
// limits (cooldown, circuit breaker, node budget) let the operator take it now. The decision at an error,
// the retry of a held action, the node's health and its Node condition all come from these functions, so
// they cannot disagree.
import type {
  DefaultedContainmentPolicySpecEscalation,
  DefaultedContainmentPolicySpecSafety,
  MemoryErrorEventStatusNodeAction,
  NodeMemoryHealthStatus,
} from "../../crds/generated.ts";
import { parseDuration, policyDuration, WINDOW_FLOOR_MS } from "./duration.ts";
import { isUncorrected } from "./types.ts";
import { countInWindow } from "./risk.ts";
import type { ClusterBudget, ErrorRecord, HourlyCount, NodeActionKind } from "./types.ts";

export type Health = NonNullable<NodeMemoryHealthStatus["health"]>;
export type HeldBy = NonNullable<MemoryErrorEventStatusNodeAction["heldBy"]>;
type Escalation = DefaultedContainmentPolicySpecEscalation;
type Safety = DefaultedContainmentPolicySpecSafety;

export interface NodeHealth {
  health: Health;
  uncorrectedErrors: number;
  correctedErrors: number;
  /** What the thresholds compare: every uncorrected error, plus one for each countCorrected corrected ones. */
  countedErrors: number;
  /** The window, as the policy wrote it. */
  window: string;
  /** The node action the count calls for, whatever the node has now. */
  calledFor: NodeActionKind;
  /** The count in words, for reasons and conditions. */
  words: string;
}

const rank: Record<NodeActionKind, number> = { None: 0, Taint: 1, Cordon: 2 };

/**
 * The node's health from its errors in the policy's window. An error stamped a little after `now` (a node
 * clock ahead of the operator's) still counts: only the window's start bounds it.
 */
export function nodeHealth(errors: readonly ErrorRecord[], escalation: Escalation, now: number, correctedHourly: readonly HourlyCount[] = []): NodeHealth {
  const { taintAfter, cordonAfter, countCorrected, window } = escalation;
  // The CRD's CEL rule says so too; a policy written before it existed is refused here.
  if (cordonAfter <= taintAfter) throw new Error(`spec.escalation: cordonAfter (${cordonAfter}) must be greater than taintAfter (${taintAfter})`);
  const windowMs = policyDuration(window, "spec.escalation.window", WINDOW_FLOOR_MS);
  const inWindow = errors.filter((e) => e.at > now - windowMs);
  const uncorrectedErrors = inWindow.filter((e) => isUncorrected(e.severity)).length;
  // A page's first corrected error is an event and is counted by its agent too: the larger count holds
  // them all (the events alone where the agent does not count).
  const correctedErrors = Math.max(inWindow.length - uncorrectedErrors, countInWindow(correctedHourly, windowMs, now));
  const fromCorrected = countCorrected > 0 ? Math.floor(correctedErrors / countCorrected) : 0;
  const countedErrors = uncorrectedErrors + fromCorrected;
  const health: Health = countedErrors === 0 ? "Healthy" : countedErrors < cordonAfter ? "Degraded" : "Failing";
  const calledFor: NodeActionKind = countedErrors >= cordonAfter ? "Cordon" : countedErrors >= taintAfter ? "Taint" : "None";
  // With countCorrected 0 the count is the uncorrected errors, and the words say just that.
  const words =
    countCorrected > 0
      ? `${countedErrors} counted memory error(s) in ${window} (${uncorrectedErrors} uncorrected; ${correctedErrors} corrected, counted one per ${countCorrected})`
      : `${uncorrectedErrors} uncorrected memory error(s) in ${window}${correctedErrors > 0 ? ` (${correctedErrors} corrected, not counted)` : ""}`;
  return { health, uncorrectedErrors, correctedErrors, countedErrors, window, calledFor, words };
}

/** A node action the operator applied or is applying, named by the event that called for it. */
export interface NodeActionTaken {
  eventName: string;
  node: string;
  at: number;
}

/**
 * The budget's one count. A node counts against maxUnavailableNodesPercent while it carries the operator's
 * taint or cordon (so a person's untaint or uncordon frees its slot at once) or while an action on it is
 * in flight; the circuit breaker counts each action the operator took once, by the event that took it,
 * whether the API has confirmed it yet or not. A person undoing an action does not make it untaken: the
 * breaker limits how often the operator acts.
 */
export function clusterBudget(input: {
  totalNodes: number;
  /** Nodes carrying the operator's taint or cordon now, as the Node objects show. */
  actionedNow: Iterable<string>;
  /** Node actions recorded in events' status, and the ones a pass is applying before that record lands. */
  taken: Iterable<NodeActionTaken>;
  inFlight: Iterable<NodeActionTaken>;
  evictionsInFlight: number;
}): ClusterBudget {
  const actionedNodes = new Set(input.actionedNow);
  const times = new Map<string, number>();
  for (const t of input.taken) times.set(t.eventName, t.at);
  for (const t of input.inFlight) {
    times.set(t.eventName, t.at);
    actionedNodes.add(t.node);
  }
  return { totalNodes: input.totalNodes, actionedNodes, nodeActionTimes: [...times.values()], evictionsInFlight: input.evictionsInFlight };
}

export interface BreakerState {
  open: boolean;
  recent: number;
}

/** Open once maxNodeActions actions fall inside the breaker's window: the next one waits. */
export function breaker(budget: ClusterBudget, safety: Safety, now: number): BreakerState {
  const windowMs = policyDuration(safety.circuitBreaker.window, "spec.safety.circuitBreaker.window", WINDOW_FLOOR_MS);
  const recent = budget.nodeActionTimes.filter((t) => t > now - windowMs).length;
  return { open: recent >= safety.circuitBreaker.maxNodeActions, recent };
}

/** What holds a taint or cordon of `nodeName` back now, or undefined when it may be taken. */
export function nodeActionHold(
  nodeName: string,
  lastNodeActionAt: number | undefined,
  budget: ClusterBudget,
  safety: Safety,
  now: number,
): { heldBy: HeldBy; reason: string } | undefined {
  const cooldownMs = parseDuration(safety.cooldown, "spec.safety.cooldown");
  if (lastNodeActionAt !== undefined && now - lastNodeActionAt < cooldownMs)
    return { heldBy: "Cooldown", reason: `the node was acted on less than ${safety.cooldown} ago (cooldown)` };
  const { open, recent } = breaker(budget, safety, now);
  if (open)
    return {
      heldBy: "CircuitBreaker",
      reason: `the circuit breaker is open: ${recent} node action(s) in ${safety.circuitBreaker.window} (limit ${safety.circuitBreaker.maxNodeActions})`,
    };
  const percent = safety.maxUnavailableNodesPercent;
  const allowed = Math.floor((budget.totalNodes * percent) / 100);
  if (!budget.actionedNodes.has(nodeName) && budget.actionedNodes.size + 1 > allowed)
    return {
      heldBy: "NodeBudget",
      reason: `${budget.actionedNodes.size} of ${budget.totalNodes} nodes are already tainted or cordoned (budget ${percent}% = ${allowed})`,
    };
  return undefined;
}

/** The node as escalation sees it. */
export interface EscalationNode {
  name: string;
  tainted: boolean;
  cordoned: boolean;
  lastNodeActionAt?: number | undefined;
}

const hasAction = (node: EscalationNode, action: NodeActionKind): boolean => (action === "Cordon" ? node.cordoned : node.tainted || node.cordoned);

/** The node action for an error, from the node's health after it and the limits now. */
export function decideNodeAction(
  node: EscalationNode,
  health: NodeHealth,
  policy: { escalation: Escalation; safety: Safety },
  budget: ClusterBudget,
  now: number,
  dryRun: boolean,
): MemoryErrorEventStatusNodeAction {
  const action = health.calledFor;
  const { taintAfter, cordonAfter } = policy.escalation;
  if (action === "None") return { action, reason: `${health.words}; below the taint threshold ${taintAfter}` };
  const threshold = action === "Cordon" ? `cordon threshold ${cordonAfter}` : `taint threshold ${taintAfter}`;
  if (hasAction(node, action)) return { action, state: "Done", reason: `${health.words} (${threshold}); the node already has it` };
  const hold = nodeActionHold(node.name, node.lastNodeActionAt, budget, policy.safety, now);
  if (hold) return { action, state: "HeldByBudget", heldBy: hold.heldBy, reason: `${health.words} (${threshold}), but ${hold.reason}` };
  return { action, state: dryRun ? "DryRun" : "Planned", reason: `${health.words}: reached the ${threshold}` };
}

/**
 * Whether a taint or cordon held back at an error is still due: the error is the node's latest (one retry
 * per node), the policy enforces, the node does not have it yet, and its errors in the window still call
 * for it (counted as nodeHealth counts them). Whether the limits allow it now is nodeActionHold's answer.
 */
export function heldActionDue(input: { action: NodeActionKind; dryRun: boolean; latest: boolean; node: EscalationNode; health: NodeHealth }): boolean {
  const { action, node, health } = input;
  if (action === "None" || input.dryRun || !input.latest || hasAction(node, action)) return false;
  return rank[health.calledFor] >= rank[action];
}
