// The agent's NodeMemoryHealth publication: free memory per NUMA node in the spec, published on its
// own only when it moved enough, and at once when asked (after a pool replacement).
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent, NodeMemoryHealth } from "../crds/generated.ts";
import { Agent, numaMemoryMoved } from "./agent.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { writeFakeHost } from "./fake-host.ts";
import { HostFiles } from "./host.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { HugetlbIndex } from "./mappings.ts";
import { AgentMetrics } from "./metrics.ts";
import { ReplaySource } from "./replay.ts";
import type { LineSource, SourceName } from "./source.ts";
import { AgentState } from "./state.ts";

const MiB = 1024 * 1024;

type KernelSignalCall = [string, number[]];

interface SetupOptions {
  correctedEventsPerMinute?: number;
  correctedEventsPerBoot?: number;
  correctedSource?: SourceName;
  host?: Partial<Parameters<typeof writeFakeHost>[1]>;
  /** The kernel lines the agent reads, given the clock. */
  sources?: (clock: FakeClock) => LineSource[];
  stateDir?: string;
  clock?: FakeClock;
}

function setup(options: SetupOptions = {}) {
  const root = mkdtempSync(join(tmpdir(), "agent-"));
  const host: Parameters<typeof writeFakeHost>[1] = {
    pools: [{ size: "2Mi", numaNode: 0, total: 31, free: 31 }],
    nodeMemFreeKb: { 0: 4 * 1024 * 1024 },
    buddyinfo: [{ numaNode: 0, zone: "Normal", counts: [0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 100] }],
    ...options.host,
  };
  writeFakeHost(root, host);
  mkdirSync(join(root, "proc"), { recursive: true });
  const clock = options.clock ?? new FakeClock();
  const applied: NodeMemoryHealth[] = [];
  const created: MemoryErrorEvent[] = [];
  const kernelSignalCalls: KernelSignalCall[] = [];
  const state = new AgentState({ dir: options.stateDir ?? mkdtempSync(join(tmpdir(), "agent-state-")), bootID: "b", log: memoryLogger() });
  const agent = new Agent({
    nodeName: "edge-1",
    bootID: "b",
    host: new HostFiles(root),
    state,
    index: new HugetlbIndex({ procDir: join(root, "proc"), clock }),
    pods: { pod: () => undefined },
    sink: {
      // As the API server answers: a name made before is 409, which the agent takes as delivered.
      create: (event) => {
        if (created.some((e) => e.metadata.name === event.metadata.name)) return Promise.resolve("exists");
        created.push(event);
        return Promise.resolve("created");
      },
    },
    health: {
      apply: (health) => {
        applied.push(health);
        return Promise.resolve();
      },
    },
    sources: options.sources?.(clock) ?? [],
    kernelSignals: {
      addKernelSignals: (name, signals) => {
        kernelSignalCalls.push([name, signals.map((x) => x.pid)]);
        return Promise.resolve();
      },
    },
    reading: { kmsg: false, tracefs: false },
    clock,
    log: memoryLogger(),
    metrics: new AgentMetrics(),
    healthIntervalMs: 30_000,
    correctedEventsPerMinute: options.correctedEventsPerMinute,
    correctedEventsPerBoot: options.correctedEventsPerBoot,
    correctedSource: options.correctedSource,
  });
  const rewrite = (change: Partial<typeof host>): void => {
    writeFakeHost(root, { ...host, ...change });
  };
  return { agent, applied, created, kernelSignalCalls, state, clock, rewrite };
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

describe("Agent read cursor", () => {
  // /dev/kmsg records: a kill line of 0x3e09 at sequence 2 whose verdict comes two seconds later.
  const kmsg = [
    "6,1,0,-;usb 1-1: new high-speed USB device",
    "3,2,0,-;Memory failure: 0x3e09: Sending SIGBUS to hwp:462 due to hardware memory corruption",
    "6,3,0,-;e1000 0000:00:03.0 eth0: link up",
    "3,4,2000000,-;Memory failure: 0x3e09: recovery action for huge page: Recovered",
  ];

  it("keeps the durable cursor behind an error's first line until the error is queued, so a restart reads it again", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "agent-replay-")), "kmsg.txt");
    writeFileSync(file, kmsg.join("\n"));
    const stateDir = mkdtempSync(join(tmpdir(), "agent-state-"));

    // First run: stopped while the error is open, three lines read.
    const first = setup({ stateDir, sources: (clock) => [new ReplaySource({ file, clock })] });
    const stop = new AbortController();
    const running = first.agent.run(stop.signal);
    await settle();
    expect(first.created).toEqual([]);
    // Line 3 made no event, but line 2 is still open: the cursor stays at 1, not 3.
    expect(first.state.cursor("replay")).toBe(1);
    stop.abort();
    await running;

    // Restarted with what was written: the kill line is read again and its process is on the event.
    const clock = new FakeClock();
    const saved = new AgentState({ dir: stateDir, bootID: "b", log: memoryLogger() }).cursor("replay");
    expect(saved).toBe(1);
    const second = setup({ stateDir, clock, sources: (c) => [new ReplaySource({ file, clock: c, after: saved })] });
    const again = new AbortController();
    const rerun = second.agent.run(again.signal);
    await settle();
    await clock.advance(2000);
    await settle();
    expect(second.created.map((e) => [e.spec.pfn, e.spec.result, e.spec.mappers?.map((m) => [m.command, m.pid, m.signalledByKernel])])).toEqual([
      ["0x3e09", "Recovered", [["hwp", 462, true]]],
    ]);
    // The error is queued and delivered: the cursor moves past its verdict.
    expect(second.state.cursor("replay")).toBe(4);
    again.abort();
    await rerun;
  });
});

