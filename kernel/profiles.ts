// Kernel behaviour profiles: one explicit record per kernel line of every behaviour the containment model
// and the agent depend on, each with its evidence: the kernel-tier scenario that measured it on a real
// kernel, or the source (commit, file) it was read from. A kernel release maps to the profile of its
// line; one outside every line gets the conservative profile, and every prediction records which
// profile it used and whether that profile was measured.

/** Where a behaviour comes from: a kernel-tier scenario run on that kernel, or the kernel source read. */
export type Evidence = { measured: string } | { source: string };

export interface KernelBehaviour {
  /**
   * What a mapper with early kill (vm.memory_failure_early_kill=1 or PR_MCE_KILL_EARLY) gets when the
   * error is handled: BUS_MCEERR_AO; or, on kernels that miss a private hugepage's tail pages
   * (6.7 to 6.14 without 442b1eca223b), only the mappers of a shared page; or nothing.
   */
  earlyKillSignal: "AO" | "AOSharedOnly" | "None";
  /** si_addr of that BUS_MCEERR_AO: the hugepage's base, or the poisoned 4 KiB subpage (from 6.7, 376907f3a0b3). */
  earlyKillAddress: "HugepageBase" | "Subpage";
  /** si_addr_lsb of a SIGBUS for a hugepage: the whole hugepage (21, 30) or one 4 KiB page (12). */
  signalAddressLsb: "Hugepage" | "Page";
  /** A free hugepage poisoned: dissolved (the pool loses one, memory 4 KiB) or lost whole. */
  freeHugepage: "Dissolved" | "LostWhole";
  /** A private hugepage in use: out of the pool's total at the error, its memory back when the mapper unmaps. */
  privateHugepage: "RemovedAtError";
  /**
   * A shared hugetlbfs page: held poisoned in the file and the pool for ever, reads of it EIO (from 6.1,
   * 8625147cafaa); or, before, cut out of the file's page cache, its pool slot's fate unknown.
   */
  sharedHugepage: "HeldForever" | "RemovedFromFile";
  /** memory_failure()'s verdict on a 1 GiB hugepage in use; before 6.0 it is left mapped and Ignored. */
  giganticInUseResult: "Failed" | "Recovered" | "Ignored";
  /**
   * What the process calling madvise(MADV_HWPOISON) on its 1 GiB hugepage gets: the call's errno, or
   * BUS_MCEERR_AR during the call (6.11 on: madvise passes MF_ACTION_REQUIRED).
   */
  giganticMadviseHwpoison: "EBUSY" | "SIGBUS";
  /** Soft offline of a hugepage in use: its data moved to another hugepage, the old one leaves the pool. */
  softOfflineInUse: "Migrated";
  /** The words of the kernel's line for a process it signals early ("Killing" before about 5.3). */
  killLine: "Sending SIGBUS" | "Killing";
  /** /sys/devices/system/node/nodeN/memory_failure/ counters exist (6.3 on, 44b8f8bf2438). */
  memoryFailureCounters: boolean;
  /** The vm.enable_soft_offline sysctl exists (6.11 on). */
  softOfflineSysctl: boolean;
}

export interface KernelProfile {
  /** Name recorded with every prediction, e.g. linux-6.1. */
  name: string;
  /** Inclusive lower and exclusive upper bound on [major, minor]. */
  from: readonly [number, number];
  until: readonly [number, number];
  behaviour: KernelBehaviour;
  evidence: { readonly [K in keyof KernelBehaviour]: Evidence };
  /** True only where every behaviour was measured on a real kernel of this line. */
  measured: boolean;
}

type Facts = { readonly [K in keyof KernelBehaviour]: readonly [KernelBehaviour[K], Evidence] };

function profile(name: string, from: readonly [number, number], until: readonly [number, number], facts: Facts): KernelProfile {
  const keys = Object.keys(facts) as (keyof KernelBehaviour)[];
  const behaviour = Object.fromEntries(keys.map((k) => [k, facts[k][0]])) as unknown as KernelBehaviour;
  const evidence = Object.fromEntries(keys.map((k) => [k, facts[k][1]])) as unknown as KernelProfile["evidence"];
  return { name, from, until, behaviour, evidence, measured: keys.every((k) => "measured" in facts[k][1]) };
}

const m = (scenario: string): Evidence => ({ measured: scenario });
const src = (where: string): Evidence => ({ source: where });

