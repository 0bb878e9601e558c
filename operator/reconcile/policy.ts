// Reconciles one ContainmentPolicy's status: how many nodes it governs, and with which policies it ties
// (events on a node two policies select equally specifically are not decided until one is made more
// specific).
import type { ContainmentPolicyStatus } from "../../crds/generated.ts";
import { policyForNode } from "../model/selector.ts";
import type { WorkResult } from "../../runtime/queue.ts";
import { sameStatus, setCondition } from "./context.ts";
import type { ReconcileContext } from "./context.ts";

export class PolicyReconciler {
  private readonly context: ReconcileContext;

  constructor(context: ReconcileContext) {
    this.context = context;
  }

  async reconcile(name: string): Promise<WorkResult> {
    const { state } = this.context;
    const policy = state.policies.get(name);
    if (!policy) return undefined;
    const policies = [...state.policies.values()];
    let matched = 0;
    const conflicts = new Set<string>();
    for (const node of state.nodes.values()) {
      const match = policyForNode(policies, node.labels);
      if (match.kind === "matched" && match.policy.metadata.name === name) matched += 1;
      if (match.kind === "conflict" && match.policies.includes(name)) for (const p of match.policies) if (p !== name) conflicts.add(p);
    }
    const conflicting = [...conflicts].sort();
    const status: ContainmentPolicyStatus = {
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
        this.context.now(),
        policy.metadata.generation,
      ),
    };
    if (policy.status?.conditions === undefined || !sameStatus({ ...status, conditions: undefined }, { ...policy.status, conditions: undefined })) {
      await this.context.actions.applyPolicyStatus(name, status);
      // Onto the policy as cached now: an edit that arrived during the write must not be reverted.
      const current = state.policies.get(name);
      if (current) state.policies.set(name, { ...current, status });
    }
    return undefined;
  }
}
