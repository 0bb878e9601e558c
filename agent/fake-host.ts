// A host's /proc and /sys as files in a directory, for tests and the benchmark: the agent reads
// everything under --host-root, so a prepared tree stands in for a node.
import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";
import { hugepageBytes, hugepagePoolDir, PAGE_SIZE_BYTES, pagesPerHugepage, type HugepageSize } from "../kernel/pfn.ts";

export interface FakeVma {
  start: number;
  size: HugepageSize;
  shared?: boolean;
  path?: string;
  /** The pfn of each hugepage in order; null for one not faulted in. */
  pfns: (number | null)[];
}

export interface FakeProcess {
  pid: number;
  comm: string;
  /** /proc/PID/cgroup contents. */
  cgroup: string;
  vmas?: FakeVma[];
  /** Write pfns as zero with the present bit, as pagemap does for a reader without CAP_SYS_ADMIN. */
  hidePfns?: boolean;
}

const PRESENT = 1n << 63n;

function smapsOf(process: FakeProcess): string {
  // A base-page VMA first, as every process has, so the parser must skip it.
  const text = [
    "00400000-00452000 r-xp 00000000 08:01 1234   /usr/bin/app",
    "Size:                328 kB",
    "KernelPageSize:        4 kB",
    "MMUPageSize:           4 kB",
    "VmFlags: rd ex mr mw me dw",
  ];
  for (const vma of process.vmas ?? []) {
    const bytes = hugepageBytes(vma.size);
    const end = vma.start + bytes * vma.pfns.length;
    const perms = vma.shared === true ? "rw-s" : "rw-p";
    text.push(
      `${vma.start.toString(16)}-${end.toString(16)} ${perms} 00000000 00:10 4242  ${vma.path ?? "/anon_hugepage (deleted)"}`,
      `Size:            ${(end - vma.start) / 1024} kB`,
      `KernelPageSize:     ${bytes / 1024} kB`,
      `MMUPageSize:        ${bytes / 1024} kB`,
      "VmFlags: rd wr mr mw me de ht sd",
    );
  }
  return `${text.join("\n")}\n`;
}

export function writeFakeProcess(procDir: string, process: FakeProcess): void {
  const dir = join(procDir, String(process.pid));
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "comm"), `${process.comm}\n`);
  writeFileSync(join(dir, "cgroup"), process.cgroup);
  const smaps = smapsOf(process);
  writeFileSync(join(dir, "smaps"), smaps);
  writeFileSync(
    join(dir, "maps"),
    smaps
      .split("\n")
      .filter((line) => /^[0-9a-f]+-/.test(line))
      .join("\n"),
  );
  // pagemap: 8 bytes per 4 KiB virtual page, written sparsely at each hugepage's first page.
  const fd = openSync(join(dir, "pagemap"), "w");
  try {
    const entry = Buffer.alloc(8);
    for (const vma of process.vmas ?? []) {
      vma.pfns.forEach((pfn, i) => {
        if (pfn === null) return;
        entry.writeBigUInt64LE(PRESENT | BigInt(process.hidePfns === true ? 0 : pfn));
        writeSync(fd, entry, 0, 8, ((vma.start + i * hugepageBytes(vma.size)) / PAGE_SIZE_BYTES) * 8);
      });
    }
  } finally {
    closeSync(fd);
  }
}

export interface FakePool {
  size: HugepageSize;
  numaNode: number;
  total: number;
  free: number;
  reserved?: number;
  surplus?: number;
}

/** A dimmM or rankM directory. A count left out has no file: kernels from 3.6 to 4.x had the directories without them. */
export interface FakeEdacDimm {
  /** dimm_label; empty when left out. */
  label?: string;
  ce?: number;
  ue?: number;
}

/** A legacy csrowK directory: ce_count and ue_count, and per channel chJ_ce_count and chJ_dimm_label. */
export interface FakeEdacCsrow {
  ue?: number;
  channels: Record<number, { ce: number; label?: string }>;
}

/** A memory controller mcN. The kernel creates DIMM, rank, csrow and channel entries only for populated ones, hence the sparse records. */
export interface FakeEdacController {
  /** ce_count and ue_count; by default the sums over the DIMMs and ranks (else the csrows) and the noinfo counts, as the kernel keeps them. */
  ce?: number;
  ue?: number;
  /** ce_noinfo_count and ue_noinfo_count: errors the driver could not place on a DIMM. */
  ceNoinfo?: number;
  ueNoinfo?: number;
  dimms?: Record<number, FakeEdacDimm>;
  ranks?: Record<number, FakeEdacDimm>;
  csrows?: Record<number, FakeEdacCsrow>;
}