// The kernel tier's scenario names (test/e2e/kernel/kernel.test.ts): each measured fact names the one that showed it.
const scenario = {
  earlyKill: "private 2 MiB in use, early_kill=1",
  free: "free 2 MiB hugepage, corrupt-pfn on a tail pfn",
  private: "private 2 MiB in use, early_kill=0, corrupt-pfn on a subpage",
  shared: "shared hugetlbfs, two pods, early_kill=0",
  gigantic: "1 GiB in use, MADV_HWPOISON",
  softOffline: "MADV_SOFT_OFFLINE on an in-use hugepage",
  counters: "the agent's NodeMemoryHealth of every guest",
};

const measuredOnDebian = (overrides: Partial<Facts>): Facts => ({
  earlyKillSignal: ["AO", m(scenario.earlyKill)],
  earlyKillAddress: ["HugepageBase", m(scenario.earlyKill)],
  signalAddressLsb: ["Hugepage", m(scenario.earlyKill)],
  freeHugepage: ["Dissolved", m(scenario.free)],
  privateHugepage: ["RemovedAtError", m(scenario.private)],
  sharedHugepage: ["HeldForever", m(scenario.shared)],
  giganticInUseResult: ["Failed", m(scenario.gigantic)],
  giganticMadviseHwpoison: ["EBUSY", m(scenario.gigantic)],
  softOfflineInUse: ["Migrated", m(scenario.softOffline)],
  killLine: ["Sending SIGBUS", m(scenario.earlyKill)],
  memoryFailureCounters: [false, m(scenario.counters)],
  softOfflineSysctl: [false, m(scenario.counters)],
  ...overrides,
});

// Read from the kernel source (mm/memory-failure.c, mm/madvise.c, fs/hugetlbfs/inode.c) at each line's
// release, not run: the commit that changed a behaviour is named where it could be confirmed.
const v5: Facts = {
  earlyKillSignal: ["AO", src("memory_failure_hugetlb -> hwpoison_user_mappings: collect_procs(hpage), kill_proc")],
  earlyKillAddress: ["HugepageBase", src("collect_procs(hpage): page_address_in_vma of the head page")],
  signalAddressLsb: ["Hugepage", src("kill_proc: page_shift(compound_head(p)); arch/x86/mm/fault.c do_sigbus: hstate_index_to_shift")],
  freeHugepage: ["Dissolved", src("__page_handle_poison -> dissolve_free_huge_page (fails without an unreserved free hugepage)")],
  privateHugepage: ["RemovedAtError", src("me_huge_page: dissolve after try_to_unmap")],
  sharedHugepage: ["RemovedFromFile", src("hugetlbfs_error_remove_page -> remove_huge_page (before 8625147cafaa, v6.1)")],
  giganticInUseResult: ["Ignored", src("memory_failure_hugetlb: huge_page_size > PMD_SIZE -> 'non-pmd-sized huge page: Ignored', -EBUSY")],
  giganticMadviseHwpoison: ["EBUSY", src("madvise_inject_error: MF_COUNT_INCREASED only, no MF_ACTION_REQUIRED")],
  softOfflineInUse: ["Migrated", src("soft_offline_in_use_page: migrate, then page_handle_poison(huge) dissolves the source")],
  killLine: ["Sending SIGBUS", src("kill_proc: 'Sending SIGBUS to %s:%d' (\"mm, memory-failure: clarify error message\", about 5.3)")],
  memoryFailureCounters: [false, src("action_result: no per-node stats before 44b8f8bf2438 (6.3)")],
  softOfflineSysctl: [false, src("no vm.enable_soft_offline before 6.11")],
};