describe("Agent machine checks outside memory", () => {
  it("makes no memory error event of a machine check in an MMIO hole, and counts it; one in RAM is an event", async () => {
    const iomem = "00001000-0009fbff : System RAM\n00100000-7ffdffff : System RAM\nb0000000-bfffffff : PCI ECAM 0000 [bus 00-ff]\n";
    const record = (seq: number, address: string): string[] => [
      `2,${seq},0,-;mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0`,
      `2,${seq + 1},0,-;mce: [Hardware Error]: TSC 3ed904d41 ADDR ${address} MISC 8c`,
    ];
    const file = join(mkdtempSync(join(tmpdir(), "agent-replay-")), "kmsg.txt");
    writeFileSync(file, [...record(1, "b0001000"), ...record(3, "5203000")].join("\n"));
    const { agent, created, clock } = setup({ host: { iomem }, sources: (c) => [new ReplaySource({ file, clock: c })] });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    await settle();
    // No verdict follows either record: each becomes an error once old.
    await clock.advance(6000);
    await settle();
    expect(created.map((e) => [e.spec.pfn, e.spec.severity, e.spec.source])).toEqual([["0x5203", "ActionOptional", "MachineCheck"]]);
    stop.abort();
    await running;
  });
});

describe("Agent machine checks logged at boot", () => {
  it("reports a record the kernel found in the banks as it booted as an error from before this boot", async () => {
    const file = join(mkdtempSync(join(tmpdir(), "agent-replay-")), "kmsg.txt");
    writeFileSync(
      file,
      [
        "6,310,1912345,-;mce: [Hardware Error]: Machine check events logged",
        "0,311,1912345,-;mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 9: be00000000800400",
        "0,312,1912345,-;mce: [Hardware Error]: TSC 0 ADDR 5203000 MISC 8c",
        "6,420,2504000,-;Freeing unused kernel image (initmem) memory: 2712K",
        "2,900,912000000,-;mce: [Hardware Error]: CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0",
        "2,901,912000000,-;mce: [Hardware Error]: TSC 3ed904d41 ADDR 6205000 MISC 8c",
      ].join("\n"),
    );
    const { agent, created, clock } = setup({ sources: (c) => [new ReplaySource({ file, clock: c })] });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    await settle();
    // The replay keeps the kernel's timing: the end of the boot comes 0.59 s after the record.
    await clock.advance(1000);
    await clock.advance(5000);
    await clock.advance(912_000);
    await clock.advance(6000);
    await settle();
    expect(created.map((e) => [e.spec.pfn, e.spec.severity, e.spec.loggedAtBoot])).toEqual([
      ["0x5203", "Fatal", true],
      ["0x6205", "ActionOptional", undefined],
    ]);
    stop.abort();
    await running;
  });
});

