// The simulator's corrected errors: the agent's counts it keeps, and each page's prevention decided as
// the event reconciler decides it (the risk model with the same inputs, once, after Watching).
import { describe, expect, it } from "vitest";
import { parseResource } from "../../crds/validate.ts";
import { clusterBudget } from "../model/escalation.ts";
import { decidePrevention } from "../model/risk.ts";
import type { Mapper, PodState, Policy } from "../model/types.ts";
import { AgentCounts, MAX_PAGES, preventPage } from "./corrected.ts";
import type { PageEvent, PreventionNode, PreventionStep } from "./corrected.ts";

const HOUR = 3_600_000;
const T0 = Date.parse("2026-11-25T12:00:00Z");
const policyOf = (spec: Record<string, unknown> = {}): Policy =>
  parseResource("ContainmentPolicy", { metadata: { name: "p" }, spec: { mode: "Enforce", ...spec } }, "test").spec;
const budget = clusterBudget({ totalNodes: 3, actionedNow: [], taken: [], inFlight: [], evictionsInFlight: 0 });
const pod: PodState = {
  uid: "shop/pg-0",
  namespace: "shop",
  name: "pg-0",
  nodeName: "n",
  labels: {},
  annotations: {},
  priority: 0,
  hugepageRequestBytes: { "2Mi": 2 ** 29 },
};
const mapper: Mapper = {
  pid: 7001,
  command: "postgres",
  podUID: pod.uid,
  podNamespace: pod.namespace,
  podName: pod.name,
  container: "main",
  mapping: "Private",
  killPolicy: "Default",
  signalledByKernel: false,
};
const hugepage = { size: "2Mi" as const, headPfn: 0x300000, numaNode: 0 };

/** A node with one 2 MiB pool, a page event on 0x300042 mapped by pg-0, and the step to decide it. */
function setup(node: PreventionNode, policy = policyOf()): { step: (errors: number, at: number) => PreventionStep; counts: AgentCounts; event: PageEvent } {
  const counts = new AgentCounts();
  const event: PageEvent = { pfn: 0x300042, hugepage, mappers: [mapper] };
  return {
    counts,
    event,
    step: (errors, at) => {
      counts.countPage(0x300042, at, errors, { hugepage });
      return { event, counts, node, support: {}, pods: [pod], pdbs: [], policy, budget, now: at, at: `${(at - T0) / HOUR}h` };
    },
  };
}

describe("AgentCounts", () => {
  it("counts a page's errors on its DIMM too, and finds a DIMM by its label", () => {
    const counts = new AgentCounts();
    counts.countDimm("mc0/dimm2", "CPU0_DIMM_C1", T0, 4);
    counts.countPage(0x42, T0, 3, { dimm: "CPU0_DIMM_C1" });
    expect(counts.page(0x42)).toMatchObject({ dimm: "mc0/dimm2", hourly: [{ hour: T0, count: 3 }], softOfflined: false });
    expect(counts.dimms()).toEqual([{ name: "mc0/dimm2", label: "CPU0_DIMM_C1", hourly: [{ hour: T0, count: 7 }] }]);
  });

  it("keeps at most 64 pages, the one seen longest ago going first, and a retired page stays retired", () => {
    const counts = new AgentCounts();
    counts.retire(0, T0);
    for (let pfn = 1; pfn <= MAX_PAGES; pfn++) counts.countPage(pfn, T0 + pfn * 1000, 1, {});
    expect(counts.page(0)).toBeUndefined();
    expect(counts.page(1)).toBeDefined();
    counts.retire(5, T0 + HOUR);
    counts.countPage(5, T0 + 2 * HOUR, 1, {});
    expect(counts.page(5)?.softOfflined).toBe(true);
  });
});

