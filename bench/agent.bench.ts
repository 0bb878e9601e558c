// Benchmark of the node agent: kmsg lines read and parsed per second, the hugetlb index's scan cost
// over 500 synthetic processes, and the idle footprint of the agent (CPU and RSS sampled from /proc for
// a minute), compiled as its image runs it and as `node agent/main.ts`, against a fake host root and
// the local control plane. Saves the figures to bench/results/agent.json. BENCH_IDLE_SECONDS shortens
// the idle sample.
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { ErrorAssembler } from "../agent/assembler.ts";
import { ManualClock } from "../agent/clock.ts";
import { writeFakeHost, writeFakeProcess } from "../agent/fake-host.ts";
import { KmsgSource } from "../agent/kmsg.ts";
import { memoryLogger } from "../agent/log.ts";
import { HugetlbIndex } from "../agent/mappings.ts";
import { startControlPlane, stopControlPlane } from "../test/e2e/cluster/control-plane.ts";
import { toolPath } from "../test/e2e/cluster/tools.ts";

const MiB = 2 ** 20;
const LINES = Number(process.env.BENCH_LINES ?? 200_000);
const PROCESSES = 500;
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 60);

// 1. kmsg: records through the reader and the assembler, 1 in 50 a memory-failure line, as on a busy host.
async function kmsgRate(): Promise<{ lines: number; seconds: number; linesPerSecond: number; errors: number }> {
  const other = "6,{seq},{ts},-;e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx";
  const ours = ["3,{seq},{ts},-;Memory failure: 0x{pfn}: Sending SIGBUS to dpdk:4242 due to hardware memory corruption", "3,{seq},{ts},-;Memory failure: 0x{pfn}: recovery action for huge page: Recovered"];
  const records: Buffer[] = [];
  for (let seq = 1; seq <= LINES; seq++) {
    const template = seq % 50 === 0 ? ours[0] : seq % 50 === 1 && seq > 1 ? ours[1] : other;
    records.push(Buffer.from((template ?? other).replace("{seq}", String(seq)).replace("{ts}", String(seq * 1000)).replace("{pfn}", (0x5000 + Math.floor(seq / 50) * 0x200).toString(16))));
  }
  let next = 0;
  const device = {
    read: (buffer: Buffer): Promise<number> => Promise.resolve(next < records.length ? (records[next++] ?? Buffer.alloc(0)).copy(buffer) : 0),
    close: () => Promise.resolve(),
  };
  const clock = new ManualClock();
  const source = new KmsgSource({ open: () => Promise.resolve(device), clock, log: memoryLogger() });
  const assembler = new ErrorAssembler();
  let errors = 0;
  const start = performance.now();
  for await (const line of source.lines(new AbortController().signal)) errors += assembler.push(line).errors.length;
  const seconds = (performance.now() - start) / 1000;
  return { lines: LINES, seconds: Number(seconds.toFixed(3)), linesPerSecond: Math.round(LINES / seconds), errors };
}

// 2. The index over 500 processes, 50 of them mapping 16 hugepages each.
function indexCost(): { processes: number; hugepages: number; fullScanMs: number; incrementalScanMs: number; oneChangedScanMs: number } {
  const root = mkdtempSync(join(tmpdir(), "bench-proc-"));
  const cgroup = (i: number): string => `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${i.toString(16).padStart(8, "0")}_0000_4000_8000_000000000000.slice/cri-containerd-${i.toString(16).padStart(64, "0")}.scope\n`;
  for (let pid = 1; pid <= PROCESSES; pid++) {
    const maps = pid % 10 === 0 ? [{ start: 0x7f0000000000 + pid * 0x40000000, size: "2Mi" as const, pfns: Array.from({ length: 16 }, (_, i) => (pid * 16 + i) * 512) }] : [];
    writeFakeProcess(root, { pid, comm: `proc-${pid}`, cgroup: cgroup(pid), vmas: maps });
  }
  const index = new HugetlbIndex({ procDir: root, clock: { now: () => performance.now(), sleep: () => Promise.resolve() }, maxSmapsPerRefresh: PROCESSES });
  const full = index.refresh();
  const incremental = index.refresh();
  writeFakeProcess(root, { pid: 7, comm: "proc-7", cgroup: cgroup(7), vmas: [{ start: 0x7e0000000000, size: "2Mi", pfns: [0x900000] }] });
  const oneChanged = index.refresh();
  rmSync(root, { recursive: true, force: true });
  return { processes: full.processes, hugepages: index.hugepages, fullScanMs: Number(full.durationMs.toFixed(2)), incrementalScanMs: Number(incremental.durationMs.toFixed(2)), oneChangedScanMs: Number(oneChanged.durationMs.toFixed(2)) };
}

// 3. The agent process idling: nothing to replay, a fake host root, a real API server. Measured as the
// image runs it (agent/Dockerfile: `node dist/agent/main.js`, compiled by tsconfig.build.json) and as
// the tests and `npm run agent` run it (`node agent/main.ts`, type stripping).
interface Idle {
  entry: string;
  seconds: number;
  cpuPercentOfCore: number;
  rssMiBMax: number;
  rssMiBEnd: number;
}

