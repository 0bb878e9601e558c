// What the host's /proc and /sys say about its memory: hugepage pools, corrupted memory, the
// kernel's memory-failure and EDAC counters (per controller and per DIMM), its memory-failure settings,
// release and boot id.
// Every path sits under the host root, and a file a kernel lacks is simply absent from the result.
import { accessSync, closeSync, constants, existsSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { systemRamRanges, type PhysicalRange } from "../kernel/iomem.ts";
import { HUGEPAGE_SIZES, hugepageHeadPfn, PAGE_SIZE_BYTES, pagesPerHugepage, sizeFromKernelPageSizeKb, type HugepageSize } from "../kernel/pfn.ts";
import type {
  NodeMemoryHealthSpecCapabilities,
  NodeMemoryHealthSpecHugepagePool,
  NodeMemoryHealthSpecMemoryFailureCounter,
  NodeMemoryHealthSpecNumaMemory,
} from "../crds/generated.ts";

/** What EDAC counted on one DIMM (a csrow channel on older drivers), or on no DIMM it could name. */
export interface EdacDimm {
  /** mcN/dimmM or mcN/rankM (kernels 3.6 on), mcN/csrowK/chJ (older drivers), mcN/noinfo (errors EDAC could not attribute). */
  name: string;
  /** dimm_label or chJ_dimm_label, the silkscreen name; left out when empty. */
  label?: string | undefined;
  correctedErrors: number;
  /** Left out where EDAC keeps no count this DIMM's alone (a csrow of several channels). */
  uncorrectedErrors?: number | undefined;
}

/** NodeMemoryHealth spec.dimms holds at most this many (the CRD's maxItems). */
export const MAX_DIMMS = 128;

export interface HostMemory {
  hugepagePools: NodeMemoryHealthSpecHugepagePool[];
  hardwareCorruptedBytes?: number | undefined;
  /** Free memory per NUMA node; a node without a readable meminfo is left out. */
  numaMemory: NodeMemoryHealthSpecNumaMemory[];
  memoryFailureCounters: NodeMemoryHealthSpecMemoryFailureCounter[];
  /** Sum of EDAC ce_count over memory controllers, when EDAC is there. */
  edacCorrected?: number | undefined;
  edacUncorrected?: number | undefined;
  /** EDAC's counters per DIMM, in name order, at most MAX_DIMMS (those with most corrected errors); empty without EDAC. */
  dimms: EdacDimm[];
  capabilities: Pick<
    NodeMemoryHealthSpecCapabilities,
    "earlyKill" | "recovery" | "softOffline" | "enableSoftOffline" | "correctedErrorCollector" | "injection" | "poolResize"
  >;
}

export class HostFiles {
  readonly root: string;

  constructor(root: string) {
    this.root = root;
  }

  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  text(...parts: string[]): string | undefined {
    try {
      return readFileSync(this.path(...parts), "utf8");
    } catch {
      return undefined;
    }
  }

  integer(...parts: string[]): number | undefined {
    const text = this.text(...parts)?.trim();
    return text === undefined || !/^\d+$/.test(text) ? undefined : Number(text);
  }

  entries(...parts: string[]): string[] {
    try {
      return readdirSync(this.path(...parts));
    } catch {
      return [];
    }
  }

  exists(...parts: string[]): boolean {
    return existsSync(this.path(...parts));
  }

  bootID(): string | undefined {
    return this.text("proc/sys/kernel/random/boot_id")?.trim();
  }

  kernelRelease(): string | undefined {
    return this.text("proc/sys/kernel/osrelease")?.trim();
  }

  /** `/proc/sys/vm/<name>` as a boolean; undefined when the kernel lacks it. */
  sysctl(name: string): boolean | undefined {
    const value = this.integer("proc/sys/vm", name);
    return value === undefined ? undefined : value !== 0;
  }

  memory(): HostMemory {
    const corruptedKb = /^HardwareCorrupted:\s+(\d+) kB$/m.exec(this.text("proc/meminfo") ?? "")?.[1];
    return {
      hugepagePools: this.hugepagePools(),
      hardwareCorruptedBytes: corruptedKb === undefined ? undefined : Number(corruptedKb) * 1024,
      numaMemory: this.#numaMemory(),
      memoryFailureCounters: this.#memoryFailureCounters(),
      ...this.#edac(),
      capabilities: {
        earlyKill: this.sysctl("memory_failure_early_kill"),
        recovery: this.sysctl("memory_failure_recovery"),
        softOffline: this.exists("sys/devices/system/memory/soft_offline_page"),
        enableSoftOffline: this.integer("proc/sys/vm", "enable_soft_offline"),
        correctedErrorCollector: this.#debugfsVisible() ? this.exists("sys/kernel/debug/ras/cec") : undefined,
        injection: this.exists("sys/kernel/debug/hwpoison"),
        poolResize: this.#poolsWritable(),
      },
    };
  }

  /** debugfs is mounted where the agent looks: an empty directory is an unmounted mount point. */
  #debugfsVisible(): boolean {
    try {
      return readdirSync(this.path("sys/kernel/debug")).length > 0;
    } catch {
      return false;
    }
  }

  /** Whether this process may write a NUMA node's nr_hugepages (a read-only /sys says EROFS); undefined without pools. */
  #poolsWritable(): boolean | undefined {
    for (const node of this.#numaNodes()) {
      const dir = `sys/devices/system/node/node${node}/hugepages`;
      const pool = this.entries(dir).find((d) => d.startsWith("hugepages-"));
      if (pool === undefined) continue;
      try {
        accessSync(this.path(dir, pool, "nr_hugepages"), constants.W_OK);
        return true;
      } catch {
        return false;
      }
    }
    return undefined;
  }

  /** The physical ranges the kernel manages as memory (/proc/iomem); undefined when they cannot be read. */
  systemRam(): PhysicalRange[] | undefined {
    return systemRamRanges(this.text("proc/iomem") ?? "");
  }

  /** The NUMA node whose memory block holds `pfn`; undefined without NUMA information. */
  numaNodeOfPfn(pfn: number): number | undefined {
    const blockSize = this.text("sys/devices/system/memory/block_size_bytes")?.trim();
    if (blockSize === undefined || !/^[0-9a-fA-F]+$/.test(blockSize)) return undefined;
    const block = Math.floor((pfn * PAGE_SIZE_BYTES) / parseInt(blockSize, 16));
    return this.#numaNodes().find((node) => this.exists(`sys/devices/system/node/node${node}`, `memory${block}`));
  }

  /**
   * The size of the hugetlb page holding `pfn`, from /proc/kpageflags (root only; see hugepageSizeFromPageFlags);
   * undefined when the pfn is in none, or the file cannot be read (absent, EPERM, past its end).
   */
  hugepageSizeOfPfn(pfn: number, poolSizes: readonly HugepageSize[]): HugepageSize | undefined {
    let fd: number;
    try {
      fd = openSync(this.path("proc/kpageflags"), "r");
    } catch {
      return undefined;
    }
    try {
      const word = Buffer.alloc(KPAGEFLAGS_WORD);
      const flagsOf = (at: number): bigint | undefined => {
        if (!Number.isSafeInteger(at) || at < 0) return undefined;
        try {
          // One 64-bit little-endian word per pfn, at pfn * 8; past the last pfn the kernel reads nothing.
          return readSync(fd, word, 0, KPAGEFLAGS_WORD, at * KPAGEFLAGS_WORD) === KPAGEFLAGS_WORD ? word.readBigUInt64LE(0) : undefined;
        } catch {
          return undefined;
        }
      };
      return hugepageSizeFromPageFlags(pfn, poolSizes, flagsOf);
    } finally {
      closeSync(fd);
    }
  }

  /** MemFree of NUMA node `numaNode` in bytes (its sysfs meminfo); undefined when that is not there. */
  numaFreeBytes(numaNode: number): number | undefined {
    return parseNodeMemFree(this.text(`sys/devices/system/node/node${numaNode}/meminfo`) ?? "", numaNode);
  }

  #numaMemory(): NodeMemoryHealthSpecNumaMemory[] {
    const blocks = parseBuddyinfo2MiBlocks(this.text("proc/buddyinfo"));
    return this.#numaNodes().flatMap((numaNode) => {
      const freeBytes = this.numaFreeBytes(numaNode);
      if (freeBytes === undefined) return [];
      // A node buddyinfo lists no zone of has no free memory at all.
      return [{ numaNode, freeBytes, ...(blocks !== undefined && { free2MiBlocks: blocks.get(numaNode) ?? 0 }) }];
    });
  }

  #numaNodes(): number[] {
    return this.entries("sys/devices/system/node")
      .flatMap((name) => /^node(\d+)$/.exec(name)?.[1] ?? [])
      .map(Number)
      .sort((a, b) => a - b);
  }

  /** Every hugepage pool, per NUMA node and size (also read alone, to see which pool an error just shrank). */
  hugepagePools(): NodeMemoryHealthSpecHugepagePool[] {
    const pools: NodeMemoryHealthSpecHugepagePool[] = [];
    const nodes = this.#numaNodes();
    const global = "sys/kernel/mm/hugepages";
    // Only the global directory has resv_hugepages; it is per node only when there is one node.
    const reserved = (dir: string): number | undefined => (nodes.length <= 1 ? this.integer(global, dir, "resv_hugepages") : undefined);
    const read = (base: string, dir: string, size: HugepageSize, numaNode: number): void => {
      const total = this.integer(base, dir, "nr_hugepages");
      const free = this.integer(base, dir, "free_hugepages");
      if (total === undefined || free === undefined) return;
      pools.push({ size, numaNode, total, free, reserved: reserved(dir), surplus: this.integer(base, dir, "surplus_hugepages") });
    };
    const sized = (base: string): [string, HugepageSize][] =>
      this.entries(base).flatMap((dir): [string, HugepageSize][] => {
        const size = sizeFromKernelPageSizeKb(Number(/^hugepages-(\d+)kB$/.exec(dir)?.[1]));
        return size === undefined ? [] : [[dir, size]];
      });
    if (nodes.length === 0) {
      for (const [dir, size] of sized(global)) read(global, dir, size, 0);
      return pools;
    }
    for (const node of nodes) {
      const base = `sys/devices/system/node/node${node}/hugepages`;
      for (const [dir, size] of sized(base)) read(base, dir, size, node);
    }
    return pools;
  }

  #memoryFailureCounters(): NodeMemoryHealthSpecMemoryFailureCounter[] {
    return this.#numaNodes().flatMap((numaNode) => {
      const dir = `sys/devices/system/node/node${numaNode}/memory_failure`;
      if (!this.exists(dir)) return [];
      const at = (name: string): number | undefined => this.integer(dir, name);
      return [{ numaNode, total: at("total"), ignored: at("ignored"), failed: at("failed"), delayed: at("delayed"), recovered: at("recovered") }];
    });
  }

  #edac(): Pick<HostMemory, "edacCorrected" | "edacUncorrected" | "dimms"> {
    const controllers = this.entries(EDAC_MC).filter((name) => /^mc\d+$/.test(name));
    if (controllers.length === 0) return { dimms: [] };
    const sum = (file: string): number => controllers.reduce((total, mc) => total + (this.integer(EDAC_MC, mc, file) ?? 0), 0);
    return {
      edacCorrected: sum("ce_count"),
      edacUncorrected: sum("ue_count"),
      dimms: keepMostCorrected(controllers.flatMap((mc) => this.#edacDimms(mc))),
    };
  }

  /** One controller's DIMMs: the dimm/rank layout where it has counters, else the legacy csrows; then what it could not attribute. */
  #edacDimms(mc: string): EdacDimm[] {
    // Kernels 3.6 on have dimmM (rankM for per-rank drivers); their dimm_ce_count came only later (4.x), so a
    // controller whose dimm directories lack it is read from its csrows, which such kernels still have.
    const modern = this.entries(EDAC_MC, mc)
      .filter((name) => /^(dimm|rank)\d+$/.test(name))
      .flatMap((name): EdacDimm[] => {
        const correctedErrors = this.integer(EDAC_MC, mc, name, "dimm_ce_count");
        if (correctedErrors === undefined) return [];
        const uncorrectedErrors = this.integer(EDAC_MC, mc, name, "dimm_ue_count");
        return [edacDimm(`${mc}/${name}`, this.text(EDAC_MC, mc, name, "dimm_label"), correctedErrors, uncorrectedErrors)];
      });
    const located = modern.length > 0 ? modern : this.#csrowChannels(mc);
    // ce_noinfo_count / ue_noinfo_count: errors the driver could not place on a DIMM, which no entry above holds.
    const ceNoinfo = this.integer(EDAC_MC, mc, "ce_noinfo_count") ?? 0;
    const ueNoinfo = this.integer(EDAC_MC, mc, "ue_noinfo_count") ?? 0;
    if (ceNoinfo === 0 && ueNoinfo === 0) return located;
    return [...located, edacDimm(`${mc}/noinfo`, undefined, ceNoinfo, ueNoinfo)];
  }

  /** Legacy csrowK: one entry per channel with a chJ_ce_count. */
  #csrowChannels(mc: string): EdacDimm[] {
    return this.entries(EDAC_MC, mc)
      .filter((name) => /^csrow\d+$/.test(name))
      .flatMap((csrow) => {
        const channels = this.entries(EDAC_MC, mc, csrow).flatMap((file) => /^ch(\d+)_ce_count$/.exec(file)?.[1] ?? []);
        // The csrow's ue_count names no channel, and each channel is another DIMM: it is a DIMM's own only in a
        // csrow of one channel. Put on channel 0 it would blame one DIMM of a pair for its partner's error.
        const uncorrectedErrors = channels.length === 1 ? this.integer(EDAC_MC, mc, csrow, "ue_count") : undefined;
        return channels.flatMap((ch): EdacDimm[] => {
          const correctedErrors = this.integer(EDAC_MC, mc, csrow, `ch${ch}_ce_count`);
          if (correctedErrors === undefined) return [];
          return [edacDimm(`${mc}/${csrow}/ch${ch}`, this.text(EDAC_MC, mc, csrow, `ch${ch}_dimm_label`), correctedErrors, uncorrectedErrors)];
        });
      });
  }
}

