import fc from "fast-check";
import { describe, expect, it } from "vitest";
import {
  formatPfn,
  HUGEPAGE_SIZES,
  hugepageBytes,
  hugepageHeadPfn,
  PAGE_SIZE_BYTES,
  pagesPerHugepage,
  parseHex,
  pfnToPhysicalAddress,
  physicalAddressToPfn,
  sizeFromKernelPageSizeKb,
} from "./pfn.ts";
import type { HugepageSize } from "./pfn.ts";

const TWO_32 = 2 ** 32;

describe("parseHex", () => {
  it.each([
    ["0x5205", 0x5205],
    ["5205", 0x5205],
    ["0X5205", 0x5205],
    ["0x0", 0],
    ["0000000005203000", 0x5203000],
    ["7f56bd805000", 0x7f56bd805000],
    ["0x100000000", TWO_32],
    ["1fffffffffffff", Number.MAX_SAFE_INTEGER],
  ])("reads %s", (text, value) => {
    expect(parseHex(text, "pfn")).toBe(value);
  });

  it.each(["", "0x", "ZZ", "0xZZ", "-1", " 0x1", "0x1 ", "1.5", "0x-1"])("rejects %j and names what it read", (text) => {
    expect(() => parseHex(text, "pfn")).toThrow(/pfn .* is not hexadecimal/);
  });

  it("rejects values above Number.MAX_SAFE_INTEGER instead of rounding them", () => {
    expect(() => parseHex("20000000000000", "virtual address")).toThrow(/virtual address .*MAX_SAFE_INTEGER/);
    expect(() => parseHex("ffffffffffffffff", "ADDR")).toThrow(/ADDR/);
  });
});

describe("formatPfn", () => {
  it.each([
    [0x5205, "0x5205"],
    [0, "0x0"],
    [0x100005, "0x100005"],
    [0xabcdef, "0xabcdef"],
    [TWO_32 + 1, "0x100000001"],
  ])("formats %d as %s", (pfn, text) => {
    expect(formatPfn(pfn)).toBe(text);
  });

  it.each([-1, 1.5, Number.NaN, 2 ** 53])("refuses %d", (pfn) => {
    expect(() => formatPfn(pfn)).toThrow(RangeError);
  });

  it("round-trips through parseHex", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (pfn) => {
        expect(parseHex(formatPfn(pfn), "pfn")).toBe(pfn);
      }),
    );
  });
});

describe("hugepage geometry", () => {
  it.each<[HugepageSize, number, number]>([
    ["2Mi", 512, 2 * 1024 * 1024],
    ["1Gi", 262_144, 1024 * 1024 * 1024],
  ])("%s: %d base pages, %d bytes", (size, pages, bytes) => {
    expect(pagesPerHugepage(size)).toBe(pages);
    expect(hugepageBytes(size)).toBe(bytes);
    expect(pages * PAGE_SIZE_BYTES).toBe(bytes);
  });

  it.each<[number, HugepageSize, number]>([
    [0x5205, "2Mi", 0x5200],
    [0x5200, "2Mi", 0x5200],
    [0x53ff, "2Mi", 0x5200],
    [0x4600, "2Mi", 0x4600],
    [0x100005, "1Gi", 0x100000],
    [0x13ffff, "1Gi", 0x100000],
    [0x140000, "1Gi", 0x140000],
    [TWO_32 + 513, "2Mi", TWO_32 + 512],
    [TWO_32 * 3 + 0x3ffff, "1Gi", TWO_32 * 3],
    [2 ** 40 + 0x52345, "1Gi", 2 ** 40 + 0x40000],
  ])("head of %d in %s is %d", (pfn, size, head) => {
    expect(hugepageHeadPfn(pfn, size)).toBe(head);
  });

  it("agrees with pfn & ~(n - 1) in 64-bit arithmetic for every pfn", () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), fc.constantFrom(...HUGEPAGE_SIZES), (pfn, size) => {
        const n = BigInt(pagesPerHugepage(size));
        expect(BigInt(hugepageHeadPfn(pfn, size))).toBe(BigInt(pfn) & ~(n - 1n));
      }),
    );
  });

  it("rejects pfns that are not non-negative integers", () => {
    expect(() => hugepageHeadPfn(-512, "2Mi")).toThrow(RangeError);
    expect(() => hugepageHeadPfn(0.5, "2Mi")).toThrow(RangeError);
  });
});

describe("physical addresses", () => {
  it.each([
    [0x5203000, 0x5203],
    [0x5203fff, 0x5203],
    [0, 0],
    [2 ** 52 - 1, 2 ** 40 - 1],
  ])("address %d is in pfn %d", (address, pfn) => {
    expect(physicalAddressToPfn(address)).toBe(pfn);
  });

  it("maps a pfn to the first byte of its page", () => {
    expect(pfnToPhysicalAddress(0x5203)).toBe(0x5203000);
    expect(pfnToPhysicalAddress(TWO_32)).toBe(TWO_32 * 4096);
  });

  it("refuses a pfn whose address would not be a safe integer", () => {
    expect(() => pfnToPhysicalAddress(2 ** 42)).toThrow(RangeError);
  });

  it("round-trips every page-aligned address", () => {
    fc.assert(
      fc.property(fc.nat({ max: 2 ** 40 }), (pfn) => {
        expect(physicalAddressToPfn(pfnToPhysicalAddress(pfn))).toBe(pfn);
      }),
    );
  });
});

describe("sizeFromKernelPageSizeKb", () => {
  it.each<[number, HugepageSize | undefined]>([
    [2048, "2Mi"],
    [1_048_576, "1Gi"],
    [4, undefined],
    [64, undefined],
    [16_384, undefined],
    [0, undefined],
  ])("KernelPageSize: %d kB is %s", (kb, size) => {
    expect(sizeFromKernelPageSizeKb(kb)).toBe(size);
  });
});
