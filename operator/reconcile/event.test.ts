import { beforeEach, describe, expect, it } from "vitest";
import type { MemoryErrorEvent } from "../../crds/generated.ts";
import { podInfo } from "../state.ts";
import { ApiError } from "../../runtime/api.ts";
import { T0 } from "../model/fixtures.ts";
import { MiB, ReconcileHarness, health, memoryEvent, policy } from "../testing/reconcilers.ts";
import { phaseOf } from "./decision.ts";
import { EventReconciler } from "./event.ts";
import { quarantinePodName } from "./context.ts";

describe("EventReconciler", () => {
  let h: ReconcileHarness;
  beforeEach(() => {
    h = new ReconcileHarness();
    h.state.policies.set("default", policy());
    h.addNode("worker-1");
  });

  it("records the decision before it evicts, then evicts the mapper only", async () => {
    h.addPod("dpdk", "worker-1");
    h.addPod("bystander", "worker-1");
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await h.events.reconcile("e1");
    const first = h.cluster.calls.indexOf("status e1");
    expect(first).toBeLessThan(h.cluster.calls.indexOf("evict apps/dpdk"));
    expect(h.cluster.history.get("e1")?.[0]?.pods?.[0]).toMatchObject({ name: "dpdk", action: "Evict", state: "InProgress", attempts: 1 });
    expect(h.cluster.effects).toEqual(["evict apps/dpdk", "quarantine worker-1 2Mi 2097152"]);
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({
      phase: "Contained",
      pods: [{ state: "Done", attempts: 1 }],
      quarantine: [{ state: "Quarantined" }],
    });
    // One Kubernetes Event, for the pod's owner: the decision is in status, the quarantine in its placeholder.
    expect(h.cluster.recorded.map((r) => r.reason)).toEqual(["EvictedForMemoryError"]);
    expect(h.cluster.eventStatus.get("e1")?.conditions?.find((c) => c.type === "Decided")?.message).toMatch(
      /; 1 pod action\(s\), 2Mi hugepages-2Mi quarantined, node None$/,
    );
    expect(h.enqueued).toContain("worker-1");
  });

  it("skips a planned eviction once the agent records that the kernel signalled the pod's process on a later access", async () => {
    h.addPod("dpdk", "worker-1");
    h.state.pdbs.set("apps/dpdk-pdb", { namespace: "apps", name: "dpdk-pdb", selector: { matchLabels: { app: "dpdk" } }, disruptionsAllowed: 0 });
    h.cluster.evictionAnswers.set("apps/dpdk", [{ kind: "blocked", message: "Cannot evict pod as it would violate the pod's disruption budget." }]);
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "Evict", state: "Blocked" });
    // The dpdk process (pid 100) touched the page; the agent wrote it into the event's status.
    const held = h.cluster.events.get("e1");
    if (!held) throw new Error("no e1");
    h.hold({ ...held, status: { ...held.status, kernelSignals: [{ pid: 100, command: "dpdk", podUID: "uid-dpdk", at: "2026-11-25T12:00:05Z" }] } });
    h.now += 60_000;
    const before = h.cluster.calls.filter((c) => c.startsWith("evict")).length;
    await h.events.reconcile("e1");
    expect(h.cluster.calls.filter((c) => c.startsWith("evict")).length).toBe(before);
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "None", state: "Skipped", kernelSignal: "ARAtError" });
  });

  it("retries an eviction a PodDisruptionBudget refuses, with backoff, naming the budget, never deleting", async () => {
    h.addPod("dpdk", "worker-1");
    h.state.pdbs.set("apps/dpdk-pdb", { namespace: "apps", name: "dpdk-pdb", selector: { matchLabels: { app: "dpdk" } }, disruptionsAllowed: 0 });
    h.cluster.evictionAnswers.set("apps/dpdk", [
      { kind: "blocked", message: "Cannot evict pod as it would violate the pod's disruption budget." },
      { kind: "blocked", message: "Cannot evict pod as it would violate the pod's disruption budget." },
    ]);
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    const first = await h.events.reconcile("e1");
    expect(first?.requeueAfterMs).toBe(5000);
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ state: "Blocked", blockedBy: "dpdk-pdb", attempts: 1 });
    expect(h.cluster.eventStatus.get("e1")?.phase).toBe("Pending");
    // Before the backoff is over nothing is tried.
    h.now += 1000;
    expect((await h.events.reconcile("e1"))?.requeueAfterMs).toBe(4000);
    h.now += 4000;
    expect((await h.events.reconcile("e1"))?.requeueAfterMs).toBe(10_000);
    h.now += 10_000;
    await h.events.reconcile("e1");
    expect(h.cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(3);
    expect(h.cluster.effects.some((c) => c.startsWith("delete apps/"))).toBe(false);
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Contained", pods: [{ state: "Done", attempts: 3 }] });
  });

  it("deletes only when the policy opts in to the fallback, after deleteAfter", async () => {
    h.state.policies.set("default", policy({ podActions: { eviction: { fallbackToDelete: true, deleteAfter: "1m", backoff: "1s" } } }));
    h.addPod("dpdk", "worker-1");
    h.cluster.evictionAnswers.set(
      "apps/dpdk",
      Array.from({ length: 100 }, () => ({ kind: "blocked" as const, message: "429" })),
    );
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    for (let i = 0; i < 12; i++) {
      await h.events.reconcile("e1");
      h.now += 10_000;
    }
    expect(h.cluster.effects.filter((c) => c === "delete apps/dpdk")).toHaveLength(1);
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "Delete", state: "Done" });
  });

  it("gives up after maxAttempts and fails the event, never deleting", async () => {
    h.state.policies.set("default", policy({ podActions: { eviction: { maxAttempts: 2, backoff: "1s" } } }));
    h.addPod("dpdk", "worker-1");
    h.cluster.evictionAnswers.set(
      "apps/dpdk",
      Array.from({ length: 10 }, () => ({ kind: "blocked" as const, message: "429" })),
    );
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    for (let i = 0; i < 5; i++) {
      await h.events.reconcile("e1");
      h.now += 60_000;
    }
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", pods: [{ state: "TimedOut", attempts: 2 }] });
    expect(h.cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(2);
  });

  it("after a crash between eviction and status write, does not evict again", async () => {
    h.addPod("dpdk", "worker-1");
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await h.events.reconcile("e1");
    // Replay: the status as it was recorded just before the eviction, and the pod h.now terminating.
    const inProgress = h.cluster.history.get("e1")?.find((s) => s.pods?.[0]?.state === "InProgress");
    expect(inProgress).toBeDefined();
    const event = h.state.events.get("e1");
    if (!event || !inProgress) throw new Error("missing");
    h.hold({ ...event, status: inProgress });
    h.state.upsertPod("apps/dpdk", {
      ...podInfo({ metadata: { name: "dpdk", namespace: "apps", uid: "uid-dpdk", deletionTimestamp: "2026-11-25T12:00:01Z" }, spec: { nodeName: "worker-1" } }),
    });
    const restarted = new EventReconciler(h.context);
    await restarted.reconcile("e1");
    expect(h.cluster.effects.filter((c) => c.startsWith("evict"))).toHaveLength(1);
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]?.state).toBe("Done");
  });

  it("hands the early signal to the agent and follows it to done", async () => {
    h.addPod("cache", "worker-1", { "mce-operator.io/early-signal": "true" });
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "cache", shared: true }]));
    const result = await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]).toMatchObject({ action: "EarlySignal", state: "InProgress", signal: "SIGUSR1" });
    expect(result?.requeueAfterMs).toBe(60_000 - 100 + 100);
    const event = h.state.events.get("e1");
    if (!event?.status) throw new Error("missing");
    h.hold({
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
    await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Contained", pods: [{ state: "Done" }] });
    expect(h.cluster.effects.some((c) => c.startsWith("evict"))).toBe(false);
    // The pod's notice, from the agent's outcome: the agent itself may post no Event.
    expect(h.cluster.recorded.find((r) => r.reason === "EarlySignal")?.message).toMatch(
      /^hardware memory error e1 at pfn 0x\w+: 2Mi hugepage 0x\w+ is lost; lost virtual ranges 0x7f0000200000-0x7f0000400000 \(annotation mce-operator.io\/lost-ranges\); SIGUSR1 sent to pid 100$/,
    );
  });

  it("times an early signal out when the agent never reports", async () => {
    h.addPod("cache", "worker-1", { "mce-operator.io/early-signal": "true" });
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "cache" }]));
    await h.events.reconcile("e1");
    h.now += 61_000;
    await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", pods: [{ state: "TimedOut" }] });
  });

  it("releases the quarantine when the kubelet's capacity catches up", async () => {
    h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
    await h.events.reconcile("e1");
    const name = quarantinePodName("e1", "2Mi");
    expect(h.cluster.quarantinePods.has(`mce-system/${name}`)).toBe(true);
    h.state.upsertPod(
      `mce-system/${name}`,
      podInfo({ metadata: { name, namespace: "mce-system", uid: "q", labels: { "mce-operator.io/quarantine-for": "e1" } }, spec: { nodeName: "worker-1" } }),
    );
    // Still stale: nothing happens.
    await h.events.reconcile("e1");
    expect(h.cluster.effects.filter((c) => c.startsWith("delete"))).toEqual([]);
    // The agent reports the shrunken pool and the kubelet restarted with it.
    const report = health("worker-1");
    h.state.health.set("worker-1", {
      ...report,
      spec: { ...report.spec, observedAt: new Date(h.now).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total: 31, free: 15 }] },
    });
    h.state.nodes.set("worker-1", {
      ...(h.state.nodes.get("worker-1") ?? { name: "worker-1", labels: {}, unschedulable: false, cordonedByUs: false, taintKeys: [] }),
      allocatableBytes: { "2Mi": 62 * MiB },
    });
    await h.events.reconcile("e1");
    expect(h.cluster.effects).toContain(`delete mce-system/${name}`);
    expect(h.cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
  });

  describe("pool replacement", () => {
    /** What the agent writes, with its own field manager, after it has raised (or not) the pool. */
    const agentReports = (name: string, result: Record<string, unknown>): void => {
      const event = h.state.events.get(name);
      if (!event?.status) throw new Error(`no status on ${name}`);
      h.hold({
        ...event,
        metadata: { ...event.metadata, resourceVersion: String(Date.now()) },
        status: { ...event.status, poolReplacementResult: { at: new Date(h.now).toISOString(), ...result } as never },
      });
    };
    const reportPool = (total: number): void => {
      const report = health("worker-1");
      h.state.health.set("worker-1", {
        ...report,
        spec: { ...report.spec, observedAt: new Date(h.now).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total, free: total - 16 }] },
      });
    };
    beforeEach(() => {
      h.state.policies.set("default", policy({ poolReplacement: { enabled: true } }));
    });

    it("asks the agent for a replacement of a dissolved free page and releases the quarantine once the pool is back", async () => {
      h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
      await h.events.reconcile("e1");
      expect(h.cluster.history.get("e1")?.[0]?.poolReplacement).toMatchObject({
        action: "Replace",
        state: "Requested",
        size: "2Mi",
        numaNode: 0,
        maxTotal: 32,
        afterMappersExit: false,
      });
      const name = quarantinePodName("e1", "2Mi");
      h.state.upsertPod(
        `mce-system/${name}`,
        podInfo({ metadata: { name, namespace: "mce-system", uid: "q", labels: { "mce-operator.io/quarantine-for": "e1" } }, spec: { nodeName: "worker-1" } }),
      );
      h.now += 1000;
      reportPool(31);
      await h.events.reconcile("e1");
      expect(h.cluster.effects.filter((c) => c.startsWith("delete"))).toEqual([]);
      h.now += 1000;
      agentReports("e1", { state: "Given", before: 31, requested: 32, after: 32, message: "the kernel gave 1 hugepages-2Mi: nr_hugepages 31 → 32" });
      // The agent's report of the pool it gave comes after its result; one from before would not release.
      reportPool(32);
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")?.quarantine?.[0]?.state).toBe("Quarantined");
      h.now += 500;
      reportPool(32);
      await h.events.reconcile("e1");
      const status = h.cluster.eventStatus.get("e1");
      expect(status?.poolReplacement).toMatchObject({ state: "Given" });
      expect(status?.poolReplacement?.message).toMatch(/agent: the kernel gave 1 hugepages-2Mi/);
      expect(status?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
      expect(h.cluster.effects).toContain(`delete mce-system/${name}`);
      expect(h.cluster.recorded.find((r) => r.reason === "HugepageQuarantineReleased")?.message).toMatch(/replacement hugepage brought the pool back/);
      expect(h.cluster.recorded.map((r) => r.reason)).toContain("HugepageReplaced");
      // The agent's result is its own: the operator's apply never carries it.
      expect(h.cluster.history.get("e1")?.every((s) => s.poolReplacementResult === undefined)).toBe(true);
      await h.nodes.reconcile("worker-1");
      expect(h.cluster.healthStatus.get("worker-1")).toMatchObject({ poolReplacements: { tried: 1, given: 1, refused: 0 }, capacityLostForGood: [] });
    });

    it("releases the replaced page's quarantine while another lost page keeps its own", async () => {
      const quarantined = (name: string): void => {
        const pod = quarantinePodName(name, "2Mi");
        h.state.upsertPod(
          `mce-system/${pod}`,
          podInfo({
            metadata: { name: pod, namespace: "mce-system", uid: `q-${name}`, labels: { "mce-operator.io/quarantine-for": name } },
            spec: { nodeName: "worker-1" },
          }),
        );
      };
      h.hold(memoryEvent("e0", "worker-1", [], { pageType: "free huge page" }));
      await h.events.reconcile("e0");
      quarantined("e0");
      h.now += 1000;
      h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page", pfn: "0x5405", hugepage: { size: "2Mi", headPfn: "0x5400" } }));
      await h.events.reconcile("e1");
      quarantined("e1");
      h.now += 1000;
      agentReports("e0", { state: "Refused", before: 30, requested: 31, after: 30, message: "the kernel gave 0 of 1 hugepages-2Mi on NUMA node 0" });
      agentReports("e1", {
        state: "Given",
        before: 30,
        requested: 31,
        after: 31,
        message: "the kernel gave 1 of 1 hugepages-2Mi on NUMA node 0: nr_hugepages 30 → 31",
      });
      h.now += 500;
      // The kubelet still advertises 32 pages: 2Mi is stale, and 4Mi is held.
      reportPool(31);
      await h.events.reconcile("e0");
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e0")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Quarantined" }]);
      expect(h.cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
      expect(h.cluster.effects).toContain(`delete mce-system/${quarantinePodName("e1", "2Mi")}`);
      expect(h.cluster.effects).not.toContain(`delete mce-system/${quarantinePodName("e0", "2Mi")}`);
    });

    it("releases after a replacement even when the node's clock is behind the operator's", async () => {
      h.addPod("db", "worker-1");
      h.addPod("cache", "worker-1");
      // Stamped by the node, whose clock runs 5 s behind the operator's.
      h.hold(
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
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")).toMatchObject({ poolReplacement: { state: "Requested", maxTotal: 33 }, quarantine: [{ state: "Quarantined" }] });
      const evictedAt = Date.parse(h.cluster.eventStatus.get("e1")?.pods?.[0]?.lastAttemptAt ?? "");
      const name = quarantinePodName("e1", "2Mi");
      h.state.upsertPod(
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
      h.now += 1000;
      const report = health("worker-1");
      h.state.upsertHealth(
        {
          ...report,
          spec: { ...report.spec, observedAt: new Date(evictedAt - 4900).toISOString(), hugepagePools: [{ size: "2Mi", numaNode: 0, total: 33, free: 17 }] },
        },
        h.now,
      );
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Released" }]);
    });

    it("keeps the quarantine with the reason when the kernel refuses, and pauses the node after two refusals", async () => {
      h.hold(memoryEvent("e1", "worker-1", [], { pageType: "free huge page" }));
      await h.events.reconcile("e1");
      h.now += 1000;
      agentReports("e1", { state: "Refused", before: 31, requested: 32, after: 31, message: "the kernel gave 0 of 1 hugepages-2Mi on NUMA node 0" });
      reportPool(31);
      await h.events.reconcile("e1");
      const status = h.cluster.eventStatus.get("e1");
      expect(status?.poolReplacement?.state).toBe("Refused");
      expect(status?.poolReplacement?.message).toMatch(/the quarantine of 2Mi hugepages-2Mi stays/);
      expect(status?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * MiB, state: "Quarantined" }]);
      expect(h.cluster.recorded.map((r) => r.reason)).toContain("HugepageReplacementRefused");

      h.hold(memoryEvent("e2", "worker-1", [], { pageType: "free huge page", pfn: "0x6205", hugepage: { size: "2Mi", headPfn: "0x6200" } }));
      await h.events.reconcile("e2");
      agentReports("e2", { state: "Refused", before: 30, requested: 31, after: 30, message: "gave 0" });
      await h.events.reconcile("e2");
      h.hold(memoryEvent("e3", "worker-1", [], { pageType: "free huge page", pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }));
      await h.events.reconcile("e3");
      expect(h.cluster.eventStatus.get("e3")?.poolReplacement).toMatchObject({ action: "None" });
      expect(h.cluster.eventStatus.get("e3")?.poolReplacement?.reason).toMatch(/refused 2 replacement\(s\)/);
      await h.nodes.reconcile("worker-1");
      expect(h.cluster.healthStatus.get("worker-1")?.poolReplacements).toMatchObject({
        tried: 2,
        given: 0,
        refused: 2,
        pausedUntil: new Date(T0 + 100 + 24 * 3_600_000).toISOString(),
      });
      expect(h.cluster.healthStatus.get("worker-1")?.capacityLostForGood).toEqual([{ size: "2Mi", bytes: 6 * MiB }]);
    });

    it("shows the agent waiting for a mapper, and never asks in DryRun", async () => {
      h.addPod("db", "worker-1");
      h.hold(memoryEvent("e1", "worker-1", [{ pod: "db" }]));
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")?.poolReplacement).toMatchObject({ state: "Requested", afterMappersExit: true });
      agentReports("e1", { state: "Waiting", message: "waiting for 1 mapper(s) to exit: pid 100" });
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")?.poolReplacement).toMatchObject({ state: "Requested" });
      expect(h.cluster.eventStatus.get("e1")?.poolReplacement?.message).toMatch(/^agent: waiting for 1 mapper\(s\) to exit: pid 100$/);

      h.state.policies.set("default", policy({ mode: "DryRun", poolReplacement: { enabled: true } }));
      h.hold(memoryEvent("e2", "worker-1", [], { pageType: "free huge page", pfn: "0x6205", hugepage: { size: "2Mi", headPfn: "0x6200" } }));
      await h.events.reconcile("e2");
      expect(h.cluster.eventStatus.get("e2")?.poolReplacement).toMatchObject({ action: "Replace", state: "DryRun" });
    });
  });

  it("changes nothing in DryRun and still records the whole decision", async () => {
    h.state.policies.set("default", policy({ mode: "DryRun" }));
    h.addPod("dpdk", "worker-1");
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await h.events.reconcile("e1");
    expect(h.cluster.effects).toEqual([]);
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({
      dryRun: true,
      phase: "Contained",
      pods: [{ action: "Evict", state: "DryRun" }],
      quarantine: [{ state: "DryRun" }],
    });
  });

  it("never taints more nodes than the budget, even when decisions race", async () => {
    h.state.policies.set(
      "default",
      policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 20, circuitBreaker: { maxNodeActions: 100 } } }),
    );
    for (let i = 2; i <= 10; i++) h.addNode(`worker-${i}`);
    for (let i = 1; i <= 10; i++) h.hold(memoryEvent(`e${i}`, `worker-${i}`, []));
    await Promise.all(Array.from({ length: 10 }, (_, i) => h.events.reconcile(`e${i + 1}`)));
    expect(h.cluster.effects.filter((c) => c.startsWith("taint"))).toHaveLength(2);
    const held = [...h.cluster.eventStatus.values()].filter((s) => s.nodeAction?.state === "HeldByBudget");
    expect(held).toHaveLength(8);
  });

  it("takes a held taint once the budget frees up, if the node's errors still call for it", async () => {
    h.state.policies.set(
      "default",
      policy({ escalation: { taintAfter: 1, cordonAfter: 5 }, safety: { maxUnavailableNodesPercent: 50, circuitBreaker: { maxNodeActions: 100 } } }),
    );
    h.addNode("worker-2");
    // worker-2 already carries the operator's taint: with 2 nodes and 50%, the budget is taken.
    h.state.nodes.set("worker-2", {
      ...(h.state.nodes.get("worker-2") ?? { name: "worker-2", labels: {}, unschedulable: false, cordonedByUs: false, allocatableBytes: {} }),
      taintKeys: ["mce-operator.io/memory-failing"],
    });
    h.hold(memoryEvent("e1", "worker-1", []));
    await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")?.nodeAction?.state).toBe("HeldByBudget");
    await h.events.reconcile("e1");
    expect(h.cluster.effects.filter((c) => c.startsWith("taint"))).toEqual([]);
    // A person removes worker-2's taint: at the next pass the held taint is taken.
    h.state.nodes.set("worker-2", {
      ...(h.state.nodes.get("worker-2") ?? { name: "worker-2", labels: {}, unschedulable: false, cordonedByUs: false, allocatableBytes: {} }),
      taintKeys: [],
    });
    h.now += 60_000;
    await h.events.reconcile("e1");
    expect(h.cluster.effects.filter((c) => c.startsWith("taint"))).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
    expect(h.cluster.eventStatus.get("e1")?.nodeAction).toMatchObject({ action: "Taint", state: "Done" });
    expect(h.cluster.eventStatus.get("e1")?.phase).toBe("Escalated");
  });

  it("leaves an event on a node with tied policies undecided and says why", async () => {
    h.state.policies.set("a", policy({ nodeSelector: { matchLabels: { pool: "x" } } }, "a"));
    h.state.policies.set("b", policy({ nodeSelector: { matchLabels: { rack: "r1" } } }, "b"));
    h.addNode("worker-9", { pool: "x", rack: "r1" });
    h.hold(memoryEvent("e9", "worker-9", []));
    expect((await h.events.reconcile("e9"))?.requeueAfterMs).toBe(30_000);
    expect(h.cluster.eventStatus.get("e9")?.conditions?.[0]).toMatchObject({ type: "Decided", status: "False", reason: "PolicyConflict" });
  });

  it("evicts a pod once when two errors name it, decided at the same moment", async () => {
    h.addPod("dpdk", "worker-1");
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    h.hold(memoryEvent("e2", "worker-1", [{ pod: "dpdk" }], { pfn: "0x6205", hugepage: { size: "2Mi", headPfn: "0x6200" } }));
    const [first, second] = await Promise.all([h.events.reconcile("e1"), h.events.reconcile("e2")]);
    expect(h.cluster.effects.filter((c) => c.startsWith("evict"))).toEqual(["evict apps/dpdk"]);
    expect([first?.requeueAfterMs, second?.requeueAfterMs]).toEqual([undefined, 1000]);
    await h.events.reconcile("e2");
    expect(h.cluster.effects.filter((c) => c.startsWith("evict"))).toEqual(["evict apps/dpdk"]);
    expect(h.cluster.eventStatus.get("e2")?.pods?.[0]).toMatchObject({ state: "Done", message: "carried out for memory error e1: Done" });
  });

  it("never retries an eviction faster than once a second, whatever backoff a stored policy holds", async () => {
    // Stored before the CRD's CEL floor existed: the cache's defaulting does not run CEL.
    h.state.policies.set("default", policy({ podActions: { eviction: { backoff: "0s" } } }));
    h.addPod("dpdk", "worker-1");
    h.cluster.evictionAnswers.set("apps/dpdk", [{ kind: "blocked", message: "429" }]);
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    expect((await h.events.reconcile("e1"))?.requeueAfterMs).toBe(1000);
  });

  it("ends an eviction the API server refuses for good as Failed, without retrying it", async () => {
    h.addPod("dpdk", "worker-1");
    h.cluster.refusals.set("evict apps/dpdk", new ApiError(422, "Invalid", 'pods "dpdk" is invalid'));
    h.hold(memoryEvent("e1", "worker-1", [{ pod: "dpdk" }]));
    await h.events.reconcile("e1");
    expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", pods: [{ state: "Failed" }] });
    expect(h.cluster.eventStatus.get("e1")?.pods?.[0]?.message).toMatch(/refused it for good: pods "dpdk" is invalid/);
  });

  describe("node actions: the model's count, the model's limits, counted once", () => {
    const escalateAtOne = (safety: Record<string, unknown>, escalation: Record<string, unknown> = {}): void => {
      h.state.policies.set("default", policy({ escalation: { taintAfter: 1, cordonAfter: 5, ...escalation }, safety: { cooldown: "1s", ...safety } }));
    };
    const taints = (): string[] => h.cluster.effects.filter((c) => c.startsWith("taint"));

    it("taints for corrected errors when the policy counts them, and says they were corrected", async () => {
      h.state.policies.set("default", policy({ escalation: { countCorrected: 2 }, safety: { maxUnavailableNodesPercent: 100 } }));
      for (let i = 1; i <= 5; i++) {
        h.hold(memoryEvent(`c${i}`, "worker-1", [], { severity: "Corrected", pfn: `0x52${i}0` }, T0 + i * 1000));
        h.now = T0 + i * 1000 + 100;
        await h.events.reconcile(`c${i}`);
      }
      expect(taints()).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
      const tainted = h.cluster.recorded.find((r) => r.reason === "TaintedForMemoryErrors");
      expect(tainted?.message).toMatch(/^2 counted memory error\(s\) in 24h \(0 uncorrected; 4 corrected, counted one per 2\)/);
      expect(tainted?.message).not.toMatch(/2 uncorrected/);
    });

    it("opens the circuit breaker at maxNodeActions taints, not before", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 100, circuitBreaker: { maxNodeActions: 4 } });
      for (let i = 2; i <= 6; i++) h.addNode(`worker-${i}`);
      for (let i = 1; i <= 6; i++) {
        h.hold(memoryEvent(`e${i}`, `worker-${i}`, []));
        await h.events.reconcile(`e${i}`);
      }
      expect(taints()).toHaveLength(4);
      expect(h.cluster.eventStatus.get("e5")?.nodeAction).toMatchObject({ state: "HeldByBudget", heldBy: "CircuitBreaker" });
      expect(h.cluster.eventStatus.get("e4")?.nodeAction).toMatchObject({ state: "Done", appliedAt: new Date(h.now).toISOString() });
    });

    it("frees a node's budget slot when a person removes the operator's taint", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 10, circuitBreaker: { maxNodeActions: 100 } });
      for (let i = 2; i <= 10; i++) h.addNode(`worker-${i}`);
      h.hold(memoryEvent("e1", "worker-1", []));
      await h.events.reconcile("e1");
      expect(taints()).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
      h.editNode("worker-1", (n) => {
        n.spec.taints = [];
      });
      h.now += 60_000;
      h.hold(memoryEvent("e2", "worker-2", [], {}, h.now - 100));
      await h.events.reconcile("e2");
      expect(taints()).toEqual(["taint worker-1 mce-operator.io/memory-failing", "taint worker-2 mce-operator.io/memory-failing"]);
    });

    it("a person's uncordon frees the slot too, though the operator's annotation stays", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 10, circuitBreaker: { maxNodeActions: 100 } }, { taintAfter: 1, cordonAfter: 2 });
      for (let i = 2; i <= 10; i++) h.addNode(`worker-${i}`);
      h.hold(memoryEvent("e1", "worker-1", [], { severity: "Fatal" }, T0 - 1000));
      h.hold(memoryEvent("e2", "worker-1", []));
      await h.events.reconcile("e2");
      expect(h.cluster.effects).toContain("cordon worker-1");
      h.editNode("worker-1", (n) => {
        n.spec.unschedulable = false;
      });
      expect(h.state.nodes.get("worker-1")?.cordonedByUs).toBe(false);
      h.now += 60_000;
      h.hold(memoryEvent("e3", "worker-2", [], {}, h.now - 100));
      await h.events.reconcile("e3");
      expect(taints()).toEqual(["taint worker-2 mce-operator.io/memory-failing"]);
    });

    it("gives up a taint the API server refuses for good, says so, and frees its slot", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 10, circuitBreaker: { maxNodeActions: 100 } });
      for (let i = 2; i <= 10; i++) h.addNode(`worker-${i}`);
      h.cluster.refusals.set("taint worker-1", new ApiError(422, "Invalid", 'Node "worker-1" is invalid: spec.taints[0].key: Invalid value'));
      h.hold(memoryEvent("e1", "worker-1", []));
      await h.events.reconcile("e1");
      expect(h.cluster.eventStatus.get("e1")).toMatchObject({ phase: "Failed", nodeAction: { action: "Taint", state: "Failed" } });
      expect(h.cluster.recorded.find((r) => r.reason === "NodeActionFailed")?.message).toMatch(/refused the taint for good: Node "worker-1" is invalid/);
      expect(h.state.budget().actionedNodes.size).toBe(0);
      h.now += 60_000;
      h.hold(memoryEvent("e2", "worker-2", [], {}, h.now - 100));
      await h.events.reconcile("e2");
      expect(taints()).toEqual(["taint worker-2 mce-operator.io/memory-failing"]);
    });

    it("cordons again at the next threshold crossing after a person's uncordon, never 'already has it'", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 100, circuitBreaker: { maxNodeActions: 100 } }, { taintAfter: 1, cordonAfter: 2 });
      h.hold(memoryEvent("e1", "worker-1", [], { severity: "Fatal" }, T0 - 1000));
      h.hold(memoryEvent("e2", "worker-1", []));
      await h.events.reconcile("e2");
      h.editNode("worker-1", (n) => {
        n.spec.unschedulable = false;
      });
      h.now += 60_000;
      h.hold(memoryEvent("e3", "worker-1", [], { pfn: "0x7205", hugepage: { size: "2Mi", headPfn: "0x7200" } }, h.now - 100));
      await h.events.reconcile("e3");
      expect(h.cluster.effects.filter((c) => c.startsWith("cordon"))).toEqual(["cordon worker-1", "cordon worker-1"]);
      expect(h.cluster.eventStatus.get("e3")?.nodeAction).toMatchObject({ action: "Cordon", state: "Done" });
      expect(h.cluster.eventStatus.get("e3")?.nodeAction?.reason).not.toMatch(/already has it/);
    });

    it("retries a held taint for corrected errors once the budget frees up", async () => {
      escalateAtOne({ maxUnavailableNodesPercent: 50, circuitBreaker: { maxNodeActions: 100 } }, { taintAfter: 1, countCorrected: 1 });
      h.addNode("worker-2");
      h.editNode("worker-2", (n) => {
        n.spec.taints = [{ key: "mce-operator.io/memory-failing", effect: "NoSchedule" }];
      });
      h.hold(memoryEvent("c1", "worker-1", [], { severity: "Corrected" }));
      await h.events.reconcile("c1");
      expect(h.cluster.eventStatus.get("c1")?.nodeAction).toMatchObject({ action: "Taint", state: "HeldByBudget", heldBy: "NodeBudget" });
      h.editNode("worker-2", (n) => {
        n.spec.taints = [];
      });
      h.now += 60_000;
      await h.events.reconcile("c1");
      expect(taints()).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
      expect(h.cluster.eventStatus.get("c1")?.nodeAction).toMatchObject({ state: "Done", message: "taken once the limits allowed it" });
    });
  });

  it("derives the phase from the actions", () => {
    expect(phaseOf({ pods: [{ uid: "u", namespace: "n", name: "p", action: "Evict", state: "Blocked" }] })).toBe("Pending");
    expect(phaseOf({ prediction: { poolEffect: "None" }, pods: [], quarantine: [], nodeAction: { action: "None" } })).toBe("Ignored");
    expect(phaseOf({ nodeAction: { action: "Taint", state: "Done" } })).toBe("Escalated");
  });
});

