import { describe, expect, it } from "vitest";
import { mapper, memoryError, node, shared } from "./fixtures.ts";
import { conservativeProfile, kernelProfiles, selectProfile } from "../../kernel/profiles.ts";
import { predictKernelOutcome, predictUnpoison } from "./prediction.ts";
import type { KernelPrediction } from "./prediction.ts";
import type { MemoryError, NodeState } from "./types.ts";

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

interface ObservedRow {
  /** The row of kernel-facts.md's observed-outcomes table, verbatim. */
  row: string;
  error: MemoryError;
  node: NodeState;
  /** Signals at the error, per mapper command: what the kernel did. */
  ao: Record<string, "AO" | "None">;
  ar: boolean;
  pool: { totalDelta: number; freeDelta: number } | undefined;
  effect: KernelPrediction["poolEffect"];
  lsb?: number;
  result?: string;
  memoryLostBytes?: number;
}

// One entry per row of the observed-outcomes table (2 MiB pages unless said), Debian 6.1 under QEMU.
const observed: ObservedRow[] = [
  {
    row: "private anon hugepage in use, early_kill=0, poison one 4 KiB subpage",
    error: memoryError({ mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ earlyKill: false }),
    ao: { hwp: "None" },
    ar: true,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "ReleasedOnUnmap",
    lsb: 21,
    result: "Recovered",
  },
  {
    row: "same, early_kill=1",
    error: memoryError({ pfn: 0x3e09, hugepage: { size: "2Mi", headPfn: 0x3e00 }, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ earlyKill: true }),
    ao: { hwp: "AO" },
    ar: true,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "ReleasedOnUnmap",
    lsb: 21,
    result: "Recovered",
  },
  {
    row: "shared hugetlbfs file, two mappers, early_kill=1",
    error: memoryError({ mappers: [shared("a"), shared("b")] }),
    node: node({ earlyKill: true }),
    ao: { a: "AO", b: "AO" },
    ar: true,
    pool: { totalDelta: 0, freeDelta: -1 },
    effect: "HeldForever",
    lsb: 21,
    result: "Recovered",
  },
  {
    row: "shared, early_kill=0, default prctl",
    error: memoryError({ mappers: [shared("a"), shared("b")] }),
    node: node({ earlyKill: false }),
    ao: { a: "None", b: "None" },
    ar: true,
    pool: { totalDelta: 0, freeDelta: -1 },
    effect: "HeldForever",
  },
  {
    row: "shared, early_kill=0, one mapper PR_MCE_KILL_EARLY",
    error: memoryError({ mappers: [shared("a", "Early"), shared("b")] }),
    node: node({ earlyKill: false }),
    ao: { a: "AO", b: "None" },
    ar: true,
    pool: { totalDelta: 0, freeDelta: -1 },
    effect: "HeldForever",
  },
  {
    row: "shared, early_kill=1, one mapper PR_MCE_KILL_LATE",
    error: memoryError({ mappers: [shared("a", "Late"), shared("b")] }),
    node: node({ earlyKill: true }),
    ao: { a: "None", b: "AO" },
    ar: true,
    pool: { totalDelta: 0, freeDelta: -1 },
    effect: "HeldForever",
  },
  {
    row: "free hugepage (corrupt-pfn on head or tail pfn)",
    error: memoryError({ pfn: 0x4600, pageType: "free huge page", hugepage: { size: "2Mi", headPfn: 0x4600 } }),
    node: node(),
    ao: {},
    ar: false,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "Dissolved",
    result: "Recovered",
    memoryLostBytes: 4096,
  },
  {
    row: "MADV_SOFT_OFFLINE on an in-use hugepage",
    error: memoryError({ pfn: 0x4205, severity: "SoftOffline", pageType: undefined, result: undefined, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node(),
    ao: { hwp: "None" },
    ar: false,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "Migrated",
  },
  {
    row: "soft offline of an in-use hugepage with no free hugepage in its pool (corrected errors, 6.1 and 6.12)",
    error: memoryError({ pfn: 0x4205, severity: "SoftOffline", pageType: undefined, result: undefined, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 0 }] }),
    ao: { hwp: "None" },
    ar: false,
    pool: { totalDelta: 0, freeDelta: 0 },
    effect: "Migrated",
  },
  {
    row: "the agent's own soft offline, its pool read unchanged before and after (the copy came from free memory)",
    error: memoryError({
      pfn: 0x4205,
      severity: "SoftOffline",
      pageType: undefined,
      result: undefined,
      mappers: [mapper("hwp", { command: "hwp" })],
      poolTotalDelta: 0,
    }),
    node: node(),
    ao: { hwp: "None" },
    ar: false,
    pool: { totalDelta: 0, freeDelta: 0 },
    effect: "Migrated",
  },
  {
    row: "soft offline of an in-use hugepage on a node whose pools are not known yet: the pool is taken to lose it",
    error: memoryError({ pfn: 0x4205, severity: "SoftOffline", pageType: undefined, result: undefined, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ pools: [] }),
    ao: { hwp: "None" },
    ar: false,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "Migrated",
  },
  {
    row: "soft_offline_page on a free hugepage",
    error: memoryError({ severity: "SoftOffline", pageType: undefined, result: undefined, mappers: [] }),
    node: node(),
    ao: {},
    ar: false,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "Migrated",
  },
  {
    row: "1 GiB hugepage in use, MADV_HWPOISON",
    error: memoryError({ pfn: 0x100005, result: "Failed", hugepage: { size: "1Gi", headPfn: 0x100000 }, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ pools: [{ size: "1Gi", numaNode: 0, total: 1, free: 0 }], allocatableBytes: { "1Gi": GiB } }),
    ao: { hwp: "None" },
    ar: true,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "ReleasedOnUnmap",
    lsb: 30,
    result: "Failed",
    // ~1 GiB returns to MemFree after munmap: only the raw page is lost for good.
    memoryLostBytes: 4096,
  },
  {
    row: "real SRAO machine check (QEMU mce) on a mapped hugepage, early_kill=1",
    error: memoryError({ pfn: 0x5203, physicalAddress: undefined, mappers: [mapper("hwp", { command: "hwp" })] } as Partial<MemoryError>),
    node: node({ earlyKill: true }),
    ao: { hwp: "AO" },
    ar: true,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "ReleasedOnUnmap",
    result: "Recovered",
  },
  {
    row: "same, early_kill=0",
    error: memoryError({ pfn: 0x5203, mappers: [mapper("hwp", { command: "hwp" })] }),
    node: node({ earlyKill: false }),
    ao: { hwp: "None" },
    ar: true,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "ReleasedOnUnmap",
  },
  {
    row: "real SRAO on a free hugepage",
    error: memoryError({ pfn: 0x5003, pageType: "free huge page", hugepage: { size: "2Mi", headPfn: 0x5000 } }),
    node: node(),
    ao: {},
    ar: false,
    pool: { totalDelta: -1, freeDelta: -1 },
    effect: "Dissolved",
    result: "Recovered",
  },
];