describe("Agent kill lines after the verdict", () => {
  it("records on the pfn's event the processes the kernel signalled later, with or without a verdict of their own", async () => {
    const lines = [
      "3,1,0,-;Memory failure: 0x5205: recovery action for huge page: Recovered",
      "3,2,0,-;Memory failure: 0x5405: recovery action for huge page: Recovered",
      // 5.x to 6.10: a later access to the poisoned page; no verdict follows.
      "3,3,1000000,-;Memory failure: 0x5205: already hardware poisoned",
      "3,4,1000000,-;Memory failure: 0x5205: Sending SIGBUS to hwp:462 due to hardware memory corruption",
      // 6.11+: such an access ends with a verdict of its own.
      "3,5,2000000,-;Memory failure: 0x5405: Sending SIGBUS to hwp:463 due to hardware memory corruption",
      "3,6,2000000,-;Memory failure: 0x5405: recovery action for already poisoned page: Failed",
    ];
    const file = join(mkdtempSync(join(tmpdir(), "agent-replay-")), "kmsg.txt");
    writeFileSync(file, lines.join("\n"));
    const { agent, created, kernelSignalCalls, clock } = setup({ sources: (c) => [new ReplaySource({ file, clock: c })] });
    const stop = new AbortController();
    const running = agent.run(stop.signal);
    await settle();
    for (let s = 0; s < 8; s++) await clock.advance(1000);
    await settle();
    const [first, second] = created.map((e) => e.metadata.name);
    expect(created.map((e) => [e.spec.pfn, e.spec.pageType])).toEqual([
      ["0x5205", "huge page"],
      ["0x5405", "huge page"],
    ]);
    // 463 at once with its verdict; 462 once its lines expired without one.
    expect(kernelSignalCalls).toEqual([
      [second, [463]],
      [first, [462]],
    ]);
    stop.abort();
    await running;
  });
});

