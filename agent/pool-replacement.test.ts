import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent, MemoryErrorEventStatus, MemoryErrorEventStatusPoolReplacement } from "../crds/generated.ts";
import type { HugepageSize } from "../kernel/pfn.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { writeFakeHost, writeFakeProcess } from "./fake-host.ts";
import { HostFiles } from "./host.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { AgentMetrics } from "./metrics.ts";
import { AgentState } from "./state.ts";
import { hostPoolFiles, mapsCover, PoolReplacer, type PoolFiles, type PoolReplacementResult } from "./pool-replacement.ts";

const GiB = 1024 ** 3;
const NAME = "edge-1-0f6c1b1e-5200";

const requested: MemoryErrorEventStatusPoolReplacement = {
  action: "Replace",
  state: "Requested",
  size: "2Mi",
  numaNode: 0,
  maxTotal: 32,
  afterMappersExit: false,
  minFreeBytes: GiB,
};

function event(status: MemoryErrorEventStatus | undefined, nodeName = "edge-1"): MemoryErrorEvent {
  return {
    apiVersion: "mce-operator.io/v1alpha1",
    kind: "MemoryErrorEvent",
    metadata: { name: NAME, uid: "7d0c4a52-1b2e-4f3a-9c8d-0e1f2a3b4c5d" },
    spec: {
      nodeName,
      bootID: "b",
      observedAt: "2026-01-01T00:00:00Z",
      source: "Kmsg",
      pfn: "0x5205",
      severity: "ActionOptional",
      hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
      mappers: [
        { pid: 601, command: "postgres", mapping: "Shared", virtualStart: "0x7f0000000000", virtualEnd: "0x7f0000200000", killPolicy: "Default" },
        { pid: 602, command: "postgres", mapping: "Shared", virtualStart: "0x7f1000000000", virtualEnd: "0x7f1000200000", killPolicy: "Default" },
      ],
    },
    ...(status !== undefined && { status }),
  };
}

/** A host in memory: pool sizes, free memory per NUMA node, processes' mappings, and a kernel that gives a hugepage or not. */
class FakeFiles implements PoolFiles {
  totals = new Map<string, number>([
    ["2Mi/0", 31],
    ["1Gi/0", 1],
  ]);
  free = new Map<number, number>([[0, 4 * GiB]]);
  /** pid → mapped ranges [start, end). */
  maps = new Map<number, [bigint, bigint][]>();
  /** Whether the kernel finds the memory for one more hugepage. */
  kernelGives = true;
  writeError: Error | undefined;
  writes: string[] = [];

  poolFile(size: HugepageSize, numaNode: number): string {
    return `/host/sys/devices/system/node/node${numaNode}/hugepages/hugepages-${size === "2Mi" ? 2048 : 1048576}kB/nr_hugepages`;
  }

  readTotal(size: HugepageSize, numaNode: number): Promise<number> {
    const total = this.totals.get(`${size}/${numaNode}`);
    return total === undefined ? Promise.reject(new Error("ENOENT: no such file or directory")) : Promise.resolve(total);
  }

  writeTotal(size: HugepageSize, numaNode: number, total: number): Promise<void> {
    if (this.writeError !== undefined) return Promise.reject(this.writeError);
    this.writes.push(`${size}/${numaNode}=${total}`);
    if (this.kernelGives) this.totals.set(`${size}/${numaNode}`, total);
    return Promise.resolve();
  }

  readFreeBytes(numaNode: number): Promise<number | undefined> {
    return Promise.resolve(this.free.get(numaNode));
  }

  processMapsCovers(pid: number, address: bigint | undefined): Promise<boolean> {
    const ranges = this.maps.get(pid);
    if (ranges === undefined) return Promise.resolve(false);
    return Promise.resolve(address === undefined || ranges.some(([start, end]) => start <= address && address < end));
  }
}

function setup(stateDir = mkdtempSync(join(tmpdir(), "pool-writes-")), files = new FakeFiles()) {
  const applied: PoolReplacementResult[] = [];
  const api = {
    failApply: false,
    applyPoolReplacementResult: (name: string, result: PoolReplacementResult): Promise<void> => {
      expect(name).toBe(NAME);
      if (api.failApply) return Promise.reject(new Error("apiserver down"));
      applied.push(result);
      return Promise.resolve();
    },
  };
  const clock = new FakeClock();
  const log = memoryLogger();
  const metrics = new AgentMetrics();
  let healthRefreshes = 0;
  const replacer = new PoolReplacer({
    nodeName: "edge-1",
    api,
    files,
    writes: new AgentState({ dir: stateDir, bootID: "b", log }),
    refreshHealth: () => {
      healthRefreshes++;
    },
    clock,
    log,
    metrics,
    recheckMs: 5000,
    retryMs: 1000,
  });
  return { files, api, applied, clock, log, metrics, replacer, stateDir, refreshes: () => healthRefreshes };
}

