import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { AgentState } from "./state.ts";

function event(name: string, severity: MemoryErrorEvent["spec"]["severity"] = "ActionOptional"): { event: MemoryErrorEvent; readAt: number } {
  return {
    event: {
      apiVersion: "mce-operator.io/v1alpha1",
      kind: "MemoryErrorEvent",
      metadata: { name },
      spec: { nodeName: "n", bootID: "b", observedAt: "2026-01-01T00:00:00Z", source: "Kmsg", pfn: "0x1", severity },
    },
    readAt: 0,
  };
}

const names = (state: AgentState): string[] => state.queue.map((q) => q.event.metadata.name);

describe("AgentState", () => {
  it("keeps queue and cursor across a restart", () => {
    const dir = mkdtempSync(join(tmpdir(), "state-"));
    const state = new AgentState({ dir, bootID: "b1", log: memoryLogger() });
    state.enqueue([event("a"), event("b")], { source: "kmsg", sequence: 10 });
    state.remove("a");
    const again = new AgentState({ dir, bootID: "b1", log: memoryLogger() });
    expect(names(again)).toEqual(["b"]);
    expect(again.cursor("kmsg")).toBe(10);
  });

  it("starts the cursors over on a new boot but keeps undelivered events", () => {
    const dir = mkdtempSync(join(tmpdir(), "state-"));
    new AgentState({ dir, bootID: "b1", log: memoryLogger() }).enqueue([event("a")], { source: "kmsg", sequence: 10 });
    const next = new AgentState({ dir, bootID: "b2", log: memoryLogger() });
    expect(next.cursor("kmsg")).toBeUndefined();
    expect(names(next)).toEqual(["a"]);
  });

  it("writes a cursor-only move on flush", () => {
    const dir = mkdtempSync(join(tmpdir(), "state-"));
    const state = new AgentState({ dir, bootID: "b1", log: memoryLogger() });
    state.advance("replay", 5);
    expect(new AgentState({ dir, bootID: "b1", log: memoryLogger() }).cursor("replay")).toBeUndefined();
    state.flush();
    expect(new AgentState({ dir, bootID: "b1", log: memoryLogger() }).cursor("replay")).toBe(5);
  });

  it("never queues the same event twice", () => {
    const state = new AgentState({ dir: mkdtempSync(join(tmpdir(), "state-")), bootID: "b", log: memoryLogger() });
    state.enqueue([event("a"), event("a")]);
    state.enqueue([event("a")]);
    expect(names(state)).toEqual(["a"]);
  });

  it("when full drops the oldest corrected errors, never an uncorrected one", () => {
    const state = new AgentState({ dir: mkdtempSync(join(tmpdir(), "state-")), bootID: "b", log: memoryLogger(), capacity: 3 });
    expect(state.enqueue([event("c1", "Corrected"), event("u1"), event("c2", "Corrected")])).toEqual([]);
    expect(state.enqueue([event("u2")]).map((e) => e.metadata.name)).toEqual(["c1"]);
    expect(state.enqueue([event("u3")]).map((e) => e.metadata.name)).toEqual(["c2"]);
    expect(state.enqueue([event("c3", "Corrected")]).map((e) => e.metadata.name)).toEqual(["c3"]);
    // Nothing corrected left to drop: an uncorrected error goes over the bound rather than be lost.
    expect(state.enqueue([event("u4")])).toEqual([]);
    expect(names(state)).toEqual(["u1", "u2", "u3", "u4"]);
  });

  it("sets a corrupt file aside and starts empty", () => {
    const dir = mkdtempSync(join(tmpdir(), "state-"));
    writeFileSync(join(dir, "agent-state.json"), "{not json");
    const log = memoryLogger();
    const state = new AgentState({ dir, bootID: "b", log });
    expect(state.queue).toEqual([]);
    expect(readFileSync(join(dir, "agent-state.json.corrupt"), "utf8")).toBe("{not json");
    expect(log.entries[0]?.level).toBe("error");
  });
});
