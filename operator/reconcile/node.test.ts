import type { Gauge } from "prom-client";
import { beforeEach, describe, expect, it } from "vitest";
import type { NodeMemoryHealth } from "../../crds/generated.ts";
import { parseResource } from "../../crds/validate.ts";
import { T0 } from "../model/fixtures.ts";
import { ReconcileHarness, health, memoryEvent, policy } from "../testing/reconcilers.ts";

const HOUR = 3_600_000;
/** An hourly bucket of the agent's: the hour `hoursAgo` before T0's, with `count` corrected errors. */
const hourly = (hoursAgo: number, count: number): { hour: string; count: number } => ({ hour: new Date(T0 - hoursAgo * HOUR).toISOString(), count });

/** The node's agent report with corrected-error counters (spec.dimms, spec.correctedErrorPages), as the watch brings it. */
function report(node: string, spec: Record<string, unknown>): NodeMemoryHealth {
  const base = health(node);
  return parseResource("NodeMemoryHealth", { metadata: base.metadata, spec: { ...base.spec, ...spec } }, node);
}

/** A gauge's series, as "label=value,..." to its value. */
async function series(gauge: Gauge): Promise<Record<string, number>> {
  const { values } = await gauge.get();
  return Object.fromEntries(
    values.map((v) => [
      Object.entries(v.labels)
        .map(([k, x]) => `${k}=${String(x)}`)
        .join(","),
      v.value,
    ]),
  );
}

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

  it("writes the Node condition only when the node's health changes, and its lastTransitionTime only when its status does", async () => {
    h.hold(memoryEvent("e1", "worker-1", []));
    await h.events.reconcile("e1");
    await h.nodes.reconcile("worker-1");
    const first = h.now;
    h.now += 60_000;
    h.hold(memoryEvent("e2", "worker-1", [], { pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }, h.now - 100));
    await h.events.reconcile("e2");
    await h.nodes.reconcile("worker-1");
    // A second error on a Degraded node: its counts move in NodeMemoryHealth, the Node is left alone.
    expect(h.cluster.healthStatus.get("worker-1")?.uncorrectedErrors).toBe(2);
    let set = h.cluster.nodeConditions.get("worker-1") ?? [];
    expect(set.map((c) => [c.status, c.reason, c.lastTransitionTime])).toEqual([["True", "Degraded", new Date(first).toISOString()]]);
    expect(set[0]?.message).toBe(
      "hugepage memory errors counted in the last 24h (Degraded); counts, poisoned hugepages and quarantined capacity: NodeMemoryHealth worker-1",
    );
    // Past the cordon threshold the health changes: written again, its status (True) and transition time kept.
    h.state.policies.set("default", policy({ escalation: { taintAfter: 1, cordonAfter: 2 }, safety: { maxUnavailableNodesPercent: 0 } }));
    h.now += 60_000;
    await h.nodes.reconcile("worker-1");
    set = h.cluster.nodeConditions.get("worker-1") ?? [];
    expect(set.map((c) => [c.status, c.reason, c.lastTransitionTime])).toEqual([
      ["True", "Degraded", new Date(first).toISOString()],
      ["True", "Failing", new Date(first).toISOString()],
    ]);
  });

  describe("worst DIMM and corrected-error gauges", () => {
    const dimms = [
      { name: "mc0/dimm0", correctedErrors: 7, hourly: [hourly(2, 3)] },
      { name: "mc0/dimm1", label: "CPU0_DIMM_A1", correctedErrors: 20, hourly: [hourly(30, 12), hourly(3, 2), hourly(0, 3)] },
      { name: "mc1/dimm0", correctedErrors: 0 },
    ];

    it("writes the DIMM with the most corrected errors in the policy's prevention window, and a gauge per DIMM with errors", async () => {
      h.state.upsertHealth(report("worker-1", { dimms }), h.now);
      await h.nodes.reconcile("worker-1");
      // The policy leaves prevention at the CRD's defaults: 24h, so mc0/dimm1's errors of 30 hours ago are out.
      expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({ worstDimm: "mc0/dimm1 (CPU0_DIMM_A1)", worstDimmCorrectedErrors: 5 });
      const { metrics } = h.context;
      expect(await series(metrics.dimmCorrectedErrors)).toEqual({
        "node=worker-1,dimm=mc0/dimm0,dimm_label=": 3,
        "node=worker-1,dimm=mc0/dimm1,dimm_label=CPU0_DIMM_A1": 5,
      });
      expect(await series(metrics.preventionThreshold)).toEqual({ "node=worker-1,scope=dimm": 10, "node=worker-1,scope=page": 10 });
      expect(await series(metrics.worstPageCorrectedErrors)).toEqual({});

      h.state.policies.set("default", policy({ prevention: { window: "48h", dimmThreshold: 20, pageThreshold: 50 } }));
      await h.nodes.reconcile("worker-1");
      expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({ worstDimm: "mc0/dimm1 (CPU0_DIMM_A1)", worstDimmCorrectedErrors: 17 });
      expect(await series(metrics.dimmCorrectedErrors)).toMatchObject({ "node=worker-1,dimm=mc0/dimm1,dimm_label=CPU0_DIMM_A1": 17 });
      expect(await series(metrics.preventionThreshold)).toEqual({ "node=worker-1,scope=dimm": 20, "node=worker-1,scope=page": 50 });
    });

    it("counts with the CRD's defaults on a node no policy selects", async () => {
      h.state.policies.set("default", policy({ nodeSelector: { matchLabels: { pool: "gpu" } }, prevention: { window: "48h" } }));
      h.state.upsertHealth(report("worker-1", { dimms }), h.now);
      await h.nodes.reconcile("worker-1");
      expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({ worstDimm: "mc0/dimm1 (CPU0_DIMM_A1)", worstDimmCorrectedErrors: 5 });
    });

    it("lets hours fall out of the window as the clock moves, and drops both fields and the series when none is left", async () => {
      h.state.policies.set("default", policy({ prevention: { window: "6h" } }));
      h.state.upsertHealth(
        report("worker-1", {
          dimms: [
            { name: "mc0/dimm0", correctedErrors: 7, hourly: [hourly(5, 3), hourly(1, 4)] },
            { name: "mc0/dimm1", correctedErrors: 1, hourly: [hourly(5, 1)] },
          ],
        }),
        h.now,
      );
      const status = (): unknown => h.cluster.healthStatus.get("worker-1");
      const { metrics } = h.context;
      await h.nodes.reconcile("worker-1");
      expect(status()).toMatchObject({ worstDimm: "mc0/dimm0", worstDimmCorrectedErrors: 7 });
      expect(Object.keys(await series(metrics.dimmCorrectedErrors))).toHaveLength(2);

      // An hour counts while any of it lies in the window: the one 5 hours before T0 does until T0 + 2h.
      h.now = T0 + 2 * HOUR - 1;
      await h.nodes.reconcile("worker-1");
      expect(status()).toMatchObject({ worstDimmCorrectedErrors: 7 });
      h.now = T0 + 2 * HOUR;
      await h.nodes.reconcile("worker-1");
      expect(status()).toMatchObject({ worstDimm: "mc0/dimm0", worstDimmCorrectedErrors: 4 });
      expect(await series(metrics.dimmCorrectedErrors)).toEqual({ "node=worker-1,dimm=mc0/dimm0,dimm_label=": 4 });

      h.now = T0 + 6 * HOUR;
      const writes = h.cluster.calls.filter((c) => c === "health worker-1").length;
      await h.nodes.reconcile("worker-1");
      expect(h.cluster.calls.filter((c) => c === "health worker-1")).toHaveLength(writes + 1);
      const written = JSON.parse(JSON.stringify(status())) as Record<string, unknown>;
      expect(written).not.toHaveProperty("worstDimm");
      expect(written).not.toHaveProperty("worstDimmCorrectedErrors");
      expect(written).toMatchObject({ health: "Healthy" });
      expect(await series(metrics.dimmCorrectedErrors)).toEqual({});
      expect(await series(metrics.preventionThreshold)).toEqual({});
    });

    it("names the page with the most on a node without DIMM counters; the page gauge leaves out retired pages", async () => {
      const lastAt = new Date(T0).toISOString();
      h.state.upsertHealth(
        report("worker-1", {
          correctedErrorPages: [
            { pfn: "0x5205", count: 6, lastAt, hourly: [hourly(1, 2), hourly(0, 4)] },
            { pfn: "0x7003", count: 9, lastAt, softOfflined: true, hourly: [hourly(2, 9)] },
            { pfn: "0x6001", count: 1, lastAt, hourly: [hourly(0, 1)] },
          ],
        }),
        h.now,
      );
      await h.nodes.reconcile("worker-1");
      // The worst DIMM stands in for the DIMM's health: a retired page's errors still count there.
      expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({ worstDimm: "page 0x7003", worstDimmCorrectedErrors: 9 });
      const { metrics } = h.context;
      expect(await series(metrics.dimmCorrectedErrors)).toEqual({});
      // The page gauge is the next soft offline's: the retired page takes no more errors.
      expect(await series(metrics.worstPageCorrectedErrors)).toEqual({ "node=worker-1": 6 });
      expect(await series(metrics.preventionThreshold)).toEqual({ "node=worker-1,scope=dimm": 10, "node=worker-1,scope=page": 10 });
    });

    it("removes the series of a node whose NodeMemoryHealth or Node is gone", async () => {
      h.addNode("worker-2");
      for (const node of ["worker-1", "worker-2"]) {
        h.state.upsertHealth(report(node, { dimms: [{ name: "mc0/dimm0", correctedErrors: 2, hourly: [hourly(0, 2)] }] }), h.now);
        await h.nodes.reconcile(node);
      }
      const { metrics } = h.context;
      expect(Object.keys(await series(metrics.dimmCorrectedErrors)).sort()).toEqual([
        "node=worker-1,dimm=mc0/dimm0,dimm_label=",
        "node=worker-2,dimm=mc0/dimm0,dimm_label=",
      ]);
      // Node worker-2 deleted, as the watch removes it: nothing reconciles it again, the next node pass forgets it.
      h.state.nodes.delete("worker-2");
      await h.nodes.reconcile("worker-1");
      expect(Object.keys(await series(metrics.dimmCorrectedErrors))).toEqual(["node=worker-1,dimm=mc0/dimm0,dimm_label="]);
      expect(Object.keys(await series(metrics.preventionThreshold))).toEqual(["node=worker-1,scope=dimm", "node=worker-1,scope=page"]);
      // worker-1's NodeMemoryHealth deleted: no counters, no series.
      h.state.deleteHealth("worker-1");
      await h.nodes.reconcile("worker-1");
      expect(await series(metrics.dimmCorrectedErrors)).toEqual({});
      expect(await series(metrics.preventionThreshold)).toEqual({});
    });

    it("keeps one series per DIMM when its label appears later", async () => {
      h.state.upsertHealth(report("worker-1", { dimms: [{ name: "mc0/dimm0", correctedErrors: 2, hourly: [hourly(0, 2)] }] }), h.now);
      await h.nodes.reconcile("worker-1");
      h.state.upsertHealth(report("worker-1", { dimms: [{ name: "mc0/dimm0", label: "A0", correctedErrors: 3, hourly: [hourly(0, 3)] }] }), h.now);
      await h.nodes.reconcile("worker-1");
      expect(await series(h.context.metrics.dimmCorrectedErrors)).toEqual({ "node=worker-1,dimm=mc0/dimm0,dimm_label=A0": 3 });
    });
  });
});
