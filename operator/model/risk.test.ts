import { describe, expect, it } from "vitest";
import { node, policySpec, T0 } from "./fixtures.ts";
import { countInWindow, decidePrevention, worstDimm, type CorrectedPage, type PreventionInput } from "./risk.ts";

const HOUR = 3_600_000;
const hourOf = (at: number): number => Math.floor(at / HOUR) * HOUR;

function page(counts: number[], overrides: Partial<CorrectedPage> = {}): CorrectedPage {
  // counts[i] errors in the hour i hours before T0's.
  return {
    pfn: 0x5205,
    hugepage: { size: "2Mi", headPfn: 0x5200, numaNode: 0 },
    hourly: counts.map((count, i) => ({ hour: hourOf(T0) - i * HOUR, count })).filter((h) => h.count > 0),
    softOfflined: false,
    ...overrides,
  };
}

function prevention(overrides: Partial<PreventionInput> = {}): PreventionInput {
  return {
    page: page([10]),
    pfn: 0x5205,
    hugepage: { size: "2Mi", headPfn: 0x5200, numaNode: 0 },
    dimms: [],
    node: node(),
    support: { available: true },
    mapperPods: 1,
    policy: policySpec(),
    now: T0,
    ...overrides,
  };
}

describe("countInWindow", () => {
  it("counts the hours any of which lies in the window, and none from the future", () => {
    const hourly = [
      { hour: hourOf(T0) - 25 * HOUR, count: 7 },
      { hour: hourOf(T0) - 24 * HOUR, count: 3 },
      { hour: hourOf(T0), count: 2 },
      { hour: hourOf(T0) + HOUR, count: 100 },
    ];
    // T0 is on the hour: the hour that began 24 h back overlaps the window, the one 25 h back does not.
    expect(countInWindow(hourly, 24 * HOUR, T0)).toBe(5);
    expect(countInWindow(hourly, 24 * HOUR, T0 + HOUR)).toBe(102);
    // A moment before T0 its own hour has not begun, and the hour 25 h back still overlaps.
    expect(countInWindow(hourly, 24 * HOUR, T0 - 1)).toBe(10);
    expect(countInWindow(hourly, 48 * HOUR, T0)).toBe(12);
  });
});