describe("preventPage", () => {
  it("watches the page, then soft-offlines its hugepage into a free one of the pool: total -1, free -1; the page is retired", () => {
    const node: PreventionNode = { pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 4 }] };
    const { step, counts, event } = setup(node);
    const watching = preventPage(step(3, T0));
    expect(watching).toMatchObject({ action: "None", state: "Watching", correctedErrors: 3, pods: [] });
    const done = preventPage(step(7, T0 + HOUR));
    expect(done).toMatchObject({
      action: "SoftOffline",
      state: "Done",
      correctedErrors: 10,
      pool: { size: "2Mi", totalDelta: -1, freeDelta: -1, from: "Pool" },
    });
    expect(node.pools).toEqual([{ size: "2Mi", numaNode: 0, total: 255, free: 3 }]);
    expect(counts.page(0x300042)?.softOfflined).toBe(true);
    expect(event.decided).toEqual({ at: "1h", action: "SoftOffline", state: "Done" });
    const later = preventPage(step(1, T0 + 2 * HOUR));
    expect(later).toMatchObject({ action: "None", state: "Skipped", reason: expect.stringMatching(/is already retired/) as unknown });
    expect(node.pools).toEqual([{ size: "2Mi", numaNode: 0, total: 255, free: 3 }]);
  });

  it("decides exactly what the risk model decides with the reconciler's inputs", () => {
    const node: PreventionNode = { pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 0 }] };
    const { step, counts, event } = setup(node);
    const input = step(12, T0);
    const expected = decidePrevention({
      page: counts.page(event.pfn),
      pfn: event.pfn,
      hugepage,
      dimms: [],
      node,
      support: {},
      mapperPods: 1,
      policy: input.policy,
      now: T0,
    });
    expect(preventPage(input)).toMatchObject({ action: expected.action, reason: expected.reason, correctedErrors: expected.correctedErrors });
  });

  it("with no free hugepage but free 2 MiB blocks: the pool keeps its size and one block is used", () => {
    const node: PreventionNode = {
      pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 0 }],
      numaMemory: [{ numaNode: 0, freeBytes: 2 ** 30, free2MiBlocks: 3 }],
    };
    const p = preventPage(setup(node).step(10, T0));
    expect(p).toMatchObject({ action: "SoftOffline", state: "Done", pool: { totalDelta: 0, freeDelta: 0, from: "FreeMemory", free2MiBlocks: 2 } });
    expect(node.pools).toEqual([{ size: "2Mi", numaNode: 0, total: 256, free: 0 }]);
    expect(node.numaMemory).toEqual([{ numaNode: 0, freeBytes: 2 ** 30, free2MiBlocks: 2 }]);
  });

  it("with nowhere to migrate to, evicts the mappers' pods, once: a later error on the page is only counted", () => {
    const node: PreventionNode = {
      pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 0 }],
      numaMemory: [{ numaNode: 0, freeBytes: 2 ** 25, free2MiBlocks: 0 }],
    };
    const { step } = setup(node);
    const evict = preventPage(step(10, T0));
    expect(evict).toMatchObject({ action: "Evict", state: "Requested", reason: expect.stringMatching(/no free 2 MiB block of memory/) as unknown });
    expect(evict.pods.map((p) => [p.name, p.action, p.state])).toEqual([["pg-0", "Evict", "Planned"]]);
    const later = preventPage(step(1, T0 + HOUR));
    expect(later).toMatchObject({ action: "Evict", state: "Requested", decidedAt: "0h", correctedErrors: 11, pods: [] });
    expect(later.reason).toMatch(/decided at \+0h: later corrected errors on the page are only counted/);
  });

  it("as the node's kernel allows: vm.enable_soft_offline 0 means evict instead", () => {
    const node: PreventionNode = { pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 4 }] };
    const p = preventPage({ ...setup(node).step(10, T0), support: { available: true, enableSoftOffline: 0 } });
    expect(p).toMatchObject({ action: "Evict", reason: expect.stringMatching(/vm\.enable_soft_offline is 0/) as unknown });
    expect(node.pools[0]?.total).toBe(256);
  });

  it("DryRun: decided, nothing carried out, the page not retired", () => {
    const node: PreventionNode = { pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 4 }] };
    const { step, counts } = setup(node, policyOf({ mode: "DryRun" }));
    expect(preventPage(step(10, T0))).toMatchObject({ action: "SoftOffline", state: "DryRun" });
    expect(node.pools[0]?.total).toBe(256);
    expect(counts.page(0x300042)?.softOfflined).toBe(false);
  });

  it("counts in the policy's window: errors of yesterday do not add up with today's", () => {
    const node: PreventionNode = { pools: [{ size: "2Mi", numaNode: 0, total: 256, free: 4 }] };
    const { step } = setup(node);
    expect(preventPage(step(9, T0))).toMatchObject({ state: "Watching", correctedErrors: 9 });
    expect(preventPage(step(1, T0 + 25 * HOUR))).toMatchObject({ state: "Watching", correctedErrors: 1 });
  });
});
