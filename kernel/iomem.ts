// /proc/iomem's System RAM: the physical ranges the kernel manages as memory. A machine check whose
// address lies outside them (an MMIO hole, a reserved range) is not an error on a page any process maps.

export interface PhysicalRange {
  start: number;
  /** Inclusive, as /proc/iomem prints it. */
  end: number;
}

/**
 * The top-level `System RAM` ranges of /proc/iomem; undefined when the file shows no usable addresses
 * (read without CAP_SYS_ADMIN, the kernel prints every range as 00000000-00000000).
 */
export function systemRamRanges(iomem: string): PhysicalRange[] | undefined {
  const ranges: PhysicalRange[] = [];
  for (const line of iomem.split("\n")) {
    // Top level only: nested entries are indented (Kernel code, Crash kernel are inside System RAM).
    const m = /^([0-9a-fA-F]+)-([0-9a-fA-F]+) : System RAM$/.exec(line.trimEnd());
    if (m === null) continue;
    ranges.push({ start: parseInt(m[1] ?? "", 16), end: parseInt(m[2] ?? "", 16) });
  }
  if (ranges.length === 0 || ranges.every((r) => r.start === 0 && r.end === 0)) return undefined;
  return ranges;
}

export function inRanges(address: number, ranges: readonly PhysicalRange[]): boolean {
  return ranges.some((r) => address >= r.start && address <= r.end);
}