const EDAC_MC = "sys/devices/system/edac/mc";

const KPAGEFLAGS_WORD = 8;

/** Bits of a /proc/kpageflags word (include/uapi/linux/kernel-page-flags.h; Documentation/admin-guide/mm/pagemap.rst). */
export const KPF = { BUDDY: 10, COMPOUND_HEAD: 15, COMPOUND_TAIL: 16, HUGE: 17, HWPOISON: 19, NOPAGE: 20 } as const;

export function hasPageFlag(flags: bigint, bit: number): boolean {
  return ((flags >> BigInt(bit)) & 1n) === 1n;
}

/**
 * The size of the hugetlb page holding `pfn`, decided from kpageflags words (`flagsOf(pfn)`, undefined when
 * unreadable). The kernel (fs/proc/page.c, stable_page_flags) sets KPF_HUGE on every page of a hugetlb folio,
 * free ones in the pool included, KPF_COMPOUND_HEAD on its first page and KPF_COMPOUND_TAIL on all the others.
 * - Not HUGE (a base page, a THP, a free buddy page, or a hugepage already dissolved, say poisoned): undefined.
 * - With one pool size (none known: both sizes are candidates), that size.
 * - Else by shape: hugepages are naturally aligned, so the 2 MiB-aligned pfn is the head of a 2 MiB page and a
 *   tail of a 1 GiB one. A head that is also 1 GiB-aligned may be either: the pfn 512 on is a HUGE tail only
 *   in a 1 GiB page (for a 2 MiB page it is the next page: another head, or no hugetlb page; or past the
 *   end of memory, where no 1 GiB page can reach).
 * Words that contradict each other (the page changed between reads) give undefined.
 */
