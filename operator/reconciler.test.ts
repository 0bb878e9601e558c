import { beforeEach, describe, expect, it } from "vitest";
import type { ContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "../crds/generated.ts";
import { parseResource } from "../crds/validate.ts";
import { silentLogger } from "../runtime/log.ts";
import { OperatorMetrics } from "./metrics.ts";
import { T0 } from "./model/fixtures.ts";
import { phaseOf, quarantinePodName, Reconciler } from "./reconciler.ts";
import { ClusterState, podInfo } from "./state.ts";
import { FakeCluster } from "./testing/fake-cluster.ts";

const MiB = 2 ** 20;

function policy(spec: Record<string, unknown> = {}, name = "default"): ContainmentPolicy {
  return parseResource("ContainmentPolicy", { metadata: { name, generation: 1 }, spec: { mode: "Enforce", ...spec } }, name);
}

function health(node: string): NodeMemoryHealth {
  return parseResource(
    "NodeMemoryHealth",
    {
      metadata: { name: node, generation: 1 },
      spec: {
        nodeName: node,
        bootID: "boot-1",
        kernelVersion: "6.1.0-56-amd64",
        observedAt: "2026-11-25T11:59:00Z",
        hugepagePools: [{ size: "2Mi", numaNode: 0, total: 32, free: 16 }],
        capabilities: { earlyKill: false },
      },
    },
    node,
  );
}

function memoryEvent(name: string, node: string, mappers: { pod: string; shared?: boolean }[], extra: Record<string, unknown> = {}): MemoryErrorEvent {
  return parseResource(
    "MemoryErrorEvent",
    {
      metadata: { name, uid: `uid-${name}`, generation: 1, creationTimestamp: new Date(T0).toISOString() },
      spec: {
        nodeName: node,
        bootID: "boot-1",
        observedAt: new Date(T0).toISOString(),
        source: "Kmsg",
        pfn: "0x5205",
        severity: "ActionOptional",
        pageType: "huge page",
        result: "Recovered",
        hugepage: { size: "2Mi", headPfn: "0x5200" },
        mappers: mappers.map((m, i) => ({
          pid: 100 + i,
          command: m.pod,
          podUID: `uid-${m.pod}`,
          podNamespace: "apps",
          podName: m.pod,
          container: "main",
          mapping: m.shared ? "Shared" : "Private",
          killPolicy: "Default",
          virtualStart: "0x7f0000200000",
          virtualEnd: "0x7f0000400000",
        })),
        ...extra,
      },
    },
    name,
  );
}

function addPod(
  state: ClusterState,
  name: string,
  node: string,
  annotations: Record<string, string> = {},
  labels: Record<string, string> = { app: name },
): void {
  state.upsertPod(
    `apps/${name}`,
    podInfo({
      metadata: { name, namespace: "apps", uid: `uid-${name}`, labels, annotations },
      spec: { nodeName: node, containers: [{ name: "main", resources: { requests: { "hugepages-2Mi": "4Mi" } } }] },
    }),
  );
}

function addNode(state: ClusterState, name: string, labels: Record<string, string> = {}): void {
  state.nodes.set(name, { name, labels, unschedulable: false, cordonedByUs: false, taintKeys: [], allocatableBytes: { "2Mi": 64 * MiB } });
  state.health.set(name, health(name));
}

describe("Reconciler", () => {
  let state: ClusterState;
  let cluster: FakeCluster;
  let now: number;
  let reconciler: Reconciler;
  const enqueued: string[] = [];
  /** Puts an event in the fake API server and in the cache, as the watch would. */
  const hold = (event: MemoryErrorEvent): void => {
    cluster.events.set(event.metadata.name, event);
    state.upsertEvent(event);
  };

  beforeEach(() => {
    state = new ClusterState();
    cluster = new FakeCluster();
    now = T0 + 100;
    enqueued.length = 0;
    reconciler = new Reconciler(state, cluster, new OperatorMetrics(false), silentLogger, {
      namespace: "mce-system",
      now: () => now,
      enqueueNode: (n) => enqueued.push(n),
    });
    state.policies.set("default", policy());
    addNode(state, "worker-1");
  });

  it("records the decision before it evicts, then evicts the mapper only", async () => {
    addPod(state, "dpdk", "worker-1");
    addPod(state, "bystander", "worker-1");
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await reconciler.reconcileEvent("e1");
    const first = cluster.calls.indexOf("status e1");
    expect(first).toBeLessThan(cluster.calls.indexOf("evict apps/dpdk"));
    expect(cluster.history.get("e1")?.[0]?.pods?.[0]).toMatchObject({ name: "dpdk", action: "Evict", state: "InProgress", attempts: 1 });
    expect(cluster.effects).toEqual(["evict apps/dpdk", "quarantine worker-1 2Mi 2097152"]);
    expect(cluster.eventStatus.get("e1")).toMatchObject({ phase: "Contained", pods: [{ state: "Done", attempts: 1 }], quarantine: [{ state: "Quarantined" }] });
    expect(cluster.recorded.map((r) => r.reason).sort()).toEqual(["EvictedForMemoryError", "HugepageQuarantined", "MemoryErrorDecided"]);
    expect(enqueued).toContain("worker-1");
  });

  it("retries an eviction a PodDisruptionBudget refuses, with backoff, naming the budget, never deleting", async () => {
    addPod(state, "dpdk", "worker-1");
    state.pdbs.set("apps/dpdk-pdb", { namespace: "apps", name: "dpdk-pdb", selector: { matchLabels: { app: "dpdk" } }, disruptionsAllowed: 0 });
    cluster.evictionAnswers.set("apps/dpdk", [
      { kind: "blocked", message: "Cannot evict pod as it would violate the pod's disruption budget." },
      { kind: "blocked", message: "Cannot evict pod as it would violate the pod's disruption budget." },
    ]);
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    const first = await reconciler.reconcileEvent("e1");
    expect(first?.requeueAfterMs).toBe(5000);
    expect(cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ state: "Blocked", blockedBy: "dpdk-pdb", attempts: 1 });
    expect(cluster.eventStatus.get("e1")?.phase).toBe("Pending");
    // Before the backoff is over nothing is tried.
    now += 1000;
    expect((await reconciler.reconcileEvent("e1"))?.requeueAfterMs).toBe(4000);
    now += 4000;
    expect((await reconciler.reconcileEvent("e1"))?.requeueAfterMs).toBe(10_000);
    now += 10_000;
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(3);
    expect(cluster.effects.some((c) => c.startsWith("delete apps/"))).toBe(false);
    expect(cluster.eventStatus.get("e1")).toMatchObject({ phase: "Contained", pods: [{ state: "Done", attempts: 3 }] });
  });

  it("deletes only when the policy opts in to the fallback, after deleteAfter", async () => {
    state.policies.set("default", policy({ podActions: { eviction: { fallbackToDelete: true, deleteAfter: "1m", backoff: "1s" } } }));
    addPod(state, "dpdk", "worker-1");
    cluster.evictionAnswers.set(
      "apps/dpdk",
      Array.from({ length: 100 }, () => ({ kind: "blocked" as const, message: "429" })),
    );
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    for (let i = 0; i < 12; i++) {
      await reconciler.reconcileEvent("e1");
      now += 10_000;
    }
    expect(cluster.effects.filter((c) => c === "delete apps/dpdk")).toHaveLength(1);
    expect(cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "Delete", state: "Done" });
  });

  it("gives up after maxAttempts and fails the event, never deleting", async () => {
    state.policies.set("default", policy({ podActions: { eviction: { maxAttempts: 2, backoff: "1s" } } }));
    addPod(state, "dpdk", "worker-1");
    cluster.evictionAnswers.set(
      "apps/dpdk",
      Array.from({ length: 10 }, () => ({ kind: "blocked" as const, message: "429" })),
    );
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    for (let i = 0; i < 5; i++) {
      await reconciler.reconcileEvent("e1");
      now += 60_000;
    }
    expect(cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", pods: [{ state: "TimedOut", attempts: 2 }] });
    expect(cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(2);
  });

  it("after a crash between eviction and status write, does not evict again", async () => {
    addPod(state, "dpdk", "worker-1");
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await reconciler.reconcileEvent("e1");
    // Replay: the status as it was recorded just before the eviction, and the pod now terminating.
    const inProgress = cluster.history.get("e1")?.find((s) => s.pods?.[0]?.state === "InProgress");
    expect(inProgress).toBeDefined();
    const event = state.events.get("e1");
    if (!event || !inProgress) throw new Error("missing");
    hold({ ...event, status: inProgress });
    state.upsertPod("apps/dpdk", {
      ...podInfo({ metadata: { name: "dpdk", namespace: "apps", uid: "uid-dpdk", deletionTimestamp: "2026-11-25T12:00:01Z" }, spec: { nodeName: "worker-1" } }),
    });
    const restarted = new Reconciler(state, cluster, new OperatorMetrics(false), silentLogger, {
      namespace: "mce-system",
      now: () => now,
      enqueueNode: () => undefined,
    });
    await restarted.reconcileEvent("e1");
    expect(cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(1);
    expect(cluster.eventStatus.get("e1")?.pods?.[0]?.state).toBe("Done");
  });

  it("hands the early signal to the agent and follows it to done", async () => {
    addPod(state, "cache", "worker-1", { "mce-operator.io/early-signal": "true" });
    hold(memoryEvent("e1", "worker-1", [{ pod: "cache", shared: true }]));
    const result = await reconciler.reconcileEvent("e1");
    expect(cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "EarlySignal", state: "InProgress", signal: "SIGUSR1" });
    expect(result?.requeueAfterMs).toBe(60_000 - 100 + 100);
    const event = state.events.get("e1");
    if (!event?.status) throw new Error("missing");
    hold({
      ...event,
      status: {
        ...event.status,
        earlySignals: [
          {
            uid: "uid-cache",
            state: "Done",
            signal: "SIGUSR1",
            pids: [100],
            lostRanges: ["0x7f0000200000-0x7f0000400000"],
            message: "sent SIGUSR1 to pid 100",
          },
        ],
      },
    });
    await reconciler.reconcileEvent("e1");
    expect(cluster.eventStatus.get("e1")).toMatchObject({ phase: "Contained", pods: [{ state: "Done" }] });
    expect(cluster.effects.some((c) => c.startsWith("evict"))).toBe(false);
  });

  it("times an early signal out when the agent never reports", async () => {
    addPod(state, "cache", "worker-1", { "mce-operator.io/early-signal": "true" });
    hold(memoryEvent("e1", "worker-1", [{ pod: "cache" }]));
    await reconciler.reconcileEvent("e1");
    now += 61_000;
    await reconciler.reconcileEvent("e1");
    expect(cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", pods: [{ state: "TimedOut" }] });
  });

  it("releases the quarantine when the kubelet's capacity catches up", async () => {
    hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
    await reconciler.reconcileEvent("e1");
    const name = quarantinePodName("e1", "2Mi");
    expect(cluster.quarantinePods.has(`mce-system/${name}`)).toBe(true);
    state.upsertPod(
      `mce-system/${name}`,
      podInfo({ metadata: { name, namespace: "mce-system", uid: "q", labels: { "mce-operator.io/quarantine-for": "e1" } }, spec: { nodeName: "worker-1" } }),
    );
    // Still stale: nothing happens.
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects.filter((c) => c.startsWith("delete"))).toEqual([]);
    // The agent reports the shrunken pool and the kubelet restarted with it.
    const h = health("worker-1");
    state.health.set("worker-1", {
      ...h,
      spec: { ...h.spec, observedAt: new Date(now).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total: 31, free: 15 }] },
    });
    state.nodes.set("worker-1", {
      ...(state.nodes.get("worker-1") ?? { name: "worker-1", labels: {}, unschedulable: false, cordonedByUs: false, taintKeys: [] }),
      allocatableBytes: { "2Mi": 62 * MiB },
    });
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects).toContain(`delete mce-system/${name}`);
    expect(cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
  });

  describe("pool replacement", () => {
    /** What the agent writes, with its own field manager, after it has raised (or not) the pool. */
    const agentReports = (name: string, result: Record<string, unknown>): void => {
      const event = state.events.get(name);
      if (!event?.status) throw new Error(`no status on ${name}`);
      hold({
        ...event,
        metadata: { ...event.metadata, resourceVersion: String(Date.now()) },
        status: { ...event.status, poolReplacementResult: { at: new Date(now).toISOString(), ...result } as never },
      });
    };
    const reportPool = (total: number): void => {
      const h = health("worker-1");
      state.health.set("worker-1", {
        ...h,
        spec: { ...h.spec, observedAt: new Date(now).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total, free: total - 16 }] },
      });
    };
    beforeEach(() => {
      state.policies.set("default", policy({ poolReplacement: { enabled: true } }));
    });

    it("asks the agent for a replacement of a dissolved free page and releases the quarantine once the pool is back", async () => {
      hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
      await reconciler.reconcileEvent("e1");
      expect(cluster.history.get("e1")?.[0]?.poolReplacement).toMatchObject({
        action: "Replace",
        state: "Requested",
        size: "2Mi",
        numaNode: 0,
        maxTotal: 32,
        afterMappersExit: false,
      });
      const name = quarantinePodName("e1", "2Mi");
      state.upsertPod(
        `mce-system/${name}`,
        podInfo({ metadata: { name, namespace: "mce-system", uid: "q", labels: { "mce-operator.io/quarantine-for": "e1" } }, spec: { nodeName: "worker-1" } }),
      );
      now += 1000;
      reportPool(31);
      await reconciler.reconcileEvent("e1");
      expect(cluster.effects.filter((c) => c.startsWith("delete"))).toEqual([]);
      now += 1000;
      agentReports("e1", { state: "Given", before: 31, requested: 32, after: 32, message: "the kernel gave 1 hugepages-2Mi: nr_hugepages 31 → 32" });
      // The agent's report of the pool it gave comes after its result; one from before would not release.
      reportPool(32);
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e1")?.quarantine?.[0]?.state).toBe("Quarantined");
      now += 500;
      reportPool(32);
      await reconciler.reconcileEvent("e1");
      const status = cluster.eventStatus.get("e1");
      expect(status?.poolReplacement).toMatchObject({ state: "Given" });
      expect(status?.poolReplacement?.reason).toMatch(/agent: the kernel gave 1 hugepages-2Mi/);
      expect(status?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
      expect(cluster.effects).toContain(`delete mce-system/${name}`);
      expect(cluster.recorded.find((r) => r.reason === "HugepageQuarantineReleased")?.message).toMatch(/replacement hugepage brought the pool back/);
      expect(cluster.recorded.map((r) => r.reason)).toContain("HugepageReplaced");
      // The agent's result is its own: the operator's apply never carries it.
      expect(cluster.history.get("e1")?.every((s) => s.poolReplacementResult === undefined)).toBe(true);
      await reconciler.reconcileNode("worker-1");
      expect(cluster.healthStatus.get("worker-1")).toMatchObject({ poolReplacements: { tried: 1, given: 1, refused: 0 }, capacityLostForGood: [] });
    });

    it("releases the replaced page's quarantine while another lost page keeps its own", async () => {
      const quarantined = (name: string): void => {
        const pod = quarantinePodName(name, "2Mi");
        state.upsertPod(
          `mce-system/${pod}`,
          podInfo({
            metadata: { name: pod, namespace: "mce-system", uid: `q-${name}`, labels: { "mce-operator.io/quarantine-for": name } },
            spec: { nodeName: "worker-1" },
          }),
        );
      };
      hold(memoryEvent("e0", "worker-1", [], { pageType: "free huge page" }));
      await reconciler.reconcileEvent("e0");
      quarantined("e0");
      now += 1000;
      hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page", pfn: "0x5405", hugepage: { size: "2Mi", headPfn: "0x5400" } }));
      await reconciler.reconcileEvent("e1");
      quarantined("e1");
      now += 1000;
      agentReports("e0", { state: "Refused", before: 30, requested: 31, after: 30, message: "the kernel gave 0 of 1 hugepages-2Mi on NUMA node 0" });
      agentReports("e1", {
        state: "Given",
        before: 30,
        requested: 31,
        after: 31,
        message: "the kernel gave 1 of 1 hugepages-2Mi on NUMA node 0: nr_hugepages 30 → 31",
      });
      now += 500;
      // The kubelet still advertises 32 pages: 2Mi is stale, and 4Mi is held.
      reportPool(31);
      await reconciler.reconcileEvent("e0");
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e0")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Quarantined" }]);
      expect(cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
      expect(cluster.effects).toContain(`delete mce-system/${quarantinePodName("e1", "2Mi")}`);
      expect(cluster.effects).not.toContain(`delete mce-system/${quarantinePodName("e0", "2Mi")}`);
    });

    it("releases after a replacement even when the node's clock is behind the operator's", async () => {
      addPod(state, "db", "worker-1");
      addPod(state, "cache", "worker-1");
      // Stamped by the node, whose clock runs 5 s behind the operator's.
      hold(
        memoryEvent(
          "e1",
          "worker-1",
          [
            { pod: "db", shared: true },
            { pod: "cache", shared: true },
          ],
          { observedAt: new Date(T0 - 5000).toISOString() },
        ),
      );
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e1")).toMatchObject({ poolReplacement: { state: "Requested", maxTotal: 33 }, quarantine: [{ state: "Quarantined" }] });
      const evictedAt = Date.parse(cluster.eventStatus.get("e1")?.pods?.[0]?.lastAttemptAt ?? "");
      const name = quarantinePodName("e1", "2Mi");
      state.upsertPod(
        `mce-system/${name}`,
        podInfo({ metadata: { name, namespace: "mce-system", uid: "q", labels: { "mce-operator.io/quarantine-for": "e1" } }, spec: { nodeName: "worker-1" } }),
      );
      // Its result and its report carry times before the evictions, though they came after them.
      agentReports("e1", {
        state: "Given",
        before: 32,
        requested: 33,
        after: 33,
        at: new Date(evictedAt - 5000).toISOString(),
        message: "the kernel gave 1 hugepages-2Mi: nr_hugepages 32 → 33",
      });
      now += 1000;
      const h = health("worker-1");
      state.upsertHealth(
        { ...h, spec: { ...h.spec, observedAt: new Date(evictedAt - 4900).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total: 33, free: 17 }] } },
        now,
      );
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
    });

    it("keeps the quarantine with the reason when the kernel refuses, and pauses the node after two refusals", async () => {
      hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
      await reconciler.reconcileEvent("e1");
      now += 1000;
      agentReports("e1", { state: "Refused", before: 31, requested: 32, after: 31, message: "the kernel gave 0 of 1 hugepages-2Mi on NUMA node 0" });
      reportPool(31);
      await reconciler.reconcileEvent("e1");
      const status = cluster.eventStatus.get("e1");
      expect(status?.poolReplacement?.state).toBe("Refused");
      expect(status?.poolReplacement?.reason).toMatch(/the quarantine of 2Mi hugepages-2Mi stays/);
      expect(status?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Quarantined" }]);
      expect(cluster.recorded.map((r) => r.reason)).toContain("HugepageReplacementRefused");

      hold(memoryEvent("e2", "worker-1", [], { pageType: "free huge page", pfn: "0x6205", hugepage: { size: "2Mi", headPfn: "0x6200" } }));
      await reconciler.reconcileEvent("e2");
      agentReports("e2", { state: "Refused", before: 30, requested: 31, after: 30, message: "gave 0" });
      await reconciler.reconcileEvent("e2");
      hold(memoryEvent("e3", "worker-1", [], { pageType: "free huge page", pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }));
      await reconciler.reconcileEvent("e3");
      expect(cluster.eventStatus.get("e3")?.poolReplacement).toMatchObject({ action: "None" });
      expect(cluster.eventStatus.get("e3")?.poolReplacement?.reason).toMatch(/refused 2 replacement\(s\)/);
      await reconciler.reconcileNode("worker-1");
      expect(cluster.healthStatus.get("worker-1")?.poolReplacements).toMatchObject({
        tried: 2,
        given: 0,
        refused: 2,
        pausedUntil: new Date(T0 + 100 + 24 * 3_600_000).toISOString(),
      });
      expect(cluster.healthStatus.get("worker-1")?.capacityLostForGood).toEqual([{ size: "2Mi", bytes: 6 * MiB }]);
    });

    it("shows the agent waiting for a mapper, and never asks in DryRun", async () => {
      addPod(state, "db", "worker-1");
      hold(memoryEvent("e1", "worker-1", [{ pod: "db" }]));
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e1")?.poolReplacement).toMatchObject({ state: "Requested", afterMappersExit: true });
      agentReports("e1", { state: "Waiting", message: "waiting for 1 mapper(s) to exit: pid 100" });
      await reconciler.reconcileEvent("e1");
      expect(cluster.eventStatus.get("e1")?.poolReplacement).toMatchObject({ state: "Requested" });
      expect(cluster.eventStatus.get("e1")?.poolReplacement?.reason).toMatch(/; agent: waiting for 1 mapper\(s\) to exit: pid 100$/);

      state.policies.set("default", policy({ mode: "DryRun", poolReplacement: { enabled: true } }));
      hold(memoryEvent("e2", "worker-1", [], { pageType: "free huge page", pfn: "0x6205", hugepage: { size: "2Mi", headPfn: "0x6200" } }));
      await reconciler.reconcileEvent("e2");
      expect(cluster.eventStatus.get("e2")?.poolReplacement).toMatchObject({ action: "Replace", state: "DryRun" });
    });
  });

  it("changes nothing in DryRun and still records the whole decision", async () => {
    state.policies.set("default", policy({ mode: "DryRun" }));
    addPod(state, "dpdk", "worker-1");
    hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects).toEqual([]);
    expect(cluster.eventStatus.get("e1")).toMatchObject({
      dryRun: true,
      phase: "Contained",
      pods: [{ action: "Evict", state: "DryRun" }],
      quarantine: [{ state: "DryRun" }],
    });
  });

  it("never taints more nodes than the budget, even when decisions race", async () => {
    state.policies.set(
      "default",
      policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 20, circuitBreaker: { maxNodeActions: 100 } } }),
    );
    for (let i = 2; i <= 10; i++) addNode(state, `worker-${i}`);
    for (let i = 1; i <= 10; i++) hold(memoryEvent(`e${i}`, `worker-${i}`, []));
    await Promise.all(Array.from({ length: 10 }, (_, i) => reconciler.reconcileEvent(`e${i + 1}`)));
    expect(cluster.effects.filter((c) => c.startsWith("taint"))).toHaveLength(2);
    const held = [...cluster.eventStatus.values()].filter((s) => s.nodeAction?.state === "HeldByBudget");
    expect(held).toHaveLength(8);
  });

  it("takes a held taint once the budget frees up, if the node's errors still call for it", async () => {
    state.policies.set(
      "default",
      policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 50, circuitBreaker: { maxNodeActions: 100 } } }),
    );
    addNode(state, "worker-2");
    // worker-2 already carries the operator's taint: with 2 nodes and 50%, the budget is taken.
    state.nodes.set("worker-2", {
      ...(state.nodes.get("worker-2") ?? { name: "worker-2", labels: {}, unschedulable: false, cordonedByUs: false, allocatableBytes: {} }),
      taintKeys: ["mce-operator.io/memory-failing"],
    });
    hold(memoryEvent("e1", "worker-1", []));
    await reconciler.reconcileEvent("e1");
    expect(cluster.eventStatus.get("e1")?.nodeAction?.state).toBe("HeldByBudget");
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects.filter((c) => c.startsWith("taint"))).toEqual([]);
    // A person removes worker-2's taint: at the next pass the held taint is taken.
    state.nodes.set("worker-2", {
      ...(state.nodes.get("worker-2") ?? { name: "worker-2", labels: {}, unschedulable: false, cordonedByUs: false, allocatableBytes: {} }),
      taintKeys: [],
    });
    now += 60_000;
    await reconciler.reconcileEvent("e1");
    expect(cluster.effects.filter((c) => c.startsWith("taint"))).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
    expect(cluster.eventStatus.get("e1")?.nodeAction).toMatchObject({ action: "Taint", state: "Done" });
    expect(cluster.eventStatus.get("e1")?.phase).toBe("Escalated");
  });

  it("leaves an event on a node with tied policies undecided and says why", async () => {
    state.policies.set("a", policy({ nodeSelector: { matchLabels: { pool: "x" } } }, "a"));
    state.policies.set("b", policy({ nodeSelector: { matchLabels: { rack: "r1" } } }, "b"));
    addNode(state, "worker-9", { pool: "x", rack: "r1" });
    hold(memoryEvent("e9", "worker-9", []));
    expect((await reconciler.reconcileEvent("e9"))?.requeueAfterMs).toBe(30_000);
    expect(cluster.eventStatus.get("e9")?.conditions?.[0]).toMatchObject({ type: "Decided", status: "False", reason: "PolicyConflict" });
    await reconciler.reconcilePolicy("a");
    expect(cluster.policyStatus.get("a")).toMatchObject({ matchedNodes: 0, conflictingPolicies: ["b"] });
  });

  it("keeps node health, the Node condition and the policy's matched nodes", async () => {
    hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
    await reconciler.reconcileEvent("e1");
    await reconciler.reconcileNode("worker-1");
    expect(cluster.healthStatus.get("worker-1")).toMatchObject({
      health: "Degraded",
      uncorrectedErrors: 1,
      poisonedHugepages: 1,
      quarantinedCapacity: "2Mi",
      nodeAction: "None",
    });
    expect(cluster.effects).toContain("condition worker-1 True Degraded");
    await reconciler.reconcilePolicy("default");
    expect(cluster.policyStatus.get("default")?.matchedNodes).toBe(1);
  });

  it("derives the phase from the actions", () => {
    expect(phaseOf({ pods: [{ uid: "u", namespace: "n", name: "p", action: "Evict", state: "Blocked" }] })).toBe("Pending");
    expect(phaseOf({ prediction: { poolEffect: "None" }, pods: [], quarantine: [], nodeAction: { action: "None" } })).toBe("Ignored");
    expect(phaseOf({ nodeAction: { action: "Taint", state: "Done" } })).toBe("Escalated");
  });
});