describe("predicted kernel outcome equals kernel-facts.md (linux-6.1, measured)", () => {
  it.each(observed)("$row", (row) => {
    const p = predictKernelOutcome(row.error, row.node);
    expect(p.kernelProfile).toBe("linux-6.1");
    expect(p.verified).toBe(true);
    expect(p.poolEffect).toBe(row.effect);
    expect(Object.fromEntries(p.mappers.map((m) => [m.command, m.atError]))).toEqual(row.ao);
    expect(p.mappers.every((m) => m.onAccess === (row.ar ? "AR" : "None"))).toBe(true);
    expect(p.pool && { totalDelta: p.pool.totalDelta, freeDelta: p.pool.freeDelta }).toEqual(row.pool);
    expect(p.hardwareCorruptedDelta).toBe(4096);
    if (row.lsb !== undefined) expect(p.signalAddressLsb).toBe(row.lsb);
    if (row.result !== undefined) expect(p.kernelResult).toBe(row.result);
    if (row.memoryLostBytes !== undefined) expect(p.memoryLostBytes).toBe(row.memoryLostBytes);
  });

  it("unpoison-pfn on that page: HardwareCorrupted -4 kB, pool unchanged", () => {
    expect(predictUnpoison()).toEqual({ hardwareCorruptedDelta: -4096, poolTotalDelta: 0 });
  });
});