/** A run of /proc/kpageflags words from `pfn` on: `flags` for each (one word by default). */
export interface FakePageFlags {
  pfn: number;
  flags: bigint | readonly bigint[];
}

const KPF_COMPOUND_HEAD = 1n << 15n;
const KPF_COMPOUND_TAIL = 1n << 16n;
const KPF_HUGE = 1n << 17n;

/** The kpageflags words of a hugetlb page from `headPfn` on, as the kernel gives them: HUGE on every page, HEAD on the first, TAIL on the rest. */
export function hugetlbPageFlags(headPfn: number, size: HugepageSize, extra = 0n): FakePageFlags {
  const words = Array.from({ length: pagesPerHugepage(size) }, (_, i) => KPF_HUGE | (i === 0 ? KPF_COMPOUND_HEAD : KPF_COMPOUND_TAIL) | extra);
  return { pfn: headPfn, flags: words };
}

export interface FakeHost {
  bootID?: string;
  release?: string;
  hardwareCorruptedKb?: number;
  pools?: FakePool[];
  /** Per NUMA node: total, ignored, failed, delayed, recovered (kernels from about 6.3). */
  memoryFailure?: Record<number, [number, number, number, number, number]>;
  /** MemFree of each NUMA node's sysfs meminfo, in kB. */
  nodeMemFreeKb?: Record<number, number>;
  /** /proc/buddyinfo lines: free blocks per order (0 to 10) of one zone of a NUMA node. */
  buddyinfo?: { numaNode: number; zone: string; counts: number[] }[];
  /** Per memory controller mcN: its corrected and uncorrected counts alone, or its DIMMs as well. */
  edac?: ([number, number] | FakeEdacController)[];
  earlyKill?: boolean;
  recovery?: boolean;
  softOffline?: boolean;
  /** vm.enable_soft_offline (6.11 on). */
  enableSoftOffline?: number;
  hwpoisonDebugfs?: boolean;
  /** debugfs ras/cec: the corrected-errors collector (CONFIG_RAS_CEC). */
  rasCec?: boolean;
  /** /proc/iomem as root reads it. */
  iomem?: string;
  /** /proc/kpageflags, written sparsely: the given words at pfn * 8, zero (no flags) between, nothing past the last. */
  kpageflags?: FakePageFlags[];
}

function put(root: string, path: string, text: string): void {
  const full = join(root, path);
  mkdirSync(join(full, ".."), { recursive: true });
  writeFileSync(full, text);
}

export function writeFakeHost(root: string, host: FakeHost): void {
  mkdirSync(join(root, "proc"), { recursive: true });
  put(root, "proc/sys/kernel/random/boot_id", `${host.bootID ?? "0f6c1b1e-6d2a-4c55-9d8e-2b1f0c9e7a11"}\n`);
  put(root, "proc/sys/kernel/osrelease", `${host.release ?? "6.1.0-56-amd64"}\n`);
  put(
    root,
    "proc/meminfo",
    `MemTotal:       4012345 kB\nHardwareCorrupted: ${String(host.hardwareCorruptedKb ?? 0).padStart(5)} kB\nHugePages_Total:      32\n`,
  );
  if (host.earlyKill !== undefined) put(root, "proc/sys/vm/memory_failure_early_kill", host.earlyKill ? "1\n" : "0\n");
  if (host.recovery !== undefined) put(root, "proc/sys/vm/memory_failure_recovery", host.recovery ? "1\n" : "0\n");
  if (host.softOffline === true) put(root, "sys/devices/system/memory/soft_offline_page", "");
  if (host.enableSoftOffline !== undefined) put(root, "proc/sys/vm/enable_soft_offline", `${host.enableSoftOffline}\n`);
  if (host.hwpoisonDebugfs === true) put(root, "sys/kernel/debug/hwpoison/corrupt-pfn", "");
  if (host.iomem !== undefined) put(root, "proc/iomem", host.iomem);
  if (host.kpageflags !== undefined) writeKpageflags(join(root, "proc/kpageflags"), host.kpageflags);
  if (host.rasCec === true) put(root, "sys/kernel/debug/ras/cec/action_threshold", "1023\n");
  for (const pool of host.pools ?? []) {
    const dir = `sys/devices/system/node/node${pool.numaNode}/hugepages/${hugepagePoolDir(pool.size)}`;
    put(root, `${dir}/nr_hugepages`, `${pool.total}\n`);
    put(root, `${dir}/free_hugepages`, `${pool.free}\n`);
    put(root, `${dir}/surplus_hugepages`, `${pool.surplus ?? 0}\n`);
    // resv_hugepages exists only in the global directory.
    put(root, `sys/kernel/mm/hugepages/${hugepagePoolDir(pool.size)}/resv_hugepages`, `${pool.reserved ?? 0}\n`);
  }
  for (const [node, counts] of Object.entries(host.memoryFailure ?? {})) {
    ["total", "ignored", "failed", "delayed", "recovered"].forEach((name, i) => {
      put(root, `sys/devices/system/node/node${node}/memory_failure/${name}`, `${counts[i] ?? 0}\n`);
    });
  }
  for (const [node, freeKb] of Object.entries(host.nodeMemFreeKb ?? {})) {
    // The layout of a real node meminfo: the node number leads every line.
    put(
      root,
      `sys/devices/system/node/node${node}/meminfo`,
      [
        `Node ${node} MemTotal:       8126464 kB`,
        `Node ${node} MemFree:        ${String(freeKb).padStart(8)} kB`,
        `Node ${node} MemUsed:        1048576 kB`,
        `Node ${node} HugePages_Total:    32`,
        "",
      ].join("\n"),
    );
  }
  if (host.buddyinfo !== undefined) {
    // As the kernel prints it: the zone name padded to 8, each count to 6, a space at the end.
    put(
      root,
      "proc/buddyinfo",
      host.buddyinfo.map((z) => `Node ${z.numaNode}, zone ${z.zone.padStart(8)} ${z.counts.map((c) => String(c).padStart(6)).join(" ")} \n`).join(""),
    );
  }
  (host.edac ?? []).forEach((controller, i) => {
    writeEdacController(root, `sys/devices/system/edac/mc/mc${i}`, Array.isArray(controller) ? { ce: controller[0], ue: controller[1] } : controller);
  });
}

