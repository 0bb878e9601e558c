// Benchmark of the node agent: kmsg lines read and parsed per second, the hugetlb index's scan cost
// over 500 synthetic processes, the idle footprint of the agent (CPU and RSS sampled from /proc for
// a minute), compiled as its image runs it and as `node agent/main.ts`, against a fake host root and
// the local control plane, and a storm of corrected errors through the agent as its image runs it
// (agent-storm.ts). Saves the figures to bench/results/agent.json. BENCH_IDLE_SECONDS shortens the idle
// sample; BENCH_STORM_RATE (records a second), BENCH_STORM_SECONDS, BENCH_STORM_SHAPES (dimm,rank) and
// BENCH_STORM_RING_LINES shape the storm; BENCH_AGENT_CASES (throughput,idle,storm) runs some cases only,
// keeping the others' saved figures.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { writeFakeHost, writeFakeProcess } from "../agent/fake-host.ts";
import { indexCost, kmsgRate } from "./agent-throughput.ts";
import { runStorm, STORM_SHAPES, stormTable, type StormResult, type StormSettings } from "./agent-storm.ts";
import { startControlPlane, stopControlPlane, type ClusterState } from "../test/e2e/cluster/control-plane.ts";
import { toolPath } from "../test/e2e/cluster/tools.ts";
import { imageEntrypoint } from "../test/e2e/build.ts";

