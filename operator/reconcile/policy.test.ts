import { beforeEach, describe, expect, it } from "vitest";
import { ReconcileHarness, policy } from "../testing/reconcilers.ts";

describe("PolicyReconciler", () => {
  let h: ReconcileHarness;
  beforeEach(() => {
    h = new ReconcileHarness();
    h.state.policies.set("default", policy());
    h.addNode("worker-1");
  });

  it("counts the nodes a policy governs", async () => {
    await h.policies.reconcile("default");
    expect(h.cluster.policyStatus.get("default")).toMatchObject({ matchedNodes: 1, conflictingPolicies: [] });
    expect(h.cluster.policyStatus.get("default")?.conditions?.[0]).toMatchObject({ type: "Conflict", status: "False" });
  });

  it("names the policies it ties with", async () => {
    h.state.policies.set("a", policy({ nodeSelector: { matchLabels: { pool: "x" } } }, "a"));
    h.state.policies.set("b", policy({ nodeSelector: { matchLabels: { rack: "r1" } } }, "b"));
    h.addNode("worker-9", { pool: "x", rack: "r1" });
    await h.policies.reconcile("a");
    expect(h.cluster.policyStatus.get("a")).toMatchObject({ matchedNodes: 0, conflictingPolicies: ["b"] });
    expect(h.cluster.policyStatus.get("a")?.conditions?.[0]).toMatchObject({ type: "Conflict", status: "True", reason: "EquallySpecific" });
  });

  it("writes nothing when the status has not changed", async () => {
    await h.policies.reconcile("default");
    await h.policies.reconcile("default");
    expect(h.cluster.calls.filter((c) => c === "policy default")).toHaveLength(1);
  });

  it("keeps an edit that arrived while it was writing the status", async () => {
    const release = h.holdOpen("applyPolicyStatus");
    const pass = h.policies.reconcile("default");
    h.state.policies.set("default", policy({ mode: "DryRun" }));
    release();
    await pass;
    expect(h.state.policies.get("default")?.spec.mode).toBe("DryRun");
    expect(h.state.policies.get("default")?.status?.matchedNodes).toBe(1);
  });
});