const COMPILED = "dist/agent/main.js";
const SOURCE = "agent/main.ts";

/** Compiles the agent as the Dockerfile's build stage does; tsc emits even when it reports type errors elsewhere. */
function buildAgent(): void {
  const result = spawnSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { encoding: "utf8" });
  if (result.status !== 0) console.warn(`tsc -p tsconfig.build.json exited ${String(result.status)}; measuring what it emitted\n${result.stdout.slice(0, 2000)}`);
  if (!existsSync(COMPILED)) throw new Error(`${COMPILED} was not emitted`);
}

async function idleFootprint(entries: string[]): Promise<Idle[]> {
  const dir = mkdtempSync(join(tmpdir(), "bench-agent-"));
  const cluster = await startControlPlane(join(dir, "cluster"));
  // Interrupted, the benchmark still takes its cluster down.
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      stopControlPlane(cluster);
      process.exit(130);
    });
  try {
    spawnSync(toolPath("kubectl"), ["--kubeconfig", cluster.kubeconfig, "apply", "--server-side", "-f", "crds/memoryerrorevents.yaml", "-f", "crds/nodememoryhealths.yaml"], { stdio: "ignore" });
    const root = join(dir, "root");
    writeFakeHost(root, { pools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }], earlyKill: false, recovery: true });
    for (let pid = 1; pid <= 50; pid++) writeFakeProcess(join(root, "proc"), { pid, comm: `p${pid}`, cgroup: "0::/system.slice/x.service\n" });
    const replay = join(dir, "empty.replay");
    writeFileSync(replay, "");
    const results: Idle[] = [];
    for (const [i, entry] of entries.entries()) {
      const env = entry === COMPILED ? { ...process.env, NODE_ENV: "production" } : process.env;
      const agent = spawn(process.execPath, [entry, "--node-name", `bench-node-${i}`, "--kubeconfig", cluster.kubeconfig, "--host-root", root, "--state-dir", join(dir, `state-${i}`), "--replay", replay, "--metrics-port", "0", "--log-level", "warn"], { stdio: "inherit", env });
      const pid = agent.pid ?? 0;
      const ticks = (): number => {
        const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
        // utime and stime, fields 14 and 15 of stat, in clock ticks (100 per second on Linux).
        return Number(fields[11]) + Number(fields[12]);
      };
      const rss = (): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
      // Start-up (module loading, the first list and watch) is not idling.
      await new Promise((resolve) => setTimeout(resolve, 5000));
      const startTicks = ticks();
      const start = performance.now();
      let rssMax = 0;
      for (let t = 0; t < IDLE_SECONDS; t++) {
        await new Promise((resolve) => setTimeout(resolve, 1000));
        rssMax = Math.max(rssMax, rss());
      }
      const seconds = (performance.now() - start) / 1000;
      const cpu = (ticks() - startTicks) / 100 / seconds;
      const rssEnd = rss();
      agent.kill("SIGTERM");
      await new Promise((resolve) => agent.once("exit", resolve));
      results.push({ entry, seconds: Number(seconds.toFixed(1)), cpuPercentOfCore: Number((cpu * 100).toFixed(2)), rssMiBMax: Number(rssMax.toFixed(1)), rssMiBEnd: Number(rssEnd.toFixed(1)) });
    }
    return results;
  } finally {
    stopControlPlane(cluster);
    rmSync(dir, { recursive: true, force: true });
  }
}

const kmsg = await kmsgRate();
console.log(`kmsg: ${kmsg.linesPerSecond.toLocaleString("en")} lines/s read, parsed and assembled (${kmsg.lines.toLocaleString("en")} lines, ${kmsg.errors} errors)`);
const index = indexCost();
console.log(`index: ${index.processes} processes, ${index.hugepages} hugepages: full scan ${index.fullScanMs} ms, unchanged ${index.incrementalScanMs} ms, one changed ${index.oneChangedScanMs} ms`);
buildAgent();
const [idle, idleTypeStripped] = await idleFootprint([COMPILED, SOURCE]);
for (const run of [idle, idleTypeStripped]) if (run !== undefined) console.log(`idle agent (node ${run.entry}) over ${run.seconds}s: ${run.cpuPercentOfCore}% of a core, RSS max ${run.rssMiBMax} MiB (aim: under 1% and 64 MiB)`);
// `idle` is the agent as its image runs it.
const result = { date: new Date().toISOString(), node: process.version, cpu: cpus()[0]?.model ?? "unknown", cores: availableParallelism(), kmsg, index, idle, idleTypeStripped, memoryMiB: Number((process.memoryUsage().rss / MiB).toFixed(1)) };
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/agent.json", `${JSON.stringify(result, null, 2)}\n`);
console.log("saved bench/results/agent.json");
