import { describe, expect, it } from "vitest";
import { decideContainment } from "./containment.ts";
import { T0, budget, input, mapper, memoryError, node, pod, policySpec, shared } from "./fixtures.ts";
import type { NodeState } from "./types.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe("pod actions", () => {
  const dpdk = pod("dpdk");
  const cache = pod("cache", { annotations: { "mce-operator.io/early-signal": "true" } });
  const bystander = pod("bystander");

  it("evicts the late-kill mapper, signals the opted-in one and leaves bystanders alone", () => {
    const d = decideContainment(input({ error: memoryError({ mappers: [mapper("dpdk"), shared("cache")] }), pods: [dpdk, cache, bystander] }));
    expect(d.pods.map((p) => [p.name, p.action, p.state])).toEqual([
      ["cache", "EarlySignal", "Planned"],
      ["dpdk", "Evict", "Planned"],
    ]);
    expect(d.pods.find((p) => p.name === "cache")?.reason).toMatch(/SIGUSR1 .*0x7f0000200000-0x7f0000400000/);
    expect(d.phase).toBe("Contained");
  });

  it("neither warns nor evicts a pod whose processes the kernel already sent BUS_MCEERR_AR", () => {
    const touched = { ...shared("cache"), signalledByKernel: true };
    const arError = memoryError({ severity: "ActionRequired", mappers: [touched, mapper("dpdk")] });
    const d = decideContainment(input({ error: arError, pods: [dpdk, cache, bystander] }));
    expect(d.pods.map((p) => [p.name, p.action, p.state, p.kernelSignal])).toEqual([
      ["cache", "None", "Skipped", "ARAtError"],
      ["dpdk", "Evict", "Planned", "AROnAccess"],
    ]);
    expect(d.pods[0]?.reason).toMatch(/already sent BUS_MCEERR_AR/);
    // Recorded by the agent after the error, on a later access (status.kernelSignals): the same.
    const later = memoryError({ mappers: [mapper("dpdk")], signalledLater: [mapper("dpdk").pid] });
    expect(decideContainment(input({ error: later, pods: [dpdk] })).pods.map((p) => [p.action, p.state, p.kernelSignal])).toEqual([
      ["None", "Skipped", "ARAtError"],
    ]);
    // The same process named on an action-optional error got BUS_MCEERR_AO at most: the warning stands.
    const aoError = memoryError({ severity: "ActionOptional", mappers: [touched, mapper("dpdk")] });
    expect(decideContainment(input({ error: aoError, pods: [dpdk, cache] })).pods.map((p) => [p.name, p.action])).toEqual([
      ["cache", "EarlySignal"],
      ["dpdk", "Evict"],
    ]);
  });

  it("names a PodDisruptionBudget that allows no disruption, and never plans a delete", () => {
    const d = decideContainment(
      input({
        error: memoryError({ mappers: [mapper("dpdk")] }),
        pods: [dpdk],
        pdbs: [{ namespace: "apps", name: "dpdk-pdb", selector: { matchLabels: { app: "dpdk" } }, disruptionsAllowed: 0 }],
      }),
    );
    expect(d.pods[0]?.action).toBe("Evict");
    expect(d.pods[0]?.reason).toMatch(/PodDisruptionBudget dpdk-pdb allows no disruption/);
  });

  it("skips excluded namespaces and labels with a reason", () => {
    const sys = pod("sys", { namespace: "kube-system" });
    const pinned = pod("pinned", { labels: { "mce-operator.io/exclude": "true" } });
    const d = decideContainment(
      input({
        error: memoryError({ mappers: [mapper("sys"), mapper("pinned")] }),
        pods: [sys, pinned],
        policy: policySpec({ safety: { excludedNamespaces: ["kube-system"], excludedPodLabels: { "mce-operator.io/exclude": "true" } } }),
      }),
    );
    expect(d.pods.map((p) => [p.name, p.action, p.state, p.reason])).toEqual([
      ["pinned", "None", "Skipped", "the pod's labels are excluded by the policy"],
      ["sys", "None", "Skipped", "namespace kube-system is excluded by the policy"],
    ]);
  });

  it("holds evictions beyond the in-flight limit as Planned, lowest priority first", () => {
    const pods = ["a", "b", "c"].map((n, i) => pod(n, { priority: 10 - i }));
    const d = decideContainment(
      input({
        error: memoryError({ mappers: pods.map((p) => shared(p.name)) }),
        pods,
        policy: policySpec({ safety: { maxEvictionsInFlight: 3 } }),
        budget: budget({ evictionsInFlight: 2 }),
      }),
    );
    expect(d.pods.map((p) => [p.name, /waiting for an eviction slot/.test(p.reason ?? "")])).toEqual([
      ["c", false],
      ["b", true],
      ["a", true],
    ]);
  });

  it("does nothing to pods for a soft offline or a free hugepage", () => {
    for (const error of [memoryError({ severity: "SoftOffline", mappers: [mapper("dpdk")] }), memoryError({ pageType: "free huge page" })])
      expect(decideContainment(input({ error, pods: [dpdk] })).pods).toEqual([]);
  });

  it("DryRun records the same decision and marks it not to be carried out", () => {
    const args = {
      error: memoryError({ mappers: [mapper("dpdk")] }),
      pods: [dpdk],
      node: node({ history: [{ at: T0 - 1000, severity: "ActionOptional" as const }] }),
    };
    const enforce = decideContainment(input({ ...args, policy: policySpec({ mode: "Enforce" }) }));
    const dry = decideContainment(input({ ...args, policy: policySpec({ mode: "DryRun" }) }));
    expect(dry.dryRun).toBe(true);
    expect(dry.pods.map((p) => [p.action, p.state])).toEqual(enforce.pods.map((p) => [p.action, "DryRun"]));
    expect(dry.quarantine.map((q) => [q.size, q.bytes, q.state])).toEqual(enforce.quarantine.map((q) => [q.size, q.bytes, "DryRun"]));
    expect([dry.nodeAction.action, dry.nodeAction.state]).toEqual([enforce.nodeAction.action, "DryRun"]);
  });
});

