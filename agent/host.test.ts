import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { hugetlbPageFlags, writeFakeHost } from "./fake-host.ts";
import { compareDimmNames, HostFiles, hugepageSizeFromPageFlags, KPF, keepMostCorrected, parseBuddyinfo2MiBlocks, parseNodeMemFree } from "./host.ts";

function host(setup: Parameters<typeof writeFakeHost>[1]): HostFiles {
  const root = mkdtempSync(join(tmpdir(), "host-"));
  writeFakeHost(root, setup);
  return new HostFiles(root);
}

describe("HostFiles", () => {
  it("reads boot id and kernel release", () => {
    const files = host({ bootID: "abc-123", release: "6.8.0-31-generic" });
    expect([files.bootID(), files.kernelRelease()]).toEqual(["abc-123", "6.8.0-31-generic"]);
  });

  it("reads pools per NUMA node and size, HardwareCorrupted, counters, EDAC and capabilities", () => {
    const files = host({
      hardwareCorruptedKb: 8,
      pools: [
        { size: "2Mi", numaNode: 0, total: 32, free: 30 },
        { size: "1Gi", numaNode: 0, total: 1, free: 1 },
        { size: "2Mi", numaNode: 1, total: 16, free: 16, surplus: 2 },
      ],
      memoryFailure: { 0: [3, 0, 1, 0, 2] },
      edac: [
        [5, 0],
        [2, 1],
      ],
      earlyKill: false,
      recovery: true,
      softOffline: true,
    });
    const memory = files.memory();
    expect(memory.hugepagePools).toEqual([
      { size: "1Gi", numaNode: 0, total: 1, free: 1, reserved: undefined, surplus: 0 },
      { size: "2Mi", numaNode: 0, total: 32, free: 30, reserved: undefined, surplus: 0 },
      { size: "2Mi", numaNode: 1, total: 16, free: 16, reserved: undefined, surplus: 2 },
    ]);
    expect(memory.hardwareCorruptedBytes).toBe(8192);
    expect(memory.memoryFailureCounters).toEqual([{ numaNode: 0, total: 3, ignored: 0, failed: 1, delayed: 0, recovered: 2 }]);
    expect([memory.edacCorrected, memory.edacUncorrected]).toEqual([7, 1]);
    // Controllers without DIMM directories name no DIMM.
    expect(memory.dimms).toEqual([]);
    expect(memory.capabilities).toEqual({ earlyKill: false, recovery: true, softOffline: true, injection: false, poolResize: true });
  });

  it("reports the soft-offline sysctl and the corrected-errors collector of a 6.12 kernel, and leaves them out where it cannot tell", () => {
    expect(host({ enableSoftOffline: 1, rasCec: true, hwpoisonDebugfs: true }).memory().capabilities).toMatchObject({
      enableSoftOffline: 1,
      correctedErrorCollector: true,
      injection: true,
    });
    // debugfs visible, no ras/cec: a kernel without CONFIG_RAS_CEC (Debian's 6.1).
    expect(host({ hwpoisonDebugfs: true }).memory().capabilities).toMatchObject({ enableSoftOffline: undefined, correctedErrorCollector: false });
    // No debugfs at all: nothing can be said of the collector.
    expect(host({}).memory().capabilities.correctedErrorCollector).toBeUndefined();
  });

  it("gives reserved pages on a single-node host", () => {
    const files = host({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 30, reserved: 4 }] });
    expect(files.memory().hugepagePools).toEqual([{ size: "2Mi", numaNode: 0, total: 32, free: 30, reserved: 4, surplus: 0 }]);
  });

  it("leaves out what an older kernel or a host without EDAC lacks", () => {
    const memory = host({}).memory();
    expect(memory).toEqual({
      hugepagePools: [],
      hardwareCorruptedBytes: 0,
      numaMemory: [],
      memoryFailureCounters: [],
      dimms: [],
      capabilities: { earlyKill: undefined, recovery: undefined, softOffline: false, injection: false, poolResize: undefined },
    });
  });

  it("finds the NUMA node of a pfn from memory blocks", () => {
    const files = host({});
    mkdirSync(files.path("sys/devices/system/node/node1/memory40"), { recursive: true });
    mkdirSync(files.path("sys/devices/system/node/node0/memory0"), { recursive: true });
    mkdirSync(files.path("sys/devices/system/memory"), { recursive: true });
    // 128 MiB blocks: pfn 0x140000 is 5 GiB, block 40.
    writeFileSync(files.path("sys/devices/system/memory/block_size_bytes"), "8000000\n");
    expect(files.numaNodeOfPfn(0x140000)).toBe(1);
    expect(files.numaNodeOfPfn(0x5200)).toBe(0);
    expect(files.numaNodeOfPfn(0x10000000)).toBeUndefined();
  });

  it("reads free memory per NUMA node from its meminfo, and free 2 MiB blocks from buddyinfo over the node's zones", () => {
    const files = host({
      nodeMemFreeKb: { 0: 1234567, 1: 2048 },
      buddyinfo: [
        // Orders 0..10: order 9 counts once, order 10 twice.
        { numaNode: 0, zone: "DMA", counts: [1, 1, 0, 1, 2, 1, 1, 0, 1, 1, 3] },
        { numaNode: 0, zone: "DMA32", counts: [5, 3, 2, 4, 1, 2, 1, 3, 2, 4, 300] },
        { numaNode: 0, zone: "Normal", counts: [100, 50, 20, 9, 4, 2, 1, 0, 0, 2, 0] },
        { numaNode: 1, zone: "Normal", counts: [7, 0, 0, 0, 0, 0, 0, 0, 3, 0, 0] },
      ],
    });
    expect(files.memory().numaMemory).toEqual([
      { numaNode: 0, freeBytes: 1234567 * 1024, free2MiBlocks: 1 + 3 * 2 + 4 + 300 * 2 + 2 },
      { numaNode: 1, freeBytes: 2048 * 1024, free2MiBlocks: 0 },
    ]);
    expect(files.numaFreeBytes(1)).toBe(2048 * 1024);
    expect(files.numaFreeBytes(2)).toBeUndefined();
  });

  it("leaves out a NUMA node without a meminfo, and the block count without buddyinfo", () => {
    const files = host({ nodeMemFreeKb: { 1: 4096 }, pools: [{ size: "2Mi", numaNode: 0, total: 1, free: 1 }] });
    expect(files.memory().numaMemory).toEqual([{ numaNode: 1, freeBytes: 4096 * 1024 }]);
  });

  it("parses meminfo and buddyinfo lines of other shapes with care", () => {
    expect(parseNodeMemFree("Node 1 MemTotal: 10 kB\nNode 1 MemFree:  7 kB\n", 1)).toBe(7 * 1024);
    expect(parseNodeMemFree("Node 1 MemFree:  7 kB\n", 0)).toBeUndefined();
    expect(parseBuddyinfo2MiBlocks(undefined)).toBeUndefined();
    const blocks = parseBuddyinfo2MiBlocks("Node 0, zone   Normal  1 2 3 4 5 6 7 8 9 10 11 \nnot a line\nNode 0, zone  Movable  0 0 0 0 0 0 0 0 0 1\n");
    expect(blocks).toEqual(new Map([[0, 10 + 11 * 2 + 1]]));
  });
});

