import { describe, expect, it } from "vitest";
import { decideContainment } from "./containment.ts";
import { predictKernelOutcome } from "./prediction.ts";
import type { MemoryError, NodeState } from "./types.ts";
import { input, mapper, memoryError, node, policySpec, T0 } from "./fixtures.ts";
import { decidePoolReplacement, poolCeiling, replacementPause } from "./replacement.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const on = (extra: Record<string, unknown> = {}) => policySpec({ poolReplacement: { enabled: true, ...extra } });
const freePage = memoryError({ pageType: "free huge page", mappers: [] });
const privatePage = memoryError({ mappers: [mapper("db")] });
const sharedPage = memoryError({ mappers: [mapper("db", { mapping: "Shared" }), mapper("cache", { mapping: "Shared" })] });
const roomy = node({ numaMemory: [{ numaNode: 0, freeBytes: 3 * GiB, free2MiBlocks: 600 }] });
const hour = 3_600_000;

function expectDecision(decision: ReturnType<typeof decidePoolReplacement>, fields: Record<string, unknown>, reason: RegExp): void {
  expect(decision).toMatchObject(fields);
  expect(decision?.reason).toMatch(reason);
}

function decide(error: MemoryError, n: NodeState = roomy, policy = on(), now = T0, dryRun = false) {
  return decidePoolReplacement(predictKernelOutcome(error, n), error, n, policy, now, dryRun);
}

