import { describe, expect, it } from "vitest";
import { quarantinesToRelease, type HeldQuarantine } from "./quarantine.ts";

const MiB = 2 ** 20;
const q = (eventName: string, decidedAt: string, replaced = false): HeldQuarantine => ({ eventName, bytes: 2 * MiB, replaced, decidedAt });

describe("quarantinesToRelease", () => {
  it("releases every quarantine when nothing is stale", () => {
    expect(quarantinesToRelease([q("a", "2026-12-01T00:00:00Z"), q("b", "2026-12-01T00:01:00Z")], 0)).toEqual(new Set(["a", "b"]));
  });

  it("releases the replaced page's quarantine and keeps the one that still covers the stale capacity", () => {
    // Two pages lost, one replaced: 2Mi stale, 4Mi held.
    expect(quarantinesToRelease([q("first", "2026-12-01T00:00:00Z"), q("replaced", "2026-12-01T00:01:00Z", true)], 2 * MiB)).toEqual(new Set(["replaced"]));
  });

  it("keeps the oldest when none was replaced, and keeps all while they are not more than the stale capacity", () => {
    const held = [q("new", "2026-12-01T00:02:00Z"), q("old", "2026-12-01T00:00:00Z"), q("mid", "2026-12-01T00:01:00Z")];
    expect(quarantinesToRelease(held, 4 * MiB)).toEqual(new Set(["new"]));
    expect(quarantinesToRelease(held, 6 * MiB)).toEqual(new Set());
    expect(quarantinesToRelease(held, 8 * MiB)).toEqual(new Set());
  });

  it("gives the same answer whatever order the events come in", () => {
    const held = [q("a", "2026-12-01T00:00:00Z", true), q("b", "2026-12-01T00:00:00Z"), q("c", "2026-12-01T00:01:00Z", true)];
    const answer = quarantinesToRelease(held, 2 * MiB);
    expect(answer).toEqual(new Set(["a", "c"]));
    expect(quarantinesToRelease([...held].reverse(), 2 * MiB)).toEqual(answer);
  });
});