export const kernelProfiles: readonly KernelProfile[] = [
  // RHEL 8's base: upstream 4.18 (RHEL 8 carries backports this profile does not know).
  profile("linux-4.18", [4, 18], [4, 19], {
    ...v5,
    freeHugepage: ["Dissolved", src("memory_failure_hugetlb: dissolve_free_huge_page, logged 'free huge page: Delayed'")],
    killLine: ["Killing", src("kill_proc: 'Killing %s:%d due to hardware memory corruption'")],
  }),
  // RHEL 9's base, and Ubuntu 22.04's.
  profile("linux-5.14", [5, 14], [5, 15], v5),
  profile("linux-5.15", [5, 15], [5, 16], v5),

  profile("linux-6.1", [6, 1], [6, 2], measuredOnDebian({})),
  // Ubuntu 24.04's.
  profile("linux-6.8", [6, 8], [6, 9], {
    ...v5,
    earlyKillSignal: [
      "AOSharedOnly",
      src("376907f3a0b3 (6.7): collect_procs_anon checks page_mapped_in_vma(raw page), which misses a private hugepage's tail pages"),
    ],
    earlyKillAddress: ["Subpage", src("376907f3a0b3 (6.7): the poisoned page's address")],
    sharedHugepage: ["HeldForever", src("8625147cafaa 'hugetlbfs: don't delete error page from pagecache' (6.1)")],
    giganticInUseResult: ["Failed", src("'mm, hwpoison: enable memory error handling on 1GB hugepage' (6.0); Failed as measured on 6.1")],
    memoryFailureCounters: [true, src("44b8f8bf2438 'mm: memory-failure: add memory failure stats to sysfs' (6.3)")],
  }),
  profile(
    "linux-6.12",
    [6, 12],
    [6, 13],
    measuredOnDebian({
      earlyKillAddress: ["Subpage", m(scenario.earlyKill)],
      giganticInUseResult: ["Recovered", m(scenario.gigantic)],
      giganticMadviseHwpoison: ["SIGBUS", m(scenario.gigantic)],
      memoryFailureCounters: [true, m(scenario.counters)],
      softOfflineSysctl: [true, m(scenario.counters)],
    }),
  ),
  // The newest lines, read at 6.19 and 7.0: 442b1eca223b (6.15) makes a private hugepage's tail pages found again.
  profile("linux-6.15+", [6, 15], [7, 1], {
    ...v5,
    earlyKillAddress: ["Subpage", src("__add_to_kill: the poisoned page's address")],
    sharedHugepage: ["HeldForever", src("8625147cafaa (6.1)")],
    giganticInUseResult: ["Recovered", src("handled as a 2 MiB page since 6.0; Recovered as measured on Debian's 6.12, which carries these lines' fixes")],
    giganticMadviseHwpoison: ["SIGBUS", src("madvise_inject_error passes MF_ACTION_REQUIRED (6.11)")],
    memoryFailureCounters: [true, src("44b8f8bf2438 (6.3)")],
    softOfflineSysctl: [true, src("'mm/memory-failure: userspace controls soft-offlining pages' (6.11)")],
  }),
];

/** Assumes the worst for capacity and nothing of signals: nobody is warned, every hugepage is lost whole. */
export const conservativeProfile: KernelProfile = profile("conservative", [0, 0], [0, 0], {
  earlyKillSignal: ["None", src("assumed: nobody is warned")],
  earlyKillAddress: ["HugepageBase", src("assumed")],
  signalAddressLsb: ["Hugepage", src("assumed: the whole hugepage is lost")],
  freeHugepage: ["LostWhole", src("assumed: the whole hugepage is lost")],
  privateHugepage: ["RemovedAtError", src("assumed")],
  sharedHugepage: ["HeldForever", src("assumed: never given back")],
  giganticInUseResult: ["Failed", src("assumed")],
  giganticMadviseHwpoison: ["EBUSY", src("assumed")],
  softOfflineInUse: ["Migrated", src("assumed")],
  killLine: ["Sending SIGBUS", src("assumed; the agent reads both wordings")],
  memoryFailureCounters: [false, src("assumed absent")],
  softOfflineSysctl: [false, src("assumed absent")],
});

/** Parses the major and minor numbers from a kernel release such as 6.1.0-56-amd64. */
export function kernelMajorMinor(release: string): [number, number] | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release.trim());
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

const before = (a: readonly [number, number], b: readonly [number, number]): boolean => a[0] < b[0] || (a[0] === b[0] && a[1] < b[1]);

export interface ProfileChoice {
  profile: KernelProfile;
  /** False when the profile was not measured on a real kernel, or the kernel is outside every profile. */
  verified: boolean;
  reason: string;
}

/** Picks the profile for a kernel release, or the one a policy names explicitly. */
export function selectProfile(kernelRelease: string | undefined, override?: string): ProfileChoice {
  if (override) {
    const named = [...kernelProfiles, conservativeProfile].find((p) => p.name === override);
    if (!named)
      throw new Error(`unknown kernel profile ${JSON.stringify(override)}; known: ${[...kernelProfiles, conservativeProfile].map((p) => p.name).join(", ")}`);
    return { profile: named, verified: named.measured, reason: `profile ${named.name} named by the policy` };
  }
  const version = kernelRelease ? kernelMajorMinor(kernelRelease) : undefined;
  const profile = version && kernelProfiles.find((p) => !before(version, p.from) && before(version, p.until));
  if (!profile)
    return {
      profile: conservativeProfile,
      verified: false,
      reason: `kernel ${kernelRelease ?? "unknown"} is outside every profile: conservative prediction, unverified`,
    };
  return {
    profile,
    verified: profile.measured,
    reason: profile.measured
      ? `kernel ${kernelRelease ?? ""} matches measured profile ${profile.name}`
      : `kernel ${kernelRelease ?? ""} matches profile ${profile.name}, read from source but not measured: unverified`,
  };
}