describe("kernel profiles", () => {
  it("marks a kernel outside every profile unverified and assumes the worst", () => {
    const p = predictKernelOutcome(
      memoryError({ mappers: [mapper("a", { killPolicy: "Early" })] }),
      node({ kernelRelease: "5.10.0-30-amd64", earlyKill: true }),
    );
    expect(p.kernelProfile).toBe("conservative");
    expect(p.verified).toBe(false);
    expect(p.mappers[0]?.atError).toBe("None");
    expect(p.mappers[0]?.onAccess).toBe("AR");
  });

  it("treats a free hugepage on an unknown kernel as lost whole", () => {
    const p = predictKernelOutcome(memoryError({ pageType: "free huge page" }), node({ kernelRelease: undefined }));
    expect(p.poolEffect).toBe("Unknown");
    expect(p.memoryLostBytes).toBe(2 * MiB);
  });

  it("picks the measured 6.12 profile for Debian's 6.12 kernels", () => {
    const p = predictKernelOutcome(memoryError(), node({ kernelRelease: "6.12.115+deb12-amd64" }));
    expect(p).toMatchObject({ kernelProfile: "linux-6.12", verified: true });
  });

  it("gives every profile evidence for every behaviour, and calls it measured only where every fact was", () => {
    for (const profile of [...kernelProfiles, conservativeProfile]) {
      expect(Object.keys(profile.evidence).sort()).toEqual(Object.keys(profile.behaviour).sort());
      expect(profile.measured).toBe(Object.values(profile.evidence).every((e) => "measured" in e));
    }
    expect(kernelProfiles.filter((p) => p.measured).map((p) => p.name)).toEqual(expect.arrayContaining(["linux-6.1", "linux-6.12"]));
    expect(conservativeProfile.measured).toBe(false);
  });

  it("no two profiles claim one kernel line", () => {
    const lines = kernelProfiles.map((p) => [p.from, p.until] as const).sort((a, b) => a[0][0] - b[0][0] || a[0][1] - b[0][1]);
    for (let i = 1; i < lines.length; i++) {
      const [, until] = lines[i - 1] ?? [];
      const [from] = lines[i] ?? [];
      expect(until !== undefined && from !== undefined && (until[0] < from[0] || (until[0] === from[0] && until[1] <= from[1]))).toBe(true);
    }
  });

  it("uses a profile read from source for Ubuntu 24.04's 6.8 and says it is unverified: a private hugepage's early mappers get no AO there", () => {
    const early = { killPolicy: "Early" as const };
    const privatePage = predictKernelOutcome(memoryError({ mappers: [mapper("a", early)] }), node({ kernelRelease: "6.8.0-45-generic" }));
    expect(privatePage).toMatchObject({ kernelProfile: "linux-6.8", verified: false });
    expect(privatePage.mappers.map((m) => m.atError)).toEqual(["None"]);
    const sharedPage = predictKernelOutcome(memoryError({ mappers: [shared("a", "Early")] }), node({ kernelRelease: "6.8.0-45-generic" }));
    expect(sharedPage.mappers.map((m) => m.atError)).toEqual(["AO"]);
  });

  it("assumes a shared page is lost whole on kernels that cut it out of the file (5.15, RHEL 9's 5.14)", () => {
    for (const release of ["5.15.0-119-generic", "5.14.0-427.el9.x86_64"]) {
      const p = predictKernelOutcome(memoryError({ mappers: [shared("a"), shared("b")] }), node({ kernelRelease: release }));
      expect(p).toMatchObject({ poolEffect: "Unknown", verified: false, memoryLostBytes: 2 * MiB });
    }
  });

  it("on RHEL 8's 4.18 a 1 GiB page in use is Ignored and lost whole, and the kill line says Killing", () => {
    const gigantic = memoryError({ hugepage: { size: "1Gi", headPfn: 0x100000 }, mappers: [mapper("a")] });
    const p = predictKernelOutcome(gigantic, node({ kernelRelease: "4.18.0-553.el8_10.x86_64" }));
    expect(p).toMatchObject({ kernelProfile: "linux-4.18", kernelResult: "Ignored", poolEffect: "Unknown", lostBytes: 1024 * MiB });
    expect(selectProfile("4.18.0-553.el8_10.x86_64").profile.behaviour.killLine).toBe("Killing");
  });

  it("a soft offline that failed retired nothing: no pool change, nothing lost, nothing poisoned", () => {
    const p = predictKernelOutcome(memoryError({ severity: "SoftOffline", result: "Failed", pageType: "migration failed 1, type 57ffffc000800e" }), node());
    expect(p).toMatchObject({ poolEffect: "None", lostBytes: 0, memoryLostBytes: 0, hardwareCorruptedDelta: 0, kernelResult: "Failed" });
    expect(p.pool).toBeUndefined();
    expect(p.reason).toMatch(/did not happen \(migration failed 1/);
  });

  it("takes a 1 GiB page's verdict from the profile", () => {
    const gigantic = memoryError({ hugepage: { size: "1Gi", headPfn: 0x100000 }, mappers: [mapper("a")] });
    const p = predictKernelOutcome(gigantic, node({ kernelRelease: "6.1.0-57-amd64" }));
    expect(p.kernelResult).toBe(selectProfile("6.1.0-57-amd64").profile.behaviour.giganticInUseResult);
    expect(p.signalAddressLsb).toBe(30);
  });

  it("honours a policy's explicit profile and refuses an unknown one", () => {
    expect(predictKernelOutcome(memoryError(), node({ kernelRelease: "5.4.0" }), "linux-6.1").kernelProfile).toBe("linux-6.1");
    expect(() => predictKernelOutcome(memoryError(), node(), "linux-9.9")).toThrow(/unknown kernel profile "linux-9.9"/);
  });
});