const file2Mi = "/host/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";

async function counted(metrics: AgentMetrics): Promise<Record<string, number>> {
  const values = (await metrics.poolReplacements.get()).values;
  return Object.fromEntries(values.map((v) => [`${v.labels.size}/${v.labels.outcome}`, v.value]));
}

describe("PoolReplacer", () => {
  it("raises the pool by one and records what the kernel gave, then asks for the health to be published", async () => {
    const { files, applied, replacer, refreshes, log, metrics } = setup();
    expect(await replacer.reconcile(event({ poolReplacement: requested }))).toBe("done");
    expect(files.writes).toEqual(["2Mi/0=32"]);
    expect(applied).toEqual([
      {
        state: "Given",
        before: 31,
        requested: 32,
        after: 32,
        freeBytes: 4 * GiB,
        file: file2Mi,
        at: "2026-01-01T00:00:00.000Z",
        message: "the kernel gave 1 of 1 hugepages-2Mi on NUMA node 0: nr_hugepages 31 → 32",
      },
    ]);
    expect(refreshes()).toBe(1);
    expect(log.entries).toMatchObject([{ level: "info", msg: "pool replacement: the kernel gave a hugepage", memoryErrorEvent: NAME, before: 31, after: 32 }]);
    expect(await counted(metrics)).toEqual({ "2Mi/Given": 1 });
  });

  it("raises one pool for one error at a time: two errors at once give two hugepages, each reported once", async () => {
    const { files } = setup();
    files.totals.set("2Mi/0", 30);
    const results = new Map<string, PoolReplacementResult>();
    const api = { applyPoolReplacementResult: (name: string, result: PoolReplacementResult): Promise<void> => Promise.resolve(void results.set(name, result)) };
    const writes = new AgentState({ dir: mkdtempSync(join(tmpdir(), "pool-writes-")), bootID: "b", log: memoryLogger() });
    const concurrent = new PoolReplacer({
      nodeName: "edge-1",
      api,
      files,
      writes,
      refreshHealth: () => undefined,
      clock: new FakeClock(),
      log: memoryLogger(),
      metrics: new AgentMetrics(),
    });
    const named = (name: string): MemoryErrorEvent => ({ ...event({ poolReplacement: requested }), metadata: { name, uid: name } });
    await Promise.all([concurrent.reconcile(named("a")), concurrent.reconcile(named("b"))]);
    expect(files.writes).toEqual(["2Mi/0=31", "2Mi/0=32"]);
    expect([...results.values()].map((r) => `${String(r.before)}→${String(r.after)}`).sort()).toEqual(["30→31", "31→32"]);
  });

  it("after a kill -9 between the pool write and the status report, reports the hugepage given, never writing twice", async () => {
    const first = setup();
    first.api.failApply = true;
    await expect(first.replacer.reconcile(event({ poolReplacement: { ...requested, maxTotal: 40 } }))).rejects.toThrow("apiserver down");
    expect(first.files.writes).toEqual(["2Mi/0=32"]);
    // A new process on the same state directory and host; the status still shows no result.
    const second = setup(first.stateDir, first.files);
    await second.replacer.reconcile(event({ poolReplacement: { ...requested, maxTotal: 40 } }));
    expect(second.files.writes).toEqual(["2Mi/0=32"]);
    expect(second.applied).toMatchObject([
      { state: "Given", before: 31, requested: 32, after: 32, message: expect.stringContaining("written before the agent restarted") as unknown },
    ]);
    // Once status shows it, the record goes.
    await second.replacer.reconcile(event({ poolReplacement: { ...requested, maxTotal: 40 }, poolReplacementResult: second.applied[0] }));
    expect(new AgentState({ dir: first.stateDir, bootID: "b", log: memoryLogger() }).poolWrite(NAME)).toBeUndefined();
  });

  it("after a kill -9 before the pool write, makes the write", async () => {
    const first = setup();
    first.files.writeError = new Error("killed");
    await first.replacer.reconcile(event({ poolReplacement: requested }));
    first.files.writeError = undefined;
    const second = setup(first.stateDir, first.files);
    await second.replacer.reconcile(event({ poolReplacement: requested }));
    expect(second.files.writes).toEqual(["2Mi/0=32"]);
    expect(second.applied).toMatchObject([{ state: "Given", before: 31, after: 32 }]);
  });

  it("records Refused when the kernel reads back the old size (no contiguous memory)", async () => {
    const { files, applied, replacer, log, metrics } = setup();
    files.kernelGives = false;
    await replacer.reconcile(event({ poolReplacement: { ...requested, size: "1Gi", maxTotal: 2 } }));
    expect(files.writes).toEqual(["1Gi/0=2"]);
    expect(applied).toMatchObject([
      { state: "Refused", before: 1, requested: 2, after: 1, file: "/host/sys/devices/system/node/node0/hugepages/hugepages-1048576kB/nr_hugepages" },
    ]);
    expect(applied[0]?.message).toMatch(
      /^the kernel gave 0 of 1 hugepages-1Gi on NUMA node 0: it found no free contiguous range \(memory fragmented, or a poisoned page in the way\)/,
    );
    expect(log.entries.map((e) => e.level)).toEqual(["warn"]);
    expect(await counted(metrics)).toEqual({ "1Gi/Refused": 1 });
  });

  it("skips, writing nothing, when the pool already holds maxTotal", async () => {
    const { files, applied, replacer, refreshes } = setup();
    files.totals.set("2Mi/0", 32);
    await replacer.reconcile(event({ poolReplacement: requested }));
    expect(files.writes).toEqual([]);
    expect(applied).toMatchObject([
      { state: "Skipped", before: 32, file: file2Mi, message: "the pool of hugepages-2Mi on NUMA node 0 already holds 32, the most allowed (maxTotal 32)" },
    ]);
    expect(refreshes()).toBe(1);
  });

  it("skips when taking the hugepage would leave less free memory than the floor, naming both figures", async () => {
    const { files, applied, replacer, metrics } = setup();
    files.free.set(0, 1.5 * GiB);
    await replacer.reconcile(event({ poolReplacement: { ...requested, size: "1Gi", maxTotal: 2 } }));
    expect(files.writes).toEqual([]);
    expect(applied).toMatchObject([{ state: "Skipped", before: 1, freeBytes: 1.5 * GiB }]);
    expect(applied[0]?.message).toBe(
      "NUMA node 0 has 1536 MiB free (1610612736 bytes); a 1Gi hugepage would leave 512 MiB, below the 1024 MiB that must stay free (minFreeBytes 1073741824)",
    );
    expect(await counted(metrics)).toEqual({ "1Gi/Skipped": 1 });
  });

  it("skips when the floor cannot be checked because the node's free memory is unknown", async () => {
    const { files, applied, replacer } = setup();
    files.free.clear();
    await replacer.reconcile(event({ poolReplacement: requested }));
    expect(files.writes).toEqual([]);
    expect(applied[0]?.message).toMatch(/^cannot read the free memory of NUMA node 0/);
  });

  it("skips with the error when the pool file cannot be written, naming the file", async () => {
    const { files, applied, replacer } = setup();
    files.writeError = Object.assign(new Error(`EROFS: read-only file system, open '${file2Mi}'`), { code: "EROFS" });
    await replacer.reconcile(event({ poolReplacement: requested }));
    expect(applied).toMatchObject([
      { state: "Skipped", before: 31, requested: 32, file: file2Mi, message: `could not write 32 to ${file2Mi}: EROFS: read-only file system` },
    ]);
  });

  it("skips a request that names no pool, and one for a pool this node lacks", async () => {
    const { files, applied, replacer } = setup();
    await replacer.reconcile(event({ poolReplacement: { action: "Replace", state: "Requested" } }));
    await replacer.reconcile({ ...event({ poolReplacement: { ...requested, numaNode: 3 } }), metadata: { name: NAME, uid: "other-object" } });
    expect(files.writes).toEqual([]);
    expect(applied.map((r) => r.message)).toEqual([
      "the request names no size, numaNode, maxTotal",
      `cannot read ${files.poolFile("2Mi", 3)}: ENOENT: no such file or directory`,
    ]);
  });

  it("never acts on another state, another action or another node's event", async () => {
    const { files, applied, replacer } = setup();
    for (const state of ["Planned", "Given", "Refused", "Skipped", "DryRun", undefined] as const) {
      await replacer.reconcile(event({ poolReplacement: { ...requested, state } }));
    }
    await replacer.reconcile(event({ poolReplacement: { ...requested, action: "None" } }));
    await replacer.reconcile(event({ poolReplacement: requested }, "edge-2"));
    await replacer.reconcile(event({}));
    await replacer.reconcile(event(undefined));
    expect([files.writes, applied]).toEqual([[], []]);
  });

  it("never redoes a result already recorded, after a restart either", async () => {
    const { files, applied, replacer } = setup();
    for (const state of ["Given", "Refused", "Skipped"] as const) {
      await replacer.reconcile(event({ poolReplacement: requested, poolReplacementResult: { state, at: "2025-12-31T23:00:00.000Z" } }));
    }
    expect([files.writes, applied]).toEqual([[], []]);
  });

  it("does not write the pool again when recording the result failed, nor for a watch event older than its write", async () => {
    const { files, api, applied, replacer, refreshes } = setup();
    api.failApply = true;
    await expect(replacer.reconcile(event({ poolReplacement: requested }))).rejects.toThrow("apiserver down");
    // The pool changed even though the status write failed: the health goes out anyway.
    expect(refreshes()).toBe(1);
    api.failApply = false;
    await replacer.reconcile(event({ poolReplacement: requested }));
    await replacer.reconcile(event({ poolReplacement: requested }));
    expect(files.writes).toEqual(["2Mi/0=32"]);
    expect(applied.map((r) => r.state)).toEqual(["Given", "Given"]);
    // Once the status shows it, nothing more is written.
    await replacer.reconcile(event({ poolReplacement: requested, poolReplacementResult: applied[0] }));
    await replacer.reconcile(event({ poolReplacement: requested }));
    expect(applied).toHaveLength(2);
    expect(files.writes).toHaveLength(1);
  });

  it("waits while a mapper's process still maps the hugepage's address, and acts once it has exited", async () => {
    const { files, applied, replacer, clock, log } = setup();
    files.maps.set(601, [[0x7f0000000000n, 0x7f0000400000n]]);
    // pid 602 was reused by a process that maps something else there: it does not hold the page.
    files.maps.set(602, [[0x400000n, 0x452000n]]);
    const waiting = event({ poolReplacement: { ...requested, afterMappersExit: true } });
    replacer.offer(waiting);
    await settle();
    expect(files.writes).toEqual([]);
    expect(applied).toEqual([{ state: "Waiting", at: "2026-01-01T00:00:00.000Z", message: "waiting for 1 mapper(s) to exit: pid 601" }]);
    expect(log.entries).toMatchObject([{ level: "info", pids: [601] }]);
    // Still there at the next look: the same Waiting is not written again.
    await clock.advance(5000);
    replacer.offer(waiting);
    await settle();
    expect(applied).toHaveLength(1);
    // The process exits; the next look raises the pool.
    files.maps.delete(601);
    await clock.advance(5000);
    expect(files.writes).toEqual(["2Mi/0=32"]);
    expect(applied.map((r) => r.state)).toEqual(["Waiting", "Given"]);
    // Nothing more to look at.
    await clock.advance(60_000);
    expect(applied).toHaveLength(2);
    replacer.stop();
  });

  it("looks again at once when the event is offered again while it waits", async () => {
    const { files, applied, replacer } = setup();
    files.maps.set(601, [[0x7f0000000000n, 0x7f0000200000n]]);
    files.maps.set(602, [[0x7f1000000000n, 0x7f1000200000n]]);
    const plan = { poolReplacement: { ...requested, afterMappersExit: true } };
    replacer.offer(event(plan));
    await settle();
    expect(applied.map((r) => r.message)).toEqual(["waiting for 2 mapper(s) to exit: pid 601, 602"]);
    files.maps.delete(602);
    // The status now shows the Waiting; one mapper fewer is worth saying.
    replacer.offer(event({ ...plan, poolReplacementResult: applied[0] }));
    await settle();
    expect(applied.map((r) => r.message)).toEqual(["waiting for 2 mapper(s) to exit: pid 601, 602", "waiting for 1 mapper(s) to exit: pid 601"]);
    files.maps.delete(601);
    replacer.offer(event({ ...plan, poolReplacementResult: applied[1] }));
    await settle();
    expect(applied.map((r) => r.state)).toEqual(["Waiting", "Waiting", "Given"]);
    replacer.stop();
  });

  it("after a restart, takes up a Waiting recorded by an earlier agent once the mappers are gone", async () => {
    const { files, applied, replacer } = setup();
    await replacer.reconcile(
      event({
        poolReplacement: { ...requested, afterMappersExit: true },
        poolReplacementResult: { state: "Waiting", message: "waiting for 1 mapper(s) to exit: pid 601" },
      }),
    );
    expect(files.writes).toEqual(["2Mi/0=32"]);
    expect(applied.map((r) => r.state)).toEqual(["Given"]);
  });

  it("stops waiting on an event that was deleted, and stops when the operator withdraws the request", async () => {
    const { files, applied, replacer, clock } = setup();
    files.maps.set(601, [[0x7f0000000000n, 0x7f0000200000n]]);
    const plan = { poolReplacement: { ...requested, afterMappersExit: true } };
    replacer.offer(event(plan));
    await settle();
    replacer.forget(NAME);
    await settle();
    files.maps.clear();
    await clock.advance(10_000);
    expect([files.writes, applied.map((r) => r.state)]).toEqual([[], ["Waiting"]]);

    files.maps.set(601, [[0x7f0000000000n, 0x7f0000200000n]]);
    replacer.offer(event(plan));
    await settle();
    replacer.offer(event({ poolReplacement: { ...plan.poolReplacement, state: "Skipped" } }));
    await settle();
    files.maps.clear();
    await clock.advance(10_000);
    expect(files.writes).toEqual([]);
    replacer.stop();
  });

  it("retries a failed status write with backoff, never writing the pool twice", async () => {
    const { files, api, applied, replacer, clock } = setup();
    api.failApply = true;
    replacer.offer(event({ poolReplacement: requested }));
    await settle();
    await clock.advance(1000);
    // Second failure: the next try is 2 s later.
    await clock.advance(1000);
    api.failApply = false;
    await clock.advance(999);
    expect(applied).toEqual([]);
    await clock.advance(1000);
    expect(applied.map((r) => r.state)).toEqual(["Given"]);
    expect(files.writes).toEqual(["2Mi/0=32"]);
    replacer.stop();
  });
});