function writeKpageflags(path: string, runs: readonly FakePageFlags[]): void {
  const fd = openSync(path, "w");
  try {
    for (const { pfn, flags } of runs) {
      const words = typeof flags === "bigint" ? [flags] : flags;
      const buffer = Buffer.alloc(words.length * 8);
      words.forEach((word, i) => buffer.writeBigUInt64LE(word, i * 8));
      writeSync(fd, buffer, 0, buffer.length, pfn * 8);
    }
  } finally {
    closeSync(fd);
  }
}

function writeEdacController(root: string, dir: string, mc: FakeEdacController): void {
  const sum = (counts: (number | undefined)[]): number => counts.reduce<number>((total, n) => total + (n ?? 0), 0);
  const located = [...Object.values(mc.dimms ?? {}), ...Object.values(mc.ranks ?? {})];
  const csrows = Object.values(mc.csrows ?? {});
  const channels = csrows.flatMap((csrow) => Object.values(csrow.channels));
  const ce = located.length > 0 ? sum(located.map((d) => d.ce)) : sum(channels.map((c) => c.ce));
  const ue = located.length > 0 ? sum(located.map((d) => d.ue)) : sum(csrows.map((c) => c.ue));
  put(root, `${dir}/ce_count`, `${mc.ce ?? ce + (mc.ceNoinfo ?? 0)}\n`);
  put(root, `${dir}/ue_count`, `${mc.ue ?? ue + (mc.ueNoinfo ?? 0)}\n`);
  if (mc.ceNoinfo !== undefined) put(root, `${dir}/ce_noinfo_count`, `${mc.ceNoinfo}\n`);
  if (mc.ueNoinfo !== undefined) put(root, `${dir}/ue_noinfo_count`, `${mc.ueNoinfo}\n`);
  // The kernel prints a label with a newline, and an empty one as nothing.
  const label = (text: string | undefined): string => (text === undefined || text === "" ? "" : `${text}\n`);
  for (const [kind, dimms] of [
    ["dimm", mc.dimms],
    ["rank", mc.ranks],
  ] as const) {
    for (const [index, dimm] of Object.entries(dimms ?? {})) {
      const at = `${dir}/${kind}${index}`;
      put(root, `${at}/dimm_label`, label(dimm.label));
      put(root, `${at}/size`, "16384\n");
      if (dimm.ce !== undefined) put(root, `${at}/dimm_ce_count`, `${dimm.ce}\n`);
      if (dimm.ue !== undefined) put(root, `${at}/dimm_ue_count`, `${dimm.ue}\n`);
    }
  }
  for (const [index, csrow] of Object.entries(mc.csrows ?? {})) {
    const at = `${dir}/csrow${index}`;
    put(root, `${at}/ce_count`, `${sum(Object.values(csrow.channels).map((c) => c.ce))}\n`);
    put(root, `${at}/ue_count`, `${csrow.ue ?? 0}\n`);
    for (const [ch, channel] of Object.entries(csrow.channels)) {
      put(root, `${at}/ch${ch}_ce_count`, `${channel.ce}\n`);
      put(root, `${at}/ch${ch}_dimm_label`, label(channel.label));
    }
  }
}