export function hugepageSizeFromPageFlags(
  pfn: number,
  poolSizes: readonly HugepageSize[],
  flagsOf: (pfn: number) => bigint | undefined,
): HugepageSize | undefined {
  const own = flagsOf(pfn);
  if (own === undefined || !hasPageFlag(own, KPF.HUGE)) return undefined;
  const candidates = poolSizes.length > 0 ? poolSizes : HUGEPAGE_SIZES;
  if (candidates.length === 1) return candidates[0];
  const small = hugepageHeadPfn(pfn, "2Mi");
  const at2Mi = small === pfn ? own : flagsOf(small);
  if (at2Mi === undefined || !hasPageFlag(at2Mi, KPF.HUGE)) return undefined;
  let size: HugepageSize;
  if (hasPageFlag(at2Mi, KPF.COMPOUND_TAIL)) size = "1Gi";
  else if (!hasPageFlag(at2Mi, KPF.COMPOUND_HEAD)) return undefined;
  else if (hugepageHeadPfn(small, "1Gi") !== small) size = "2Mi";
  else {
    const next = flagsOf(small + pagesPerHugepage("2Mi"));
    size = next !== undefined && hasPageFlag(next, KPF.HUGE) && hasPageFlag(next, KPF.COMPOUND_TAIL) ? "1Gi" : "2Mi";
  }
  return candidates.includes(size) ? size : undefined;
}