describe("decidePrevention", () => {
  it("watches a page below its threshold, saying how far it is", () => {
    const decided = decidePrevention(prevention({ page: page([3, 2, 0, 4]) }));
    expect(decided).toMatchObject({ action: "None", state: "Watching", correctedErrors: 9 });
    expect(decided.reason).toContain("9 corrected error(s) on pfn 0x5205 in 24h (page threshold 10)");
  });

  it("counts the event's own error while the agent's report does not carry the page yet", () => {
    expect(decidePrevention(prevention({ page: undefined, policy: policySpec({ prevention: { pageThreshold: 1 } }) }))).toMatchObject({
      action: "SoftOffline",
      correctedErrors: 1,
    });
  });

  it("soft-offlines a page at its threshold, migrating to a free hugepage of the pool", () => {
    const decided = decidePrevention(prevention());
    expect(decided.action).toBe("SoftOffline");
    expect(decided.reason).toContain("to a free hugepage of its pool");
    expect(decided.reason).toContain("the pool loses one hugepage");
  });

  it("with no free 2Mi hugepage, soft-offlines onto a hugepage taken from free memory, as the kernel does", () => {
    const full = node({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 0 }], numaMemory: [{ numaNode: 0, freeBytes: 1 << 30, free2MiBlocks: 12 }] });
    const decided = decidePrevention(prevention({ node: full }));
    expect(decided.action).toBe("SoftOffline");
    expect(decided.reason).toContain("allocates from free memory");
    expect(decided.reason).toContain("the pool keeps its size");
  });

  it("falls back to evicting the mappers when there is nowhere to migrate to", () => {
    const full = node({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 0 }], numaMemory: [{ numaNode: 0, freeBytes: 1 << 20, free2MiBlocks: 0 }] });
    const decided = decidePrevention(prevention({ node: full, mapperPods: 2 }));
    expect(decided.action).toBe("Evict");
    expect(decided.reason).toContain("no free 2Mi hugepage and no free 2 MiB block");
    expect(decided.reason).toContain("evict the 2 pod(s)");
  });

  it("never expects the kernel to allocate a gigantic page for migration", () => {
    const gig = { size: "1Gi" as const, headPfn: 0x40000, numaNode: 0 };
    const pools = [{ size: "1Gi" as const, numaNode: 0, total: 4, free: 0 }];
    const decided = decidePrevention(prevention({ hugepage: gig, page: page([10], { hugepage: gig }), node: node({ pools }) }));
    expect(decided.action).toBe("Evict");
    expect(decided.reason).toContain("never allocates a gigantic page");
  });

  it.each([
    [{ available: false }, "no soft_offline_page"],
    [{ available: true, enableSoftOffline: 0 }, "vm.enable_soft_offline is 0"],
    [{ available: true, enableSoftOffline: 3 }, "skips hugetlb pages"],
  ])("falls back when the kernel forbids soft offline (%j)", (support, words) => {
    const decided = decidePrevention(prevention({ support }));
    expect(decided.action).toBe("Evict");
    expect(decided.reason).toContain(words);
  });

  it("says why nothing is done when soft offline is impossible and nobody maps the page", () => {
    const decided = decidePrevention(prevention({ support: { available: false }, mapperPods: 0 }));
    expect(decided).toMatchObject({ action: "None", state: "Skipped" });
    expect(decided.reason).toContain("no pod maps the page");
  });

  it("follows the policy: soft offline off means a planned eviction; both off means nothing", () => {
    expect(decidePrevention(prevention({ policy: policySpec({ prevention: { softOffline: false } }) })).action).toBe("Evict");
    const neither = decidePrevention(prevention({ policy: policySpec({ prevention: { softOffline: false, plannedEviction: false } }) }));
    expect(neither).toMatchObject({ action: "None", state: "Skipped" });
    expect(neither.reason).toContain("planned eviction is off");
  });

  it("does nothing twice: a page the kernel's collector already retired is accounted, not acted on", () => {
    const decided = decidePrevention(prevention({ page: page([12], { softOfflined: true }) }));
    expect(decided).toMatchObject({ action: "None", state: "Skipped" });
    expect(decided.reason).toContain("already retired");
  });

  it("moves the mappers of a page on a DIMM past its threshold, even with the page below its own", () => {
    const dimms = [{ name: "mc0/dimm1", label: "CPU0_DIMM_A1", hourly: [{ hour: hourOf(T0), count: 11 }] }];
    const decided = decidePrevention(prevention({ page: page([2], { dimm: "mc0/dimm1" }), dimms }));
    expect(decided.action).toBe("Evict");
    expect(decided.reason).toContain("DIMM mc0/dimm1 has 11 in 24h (threshold 10)");
    expect(decided.reason).toContain("its DIMM is failing");
  });

  it("counts the errors on a hugepage's other 4 KiB pages toward it, and lets its worst page act for it", () => {
    const neighbour = page([6], { pfn: 0x5207 });
    const worst = decidePrevention(prevention({ page: page([6]), otherPages: [neighbour] }));
    expect(worst.action).toBe("SoftOffline");
    expect(worst.reason).toContain("6 corrected error(s) on pfn 0x5205, 12 on its 2Mi hugepage 0x5200 in 24h");
    // The neighbour with as many errors and a higher pfn leaves it to 0x5205; one on another hugepage counts nothing.
    const other = decidePrevention(prevention({ page: neighbour, pfn: 0x5207, otherPages: [page([6])] }));
    expect(other).toMatchObject({ action: "None", state: "Watching" });
    const elsewhere = page([6], { pfn: 0x5405, hugepage: { size: "2Mi", headPfn: 0x5400, numaNode: 0 } });
    expect(decidePrevention(prevention({ page: page([6]), otherPages: [elsewhere] }))).toMatchObject({ action: "None", state: "Watching" });
  });

  it("lets errors age out of the window", () => {
    const old = page([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 20]);
    expect(decidePrevention(prevention({ page: old }))).toMatchObject({ action: "None", state: "Watching", correctedErrors: 1 });
    expect(decidePrevention(prevention({ page: old, policy: policySpec({ prevention: { window: "48h" } }) })).action).toBe("SoftOffline");
  });
});

describe("worstDimm", () => {
  it("names the DIMM with the most corrected errors in the window, with its label", () => {
    const dimms = [
      { name: "mc0/dimm0", hourly: [{ hour: hourOf(T0), count: 2 }] },
      { name: "mc0/dimm1", label: "A1", hourly: [{ hour: hourOf(T0), count: 5 }] },
    ];
    expect(worstDimm(dimms, [], 24 * HOUR, T0)).toEqual({ name: "mc0/dimm1 (A1)", correctedErrors: 5 });
  });

  it("falls back to pages on a node without DIMM counters, and is undefined with nothing in the window", () => {
    expect(worstDimm([], [page([4])], 24 * HOUR, T0)).toEqual({ name: "page 0x5205", correctedErrors: 4 });
    expect(worstDimm([], [page([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5])], 24 * HOUR, T0)).toBeUndefined();
  });
});
