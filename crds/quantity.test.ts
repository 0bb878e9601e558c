import { describe, expect, it } from "vitest";
import { formatBytes, parseQuantity } from "./quantity.ts";

describe("quantities", () => {
  it.each([
    ["2Mi", 2 ** 21],
    ["1Gi", 2 ** 30],
    ["0", 0],
    ["1024", 1024],
    ["1G", 1e9],
    ["1.5Gi", 1.5 * 2 ** 30],
  ])("parses %s", (text, bytes) => {
    expect(parseQuantity(text)).toBe(bytes);
  });

  it("refuses what is not a quantity", () => {
    expect(() => parseQuantity("lots")).toThrow('"lots" is not a quantity');
  });

  it("formats bytes in the shortest exact binary unit", () => {
    expect([2 ** 21, 2 ** 30, 3 * 2 ** 20, 4096, 1000].map(formatBytes)).toEqual(["2Mi", "1Gi", "3Mi", "4Ki", "1000"]);
  });
});
