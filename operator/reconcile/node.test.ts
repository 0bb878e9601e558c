import { beforeEach, describe, expect, it } from "vitest";
import { T0 } from "../model/fixtures.ts";
import { ReconcileHarness, health, memoryEvent, policy } from "../testing/reconcilers.ts";

describe("NodeReconciler", () => {
  let h: ReconcileHarness;
  beforeEach(() => {
    h = new ReconcileHarness();
    h.state.policies.set("default", policy());
    h.addNode("worker-1");
  });

  it("keeps node health and the Node condition", async () => {
    h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
    await h.events.reconcile("e1");
    await h.nodes.reconcile("worker-1");
    expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({
      health: "Degraded",
      uncorrectedErrors: 1,
      countedErrors: 1,
      poisonedHugepages: 1,
      quarantinedCapacity: "2Mi",
      nodeAction: "None",
    });
    expect(h.cluster.effects).toContain("condition worker-1 True Degraded");
  });

  it("counts corrected errors as the policy does: the tainted node is Degraded, never Healthy", async () => {
    h.state.policies.set("default", policy({ escalation: { countCorrected: 2 }, safety: { maxUnavailableNodesPercent: 100 } }));
    for (let i = 1; i <= 5; i++) {
      h.hold(memoryEvent(`c${i}`, "worker-1", [], { severity: "Corrected", pfn: `0x52${i}0` }, T0 + i * 1000));
      h.now = T0 + i * 1000 + 100;
      await h.events.reconcile(`c${i}`);
    }
    await h.nodes.reconcile("worker-1");
    expect(h.cluster.effects).toContain("taint worker-1 mce-operator.io/memory-failing");
    expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({
      health: "Degraded",
      uncorrectedErrors: 0,
      correctedErrors: 5,
      countedErrors: 2,
      nodeAction: "Taint",
    });
    expect(h.cluster.effects).toContain("condition worker-1 True Degraded");
    expect(h.cluster.healthStatus.get("worker-1")?.conditions?.[0]?.message).toMatch(
      /2 counted memory error\(s\) in 24h \(0 uncorrected; 5 corrected, counted one per 2\)/,
    );
  });

  it("shows a person's untaint at once", async () => {
    h.state.policies.set("default", policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 100 } }));
    h.hold(memoryEvent("e1", "worker-1", []));
    await h.events.reconcile("e1");
    await h.nodes.reconcile("worker-1");
    expect(h.cluster.healthStatus.get("worker-1")?.nodeAction).toBe("Taint");
    h.editNode("worker-1", (n) => {
      n.spec.taints = [];
    });
    await h.nodes.reconcile("worker-1");
    expect(h.cluster.healthStatus.get("worker-1")?.nodeAction).toBe("None");
  });

  it("records someone else's untaint on the event that tainted, tells people once, and taints again at the next crossing", async () => {
    h.state.policies.set("default", policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 100, cooldown: "1s" } }));
    h.hold(memoryEvent("e1", "worker-1", []));
    await h.events.reconcile("e1");
    h.editNode("worker-1", (n) => {
      n.spec.taints = [];
    });
    await h.nodes.reconcile("worker-1");
    await h.nodes.reconcile("worker-1");
    expect(h.cluster.eventStatus.get("e1")?.nodeAction).toMatchObject({ state: "Done", undoneAt: new Date(h.now).toISOString() });
    expect(h.cluster.recorded.filter((r) => r.reason === "TaintRemoved")).toHaveLength(1);
    h.now += 60_000;
    h.hold(memoryEvent("e2", "worker-1", [], { pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }, h.now - 100));
    await h.events.reconcile("e2");
    expect(h.cluster.effects.filter((c) => c.startsWith("taint"))).toHaveLength(2);
  });

  it("keeps a taint applied while it was setting the condition: its copy of the node is stale by then", async () => {
    h.state.policies.set("default", policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 100 } }));
    h.hold(memoryEvent("e1", "worker-1", []));
    const release = h.holdOpen("setNodeCondition");
    const nodePass = h.nodes.reconcile("worker-1");
    await h.events.reconcile("e1");
    release();
    await nodePass;
    expect(h.cluster.effects).toContain("taint worker-1 mce-operator.io/memory-failing");
    expect(h.state.budget().actionedNodes.has("worker-1")).toBe(true);
    expect(h.state.nodes.get("worker-1")?.degradedCondition?.status).toBe("True");
  });

  it("keeps an agent report that arrived while it was writing the health status", async () => {
    h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
    await h.events.reconcile("e1");
    const release = h.holdOpen("applyHealthStatus");
    const nodePass = h.nodes.reconcile("worker-1");
    const report = health("worker-1");
    h.state.upsertHealth(
      { ...report, spec: { ...report.spec, observedAt: "2026-11-25T12:00:30Z", hugepagePools: [{ size: "2Mi", numaNode: 0, total: 32, free: 15 }] } },
      h.now,
    );
    release();
    await nodePass;
    expect(h.state.health.get("worker-1")?.spec.hugepagePools?.[0]?.free).toBe(15);
    expect(h.state.health.get("worker-1")?.status?.health).toBe("Degraded");
  });

  it("moves the Node condition's lastTransitionTime only when its status changes", async () => {
    h.hold(memoryEvent("e1", "worker-1", []));
    await h.events.reconcile("e1");
    await h.nodes.reconcile("worker-1");
    const first = h.now;
    h.now += 60_000;
    h.hold(memoryEvent("e2", "worker-1", [], { pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }, h.now - 100));
    await h.events.reconcile("e2");
    await h.nodes.reconcile("worker-1");
    const set = h.cluster.nodeConditions.get("worker-1") ?? [];
    expect(set.map((c) => [c.status, c.lastTransitionTime])).toEqual([
      ["True", new Date(first).toISOString()],
      ["True", new Date(first).toISOString()],
    ]);
    expect(set[1]?.message).toMatch(/^2 uncorrected/);
  });
});