describe("EventReconciler: corrected errors, before anything is lost", () => {
  let h: ReconcileHarness;
  const HOUR = 3_600_000;
  beforeEach(() => {
    h = new ReconcileHarness();
    h.state.policies.set("default", policy());
    h.addNode("worker-1");
    h.addPod("vm", "worker-1");
  });

  /** The agent's report with the page's corrected errors this hour, and the pool as given. */
  function report(count: number, pool = { total: 32, free: 16 }, free2MiBlocks?: number): void {
    const base = health("worker-1");
    h.state.upsertHealth(
      {
        ...base,
        spec: {
          ...base.spec,
          hugepagePools: [{ size: "2Mi", numaNode: 0, ...pool }],
          ...(free2MiBlocks !== undefined && { numaMemory: [{ numaNode: 0, freeBytes: free2MiBlocks * 2 * MiB, free2MiBlocks }] }),
          capabilities: { earlyKill: false, softOffline: true },
          correctedErrorPages: [
            {
              pfn: "0x5205",
              hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
              count,
              lastAt: new Date(h.now).toISOString(),
              hourly: [{ hour: new Date(Math.floor(h.now / HOUR) * HOUR).toISOString(), count }],
            },
          ],
        },
      },
      h.now,
    );
  }

  const corrected = (): MemoryErrorEvent => memoryEvent("ce1", "worker-1", [{ pod: "vm" }], { severity: "Corrected", source: "MachineCheck" });

  function agentWrites(result: Record<string, unknown>): void {
    const held = h.cluster.events.get("ce1");
    if (!held) throw new Error("no ce1");
    h.hold({ ...held, status: { ...held.status, softOfflineResult: { at: new Date(h.now).toISOString(), ...result } } } as MemoryErrorEvent);
  }

  it("watches a page below the threshold, refreshing its count, and touches nothing", async () => {
    report(3);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")).toMatchObject({ phase: "Ignored", prevention: { action: "None", state: "Watching", correctedErrors: 3 } });
    report(7);
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")?.prevention).toMatchObject({ state: "Watching", correctedErrors: 7 });
    expect(h.cluster.effects).toEqual([]);
  });

  it("asks the agent to soft-offline the page at the threshold and copies its outcome in; nobody is evicted", async () => {
    report(3);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    report(10);
    h.now += 60_000;
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")).toMatchObject({
      phase: "Pending",
      prevention: { action: "SoftOffline", state: "Requested", correctedErrors: 10 },
    });
    expect(h.cluster.eventStatus.get("ce1")?.prevention?.reason).toContain("to a free hugepage of its pool");
    agentWrites({ state: "Done", poolBefore: 32, poolAfter: 31, message: "soft-offlined pfn 0x5205" });
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")).toMatchObject({ phase: "Contained", prevention: { state: "Done", message: "agent: soft-offlined pfn 0x5205" } });
    expect(h.cluster.effects).toEqual([]);
    expect(h.cluster.recorded.map((r) => r.reason)).toEqual(expect.arrayContaining(["CorrectedErrorsThreshold", "HugepageSoftOfflined"]));
  });

  it("falls back to moving the mappers when the kernel refuses the soft offline", async () => {
    report(10);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    agentWrites({ state: "Failed", message: "soft_offline_page: EBUSY" });
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")?.prevention).toMatchObject({ action: "Evict", state: "Requested" });
    await h.events.reconcile("ce1");
    expect(h.cluster.effects).toEqual(["evict apps/vm"]);
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")).toMatchObject({ phase: "Contained", prevention: { state: "Done" }, pods: [{ name: "vm", state: "Done" }] });
  });

  it("moves the mappers at once when there is nowhere to migrate the hugepage to", async () => {
    report(10, { total: 32, free: 0 }, 0);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")?.prevention).toMatchObject({ action: "Evict", state: "Requested" });
    expect(h.cluster.eventStatus.get("ce1")?.prevention?.reason).toContain("no free 2Mi hugepage and no free 2 MiB block");
    await h.events.reconcile("ce1");
    expect(h.cluster.effects).toEqual(["evict apps/vm"]);
  });

  it("taints a node whose DIMM keeps producing corrected errors, counted by the agent, within the node budget", async () => {
    h.state.policies.set(
      "default",
      policy({
        escalation: { countCorrected: 5, taintAfter: 2, cordonAfter: 3 },
        safety: { maxUnavailableNodesPercent: 100 },
        prevention: { pageThreshold: 1000 },
      }),
    );
    report(2);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")?.nodeAction?.action).toBe("None");
    // The DIMM's errors fall on other pages too, or on this one again: only counted, never events.
    const base = h.state.health.get("worker-1");
    if (!base) throw new Error("no health");
    const hour = new Date(Math.floor(h.now / HOUR) * HOUR).toISOString();
    h.state.upsertHealth(
      { ...base, spec: { ...base.spec, dimms: [{ name: "mc0/dimm1", label: "A1", correctedErrors: 40, hourly: [{ hour, count: 11 }] }] } },
      h.now,
    );
    h.now += 60_000;
    const requeued = await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")?.nodeAction).toMatchObject({ action: "Taint", state: "Planned" });
    expect(h.cluster.eventStatus.get("ce1")?.nodeAction?.reason).toContain("2 counted memory error(s) in 24h (0 uncorrected; 11 corrected, counted one per 5)");
    expect(requeued?.requeueAfterMs).toBe(1);
    await h.events.reconcile("ce1");
    expect(h.cluster.effects).toEqual(["taint worker-1 mce-operator.io/memory-failing"]);
    expect(h.state.nodeHealth("worker-1", h.now)).toMatchObject({ correctedErrors: 11, health: "Degraded" });
  });

  it("only records what it would do under a DryRun policy", async () => {
    h.state.policies.set("default", policy({ mode: "DryRun" }));
    report(10);
    h.hold(corrected());
    await h.events.reconcile("ce1");
    expect(h.cluster.eventStatus.get("ce1")).toMatchObject({ phase: "Contained", prevention: { action: "SoftOffline", state: "DryRun" } });
    expect(h.cluster.effects).toEqual([]);
  });
});