const MiB = 2 ** 20;
const IDLE_SECONDS = Number(process.env.BENCH_IDLE_SECONDS ?? 60);
const CASES = new Set((process.env.BENCH_AGENT_CASES ?? "throughput,idle,storm").split(","));
// The commit, and `-dirty` when the agent's code differs from it (the figures are of the tree as it is).
const commit = ((): string => {
  const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  const diff = spawnSync("git", ["diff", "--quiet", "HEAD", "--", "agent", "kernel", "crds", "runtime"], { env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" } });
  return diff.status === 0 ? head : `${head}-dirty`;
})();
// 5,000 corrected records a second for a minute (10,020 kmsg lines a second): the fake kmsg offers that
// on this machine's 2 cores. The ring: 1 MiB of kernel log (log_buf_len=1M) at about 80 bytes a line.
const STORM: StormSettings = {
  rate: Number(process.env.BENCH_STORM_RATE ?? 5000),
  seconds: Number(process.env.BENCH_STORM_SECONDS ?? 60),
  quietSeconds: Number(process.env.BENCH_STORM_QUIET_SECONDS ?? 30),
  warmupSeconds: 10,
  ringLines: Number(process.env.BENCH_STORM_RING_LINES ?? Math.floor(MiB / 80)),
  burst: 250,
};
const STORM_SHAPE_NAMES = new Set((process.env.BENCH_STORM_SHAPES ?? STORM_SHAPES.map((s) => s.name).join(",")).split(","));
/** The bench stops an agent past this (the chart's limit is far below: the table says when it was passed). */
const STORM_MAX_RSS_MIB = Number(process.env.BENCH_STORM_MAX_RSS_MIB ?? 3072);

// 3. The agent process idling: nothing to replay, a fake host root, a real API server. Measured as the
// image runs it (agent/Dockerfile's ENTRYPOINT: node's flags and `dist/agent/main.js`, compiled by
// tsconfig.build.json) and as the tests and `npm run agent` run it (`node agent/main.ts`, type stripping).
interface Idle {
  entry: string;
  seconds: number;
  cpuPercentOfCore: number;
  rssMiBMax: number;
  rssMiBEnd: number;
}

const COMPILED = "dist/agent/main.js";
/** The node flags agent/Dockerfile's ENTRYPOINT gives the compiled agent. */
const IMAGE_FLAGS = imageEntrypoint("agent/Dockerfile").slice(1, -1);
const SOURCE = "agent/main.ts";

/** Compiles the agent as the Dockerfile's build stage does; tsc emits even when it reports type errors elsewhere. */
function buildAgent(): void {
  const result = spawnSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { encoding: "utf8" });
  if (result.status !== 0)
    console.warn(`tsc -p tsconfig.build.json exited ${String(result.status)}; measuring what it emitted\n${result.stdout.slice(0, 2000)}`);
  if (!existsSync(COMPILED)) throw new Error(`${COMPILED} was not emitted`);
}

/** Compiles bench/<name>.ts (and what it imports) into `out` as tsconfig.build.json would; returns the .js path. */
function compileBench(name: string, out: string): string {
  const root = process.cwd();
  const config = join(out, "tsconfig.json");
  writeFileSync(
    config,
    JSON.stringify({
      extends: join(root, "tsconfig.build.json"),
      compilerOptions: { outDir: join(out, "dist"), rootDir: root, sourceMap: false, typeRoots: [join(root, "node_modules", "@types")] },
      include: [join(root, "bench", `${name}.ts`)],
      exclude: [],
    }),
  );
  const built = spawnSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", config], { encoding: "utf8" });
  if (built.status !== 0) throw new Error(`compiling bench/${name}.ts failed: ${built.stdout}${built.stderr}`);
  return join(out, "dist", "bench", `${name}.js`);
}

/** The throughput again, compiled and run with the image's node flags: what a node really gets. */
function throughputAsImageRuns(): { kmsg: Awaited<ReturnType<typeof kmsgRate>>; index: ReturnType<typeof indexCost> } {
  const out = mkdtempSync(join(tmpdir(), "bench-throughput-"));
  try {
    const run = spawnSync(process.execPath, [...IMAGE_FLAGS, compileBench("agent-throughput", out)], { encoding: "utf8" });
    if (run.status !== 0) throw new Error(`bench/agent-throughput.js under ${IMAGE_FLAGS.join(" ")} failed: ${run.stderr}`);
    return JSON.parse(run.stdout) as ReturnType<typeof throughputAsImageRuns>;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** A local control plane with the CRDs, for `work`; taken down after it, or when the benchmark is interrupted. */
async function withControlPlane<T>(work: (cluster: ClusterState, dir: string) => Promise<T>): Promise<T> {
  const dir = mkdtempSync(join(tmpdir(), "bench-agent-"));
  const cluster = await startControlPlane(join(dir, "cluster"));
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      stopControlPlane(cluster);
      rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    });
  try {
    spawnSync(
      toolPath("kubectl"),
      ["--kubeconfig", cluster.kubeconfig, "apply", "--server-side", "-f", "crds/memoryerrorevents.yaml", "-f", "crds/nodememoryhealths.yaml"],
      { stdio: "ignore" },
    );
    return await work(cluster, dir);
  } finally {
    stopControlPlane(cluster);
    rmSync(dir, { recursive: true, force: true });
  }
}

async function idleFootprint(cluster: ClusterState, dir: string, entries: string[]): Promise<Idle[]> {
  const root = join(dir, "root");
  writeFakeHost(root, { pools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }], earlyKill: false, recovery: true });
  for (let pid = 1; pid <= 50; pid++) writeFakeProcess(join(root, "proc"), { pid, comm: `p${pid}`, cgroup: "0::/system.slice/x.service\n" });
  const replay = join(dir, "empty.replay");
  writeFileSync(replay, "");
  const results: Idle[] = [];
  for (const [i, entry] of entries.entries()) {
    const env = entry === COMPILED ? { ...process.env, NODE_ENV: "production" } : process.env;
    const agent = spawn(
      process.execPath,
      [
        ...(entry === COMPILED ? IMAGE_FLAGS : []),
        entry,
        "--node-name",
        `bench-node-${i}`,
        "--kubeconfig",
        cluster.kubeconfig,
        "--host-root",
        root,
        "--state-dir",
        join(dir, `state-${i}`),
        "--replay",
        replay,
        "--metrics-port",
        "0",
        "--log-level",
        "warn",
      ],
      { stdio: "inherit", env },
    );
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
    results.push({
      entry: [...(entry === COMPILED ? IMAGE_FLAGS : []), entry].join(" "),
      seconds: Number(seconds.toFixed(1)),
      cpuPercentOfCore: Number((cpu * 100).toFixed(2)),
      rssMiBMax: Number(rssMax.toFixed(1)),
      rssMiBEnd: Number(rssEnd.toFixed(1)),
    });
  }
  return results;
}

