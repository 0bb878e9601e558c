// The operator on a real control plane: it evicts exactly the pods that mapped a poisoned hugepage,
// holds back PDB-blocked evictions, quarantines capacity so the real kube-scheduler will not use it,
// taints within the budget, fails over between replicas, and survives kill -9 mid-storm.
import { PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import type { V1Node, V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { group, version } from "../../crds/naming.ts";
import { quarantinePodName } from "../../operator/reconcile/context.ts";
import {
  clients,
  consistently,
  createHugepageNode,
  createHugepagePod,
  createNamespace,
  createPdb,
  deleteNamespace,
  deleteNode,
  kubectl,
  podExists,
  uniqueName,
  waitFor,
  waitForPodGone,
  waitForPodRunning,
} from "./cluster/helpers.ts";
import { applyCrds, applyNodeHealth, applyPolicy, createMemoryErrorEvent, getEvent, startOperatorProcess, waitForEvent } from "./operator-harness.ts";
import type { OperatorProcess } from "./operator-harness.ts";

const c = clients();
const run = uniqueName("op");
const groupLabel = "mce-e2e/group";

async function node(groupName: string, hugepages = "16Mi", pages = 8): Promise<string> {
  const n: V1Node = await createHugepageNode(c, { hugepages: { "hugepages-2Mi": hugepages }, labels: { [groupLabel]: groupName } });
  const name = n.metadata?.name ?? "";
  await applyNodeHealth(name, [{ size: "2Mi", total: pages, free: pages / 2 }], new Date(Date.now() - 60_000));
  return name;
}

async function pod(namespace: string, nodeName: string, app: string, extra: { annotations?: Record<string, string>; hugepages?: string } = {}): Promise<V1Pod> {
  const created = await createHugepagePod(c, { namespace, nodeName, hugepages: { "hugepages-2Mi": extra.hugepages ?? "4Mi" }, labels: { app } });
  if (extra.annotations)
    await kubectl(["annotate", "pod", "-n", namespace, created.metadata?.name ?? "", ...Object.entries(extra.annotations).map(([k, v]) => `${k}=${v}`)]);
  return waitForPodRunning(c, namespace, created.metadata?.name ?? "");
}

/** A pod left to kube-scheduler, allowed only onto one node. */
const scheduledPod = (namespace: string, nodeName: string, hugepages: string): Promise<V1Pod> =>
  createHugepagePod(c, { namespace, onlyOnto: nodeName, hugepages: { "hugepages-2Mi": hugepages } });

const mapperOf = (p: V1Pod, shared = false): { podUID: string; namespace: string; name: string; shared: boolean } => ({
  podUID: p.metadata?.uid ?? "",
  namespace: p.metadata?.namespace ?? "",
  name: p.metadata?.name ?? "",
  shared,
});

describe("the operator on a real control plane", () => {
  let namespace: string;
  let operator: OperatorProcess;
  const nodes: string[] = [];

  beforeAll(async () => {
    await applyCrds();
    namespace = await createNamespace(c, "workloads");
    await applyPolicy(`${run}-enforce`, {
      mode: "Enforce",
      nodeSelector: { matchLabels: { [groupLabel]: `${run}-main` } },
      podActions: { eviction: { backoff: "1s" }, earlySignal: { timeout: "2m" } },
      safety: { maxUnavailableNodesPercent: 50 },
    });
    await applyPolicy(`${run}-dryrun`, { mode: "DryRun", nodeSelector: { matchLabels: { [groupLabel]: `${run}-dry` } } });
    operator = await startOperatorProcess(`${run}-a`);
  });

  afterAll(async () => {
    await operator.stop();
    await deleteNamespace(c, namespace);
    for (const n of nodes) await deleteNode(c, n);
    for (const kind of ["mee", "nmh", "cpol"]) await kubectl(["delete", kind, "-l", "mce-operator.io/e2e=true", "--wait=false"]);
  });

  it("evicts the mapper before it touches the page, leaves the bystander, and quarantines capacity the scheduler respects", async () => {
    const n = await node(`${run}-main`);
    nodes.push(n);
    const mapper = await pod(namespace, n, "mapper");
    const bystander = await pod(namespace, n, "bystander");
    const name = await createMemoryErrorEvent({ node: n, pfn: 0x5205, mappers: [mapperOf(mapper)] });

    const done = await waitForEvent(name, "Contained", (e) => e.status?.phase === "Contained");
    expect(done.status?.pods).toMatchObject([{ name: mapper.metadata?.name, action: "Evict", state: "Done", attempts: 1 }]);
    expect(done.status?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * 2 ** 20, state: "Quarantined" }]);
    expect(done.status?.prediction).toMatchObject({ kernelProfile: "linux-6.1", verified: true, poolEffect: "ReleasedOnUnmap" });
    await waitForPodGone(c, namespace, mapper.metadata?.name ?? "");
    expect(await podExists(c, namespace, bystander.metadata?.name ?? "")).toBe(true);

    // 16Mi advertised, one 2Mi page lost, 4Mi used by the bystander: 10Mi is really left.
    const tooBig = await scheduledPod(namespace, n, "12Mi");
    const fits = await scheduledPod(namespace, n, "10Mi");
    const placed = await waitForPodRunning(c, namespace, fits.metadata?.name ?? "");
    expect(placed.spec?.nodeName).toBe(n);
    const pending = await waitFor("the 12Mi pod to be refused", async () => {
      const p = await c.core.readNamespacedPod({ namespace, name: tooBig.metadata?.name ?? "" });
      const cond = p.status?.conditions?.find((x) => x.type === "PodScheduled");
      return cond?.status === "False" && p;
    });
    expect(pending.spec?.nodeName).toBeUndefined();
    expect(pending.status?.conditions?.find((x) => x.type === "PodScheduled")?.message).toMatch(/Insufficient hugepages-2Mi/);

    // The kubelet restarts and advertises the smaller pool; the agent reports it: the quarantine goes.
    await kubectl([
      "patch",
      "node",
      n,
      "--subresource=status",
      "--type=merge",
      "-p",
      JSON.stringify({ status: { capacity: { "hugepages-2Mi": "14Mi" }, allocatable: { "hugepages-2Mi": "14Mi" } } }),
    ]);
    await applyNodeHealth(n, [{ size: "2Mi", total: 7, free: 1 }]);
    const released = await waitForEvent(name, "quarantine released", (e) => e.status?.quarantine?.[0]?.state === "Released");
    expect(released.status?.phase).toBe("Contained");
    await waitForPodGone(c, "mce-system", quarantinePodName(name, "2Mi"));
  });

  it("keeps retrying an eviction a PodDisruptionBudget refuses, names the budget, and never deletes", async () => {
    const n = await node(`${run}-main`);
    nodes.push(n);
    const guarded = await pod(namespace, n, "guarded");
    const pdb = await createPdb(c, { namespace, matchLabels: { app: "guarded" }, minAvailable: 1 });
    const name = await createMemoryErrorEvent({ node: n, pfn: 0x6205, mappers: [mapperOf(guarded)] });
    const blocked = await waitForEvent(
      name,
      "eviction blocked twice",
      (e) => (e.status?.pods?.[0]?.attempts ?? 0) >= 2 && e.status?.pods?.[0]?.state === "Blocked",
    );
    expect(blocked.status?.pods?.[0]).toMatchObject({ action: "Evict", blockedBy: pdb.metadata?.name });
    expect(blocked.status?.pods?.[0]?.message).toMatch(/disruption budget/);
    expect(blocked.status?.phase).toBe("Pending");
    expect(await podExists(c, namespace, guarded.metadata?.name ?? "")).toBe(true);
    await c.policy.deleteNamespacedPodDisruptionBudget({ namespace, name: pdb.metadata?.name ?? "" });
    const done = await waitForEvent(name, "evicted once the budget allows", (e) => e.status?.phase === "Contained", { timeoutMs: 60_000 });
    expect(done.status?.pods?.[0]?.state).toBe("Done");
    await waitForPodGone(c, namespace, guarded.metadata?.name ?? "");
  });

  it("hands the early signal to the agent, keeps the agent's part of status, and follows it to done", async () => {
    const n = await node(`${run}-main`);
    nodes.push(n);
    const cache = await pod(namespace, n, "cache", { annotations: { "mce-operator.io/early-signal": "true" } });
    const name = await createMemoryErrorEvent({ node: n, pfn: 0x7205, mappers: [mapperOf(cache, true)] });
    await waitForEvent(name, "signal handed to the agent", (e) => e.status?.pods?.[0]?.state === "InProgress");
    // What the agent writes, with its own field manager, to its own list.
    const outcome = {
      uid: cache.metadata?.uid,
      state: "Done",
      signal: "SIGUSR1",
      pids: [1000],
      lostRanges: ["0x7f0000200000-0x7f0000400000"],
      at: new Date().toISOString(),
      message: "sent SIGUSR1 to pid 1000",
    };
    const patched = await kubectl(["apply", "--server-side", "--field-manager=mce-agent", "--subresource=status", "-f", "-"], {
      input: JSON.stringify({ apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", metadata: { name }, status: { earlySignals: [outcome] } }),
    });
    expect(patched.stderr).toBe("");
    const done = await waitForEvent(name, "Contained", (e) => e.status?.phase === "Contained");
    expect(done.status?.pods?.[0]).toMatchObject({ action: "EarlySignal", state: "Done" });
    expect(done.status?.earlySignals?.[0]).toMatchObject({ uid: cache.metadata?.uid, state: "Done" });
    expect(await podExists(c, namespace, cache.metadata?.name ?? "")).toBe(true);
  });

  it("in DryRun records the whole decision and changes nothing", async () => {
    const n = await node(`${run}-dry`);
    nodes.push(n);
    const mapper = await pod(namespace, n, "dry-mapper");
    const name = await createMemoryErrorEvent({ node: n, pfn: 0x8205, mappers: [mapperOf(mapper)] });
    const decided = await waitForEvent(name, "decided", (e) => e.status?.phase === "Contained");
    expect(decided.status).toMatchObject({ dryRun: true, pods: [{ action: "Evict", state: "DryRun" }], quarantine: [{ state: "DryRun" }] });
    // In DryRun the decision's own write already says Contained, before the (empty) actions run, and
    // nothing the operator does afterwards is visible: so no barrier exists, and the pod and the absent
    // placeholder are watched for a while instead.
    const placeholders = async (): Promise<string[]> =>
      (await c.core.listNamespacedPod({ namespace: "mce-system", labelSelector: `mce-operator.io/quarantine-for=${name}` })).items.map(
        (p) => p.metadata?.name ?? "",
      );
    await consistently(
      "the DryRun mapper to stay and no quarantine placeholder to appear",
      async () => (await podExists(c, namespace, mapper.metadata?.name ?? "")) && (await placeholders()).length === 0,
      { durationMs: 3000 },
      async () => `placeholders: ${JSON.stringify(await placeholders())}`,
    );
  });

  it("a storm on half the nodes taints or cordons no more than the budget allows", async () => {
    const storm = `${run}-storm`;
    await applyPolicy(`${run}-storm`, {
      mode: "Enforce",
      nodeSelector: { matchLabels: { [groupLabel]: storm } },
      escalation: { taintAfter: 1, cordonAfter: 2, window: "1h" },
      safety: { maxUnavailableNodesPercent: 20, circuitBreaker: { maxNodeActions: 1000, window: "1h" }, cooldown: "1s" },
    });
    const stormNodes = await Promise.all(Array.from({ length: 8 }, () => node(storm)));
    nodes.push(...stormNodes);
    const calm = await Promise.all(Array.from({ length: 8 }, () => node(`${run}-calm`)));
    nodes.push(...calm);
    const total = (await c.core.listNode()).items.length;
    const allowed = Math.floor((total * 20) / 100);
    const names: string[] = [];
    for (let round = 0; round < 2; round++)
      for (const n of stormNodes) names.push(await createMemoryErrorEvent({ node: n, pfn: 0x9000 + round * 0x200 + 5, pageType: "free huge page" }));
    for (const name of names) await waitForEvent(name, "decided and carried out", (e) => e.status?.phase !== undefined && e.status.phase !== "Pending");
    const after = await Promise.all(stormNodes.map((n) => c.core.readNode({ name: n })));
    const actioned = after.filter((x) => x.spec?.unschedulable === true || (x.spec?.taints ?? []).some((t) => t.key === "mce-operator.io/memory-failing"));
    expect(actioned.length).toBeGreaterThan(0);
    expect(actioned.length).toBeLessThanOrEqual(allowed);
    const held = await Promise.all(names.map(getEvent));
    expect(held.filter((e) => e.status?.nodeAction?.state === "HeldByBudget").length).toBeGreaterThan(0);
    // The Node condition comes from the node's own reconcile, which runs after its events settle.
    await waitFor("HugepageMemoryDegraded=True on every storm node", async () => {
      const nowNodes = await Promise.all(stormNodes.map((n) => c.core.readNode({ name: n })));
      return nowNodes.every((x) => x.status?.conditions?.find((cond) => cond.type === "HugepageMemoryDegraded")?.status === "True");
    });
    const metrics = await operator.metrics();
    expect(metrics).toMatch(/mce_operator_node_actions_held_total\{action="(Taint|Cordon)"\} [1-9]/);
  });

  it("sees a person's untaint: the event records it, people are told, and the next error taints again", async () => {
    const group = `${run}-undo`;
    await applyPolicy(group, {
      mode: "Enforce",
      nodeSelector: { matchLabels: { [groupLabel]: group } },
      escalation: { taintAfter: 1, cordonAfter: 5, window: "1h" },
      safety: { maxUnavailableNodesPercent: 100, circuitBreaker: { maxNodeActions: 1000, window: "1h" }, cooldown: "1s" },
    });
    const n = await node(group);
    nodes.push(n);
    const tainted = (x: { spec?: { taints?: { key: string }[] } }): boolean => (x.spec?.taints ?? []).some((t) => t.key === "mce-operator.io/memory-failing");
    const first = await createMemoryErrorEvent({ node: n, pfn: 0xa005, pageType: "free huge page" });
    await waitForEvent(first, "tainted", (e) => e.status?.nodeAction?.state === "Done");
    expect(tainted(await c.core.readNode({ name: n }))).toBe(true);
    // A person removes every taint, as `kubectl taint nodes N mce-operator.io/memory-failing-` would.
    await c.core.patchNode({ name: n, body: [{ op: "replace", path: "/spec/taints", value: [] }] }, setHeaderOptions("Content-Type", PatchStrategy.JsonPatch));
    const undone = await waitForEvent(first, "the untaint recorded", (e) => e.status?.nodeAction?.undoneAt !== undefined);
    expect(undone.status?.nodeAction?.state).toBe("Done");
    await waitFor("a TaintRemoved Event", async () =>
      (await c.core.listNamespacedEvent({ namespace: "default" })).items.some((e) => e.reason === "TaintRemoved" && e.involvedObject.name === n),
    );
    const second = await createMemoryErrorEvent({ node: n, pfn: 0xa205, pageType: "free huge page" });
    await waitForEvent(second, "tainted again", (e) => e.status?.nodeAction?.state === "Done");
    expect((await getEvent(second)).status?.nodeAction?.reason).not.toMatch(/already has it/);
    expect(tainted(await c.core.readNode({ name: n }))).toBe(true);
  });
});

describe("operator replicas", () => {
  const c2 = clients();
  let namespace: string;
  const nodes: string[] = [];

  beforeAll(async () => {
    namespace = await createNamespace(c2, "failover");
    await applyPolicy(`${run}-failover`, {
      mode: "Enforce",
      nodeSelector: { matchLabels: { [groupLabel]: `${run}-failover` } },
      podActions: { eviction: { backoff: "1s" } },
    });
  });

  afterAll(async () => {
    await deleteNamespace(c2, namespace);
    for (const n of nodes) await deleteNode(c2, n);
  });

  it("with two replicas only the leader acts, and the other takes over after kill -9 of the leader", async () => {
    const n = await node(`${run}-failover`);
    nodes.push(n);
    const a = await startOperatorProcess(`${run}-x`);
    await waitFor("x to lead", async () => /mce_operator_leader 1/.test(await a.metrics()));
    const b = await startOperatorProcess(`${run}-y`);
    // Ready: caches synced and, as a follower, not acting.
    await waitFor("y ready as a follower", async () => (await fetch(`http://127.0.0.1:${b.port}/readyz`)).status === 200);
    // y asks for the lease every retry period (500 ms) and may take it only once x has not renewed it for
    // the lease duration (4 s): while x lives, y stays a follower for longer than that.
    await consistently(
      "x to lead and y to follow",
      async () => /mce_operator_leader 0/.test(await b.metrics()) && /mce_operator_leader 1/.test(await a.metrics()),
      { durationMs: 5000, intervalMs: 250 },
    );
    await a.kill();
    const mapper = await pod(namespace, n, "after-failover");
    const name = await createMemoryErrorEvent({ node: n, pfn: 0xa205, mappers: [mapperOf(mapper)] });
    await waitForEvent(name, "decided by the new leader", (e) => e.status?.phase === "Contained", { timeoutMs: 20_000 });
    expect(await b.metrics()).toMatch(/mce_operator_leader 1/);
    expect(b.logs.some((l) => l.msg === "became leader")).toBe(true);
    expect(b.logs.some((l) => l.msg === "memory error decided" && l.memoryErrorEvent === name)).toBe(true);
    expect(await b.stop()).toBe(0);
  });

  it("kill -9 mid-storm, some pods named by two errors: every event reaches a final phase, no pod is evicted twice", async () => {
    const n1 = await node(`${run}-failover`, "128Mi", 64);
    const n2 = await node(`${run}-failover`, "128Mi", 64);
    nodes.push(n1, n2);
    const pods = await Promise.all(Array.from({ length: 16 }, (_, i) => pod(namespace, i % 2 ? n1 : n2, `storm-${i}`, { hugepages: "2Mi" })));
    let operator = await startOperatorProcess(`${run}-k1`);
    await waitFor("k1 to lead", async () => /mce_operator_leader 1/.test(await operator.metrics()), { timeoutMs: 15_000 });
    // Every pod is named by one error; four of them by a second error too, on another page: each pod is evicted once.
    const names = await Promise.all([
      ...pods.map((p, i) => createMemoryErrorEvent({ node: p.spec?.nodeName ?? "", pfn: 0x20000 + i * 512 + 3, mappers: [mapperOf(p)] })),
      ...pods.slice(0, 4).map((p, i) => createMemoryErrorEvent({ node: p.spec?.nodeName ?? "", pfn: 0x40000 + i * 512 + 3, mappers: [mapperOf(p)] })),
    ]);
    await waitFor("the first eviction", () => Promise.resolve(operator.logs.some((l) => l.msg === "pod action")), { timeoutMs: 15_000, intervalMs: 5 });
    await operator.kill();
    operator = await startOperatorProcess(`${run}-k2`);
    for (const name of names) await waitForEvent(name, "final phase", (e) => e.status?.phase === "Contained", { timeoutMs: 40_000 });
    for (const p of pods) await waitForPodGone(c2, namespace, p.metadata?.name ?? "");
    const events = (await c2.core.listNamespacedEvent({ namespace })).items.filter((e) => e.reason === "EvictedForMemoryError");
    for (const p of pods) expect(events.filter((e) => e.involvedObject.uid === p.metadata?.uid).length).toBeLessThanOrEqual(1);
    for (const name of names) expect((await getEvent(name)).status?.pods?.[0]?.attempts ?? 0).toBeLessThanOrEqual(2);
    await operator.stop();
  });
});