describe("capacity quarantine", () => {
  it("quarantines one hugepage while the kubelet still advertises it", () => {
    const d = decideContainment(input({ error: memoryError({ mappers: [mapper("dpdk")] }), pods: [pod("dpdk")] }));
    expect(d.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Planned" }]);
  });

  it("quarantines nothing when the kubelet already advertises the shrunken pool", () => {
    const d = decideContainment(input({ error: memoryError({ pageType: "free huge page" }), node: node({ allocatableBytes: { "2Mi": 31 * 2 * MiB } }) }));
    expect(d.quarantine).toEqual([]);
  });

  it("quarantines nothing where the kubelet advertises no hugepages of the size (nothing can be scheduled into them)", () => {
    const d = decideContainment(input({ error: memoryError({ pageType: "free huge page" }), node: node({ allocatableBytes: {} }) }));
    expect(d.quarantine).toEqual([]);
  });

  it("quarantines a failed 1 GiB page whole", () => {
    const d = decideContainment(
      input({
        error: memoryError({ pfn: 0x100005, result: "Failed", hugepage: { size: "1Gi", headPfn: 0x100000 }, mappers: [mapper("vm")] }),
        node: node({ pools: [{ size: "1Gi", numaNode: 0, total: 2, free: 0 }], allocatableBytes: { "1Gi": 2 * GiB } }),
        pods: [pod("vm")],
      }),
    );
    expect(d.quarantine).toEqual([{ size: "1Gi", bytes: GiB, state: "Planned" }]);
  });

  it("is off when the policy says so", () => {
    const d = decideContainment(input({ error: memoryError({ pageType: "free huge page" }), policy: policySpec({ capacityQuarantine: { enabled: false } }) }));
    expect(d.quarantine).toEqual([]);
  });

  it("adds nothing for a page that was already poisoned", () => {
    const d = decideContainment(input({ error: memoryError(), node: node({ poisonedHugepages: [{ size: "2Mi", headPfn: 0x5200, inPool: true }] }) }));
    expect(d.prediction.poolEffect).toBe("None");
    expect(d.quarantine).toEqual([]);
    expect(d.phase).toBe("Ignored");
  });
});

describe("node escalation", () => {
  const errorsBefore = (n: number): NodeState["history"] =>
    Array.from({ length: n }, (_, i) => ({ at: T0 - (i + 1) * 60_000, severity: "ActionOptional" as const }));

  it.each([
    [0, "None", "Degraded"],
    [1, "Taint", "Degraded"],
    [3, "Cordon", "Failing"],
  ] as const)("with %i earlier errors in the window: %s, %s", (before, action, health) => {
    const d = decideContainment(input({ node: node({ history: errorsBefore(before) }) }));
    expect(d.nodeAction.action).toBe(action);
    expect(d.health.health).toBe(health);
    if (action !== "None") expect(d.phase).toBe("Escalated");
  });

  it("counts a fatal machine check from before this boot in the node's history, and acts on no pod for it", () => {
    const earlier = memoryError({ severity: "Fatal", loggedAtBoot: true, pageType: undefined, result: undefined, mappers: [] });
    const d = decideContainment(input({ error: earlier, pods: [pod("dpdk")], node: node({ history: errorsBefore(1) }) }));
    expect(d.pods).toEqual([]);
    expect(d.prediction).toMatchObject({ poolEffect: "None", lostBytes: 0, hardwareCorruptedDelta: 0 });
    expect(d.prediction.reason).toMatch(/logged as this boot began: the error happened before it/);
    expect(d.nodeAction.action).toBe("Taint");
  });

  it("does not count errors outside the window, nor corrected ones unless asked", () => {
    const old = [{ at: T0 - 25 * 3_600_000, severity: "ActionOptional" as const }];
    const corrected = Array.from({ length: 5 }, () => ({ at: T0 - 1000, severity: "Corrected" as const }));
    expect(decideContainment(input({ node: node({ history: [...old, ...corrected] }) })).nodeAction.action).toBe("None");
    const counted = decideContainment(input({ node: node({ history: corrected }), policy: policySpec({ escalation: { countCorrected: 5 } }) }));
    expect(counted.nodeAction.action).toBe("Taint");
  });

  it("holds a node action inside the budget, the breaker and the cooldown", () => {
    const two = { node: node({ history: errorsBefore(1) }) };
    const full = decideContainment(input({ ...two, budget: budget({ totalNodes: 10, actionedNodes: new Set(["other"]) }) }));
    expect([full.nodeAction.state, full.phase]).toEqual(["HeldByBudget", "Contained"]);
    expect(full.nodeAction.reason).toMatch(/1 of 10 nodes are already tainted or cordoned \(budget 10% = 1\)/);
    const breaker = decideContainment(input({ ...two, budget: budget({ nodeActionTimes: [T0 - 1, T0 - 2, T0 - 3, T0 - 4, T0 - 5] }) }));
    expect(breaker.nodeAction.reason).toMatch(/circuit breaker is open/);
    const cooling = decideContainment(input({ node: node({ history: errorsBefore(1), lastNodeActionAt: T0 - 60_000 }) }));
    expect(cooling.nodeAction.reason).toMatch(/cooldown/);
  });

  it("escalates an already-tainted node to cordon within the budget it already holds", () => {
    const d = decideContainment(
      input({
        node: node({ name: "worker-1", tainted: true, history: errorsBefore(3) }),
        budget: budget({ totalNodes: 10, actionedNodes: new Set(["worker-1"]) }),
      }),
    );
    expect([d.nodeAction.action, d.nodeAction.state]).toEqual(["Cordon", "Planned"]);
  });

  it("ignores a corrected error", () => {
    const d = decideContainment(input({ error: memoryError({ severity: "Corrected", mappers: [mapper("dpdk")] }), pods: [pod("dpdk")] }));
    expect([d.phase, d.pods.length, d.quarantine.length, d.health.health]).toEqual(["Ignored", 0, 0, "Healthy"]);
  });
});
