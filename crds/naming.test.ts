import { describe, expect, it } from "vitest";
import { memoryErrorEventName } from "./naming.ts";

describe("memoryErrorEventName", () => {
  it("is the same for the same error and different for another pfn, boot or node", () => {
    const a = memoryErrorEventName("worker-1", "6f1c1f4e-8a4b-4b1e-9d7a-3c1f0e2b9a11", 0x5205);
    expect(a).toBe("worker-1-6f1c1f4e-5205");
    expect(memoryErrorEventName("worker-1", "6f1c1f4e-8a4b-4b1e-9d7a-3c1f0e2b9a11", 0x5205)).toBe(a);
    expect(
      new Set([
        a,
        memoryErrorEventName("worker-1", "6f1c1f4e-8a4b", 0x5206),
        memoryErrorEventName("worker-1", "7f1c1f4e", 0x5205),
        memoryErrorEventName("worker-2", "6f1c1f4e", 0x5205),
      ]).size,
    ).toBe(4);
  });

  it("gives a page's first corrected error a name of its own, so a later uncorrected error on the page is not taken for it", () => {
    const boot = "6f1c1f4e-8a4b-4b1e-9d7a-3c1f0e2b9a11";
    expect(memoryErrorEventName("worker-1", boot, 0x5205, true)).toBe("worker-1-6f1c1f4e-ce-5205");
    expect(memoryErrorEventName("worker-1", boot, 0x5205, true)).not.toBe(memoryErrorEventName("worker-1", boot, 0x5205));
    const long = "n".repeat(253);
    expect(memoryErrorEventName(long, "b", 0x1, true)).not.toBe(memoryErrorEventName(long, "b", 0x1));
  });

  it("stays a valid DNS subdomain for the longest node names", () => {
    const long = "n".repeat(253);
    const name = memoryErrorEventName(long, "b", 0x1);
    expect(name.length).toBeLessThanOrEqual(253);
    expect(name).not.toBe(memoryErrorEventName(long, "b", 0x2));
  });
});
