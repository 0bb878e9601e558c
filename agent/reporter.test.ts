import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import { ApiError } from "../runtime/api.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { AgentMetrics } from "./metrics.ts";
import { Reporter, type EventSink } from "./reporter.ts";
import { AgentState } from "./state.ts";

function event(name: string): { event: MemoryErrorEvent; readAt: number } {
  return {
    event: {
      apiVersion: "mce-operator.io/v1alpha1",
      kind: "MemoryErrorEvent",
      metadata: { name },
      spec: { nodeName: "n", bootID: "b", observedAt: "2026-01-01T00:00:00Z", source: "Kmsg", pfn: "0x1", severity: "ActionOptional" },
    },
    readAt: 0,
  };
}

/** An API server that is down while `down` is set, and remembers what it stored. */
function fakeServer(): EventSink & { down: boolean; stored: string[]; attempts: number; reject?: string } {
  const server = {
    down: false,
    stored: [] as string[],
    attempts: 0,
    reject: undefined as string | undefined,
    create: (e: MemoryErrorEvent): Promise<"created" | "exists"> => {
      server.attempts++;
      if (server.down) return Promise.reject(new Error("connect ECONNREFUSED"));
      if (e.metadata.name === server.reject) return Promise.reject(new ApiError(422, "Invalid", "POST memoryerrorevents: 422 Invalid: invalid"));
      if (server.stored.includes(e.metadata.name)) return Promise.resolve("exists");
      server.stored.push(e.metadata.name);
      return Promise.resolve("created");
    },
  };
  return server;
}

function setup(): {
  state: AgentState;
  server: ReturnType<typeof fakeServer>;
  clock: FakeClock;
  reporter: Reporter;
  metrics: AgentMetrics;
  stop: () => Promise<void>;
} {
  const state = new AgentState({ dir: mkdtempSync(join(tmpdir(), "reporter-")), bootID: "b", log: memoryLogger() });
  const server = fakeServer();
  const clock = new FakeClock();
  const metrics = new AgentMetrics();
  const reporter = new Reporter({ state, sink: server, clock, log: memoryLogger(), metrics, backoff: { initialMs: 100, maxMs: 400 } });
  const abort = new AbortController();
  const running = reporter.run(abort.signal);
  return {
    state,
    server,
    clock,
    reporter,
    metrics,
    stop: async () => {
      abort.abort();
      await running;
    },
  };
}

describe("Reporter", () => {
  it("delivers queued events in order and empties the queue", async () => {
    const { state, server, reporter, stop } = setup();
    state.enqueue([event("a"), event("b")]);
    reporter.notify();
    await settle();
    expect(server.stored).toEqual(["a", "b"]);
    expect(state.queue).toEqual([]);
    await stop();
  });

  it("retries with capped backoff while the server is down, then delivers everything in order", async () => {
    const { state, server, clock, reporter, stop, metrics } = setup();
    server.down = true;
    state.enqueue([event("a")]);
    reporter.notify();
    await settle();
    state.enqueue([event("b")]);
    reporter.notify();
    for (const ms of [100, 200, 400, 400]) await clock.advance(ms);
    expect(server.attempts).toBe(5);
    expect(state.queue).toHaveLength(2);
    server.down = false;
    await clock.advance(400);
    expect(server.stored).toEqual(["a", "b"]);
    expect((await metrics.deliveryFailures.get()).values[0]?.value).toBe(5);
    await stop();
  });

  it("takes 409 as delivered", async () => {
    const { state, server, reporter, stop, metrics } = setup();
    server.stored.push("a");
    state.enqueue([event("a")]);
    reporter.notify();
    await settle();
    expect(state.queue).toEqual([]);
    expect((await metrics.delivered.get()).values).toMatchObject([{ labels: { outcome: "exists" }, value: 1 }]);
    await stop();
  });

  it("drops an event the server rejects as invalid instead of blocking the queue", async () => {
    const { state, server, reporter, stop } = setup();
    server.reject = "bad";
    state.enqueue([event("bad"), event("good")]);
    reporter.notify();
    await settle();
    expect(server.stored).toEqual(["good"]);
    expect(state.queue).toEqual([]);
    await stop();
  });
});