/** The storm, each shape in turn, through the agent as its image runs it. */
async function storm(cluster: ClusterState, dir: string): Promise<StormResult[]> {
  const out = mkdtempSync(join(tmpdir(), "bench-storm-"));
  try {
    const hook = compileBench("agent-storm-hook", out);
    const results: StormResult[] = [];
    for (const shape of STORM_SHAPES.filter((s) => STORM_SHAPE_NAMES.has(s.name))) {
      console.log(`storm: ${shape.description}, ${STORM.rate.toLocaleString("en")} corrected records/s for ${STORM.seconds} s ...`);
      results.push(await runStorm({ cluster, dir, hook, command: [...IMAGE_FLAGS, COMPILED], shape, settings: STORM, maxRssMiB: STORM_MAX_RSS_MIB }));
    }
    return results;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

const saved = ((): Record<string, unknown> => {
  try {
    return JSON.parse(readFileSync("bench/results/agent.json", "utf8")) as Record<string, unknown>;
  } catch {
    return {};
  }
})();
const measured: Record<string, unknown> = {};
if (CASES.has("throughput")) {
  const kmsg = await kmsgRate();
  console.log(
    `kmsg: ${kmsg.linesPerSecond.toLocaleString("en")} lines/s read, parsed and assembled (${kmsg.lines.toLocaleString("en")} lines, ${kmsg.errors} errors)`,
  );
  const index = indexCost();
  console.log(
    `index: ${index.processes} processes, ${index.hugepages} hugepages: full scan ${index.fullScanMs} ms, unchanged ${index.incrementalScanMs} ms, one changed ${index.oneChangedScanMs} ms`,
  );
  const asImage = throughputAsImageRuns();
  console.log(
    `with the image's node flags (${IMAGE_FLAGS.join(" ")}): kmsg ${asImage.kmsg.linesPerSecond.toLocaleString("en")} lines/s; index full scan ${asImage.index.fullScanMs} ms, unchanged ${asImage.index.incrementalScanMs} ms`,
  );
  Object.assign(measured, { kmsg, index, imageFlags: { flags: IMAGE_FLAGS, ...asImage } });
}
if (CASES.has("idle") || CASES.has("storm")) {
  buildAgent();
  await withControlPlane(async (cluster, dir) => {
    if (CASES.has("idle")) {
      const [idle, idleTypeStripped] = await idleFootprint(cluster, dir, [COMPILED, SOURCE]);
      for (const run of [idle, idleTypeStripped])
        if (run !== undefined)
          console.log(
            `idle agent (node ${run.entry}) over ${run.seconds}s: ${run.cpuPercentOfCore}% of a core, RSS max ${run.rssMiBMax} MiB (aim: under 1% and 64 MiB)`,
          );
      // `idle` is the agent as its image runs it.
      Object.assign(measured, { idle, idleTypeStripped });
    }
    if (CASES.has("storm")) {
      const results = await storm(cluster, dir);
      console.log(
        `storm of corrected errors, through the agent as its image runs it (node ${[...IMAGE_FLAGS, COMPILED].join(" ")}), ` +
          `${STORM.seconds} s then ${STORM.quietSeconds} s quiet, kmsg ring ${STORM.ringLines.toLocaleString("en")} lines:`,
      );
      console.log(stormTable(results, STORM));
      measured.storm = { entry: [...IMAGE_FLAGS, COMPILED].join(" "), settings: STORM, results };
    }
  });
}
// A run of some cases keeps the others' saved figures (and says which cases it measured).
const result = {
  ...(CASES.size < 3 ? saved : {}),
  date: new Date().toISOString(),
  commit,
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cores: availableParallelism(),
  ...(CASES.size < 3 && { cases: [...CASES] }),
  ...measured,
  memoryMiB: Number((process.memoryUsage().rss / MiB).toFixed(1)),
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/agent.json", `${JSON.stringify(result, null, 2)}\n`);
console.log("saved bench/results/agent.json");
