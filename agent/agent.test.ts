// The agent's NodeMemoryHealth publication: free memory per NUMA node in the spec, published on its
// own only when it moved enough, and at once when asked (after a pool replacement).
import { mkdirSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { NodeMemoryHealth } from "../crds/generated.ts";
import { Agent, numaMemoryMoved } from "./agent.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { writeFakeHost } from "./fake-host.ts";
import { HostFiles } from "./host.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { HugetlbIndex } from "./mappings.ts";
import { AgentMetrics } from "./metrics.ts";
import { AgentState } from "./state.ts";

const MiB = 1024 * 1024;

function setup() {
  const root = mkdtempSync(join(tmpdir(), "agent-"));
  const host: Parameters<typeof writeFakeHost>[1] = {
    pools: [{ size: "2Mi", numaNode: 0, total: 31, free: 31 }],
    nodeMemFreeKb: { 0: 4 * 1024 * 1024 },
    buddyinfo: [{ numaNode: 0, zone: "Normal", counts: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 100] }],
  };
  writeFakeHost(root, host);
  mkdirSync(join(root, "proc"), { recursive: true });
  const clock = new FakeClock();
  const applied: NodeMemoryHealth[] = [];
  const agent = new Agent({
    nodeName: "edge-1",
    bootID: "b",
    host: new HostFiles(root),
    state: new AgentState({ dir: mkdtempSync(join(tmpdir(), "agent-state-")), bootID: "b", log: memoryLogger() }),
    index: new HugetlbIndex({ procDir: join(root, "proc"), clock }),
    pods: { pod: () => undefined },
    sink: { create: () => Promise.resolve("created") },
    health: {
      apply: (health) => {
        applied.push(health);
        return Promise.resolve();
      },
    },
    sources: [],
    reading: { kmsg: false, tracefs: false },
    clock,
    log: memoryLogger(),
    metrics: new AgentMetrics(),
    healthIntervalMs: 30_000,
  });
  const rewrite = (change: Partial<typeof host>): void => {
    writeFakeHost(root, { ...host, ...change });
  };
  return { agent, applied, clock, rewrite };
}

describe("Agent NodeMemoryHealth", () => {
  it("publishes free memory per NUMA node, again only when it moved enough, and at once when asked", async () => {
    const { agent, applied, clock, rewrite } = setup();
    const abort = new AbortController();
    const running = agent.run(abort.signal);
    await settle();
    expect(applied).toHaveLength(1);
    expect(applied[0]?.spec.numaMemory).toEqual([{ numaNode: 0, freeBytes: 4096 * MiB, free2MiBlocks: 202 }]);

    // A few MiB more or less is not worth a write.
    rewrite({ nodeMemFreeKb: { 0: 4 * 1024 * 1024 - 8 * 1024 } });
    await clock.advance(30_000);
    expect(applied).toHaveLength(1);

    // Asked for at once (the pool changed): no wait for the timer.
    rewrite({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 32 }], nodeMemFreeKb: { 0: 4 * 1024 * 1024 - 2048 * 2 } });
    agent.refreshHealth();
    await settle();
    expect(applied).toHaveLength(2);
    expect(applied[1]?.spec.hugepagePools?.[0]).toMatchObject({ total: 32 });

    // Half the free memory gone: published at the next check.
    rewrite({ pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 32 }], nodeMemFreeKb: { 0: 2 * 1024 * 1024 } });
    await clock.advance(30_000);
    expect(applied).toHaveLength(3);
    expect(applied[2]?.spec.numaMemory?.[0]?.freeBytes).toBe(2048 * MiB);

    abort.abort();
    await running;
  });

  it("counts free memory as moved by a tenth or 64 MiB, whichever is more, and free 2 MiB blocks by a tenth or one", () => {
    const node = { numaNode: 0, freeBytes: 4096 * MiB, free2MiBlocks: 100 };
    expect(numaMemoryMoved([node], [{ ...node, freeBytes: 3800 * MiB }])).toBe(false);
    expect(numaMemoryMoved([node], [{ ...node, freeBytes: 3600 * MiB }])).toBe(true);
    expect(numaMemoryMoved([{ ...node, freeBytes: 100 * MiB }], [{ ...node, freeBytes: 50 * MiB }])).toBe(false);
    expect(numaMemoryMoved([node], [{ ...node, free2MiBlocks: 95 }])).toBe(false);
    expect(numaMemoryMoved([node], [{ ...node, free2MiBlocks: 89 }])).toBe(true);
    expect(numaMemoryMoved([{ ...node, free2MiBlocks: 0 }], [{ ...node, free2MiBlocks: 1 }])).toBe(true);
    expect(numaMemoryMoved([node], [{ numaNode: 0, freeBytes: node.freeBytes }])).toBe(true);
    expect(numaMemoryMoved([node], [node, { ...node, numaNode: 1 }])).toBe(true);
  });
});
