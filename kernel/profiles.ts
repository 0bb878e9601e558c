// Kernel behaviour profiles: what a kernel version does with a memory error on a hugepage.
// linux-6.1 is measured (kernel-facts.md); other ranges are read from mm/memory-failure.c and are
// marked unmeasured; a kernel outside every range gets the conservative profile, marked unverified.

export interface KernelProfile {
  /** Name recorded with every prediction, e.g. linux-6.1. */
  name: string;
  /** Inclusive lower and exclusive upper bound on [major, minor]. */
  from: readonly [number, number];
  until: readonly [number, number];
  /** True only where every behaviour below was observed on a real kernel. */
  measured: boolean;
  /** Early-kill mappers get BUS_MCEERR_AO at the error (si_addr = hugepage base). */
  advisorySignalToEarlyMappers: boolean;
  /** A free hugepage is dissolved: the pool loses one hugepage, memory loses only 4 KiB. */
  dissolvesFreeHugepage: boolean;
  /** A shared hugetlbfs page stays in the pool, poisoned, and is never given back. */
  sharedPageHeldForever: boolean;
  /** Per-NUMA-node memory_failure counters exist in sysfs. */
  memoryFailureCounters: boolean;
}

export const kernelProfiles: readonly KernelProfile[] = [
  {
    name: "linux-6.1",
    from: [6, 1],
    until: [6, 2],
    measured: true,
    advisorySignalToEarlyMappers: true,
    dissolvesFreeHugepage: true,
    sharedPageHeldForever: true,
    memoryFailureCounters: false,
  },
  {
    // Same hugetlb paths as 6.1 plus the counters of commit 44b8f8bf2438; not yet run in the kernel tier.
    name: "linux-6.3+",
    from: [6, 3],
    until: [7, 0],
    measured: false,
    advisorySignalToEarlyMappers: true,
    dissolvesFreeHugepage: true,
    sharedPageHeldForever: true,
    memoryFailureCounters: true,
  },
];

/** Assumes the worst for capacity and nothing of signals: nobody is warned, every hugepage is lost whole. */
export const conservativeProfile: KernelProfile = {
  name: "conservative",
  from: [0, 0],
  until: [0, 0],
  measured: false,
  advisorySignalToEarlyMappers: false,
  dissolvesFreeHugepage: false,
  sharedPageHeldForever: true,
  memoryFailureCounters: false,
};

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
      reason: `kernel ${kernelRelease ?? "unknown"} is outside every measured profile: conservative prediction, unverified`,
    };
  return {
    profile,
    verified: profile.measured,
    reason: profile.measured
      ? `kernel ${kernelRelease ?? ""} matches measured profile ${profile.name}`
      : `kernel ${kernelRelease ?? ""} matches profile ${profile.name}, read from source but not measured: unverified`,
  };
}