describe("hostPoolFiles", () => {
  it("reads and writes the NUMA node's pool file, its free memory, and processes' maps under the host root", async () => {
    const root = mkdtempSync(join(tmpdir(), "pool-"));
    writeFakeHost(root, { pools: [{ size: "2Mi", numaNode: 1, total: 16, free: 16 }], nodeMemFreeKb: { 1: 2 * 1024 * 1024 } });
    writeFakeProcess(join(root, "proc"), {
      pid: 601,
      comm: "postgres",
      cgroup: "0::/\n",
      vmas: [{ start: 0x7f0000000000, size: "2Mi", shared: true, pfns: [0x5200, 0x5400] }],
    });
    const files = hostPoolFiles(new HostFiles(root));
    const file = join(root, "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages");
    expect(files.poolFile("2Mi", 1)).toBe(file);
    expect(await files.readTotal("2Mi", 1)).toBe(16);
    await files.writeTotal("2Mi", 1, 17);
    expect(readFileSync(file, "utf8")).toBe("17\n");
    expect(await files.readTotal("2Mi", 1)).toBe(17);
    await expect(files.readTotal("1Gi", 1)).rejects.toThrow(/ENOENT.*hugepages-1048576kB\/nr_hugepages/);
    writeFileSync(file, "garbage\n");
    await expect(files.readTotal("2Mi", 1)).rejects.toThrow("not a number");
    expect(await files.readFreeBytes(1)).toBe(2 * GiB);
    expect(await files.readFreeBytes(0)).toBeUndefined();
    expect(await files.processMapsCovers(601, 0x7f0000200000n)).toBe(true);
    expect(await files.processMapsCovers(601, 0x7f0000400000n)).toBe(false);
    expect(await files.processMapsCovers(601, undefined)).toBe(true);
    expect(await files.processMapsCovers(999, 0x7f0000200000n)).toBe(false);
  });

  it("finds the mapping that covers an address in a maps text", () => {
    const maps = "00400000-00452000 r-xp 00000000 08:01 1234   /usr/bin/app\n7f0000000000-7f0000400000 rw-s 00000000 00:10 4242  /dev/hugepages/db\n";
    expect(mapsCover(maps, 0x7f00003fffffn)).toBe(true);
    expect(mapsCover(maps, 0x7f0000400000n)).toBe(false);
    expect(mapsCover(maps, 0x400000n)).toBe(true);
    expect(mapsCover("", 0x400000n)).toBe(false);
  });
});
