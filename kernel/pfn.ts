// Page frame numbers, physical addresses and hugepage geometry, as the kernel counts them.
// Numbers stay plain JavaScript numbers: physical addresses are at most 52 bits wide, so
// every pfn and address fits below Number.MAX_SAFE_INTEGER; bit operators would cut at 32 bits.

/** The base page size on every architecture this operator supports (x86_64, arm64 with 4 KiB pages). */
export const PAGE_SIZE_BYTES = 4096;

export type HugepageSize = "2Mi" | "1Gi";

export const HUGEPAGE_SIZES: readonly HugepageSize[] = ["2Mi", "1Gi"];

const PAGES_PER_HUGEPAGE: Readonly<Record<HugepageSize, number>> = { "2Mi": 512, "1Gi": 262_144 };

const HEX = /^(?:0[xX])?([0-9a-fA-F]+)$/;
const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Reads a hex number as the kernel prints it, with or without `0x` (`%#lx`, `%lx`, `%016llx`). */
export function parseHex(text: string, what: string): number {
  const digits = HEX.exec(text)?.[1];
  if (digits === undefined) throw new Error(`${what} '${text}' is not hexadecimal`);
  const value = BigInt(`0x${digits}`);
  if (value > MAX_SAFE) throw new Error(`${what} '${text}' is above Number.MAX_SAFE_INTEGER`);
  return Number(value);
}

/** The largest pfn: physical addresses are at most 52 bits wide (x86_64, arm64), pages 4 KiB. */
export const MAX_PFN = 2 ** 40 - 1;

/** A pfn as the kernel prints it; one beyond the 52-bit physical address space is no pfn any machine has. */
export function parsePfn(text: string, what = "pfn"): number {
  const pfn = parseHex(text, what);
  if (pfn > MAX_PFN) throw new Error(`${what} '${text}' is beyond the 52-bit physical address space`);
  return pfn;
}

function assertIndex(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`${what} ${value} is not a non-negative safe integer`);
}

/** `0x5205`: the kernel's `%#lx` (which, unlike C's, also prints `0x0`). */
export function formatPfn(pfn: number): string {
  assertIndex(pfn, "pfn");
  return `0x${pfn.toString(16)}`;
}

export function pagesPerHugepage(size: HugepageSize): number {
  return PAGES_PER_HUGEPAGE[size];
}

export function hugepageBytes(size: HugepageSize): number {
  return PAGES_PER_HUGEPAGE[size] * PAGE_SIZE_BYTES;
}

/** The first pfn of the hugepage holding `pfn`: hugepages are naturally aligned, so `pfn & ~(n - 1)`. */
export function hugepageHeadPfn(pfn: number, size: HugepageSize): number {
  assertIndex(pfn, "pfn");
  const n = PAGES_PER_HUGEPAGE[size];
  return Math.floor(pfn / n) * n;
}

export function physicalAddressToPfn(address: number): number {
  assertIndex(address, "physical address");
  return Math.floor(address / PAGE_SIZE_BYTES);
}

export function pfnToPhysicalAddress(pfn: number): number {
  assertIndex(pfn, "pfn");
  const address = pfn * PAGE_SIZE_BYTES;
  assertIndex(address, "physical address");
  return address;
}

/** The sysfs directory of a size's pool, under /sys/kernel/mm/hugepages and each NUMA node's hugepages: hugepages-2048kB. */
export function hugepagePoolDir(size: HugepageSize): string {
  return `hugepages-${hugepageBytes(size) / 1024}kB`;
}

/** The hugepage size behind an smaps `KernelPageSize:` value in kB; undefined for base pages and sizes we do not manage. */
export function sizeFromKernelPageSizeKb(kb: number): HugepageSize | undefined {
  return HUGEPAGE_SIZES.find((size) => hugepageBytes(size) === kb * 1024);
}