describe("decidePoolReplacement", () => {
  it("is absent when the policy leaves replacement off (the default)", () => {
    expect(decide(freePage, roomy, policySpec())).toBeUndefined();
    expect(decideContainment(input({ error: freePage, node: roomy })).poolReplacement).toBeUndefined();
  });

  it("replaces a dissolved free hugepage at once, up to the size the kubelet advertises", () => {
    const r = decide(freePage);
    expect(r).toMatchObject({
      action: "Replace",
      state: "Planned",
      size: "2Mi",
      numaNode: 0,
      maxTotal: 32,
      afterMappersExit: false,
      expected: "Likely",
      givesBytes: 2 * MiB,
      lostForGoodBytes: 4096,
      minFreeBytes: GiB,
    });
    expect(r?.reason).toMatch(/at once: the kernel has finished/);
  });

  it("replaces a private hugepage only after its mappers exit", () => {
    expect(decide(privatePage)).toMatchObject({ action: "Replace", afterMappersExit: true, maxTotal: 32 });
  });

  it("replaces a shared hugepage at once and lets the pool grow past it, since the kernel holds the poisoned one for ever", () => {
    const r = decide(sharedPage);
    expect(r).toMatchObject({ action: "Replace", afterMappersExit: false, maxTotal: 33, lostForGoodBytes: 2 * MiB });
    // A second shared page on the same node: the first is already held in the pool.
    const held = node({ ...roomy, poisonedHugepages: [{ size: "2Mi", headPfn: 0x9000, inPool: true }] });
    expect(decide(sharedPage, held)?.maxTotal).toBe(34);
  });

  it("replaces a soft-offlined page, which leaves the pool", () => {
    expect(decide(memoryError({ severity: "SoftOffline", mappers: [mapper("db")] }))).toMatchObject({ action: "Replace", afterMappersExit: false });
  });

  it("replaces nothing for an error that took nothing from the pool", () => {
    expectDecision(decide(memoryError({ severity: "Corrected" })), { action: "None" }, /nothing to replace/);
    expect(decide(memoryError({ hugepage: undefined, pageType: "dirty LRU page" }))).toMatchObject({ action: "None" });
    const again = node({ ...roomy, poisonedHugepages: [{ size: "2Mi", headPfn: 0x5200, inPool: false }] });
    expect(decide(freePage, again)).toMatchObject({ action: "None" });
  });

  it("never touches a pool the policy does not name", () => {
    const gigantic = memoryError({ pageType: "free huge page", hugepage: { size: "1Gi", headPfn: 0x100000, numaNode: 0 } });
    const n = node({ ...roomy, pools: [...roomy.pools, { size: "1Gi", numaNode: 0, total: 1, free: 1 }], allocatableBytes: { "2Mi": 64 * MiB, "1Gi": GiB } });
    expect(decide(gigantic, n)).toMatchObject({ action: "None", reason: "the policy names no hugepages-1Gi pool for replacement" });
    expect(decide(gigantic, n, on({ sizes: [{ size: "1Gi", maxPerWindow: 1 }] }))).toMatchObject({
      action: "Replace",
      size: "1Gi",
      expected: "Uncertain",
      maxTotal: 1,
    });
  });

  it("stops at the per-window limit for the size, counting only what was asked for", () => {
    const asked = (state: "Given" | "Refused" | "Skipped", hoursAgo: number) => ({ at: T0 - hoursAgo * hour, size: "2Mi" as const, state });
    const busy = node({ ...roomy, replacements: [asked("Given", 1), asked("Given", 2), asked("Skipped", 3)] });
    const strict = on({ sizes: [{ size: "2Mi", maxPerWindow: 2 }] });
    expectDecision(decide(freePage, busy, strict), { action: "None" }, /2 hugepages-2Mi replacement\(s\) .* limit is 2/);
    // Outside the window they no longer count.
    expect(decide(freePage, busy, strict, T0 + 23 * hour)).toMatchObject({ action: "Replace" });
  });

  it("pauses a node where the kernel refused twice until the window passes", () => {
    const refused = node({
      ...roomy,
      replacements: [
        { at: T0 - 5 * hour, size: "1Gi", state: "Refused" },
        { at: T0 - 2 * hour, size: "2Mi", state: "Refused" },
      ],
    });
    expectDecision(decide(freePage, refused), { action: "None" }, /refused 2 replacement\(s\) .* not asked again before 2026-11-26T07:00:00.000Z/);
    expect(replacementPause(refused, on(), T0)?.until).toBe(T0 + 19 * hour);
    expect(decide(freePage, refused, on(), T0 + 19 * hour + 1)).toMatchObject({ action: "Replace" });
    const once = node({ ...roomy, replacements: [{ at: T0 - hour, size: "2Mi", state: "Refused" }] });
    expect(decide(freePage, once)).toMatchObject({ action: "Replace" });
  });

  it("keeps the floor of free memory on the hugepage's NUMA node", () => {
    const tight = node({ numaMemory: [{ numaNode: 0, freeBytes: GiB + MiB, free2MiBlocks: 3 }] });
    expectDecision(decide(freePage, tight), { action: "None" }, /NUMA node 0 has 1025Mi free; .* floor of 1Gi/);
    // A mapped page gives its memory back when the mapper exits: that counts.
    expect(decide(privatePage, tight)).toMatchObject({ action: "Replace" });
    expect(decide(freePage, tight, on({ minFreeMemory: "512Mi" }))).toMatchObject({ action: "Replace" });
  });

  it("expects a 2 MiB page only where a free 2 MiB block exists, and is uncertain otherwise", () => {
    expectDecision(decide(freePage, node({ numaMemory: [{ numaNode: 0, freeBytes: 2 * GiB, free2MiBlocks: 0 }] })), { expected: "Uncertain" }, /compact/);
    expectDecision(decide(freePage, node()), { action: "Replace", expected: "Uncertain" }, /not reported/);
  });

  it("needs the hugepage's NUMA node when the node has several pools of the size", () => {
    const numa = node({
      ...roomy,
      pools: [
        { size: "2Mi", numaNode: 0, total: 16, free: 8 },
        { size: "2Mi", numaNode: 1, total: 16, free: 8 },
      ],
    });
    const unknown = memoryError({ pageType: "free huge page", hugepage: { size: "2Mi", headPfn: 0x5200 } });
    expectDecision(decide(unknown, numa), { action: "None" }, /NUMA node is unknown/);
    const onOne = memoryError({ pageType: "free huge page", hugepage: { size: "2Mi", headPfn: 0x5200, numaNode: 1 } });
    expect(decide(onOne, numa)).toMatchObject({ action: "Replace", numaNode: 1, maxTotal: 16 });
  });

  it("does not ask an agent that cannot write its pools", () => {
    expectDecision(
      decide(freePage, node({ ...roomy, poolResize: false })),
      { action: "None" },
      /cannot write its hugepage pools .*agent.poolReplacement.enabled/,
    );
    expect(decide(freePage, node({ ...roomy, poolResize: true }))).toMatchObject({ action: "Replace" });
  });

  it("cannot bound a pool the kubelet does not advertise", () => {
    expectDecision(decide(freePage, node({ ...roomy, allocatableBytes: {} })), { action: "None" }, /does not advertise hugepages-2Mi/);
  });

  it("records the decision only, in DryRun", () => {
    expect(decide(freePage, roomy, on(), T0, true)).toMatchObject({ action: "Replace", state: "DryRun" });
  });
});

describe("poolCeiling", () => {
  it("is what the kubelet advertises, plus held poisoned pages, less the other NUMA pools", () => {
    const n = node({
      pools: [
        { size: "2Mi", numaNode: 0, total: 15, free: 15 },
        { size: "2Mi", numaNode: 1, total: 16, free: 16 },
      ],
      allocatableBytes: { "2Mi": 32 * 2 * MiB },
      poisonedHugepages: [{ size: "2Mi", headPfn: 1, inPool: true }],
    });
    expect(poolCeiling(n, "2Mi", 0)).toBe(17);
    expect(poolCeiling(n, "2Mi", 0, 1)).toBe(18);
    expect(poolCeiling(n, "1Gi", 0)).toBeUndefined();
  });
});
