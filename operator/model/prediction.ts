// The kernel half of the model: what a real kernel did or will do with a poisoned page, who it signals
// and how the hugepage pool changes, under the kernel profile chosen for the node. Checked against a real
// kernel by the kernel tier (test/e2e/kernel); the policy decision (containment.ts) builds on it.
import type { MemoryErrorEventStatusPrediction } from "../../crds/generated.ts";
import { formatPfn, hugepageBytes, PAGE_SIZE_BYTES } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { alreadyPoisoned } from "../../kernel/assemble.ts";
import { selectProfile } from "../../kernel/profiles.ts";
import type { Mapper, MemoryError, NodeState, PoolEffect, Severity } from "./types.ts";

export interface MapperOutcome {
  pid: number;
  command: string;
  podUID?: string | undefined;
  /** BUS_MCEERR_AO at the error, or nothing. */
  atError: "AO" | "None";
  /** Every mapper gets BUS_MCEERR_AR when it touches any byte of the hugepage. */
  onAccess: "AR" | "None";
  reason: string;
}

export interface KernelPrediction extends MemoryErrorEventStatusPrediction {
  kernelProfile: string;
  verified: boolean;
  poolEffect: PoolEffect;
  lostBytes: number;
  memoryLostBytes: number;
  reason: string;
  /** /proc/meminfo HardwareCorrupted grows by this much (4 KiB per newly poisoned raw page). */
  hardwareCorruptedDelta: number;
  /** si_addr_lsb of the SIGBUS: the whole hugepage is the unit of loss (21 for 2 MiB, 30 for 1 GiB). */
  signalAddressLsb?: number | undefined;
  /** The page-type words the kernel prints for this page. */
  pageType?: string | undefined;
  /** Change to the pool, and when it happens. */
  pool?: { size: HugepageSize; totalDelta: number; freeDelta: number; when: string } | undefined;
  mappers: MapperOutcome[];
}

function mapperOutcome(mapper: Mapper, earlyKill: boolean, warns: boolean, severity: Severity): MapperOutcome {
  const early = mapper.killPolicy === "Early" || (mapper.killPolicy === "Default" && earlyKill);
  const base = { pid: mapper.pid, command: mapper.command, podUID: mapper.podUID || undefined };
  if (severity === "SoftOffline" || severity === "Corrected")
    return { ...base, atError: "None", onAccess: "None", reason: "no data was lost: nobody is signalled" };
  const why = mapper.killPolicy === "Default" ? `vm.memory_failure_early_kill=${earlyKill ? 1 : 0}` : `PR_MCE_KILL_${mapper.killPolicy.toUpperCase()}`;
  const atError = early && warns ? "AO" : "None";
  const reason =
    atError === "AO"
      ? `${why}: BUS_MCEERR_AO at the error, then BUS_MCEERR_AR on any access`
      : early
        ? `${why}, but this kernel profile does not promise BUS_MCEERR_AO: BUS_MCEERR_AR on first access`
        : `${why}: no signal until it touches the hugepage, then BUS_MCEERR_AR`;
  return { ...base, atError, onAccess: "AR", reason };
}