function edacDimm(name: string, labelText: string | undefined, correctedErrors: number, uncorrectedErrors: number | undefined): EdacDimm {
  const label = labelText?.trim();
  return {
    name,
    ...(label !== undefined && label !== "" && { label }),
    correctedErrors,
    ...(uncorrectedErrors !== undefined && { uncorrectedErrors }),
  };
}

/** Natural order of DIMM names: the digit runs compare as numbers, so mc0/dimm2 comes before mc0/dimm10 and mc2 before mc10. */
export function compareDimmNames(a: string, b: string): number {
  // Split on a capturing group: the odd pieces are the digit runs.
  const as = a.split(/(\d+)/);
  const bs = b.split(/(\d+)/);
  for (let i = 0; i < Math.min(as.length, bs.length); i++) {
    const x = as[i] ?? "";
    const y = bs[i] ?? "";
    if (x === y) continue;
    if (i % 2 === 1 && Number(x) !== Number(y)) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return as.length - bs.length;
}

/** The `max` DIMMs with the most corrected errors (a tie goes to the first by name), in name order. */
export function keepMostCorrected<T extends { name: string; correctedErrors: number }>(dimms: T[], max = MAX_DIMMS): T[] {
  const byName = [...dimms].sort((a, b) => compareDimmNames(a.name, b.name));
  if (byName.length <= max) return byName;
  // Sorting is stable: among equal counts the name order stands.
  const kept = new Set([...byName].sort((a, b) => b.correctedErrors - a.correctedErrors).slice(0, max));
  return byName.filter((dimm) => kept.has(dimm));
}

/** `Node 0 MemFree:   123456 kB` of a NUMA node's sysfs meminfo, in bytes. */
export function parseNodeMemFree(meminfo: string, numaNode: number): number | undefined {
  const kb = new RegExp(`^Node ${numaNode} MemFree:\\s+(\\d+) kB\\s*$`, "m").exec(meminfo)?.[1];
  return kb === undefined ? undefined : Number(kb) * 1024;
}

// A 2 MiB block is a buddy block of this order (4 KiB pages: order 9); every larger block holds 2^(k-9) of them.
const ORDER_2MI = Math.log2((2 * 1024 * 1024) / PAGE_SIZE_BYTES);
const BUDDY_LINE = /^Node (\d+), zone\s+\S+((?:\s+\d+)+)\s*$/;

/**
 * Free naturally aligned 2 MiB pieces per NUMA node from /proc/buddyinfo (`Node N, zone X  c0 c1 ... c10`,
 * one count per order): the sum over orders k >= 9 of count_k * 2^(k-9), over the node's zones.
 * Undefined without the file; lines of another shape are skipped.
 */
export function parseBuddyinfo2MiBlocks(buddyinfo: string | undefined): Map<number, number> | undefined {
  if (buddyinfo === undefined) return undefined;
  const blocks = new Map<number, number>();
  for (const line of buddyinfo.split("\n")) {
    const match = BUDDY_LINE.exec(line);
    if (match === null) continue;
    const node = Number(match[1]);
    const counts = (match[2] ?? "").trim().split(/\s+/).map(Number);
    const pieces = counts.reduce((sum, count, order) => (order >= ORDER_2MI ? sum + count * 2 ** (order - ORDER_2MI) : sum), 0);
    blocks.set(node, (blocks.get(node) ?? 0) + pieces);
  }
  return blocks;
}
