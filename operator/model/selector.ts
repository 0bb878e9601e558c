// Kubernetes label selectors, and choosing the one policy that governs a node.
import type { ContainmentPolicySpecNodeSelector, DefaultedContainmentPolicy } from "../../crds/generated.ts";

export type LabelSelector = ContainmentPolicySpecNodeSelector;

export function selectorMatches(selector: LabelSelector | undefined, labels: Readonly<Record<string, string>>): boolean {
  if (!selector) return true;
  for (const [key, value] of Object.entries(selector.matchLabels ?? {})) if (labels[key] !== value) return false;
  return (selector.matchExpressions ?? []).every(({ key, operator, values = [] }) => {
    const has = Object.hasOwn(labels, key);
    switch (operator) {
      case "In":
        return has && values.includes(labels[key] ?? "");
      case "NotIn":
        return !has || !values.includes(labels[key] ?? "");
      case "Exists":
        return has;
      case "DoesNotExist":
        return !has;
    }
  });
}

/** How specific a selector is: the number of requirements it states. The empty selector is 0. */
export function selectorSpecificity(selector: LabelSelector | undefined): number {
  return Object.keys(selector?.matchLabels ?? {}).length + (selector?.matchExpressions?.length ?? 0);
}

export type PolicyMatch = { kind: "matched"; policy: DefaultedContainmentPolicy } | { kind: "none" } | { kind: "conflict"; policies: string[] };

/** The most specific policy selecting the node wins; two equally specific ones are a conflict. */
export function policyForNode(policies: readonly DefaultedContainmentPolicy[], nodeLabels: Readonly<Record<string, string>>): PolicyMatch {
  let best: DefaultedContainmentPolicy[] = [];
  let bestScore = -1;
  for (const policy of policies) {
    if (!selectorMatches(policy.spec.nodeSelector, nodeLabels)) continue;
    const score = selectorSpecificity(policy.spec.nodeSelector);
    if (score > bestScore) [best, bestScore] = [[policy], score];
    else if (score === bestScore) best.push(policy);
  }
  const [first] = best;
  if (!first) return { kind: "none" };
  if (best.length > 1) return { kind: "conflict", policies: best.map((p) => p.metadata.name).sort() };
  return { kind: "matched", policy: first };
}