describe("Agent corrected errors", () => {
  const correctedRecord = (seq: number, usec: number, address: string): string[] => [
    `4,${seq},${usec},-;mce: [Hardware Error]: CPU 0: Machine Check: 0 Bank 9: 9c000000000000c0`,
    `4,${seq + 1},${usec},-;mce: [Hardware Error]: TSC 0 ADDR ${address} MISC 8c`,
  ];

  async function replay(lines: string[], options: { correctedEventsPerMinute?: number; correctedEventsPerBoot?: number; advanceMs?: number } = {}) {
    const file = join(mkdtempSync(join(tmpdir(), "agent-replay-")), "kmsg.txt");
    writeFileSync(file, lines.join("\n"));
    const stateDir = mkdtempSync(join(tmpdir(), "agent-state-"));
    const run = setup({
      stateDir,
      correctedEventsPerMinute: options.correctedEventsPerMinute,
      correctedEventsPerBoot: options.correctedEventsPerBoot,
      sources: (c) => [new ReplaySource({ file, clock: c })],
    });
    const stop = new AbortController();
    const running = run.agent.run(stop.signal);
    await settle();
    for (let t = 0; t < (options.advanceMs ?? 20_000); t += 1000) await run.clock.advance(1000);
    await settle();
    run.agent.refreshHealth();
    await settle();
    stop.abort();
    await running;
    return { ...run, stateDir };
  }

  it("makes one event per page, its first error, and counts the rest in NodeMemoryHealth; a collector's soft offline retires the page", async () => {
    const lines = [
      ...correctedRecord(1, 1_000_000, "5203000"),
      ...correctedRecord(3, 2_600_000, "5203000"),
      ...correctedRecord(5, 4_200_000, "5203040"),
      ...correctedRecord(7, 4_200_000, "6205000"),
      "4,9,4300000,-;RAS: Soft-offlining pfn: 0x5203",
      ...correctedRecord(10, 4_300_000, "5203000"),
    ];
    const { created, applied } = await replay(lines);
    expect(created.map((e) => [e.metadata.name, e.spec.severity]).sort()).toEqual([
      ["edge-1-b-5203", "SoftOffline"],
      ["edge-1-b-ce-5203", "Corrected"],
      ["edge-1-b-ce-6205", "Corrected"],
    ]);
    const pages = applied.at(-1)?.spec.correctedErrorPages;
    expect(pages?.map((p) => [p.pfn, p.count, p.softOfflined])).toEqual([
      ["0x5203", 4, true],
      ["0x6205", 1, undefined],
    ]);
    expect(pages?.[0]?.hourly?.reduce((n, h) => n + h.count, 0)).toBe(4);
  });

  it("sends no more corrected-error events a minute than allowed; a page held back gets its event with its next error", async () => {
    const lines = [
      ...correctedRecord(1, 1_000_000, "5203000"),
      ...correctedRecord(3, 1_000_000, "6205000"),
      ...correctedRecord(5, 1_000_000, "7207000"),
      ...correctedRecord(7, 70_000_000, "6205000"),
    ];
    const { created, applied } = await replay(lines, { advanceMs: 90_000, correctedEventsPerMinute: 1 });
    // One page a minute: 0x5203 at once, 0x6205 only with its error a minute later, 0x7207 not yet.
    expect(created.map((e) => e.metadata.name)).toEqual(["edge-1-b-ce-5203", "edge-1-b-ce-6205"]);
    expect(applied.at(-1)?.spec.correctedErrorPages?.map((p) => [p.pfn, p.count])).toEqual([
      ["0x5203", 1],
      ["0x6205", 2],
      ["0x7207", 1],
    ]);
  });

  it("publishes the DIMM EDAC's mc_event names for a page, before its count or after, and never counts the event itself", async () => {
    // trace_pipe lines, replayed at their offset in seconds.
    const mcEvent = (offset: number, label: string, location: string, address: string): string =>
      `${offset}   kworker/0:2-31    [000] .....  ${(offset + 100).toFixed(6)}: mc_event: 1 Corrected error: memory read error on ${label} ` +
      `(mc:1 location:${location} address:0x${address} grain:32 syndrome:0x00000000  area:DRAM err_code:0001:0091 socket:0 ha:0 channel_mask:2 rank:0)`;
    const lines = [
      ...correctedRecord(10, 1_000_000, "5203000"),
      // Before the record is counted (it waits for a verdict first), as EDAC decodes it.
      mcEvent(0.5, "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", "1:0:-1", "5203000"),
      ...correctedRecord(20, 2_000_000, "6205040"),
      // Long after 0x6205 was counted; EDAC could not tell the DIMM, only the slot.
      mcEvent(15, "CPU_SrcID#0_Ha#0_Chan#0_DIMM#0 or CPU_SrcID#0_Ha#0_Chan#1_DIMM#0", "-1:0:-1", "6205040"),
      // No address: no page.
      mcEvent(16, "any memory", "-1:-1:-1", "00000000"),
    ];
    const { created, applied } = await replay(lines);
    expect(created.map((e) => [e.metadata.name, e.spec.severity])).toEqual([
      ["edge-1-b-ce-5203", "Corrected"],
      ["edge-1-b-ce-6205", "Corrected"],
    ]);
    expect(applied.at(-1)?.spec.correctedErrorPages?.map((p) => [p.pfn, p.count, p.dimm])).toEqual([
      ["0x5203", 1, "CPU_SrcID#0_Ha#0_Chan#1_DIMM#0"],
      ["0x6205", 1, "mc1/-1.0"],
    ]);
  });

  it("reports its own soft offline as a SoftOffline error, as the kernel's would be, and retires the page", async () => {
    const stateDir = mkdtempSync(join(tmpdir(), "agent-state-"));
    const run = setup({ stateDir });
    const stop = new AbortController();
    const running = run.agent.run(stop.signal);
    await settle();
    run.agent.softOfflined(0x5203, run.clock.now(), { hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 } });
    await run.clock.advance(1000);
    await settle();
    stop.abort();
    await running;
    expect(run.created.map((e) => [e.metadata.name, e.spec.severity, e.spec.source, e.spec.physicalAddress, e.spec.hugepage?.headPfn])).toEqual([
      ["edge-1-b-5203", "SoftOffline", "Agent", "0x5203000", "0x5200"],
    ]);
    expect(run.applied.at(-1)?.spec.correctedErrorPages?.map((p) => [p.pfn, p.softOfflined])).toEqual([["0x5203", true]]);
  });

  it("counts each record once where kmsg and tracefs both carry it: from the source it was told to count", async () => {
    const lines = (name: "kmsg" | "tracefs", texts: string[]): LineSource => ({
      name,
      lines: async function* () {
        await Promise.resolve();
        for (const text of texts) yield { source: name, text, at: 0 };
      },
    });
    const kmsg = [...correctedRecord(1, 1_000_000, "5203000"), ...correctedRecord(3, 2_000_000, "5203000")];
    const record =
      "mce_record: CPU: 0, MCGc/s: 100010a/0, MC9: 9c000000000000c0, IPID: 0000000000000000, ADDR: 0000000005203000, MISC: 000000000000008c, SYND: 0000000000000000, RIP: 00:<0000000000000000>, TSC: 0, PPIN: 0, vendor: 0, CPUID: 0, time: 0, socket: 0, APIC: 0, microcode: 0";
    const run = setup({ correctedSource: "tracefs", sources: () => [lines("kmsg", kmsg), lines("tracefs", [record, record])] });
    const stop = new AbortController();
    const running = run.agent.run(stop.signal);
    await settle();
    for (let t = 0; t < 8; t++) await run.clock.advance(1000);
    run.agent.refreshHealth();
    await settle();
    stop.abort();
    await running;
    expect(run.created.map((e) => e.metadata.name)).toEqual(["edge-1-b-ce-5203"]);
    expect(run.applied.at(-1)?.spec.correctedErrorPages?.map((p) => [p.pfn, p.count])).toEqual([["0x5203", 2]]);
  });

  it("makes no more corrected-error page events a boot than allowed: the rest are counted", async () => {
    const lines = [0x5203000, 0x6205000, 0x7207000].flatMap((address, i) => correctedRecord(1 + 2 * i, 1_000_000, address.toString(16)));
    const { created, applied } = await replay(lines, { correctedEventsPerBoot: 2 });
    expect(created).toHaveLength(2);
    expect(applied.at(-1)?.spec.correctedErrorPages).toHaveLength(3);
  });

  it("keeps the counts across a restart in the same boot", async () => {
    const { stateDir } = await replay(correctedRecord(1, 1_000_000, "5203000"));
    const again = new AgentState({ dir: stateDir, bootID: "b", log: memoryLogger() });
    expect(again.corrected?.pages.map((p) => [p.pfn, p.count])).toEqual([[0x5203, 1]]);
    expect(new AgentState({ dir: stateDir, bootID: "other", log: memoryLogger() }).corrected).toBeUndefined();
  });
});