/** What the kernel did or will do with the page, under the node's kernel profile. */
export function predictKernelOutcome(error: MemoryError, node: NodeState, profileOverride?: string): KernelPrediction {
  const choice = selectProfile(node.kernelRelease, profileOverride);
  const { profile } = choice;
  const poisons = error.severity !== "Corrected";
  const base = { kernelProfile: profile.name, verified: choice.verified, hardwareCorruptedDelta: poisons ? PAGE_SIZE_BYTES : 0 };
  const { earlyKillSignal } = profile.behaviour;
  // A kernel that misses a private hugepage's tail pages warns only the mappers of a shared one.
  const warns = (m: Mapper): boolean => earlyKillSignal === "AO" || (earlyKillSignal === "AOSharedOnly" && m.mapping === "Shared");
  const mappers = error.mappers.map((m) => mapperOutcome(m, node.earlyKill, warns(m), error.severity));
  const page = error.hugepage;
  const pfn = formatPfn(error.pfn);
  /** Nothing taken from the pool or the memory, and nothing newly poisoned. */
  const nothingLost = (reason: string, extra: Partial<KernelPrediction> = {}): KernelPrediction => ({
    ...base,
    hardwareCorruptedDelta: 0,
    poolEffect: "None",
    lostBytes: 0,
    memoryLostBytes: 0,
    mappers,
    reason,
    ...extra,
  });
  if (error.severity === "Corrected") return nothingLost(`corrected error at ${pfn}: no data lost, nothing poisoned`);
  // Without a verdict of this boot's kernel, the page of an error from before the boot is in service again.
  if (error.loggedAtBoot === true && error.result === undefined)
    return nothingLost(
      `machine check at ${pfn} logged as this boot began: the error happened before it (the banks kept it across the reset); this boot's kernel poisoned nothing, and the page may fail again`,
    );
  if (error.severity === "SoftOffline" && error.result === "Failed")
    return nothingLost(
      `soft offline of ${pfn} did not happen${error.pageType === undefined ? "" : ` (${error.pageType})`}: nothing was retired, the page stays in use`,
      { kernelResult: "Failed" },
    );
  if (!page)
    return {
      ...base,
      poolEffect: "NotHugepage",
      lostBytes: 0,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      reason: `${pfn} is not in a hugepage (${error.pageType ?? "page type unknown"}): the kernel contains it at 4 KiB`,
    };
  const size = page.size;
  const bytes = hugepageBytes(size);
  const where = `${size} hugepage ${formatPfn(page.headPfn)}`;
  if (alreadyPoisoned(error.pageType) || node.poisonedHugepages.some((p) => p.headPfn === page.headPfn && p.size === size))
    return nothingLost(`${where} was already poisoned: nothing new is lost`, { pageType: error.pageType });
  if (error.severity === "SoftOffline") {
    // Measured on 6.1 and 6.12: a free hugepage is dissolved; one in use is copied to a free hugepage of
    // its pool, or, with none free on its NUMA node, to one the kernel allocates from free memory, which
    // then joins the pool in the old one's place.
    // Only a pool known to have no free hugepage says the copy came from free memory.
    const pool = node.pools.filter((p) => p.size === size && (page.numaNode === undefined || p.numaNode === page.numaNode));
    const noneFree = pool.length > 0 && pool.every((p) => p.free === 0);
    const kept = error.poolTotalDelta !== undefined ? error.poolTotalDelta === 0 : error.mappers.length > 0 && noneFree;
    if (kept)
      return {
        ...base,
        poolEffect: "Migrated",
        lostBytes: 0,
        memoryLostBytes: PAGE_SIZE_BYTES,
        mappers,
        pool: { size, totalDelta: 0, freeDelta: 0, when: "now" },
        reason: `soft offline of ${where}: no free hugepage in its pool, so the kernel copied it to one it allocated from free memory; the pool keeps its size; nobody is signalled`,
      };
    return {
      ...base,
      poolEffect: "Migrated",
      lostBytes: bytes,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      // In use, the copy is taken from the free pool and the old page dissolved once freed: free -1 either way.
      pool: { size, totalDelta: -1, freeDelta: -1, when: "now" },
      reason: `soft offline of ${where}: data moved to a new hugepage, the old one leaves the pool; nobody is signalled`,
    };
  }
  const free = error.pageType === "free huge page" || (error.pageType === undefined && error.mappers.length === 0);
  if (free) {
    if (profile.behaviour.freeHugepage !== "Dissolved")
      return {
        ...base,
        poolEffect: "Unknown",
        lostBytes: bytes,
        memoryLostBytes: bytes,
        mappers,
        pageType: "free huge page",
        kernelResult: "Recovered",
        reason: `free ${where}: assuming the whole hugepage is lost (${choice.reason})`,
      };
    return {
      ...base,
      poolEffect: "Dissolved",
      lostBytes: bytes,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      pageType: "free huge page",
      kernelResult: "Recovered",
      pool: { size, totalDelta: -1, freeDelta: -1, when: "now" },
      reason: `free ${where} is dissolved: the pool loses one hugepage, memory loses only 4 KiB`,
    };
  }
  const shared = error.mappers.some((m) => m.mapping === "Shared");
  const signalAddressLsb = profile.behaviour.signalAddressLsb === "Hugepage" ? Math.log2(bytes) : 12;
  const kernelResult = size === "1Gi" ? profile.behaviour.giganticInUseResult : "Recovered";
  const signalled = mappers.filter((m) => m.atError === "AO").length;
  const who = `${error.mappers.length} mapper(s), ${signalled} warned with BUS_MCEERR_AO; all get BUS_MCEERR_AR on access`;
  // What the pool does with the page is not known on this kernel: the whole hugepage is assumed lost.
  const lostWhole = (pageType: string, reason: string): KernelPrediction => ({
    ...base,
    poolEffect: "Unknown",
    lostBytes: bytes,
    memoryLostBytes: bytes,
    mappers,
    pageType,
    kernelResult,
    signalAddressLsb,
    reason,
  });
  // Before 6.0 a 1 GiB page in use is left mapped and Ignored: nothing is taken from the pool, and the
  // mappers meet the error as a machine check when they touch it.
  if (kernelResult === "Ignored")
    return lostWhole(
      "non-pmd-sized huge page",
      `in-use ${where}: this kernel ignores errors on 1 GiB pages (${choice.reason}); assuming the whole page is lost; ${who}`,
    );
  // Before 6.1 the kernel cut a poisoned page out of its hugetlbfs file; what became of its pool slot is not known.
  if (shared && profile.behaviour.sharedHugepage === "RemovedFromFile")
    return lostWhole(
      "huge page",
      `shared hugetlbfs ${where}: cut out of the file (later reads see a hole); assuming the whole page is lost (${choice.reason}); ${who}`,
    );
  if (shared)
    return {
      ...base,
      poolEffect: "HeldForever",
      lostBytes: bytes,
      memoryLostBytes: bytes,
      mappers,
      pageType: "huge page",
      kernelResult,
      signalAddressLsb,
      pool: { size, totalDelta: 0, freeDelta: -1, when: "for ever: never given back, even after munmap and unlink" },
      reason: `shared hugetlbfs ${where}: lost to every mapper and the file (reads return EIO); ${who}`,
    };
  return {
    ...base,
    poolEffect: "ReleasedOnUnmap",
    lostBytes: bytes,
    // Once the last mapper unmaps it, all but the poisoned 4 KiB return to free memory.
    memoryLostBytes: PAGE_SIZE_BYTES,
    mappers,
    pageType: "huge page",
    kernelResult,
    signalAddressLsb,
    // Measured on 6.1: nr_hugepages drops at the error; free, against the pool before the mapper took the
    // page, is one short once the mapper is gone.
    pool: { size, totalDelta: -1, freeDelta: -1, when: "the total at once; the mapper keeps its mapping until it exits" },
    reason:
      (size === "1Gi" ? `in-use ${where}: the kernel reports ${kernelResult}; ` : `private ${where}: `) +
      `lost to its mapper and taken out of the pool; ${who}`,
  };
}

/** A poisoned hugepage nr_hugepages still counts: a shared hugetlbfs page for ever (or, not knowing, any). */
export function countedInPool(effect: PoolEffect): boolean {
  return effect === "HeldForever" || effect === "Unknown";
}

/**
 * Hugepage bytes the kubelet advertises beyond what the pools can really give: their total after
 * `totalDelta`, less `poisonedInPool` pages nr_hugepages still counts. Nothing where it advertises none.

/** Software unpoison (a test facility) clears the poison mark only: a dissolved hugepage does not come back. */
export function predictUnpoison(): { hardwareCorruptedDelta: number; poolTotalDelta: number } {
  return { hardwareCorruptedDelta: -PAGE_SIZE_BYTES, poolTotalDelta: 0 };
}