describe("HostFiles per-DIMM EDAC counters", () => {
  it("reads dimmM directories of a 3.6+ kernel, in natural order, with trimmed labels, ignoring the legacy csrows beside them", () => {
    const memory = host({
      edac: [
        {
          dimms: {
            0: { label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0", ce: 3, ue: 0 },
            2: { label: "  DIMM_A2 ", ce: 0, ue: 0 },
            10: { label: "", ce: 7, ue: 1 },
          },
          // CONFIG_EDAC_LEGACY_SYSFS shows the same errors again as csrows.
          csrows: { 0: { ue: 1, channels: { 0: { ce: 10, label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0" } } } },
        },
      ],
    }).memory();
    expect(memory.dimms).toEqual([
      { name: "mc0/dimm0", label: "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0", correctedErrors: 3, uncorrectedErrors: 0 },
      { name: "mc0/dimm2", label: "DIMM_A2", correctedErrors: 0, uncorrectedErrors: 0 },
      { name: "mc0/dimm10", correctedErrors: 7, uncorrectedErrors: 1 },
    ]);
    expect(memory.dimms[2]).not.toHaveProperty("label");
    // The controller sums stay what ce_count and ue_count say.
    expect([memory.edacCorrected, memory.edacUncorrected]).toEqual([10, 1]);
  });

  it("reads rankM directories of a per-rank driver", () => {
    expect(
      host({
        edac: [
          {
            ranks: {
              0: { label: "mc#0csrow#0channel#0", ce: 1, ue: 0 },
              1: { label: "mc#0csrow#0channel#1", ce: 0, ue: 2 },
            },
          },
        ],
      }).memory().dimms,
    ).toEqual([
      { name: "mc0/rank0", label: "mc#0csrow#0channel#0", correctedErrors: 1, uncorrectedErrors: 0 },
      { name: "mc0/rank1", label: "mc#0csrow#0channel#1", correctedErrors: 0, uncorrectedErrors: 2 },
    ]);
  });

  it("reads csrow channels of an older driver; the csrow's ue_count goes to its channel only when it has one", () => {
    const memory = host({
      edac: [
        {
          csrows: {
            0: { ue: 2, channels: { 0: { ce: 4, label: "DIMM_A1" }, 1: { ce: 0, label: "DIMM_B1\n" } } },
            3: { ue: 1, channels: { 0: { ce: 5 } } },
          },
        },
      ],
    }).memory();
    expect(memory.dimms).toEqual([
      { name: "mc0/csrow0/ch0", label: "DIMM_A1", correctedErrors: 4 },
      { name: "mc0/csrow0/ch1", label: "DIMM_B1", correctedErrors: 0 },
      { name: "mc0/csrow3/ch0", correctedErrors: 5, uncorrectedErrors: 1 },
    ]);
    expect([memory.edacCorrected, memory.edacUncorrected]).toEqual([9, 3]);
  });

  it("reads the csrows where the dimm directories have no counters (kernels 3.6 to 4.x)", () => {
    const dimms = host({
      edac: [{ dimms: { 0: { label: "DIMM_A1" } }, csrows: { 0: { ue: 0, channels: { 0: { ce: 6, label: "DIMM_A1" } } } } }],
    }).memory().dimms;
    expect(dimms).toEqual([{ name: "mc0/csrow0/ch0", label: "DIMM_A1", correctedErrors: 6, uncorrectedErrors: 0 }]);
  });

  it("gives errors EDAC could not attribute as mcN/noinfo, when there are any", () => {
    const memory = host({
      edac: [
        { dimms: { 0: { ce: 1, ue: 0 } }, ceNoinfo: 4, ueNoinfo: 0 },
        { dimms: { 0: { ce: 0, ue: 0 } }, ceNoinfo: 0, ueNoinfo: 0 },
        { ceNoinfo: 0, ueNoinfo: 1 },
      ],
    }).memory();
    expect(memory.dimms).toEqual([
      { name: "mc0/dimm0", correctedErrors: 1, uncorrectedErrors: 0 },
      { name: "mc0/noinfo", correctedErrors: 4, uncorrectedErrors: 0 },
      { name: "mc1/dimm0", correctedErrors: 0, uncorrectedErrors: 0 },
      { name: "mc2/noinfo", correctedErrors: 0, uncorrectedErrors: 1 },
    ]);
    expect([memory.edacCorrected, memory.edacUncorrected]).toEqual([5, 1]);
  });

  it("orders controllers and DIMMs by their numbers", () => {
    const edac: Parameters<typeof writeFakeHost>[1]["edac"] = Array.from({ length: 11 }, () => [0, 0] as [number, number]);
    edac[2] = { dimms: { 10: { ce: 1, ue: 0 }, 9: { ce: 1, ue: 0 } } };
    edac[10] = { dimms: { 1: { ce: 1, ue: 0 } } };
    expect(
      host({ edac })
        .memory()
        .dimms.map((d) => d.name),
    ).toEqual(["mc2/dimm9", "mc2/dimm10", "mc10/dimm1"]);
    expect(["mc0/noinfo", "mc0/dimm10", "mc10/dimm0", "mc0/dimm2", "mc2/dimm0", "mc0/dimm02"].sort(compareDimmNames)).toEqual([
      // Equal numbers written apart still order, by their text.
      "mc0/dimm02",
      "mc0/dimm2",
      "mc0/dimm10",
      "mc0/noinfo",
      "mc2/dimm0",
      "mc10/dimm0",
    ]);
  });

  it("keeps the 128 DIMMs with most corrected errors, a tie going to the first by name", () => {
    // 129 DIMMs with 0, 0, 1, 1, ..., 64 corrected errors: one of the two without goes.
    const dimms = Object.fromEntries(Array.from({ length: 129 }, (_, i) => [i, { ce: Math.floor(i / 2), ue: 0 }]));
    const names = host({ edac: [{ dimms }] })
      .memory()
      .dimms.map((d) => d.name);
    expect(names).toHaveLength(128);
    expect(names.slice(0, 3)).toEqual(["mc0/dimm0", "mc0/dimm2", "mc0/dimm3"]);
    expect(names.at(-1)).toBe("mc0/dimm128");
    expect(
      keepMostCorrected(
        [
          { name: "b", correctedErrors: 1 },
          { name: "a", correctedErrors: 0 },
          { name: "c", correctedErrors: 2 },
        ],
        2,
      ),
    ).toEqual([
      { name: "b", correctedErrors: 1 },
      { name: "c", correctedErrors: 2 },
    ]);
  });
});

describe("the hugetlb page of a pfn from /proc/kpageflags", () => {
  const bit = (n: number): bigint => 1n << BigInt(n);
  const both = ["2Mi", "1Gi"] as const;
  // 0x40000 and 0xc0000 are 1 GiB-aligned pfns (262144 pages of 4 KiB); 0x40200 only 2 MiB-aligned.
  const files = host({
    kpageflags: [
      hugetlbPageFlags(0x40200, "2Mi"),
      // A 2 MiB page at a 1 GiB-aligned pfn, followed by another 2 MiB page; one followed by a base page.
      hugetlbPageFlags(0x80000, "2Mi"),
      hugetlbPageFlags(0x80200, "2Mi"),
      hugetlbPageFlags(0x100000, "2Mi"),
      { pfn: 0x100200, flags: bit(KPF.BUDDY) },
      hugetlbPageFlags(0xc0000, "1Gi"),
      { pfn: 0x5000, flags: bit(KPF.BUDDY) },
      // A free hugepage soft offline dissolved: its poisoned page is no longer in a hugetlb page.
      { pfn: 0x6000, flags: bit(KPF.HWPOISON) | bit(KPF.BUDDY) },
    ],
  });

  it("finds a free 2 MiB page at its head and at a tail, among pools of both sizes", () => {
    expect(files.hugepageSizeOfPfn(0x40200, both)).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0x40305, both)).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0x403ff, both)).toBe("2Mi");
  });

  it("tells a 2 MiB page at a 1 GiB-aligned pfn from a 1 GiB page by the pfn 512 on", () => {
    expect(files.hugepageSizeOfPfn(0x80000, both)).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0x80001, both)).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0x100000, both)).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0xc0000, both)).toBe("1Gi");
  });

  it("finds a 1 GiB page from any of its pfns: its 2 MiB-aligned pfns are tails", () => {
    expect(files.hugepageSizeOfPfn(0xc0001, both)).toBe("1Gi");
    expect(files.hugepageSizeOfPfn(0xc0200, both)).toBe("1Gi");
    expect(files.hugepageSizeOfPfn(0xc1234, both)).toBe("1Gi");
    expect(files.hugepageSizeOfPfn(0xfffff, both)).toBe("1Gi");
  });

  it("with one pool size, gives that size to any hugetlb pfn", () => {
    expect(files.hugepageSizeOfPfn(0x40305, ["2Mi"])).toBe("2Mi");
    expect(files.hugepageSizeOfPfn(0xc1234, ["1Gi"])).toBe("1Gi");
  });

  it("gives nothing for a pfn in no hugetlb page, a dissolved poisoned one, one past the file's end", () => {
    expect(files.hugepageSizeOfPfn(0x5000, both)).toBeUndefined();
    expect(files.hugepageSizeOfPfn(0x5001, both)).toBeUndefined();
    expect(files.hugepageSizeOfPfn(0x6000, both)).toBeUndefined();
    expect(files.hugepageSizeOfPfn(0x6000, ["2Mi"])).toBeUndefined();
    expect(files.hugepageSizeOfPfn(0x100200, both)).toBeUndefined();
    expect(files.hugepageSizeOfPfn(0x10000000, both)).toBeUndefined();
  });

  it("gives nothing, and does not throw, without a readable kpageflags", () => {
    expect(host({}).hugepageSizeOfPfn(0x40200, both)).toBeUndefined();
    const root = mkdtempSync(join(tmpdir(), "host-"));
    mkdirSync(join(root, "proc/kpageflags"), { recursive: true });
    expect(new HostFiles(root).hugepageSizeOfPfn(0x40200, both)).toBeUndefined();
    const short = mkdtempSync(join(tmpdir(), "host-"));
    mkdirSync(join(short, "proc"));
    writeFileSync(join(short, "proc/kpageflags"), Buffer.alloc(0x40200 * 8 + 4));
    expect(new HostFiles(short).hugepageSizeOfPfn(0x40200, both)).toBeUndefined();
  });

  describe("hugepageSizeFromPageFlags", () => {
    const huge = bit(KPF.HUGE);
    const head = huge | bit(KPF.COMPOUND_HEAD);
    const tail = huge | bit(KPF.COMPOUND_TAIL);
    const words =
      (entries: Record<number, bigint>) =>
      (pfn: number): bigint | undefined =>
        entries[pfn];

    it("reads only the pfn's word with one pool size, and no more than three words otherwise", () => {
      const read: number[] = [];
      const flagsOf = (pfn: number): bigint => (read.push(pfn), pfn === 0x40000 ? head : tail);
      expect(hugepageSizeFromPageFlags(0x40007, ["1Gi"], flagsOf)).toBe("1Gi");
      expect(read).toEqual([0x40007]);
      read.length = 0;
      expect(hugepageSizeFromPageFlags(0x40007, both, flagsOf)).toBe("1Gi");
      expect(read).toEqual([0x40007, 0x40000, 0x40200]);
    });

    it("decides by shape with no pool known, and keeps to the pool sizes given", () => {
      expect(hugepageSizeFromPageFlags(0x40201, [], words({ 0x40201: tail, 0x40200: head }))).toBe("2Mi");
      expect(hugepageSizeFromPageFlags(0x40201, [], words({ 0x40201: tail, 0x40200: tail }))).toBe("1Gi");
      // A 1 GiB-aligned head whose next 2 MiB cannot be read: no 1 GiB page reaches past the end.
      expect(hugepageSizeFromPageFlags(0x40000, both, words({ 0x40000: head }))).toBe("2Mi");
    });

    it("gives nothing for words that contradict each other, or that cannot be read", () => {
      expect(hugepageSizeFromPageFlags(0x40201, both, words({}))).toBeUndefined();
      // The 2 MiB-aligned page not hugetlb, or neither head nor tail: the page changed between reads.
      expect(hugepageSizeFromPageFlags(0x40201, both, words({ 0x40201: tail, 0x40200: 0n }))).toBeUndefined();
      expect(hugepageSizeFromPageFlags(0x40201, both, words({ 0x40201: tail, 0x40200: huge }))).toBeUndefined();
      expect(hugepageSizeFromPageFlags(0x40201, both, words({ 0x40201: tail }))).toBeUndefined();
      // HWPOISON alone (a dissolved page) is not a hugetlb page.
      expect(hugepageSizeFromPageFlags(0x40201, ["2Mi"], words({ 0x40201: bit(KPF.HWPOISON) }))).toBeUndefined();
    });
  });
});
