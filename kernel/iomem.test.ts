import { describe, expect, it } from "vitest";
import { inRanges, systemRamRanges } from "./iomem.ts";

// A QEMU q35 guest with 4 GiB, as root reads it.
const IOMEM = `00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-7ffdffff : System RAM
  15000000-15e01fff : Kernel code
7ffe0000-7fffffff : Reserved
b0000000-bfffffff : PCI ECAM 0000 [bus 00-ff]
fed00000-fed003ff : HPET 0
100000000-17fffffff : System RAM
`;

describe("System RAM from /proc/iomem", () => {
  it("reads the top-level System RAM ranges", () => {
    expect(systemRamRanges(IOMEM)).toEqual([
      { start: 0x1000, end: 0x9fbff },
      { start: 0x100000, end: 0x7ffdffff },
      { start: 0x100000000, end: 0x17fffffff },
    ]);
  });

  it("tells RAM from an MMIO hole and a reserved range", () => {
    const ram = systemRamRanges(IOMEM) ?? [];
    expect(inRanges(0x5203000, ram)).toBe(true);
    expect(inRanges(0x140005000, ram)).toBe(true);
    expect(inRanges(0xb0001000, ram)).toBe(false); // PCI ECAM
    expect(inRanges(0x7ffe1000, ram)).toBe(false); // reserved
  });

  it("knows nothing from a file read without privilege (every address zero) or empty", () => {
    expect(systemRamRanges("00000000-00000000 : System RAM\n00000000-00000000 : Reserved\n")).toBeUndefined();
    expect(systemRamRanges("")).toBeUndefined();
  });
});
