// The storm case of agent.bench.ts (issue 14): a storm of corrected machine-check records from one failing
// DIMM, fed to the real agent as its image runs it (dist/agent/main.js, node's flags from agent/Dockerfile,
// composed by main.ts against a fake host root and the local control plane). agent-storm-hook.ts, loaded
// into the agent with --import, stands in for /dev/kmsg, counts the state file's writes and samples the
// process; this side counts the API's writes (the API server's own apiserver_request_total for the
// mce-operator.io group, before and after), the events left in the cluster, the agent's log and its own
// metrics. Two shapes: one DIMM hammering a few pages, and errors spread over many pages (a failing rank).
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { writeFakeHost, writeFakeProcess } from "../agent/fake-host.ts";
import { group, nodeLabel } from "../crds/naming.ts";
import type { ClusterState } from "../test/e2e/cluster/control-plane.ts";
import { toolPath } from "../test/e2e/cluster/tools.ts";

/**
 * The agent's command line as its image runs it (`command`: node's flags and the entry point), with `hook`
 * loaded before it, against a fake host root and the local control plane.
 */
export function hookedAgentArgs(
  command: readonly string[],
  hook: string,
  agent: { nodeName: string; kubeconfig: string; root: string; stateDir: string; metricsPort: number },
): string[] {
  return [
    ...command.slice(0, -1),
    "--import",
    pathToFileURL(hook).href,
    ...command.slice(-1),
    ...["--node-name", agent.nodeName, "--kubeconfig", agent.kubeconfig, "--host-root", agent.root],
    ...["--state-dir", agent.stateDir, "--metrics-port", String(agent.metricsPort)],
  ];
}

/** 50 processes in the fake host's /proc; pid 10 maps 16 hugepages of 2 MiB from `pfnBase` on. */
export function writeFakeProcesses(root: string, pfnBase: number): void {
  for (let pid = 1; pid <= 50; pid++)
    writeFakeProcess(join(root, "proc"), {
      pid,
      comm: `p${pid}`,
      cgroup: "0::/system.slice/x.service\n",
      ...(pid === 10 && { vmas: [{ start: 0x7f0000000000, size: "2Mi" as const, pfns: Array.from({ length: 16 }, (_, i) => pfnBase + i * 512) }] }),
    });
}

export interface StormShape {
  name: string;
  description: string;
  /** Distinct pages the records name, visited in a scattered order. */
  pages: number;
}

export const STORM_SHAPES: StormShape[] = [
  { name: "dimm", description: "one failing DIMM, 8 pages", pages: 8 },
  { name: "rank", description: "a failing rank, 100,000 pages", pages: 100_000 },
];

export interface StormSettings {
  /** Corrected machine-check records a second (each two kmsg lines). */
  rate: number;
  seconds: number;
  /** After the storm: the agent catches up, publishes its health, settles. */
  quietSeconds: number;
  /** Before it: start-up, the first lists and watches. */
  warmupSeconds: number;
  /** Lines the kernel's ring holds; a reader further behind loses the oldest (EPIPE). */
  ringLines: number;
  /** Records a second "Machine check events logged" line announces. */
  burst: number;
}

/** 5 GiB in: inside the fake host's System RAM, hugepage-aligned. */
const PFN_BASE = 0x140000;
/** /proc/iomem of the fake host: System RAM up to 18 GiB (bench/peer.ts's fake host has it too). */
export const IOMEM = ["00001000-0009ffff : System RAM", "00100000-7fffffff : System RAM", "100000000-47fffffff : System RAM", ""].join("\n");
const MiB = 2 ** 20;
/** charts/mce-operator/values.yaml, agent.resources.limits.memory: past it the kubelet kills the agent. */
export const AGENT_MEMORY_LIMIT_MIB = 256;

interface Sample {
  t: number;
  rssMiB: number;
  heapMiB: number;
  cpuSeconds: number;
}

/** What agent-storm-hook.ts writes at the agent's exit. */
interface HookResult {
  records: number;
  lines: number;
  reads: number;
  linesRead: number;
  recordsRead: number;
  recordsReadByStormEnd?: number;
  recordsLostByStormEnd: number;
  recordsLost: number;
  linesLost: number;
  maxLagLines: number;
  drainedSeconds?: number;
  before?: Sample;
  stormEnd?: Sample;
  after?: Sample;
  peakRssMiB: number;
  samples: Sample[];
  stateWrites: { count: number; duringStorm: number; byStormEnd: number; bytes: number; maxBytes: number; fsyncs: number; ms: number };
  stateFileBytes?: number;
}

export interface StormResult {
  shape: string;
  description: string;
  pages: number;
  offeredRecords: number;
  offeredRecordsPerSecond: number;
  /** Records the agent read during the storm's seconds, a second. */
  sustainedRecordsPerSecond: number;
  recordsRead: number;
  /** Overwritten in the ring before the agent read them. */
  recordsLost: number;
  /** When the agent had read the storm's last line, seconds after it began; null if it never did. */
  caughtUpSeconds: number | null;
  cpuSecondsDuringStorm: number;
  cpuPercentOfCoreDuringStorm: number;
  /** Over the storm and the quiet after it, per 1,000 records read. */
  cpuSecondsPer1000Records: number;
  rssMiB: { before: number; peak: number; after: number };
  /** When RSS first passed the agent's memory limit in the chart (agent.resources.limits.memory), seconds into the storm. */
  rssPassedLimitAtSeconds: number | null;
  heapMiB: { before: number; peak: number; after: number };
  api: {
    memoryErrorEventCreates: number;
    /** Creates answered 409 AlreadyExists. */
    memoryErrorEventCreateConflicts: number;
    memoryErrorEventStatusWrites: number;
    nodeMemoryHealthApplies: number;
    /** Every write the mce-operator.io group took (create, apply, patch, update, delete), by verb, resource and code. */
    writes: number;
    byKind: Record<string, number>;
  };
  /** MemoryErrorEvents of the node in the cluster at the end, by spec.severity. */
  eventsAtEnd: Record<string, number>;
  /** NodeMemoryHealth at the end: spec.correctedErrorPages and the object's JSON size. */
  health: { correctedErrorPages: number; bytes: number } | null;
  stateFile: {
    writes: number;
    writesDuringStorm: number;
    fsyncs: number;
    bytesWritten: number;
    largestWriteBytes: number;
    writeMs: number;
    bytesAtEnd: number | null;
  };
  log: { lines: number; bytes: number; warnLines: number; warnsByMessage: Record<string, number> };
  /** RSS, heap and CPU every 5 s from the storm's start. */
  timeline: Sample[];
  /** The agent's own counters, as its /metrics showed them at the end. */
  agentMetrics: Record<string, number>;
  /** Set when the bench had to stop the agent (memory past BENCH_STORM_MAX_RSS_MIB, or it did not finish). */
  stopped?: string;
}

function kubectl(cluster: ClusterState, args: string[]): string {
  const result = spawnSync(toolPath("kubectl"), ["--kubeconfig", cluster.kubeconfig, ...args], { encoding: "utf8", maxBuffer: 256 * MiB });
  if (result.status !== 0) throw new Error(`kubectl ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const READS = new Set(["GET", "LIST", "WATCH", "WATCHLIST", "CONNECT"]);

/** The API server's count of write requests to the mce-operator.io group, by `VERB resource[/subresource] code`. */
function apiWrites(cluster: ClusterState): Map<string, number> {
  const counts = new Map<string, number>();
  for (const line of kubectl(cluster, ["get", "--raw", "/metrics"]).split("\n")) {
    if (!line.startsWith("apiserver_request_total{")) continue;
    const labels: Record<string, string | undefined> = Object.fromEntries([...line.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1] ?? "", m[2] ?? ""]));
    if (labels.group !== group || READS.has(labels.verb ?? "")) continue;
    const key = `${labels.verb} ${labels.resource}${labels.subresource ? `/${labels.subresource}` : ""} ${labels.code}`;
    counts.set(key, (counts.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)));
  }
  return counts;
}

function agentMetrics(text: string): Record<string, number> {
  const kept: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith("mce_agent_") || line.includes("_bucket{") || line.includes("_sum") || line.includes("_count")) continue;
    const name = line.slice(0, line.lastIndexOf(" ")).replace("mce_agent_", "");
    if (/^(index_|report_latency|early_signals|pool_replacements|soft_offlines)/.test(name)) continue;
    kept[name] = Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return kept;
}

const round = (n: number, digits = 1): number => Number(n.toFixed(digits));

export async function runStorm(options: {
  cluster: ClusterState;
  dir: string;
  /** The compiled agent-storm-hook.js. */
  hook: string;
  /** node's flags and the agent's entry point. */
  command: string[];
  shape: StormShape;
  settings: StormSettings;
  maxRssMiB: number;
}): Promise<StormResult> {
  const { cluster, shape, settings } = options;
  const dir = join(options.dir, `storm-${shape.name}`);
  const root = join(dir, "root");
  const stateDir = join(dir, "state");
  const resultFile = join(dir, "result.json");
  mkdirSync(dir, { recursive: true });
  const nodeName = `storm-${shape.name}`;
  writeFakeHost(root, {
    bootID: `5707${shape.name.length.toString(16).padStart(4, "0")}-6d2a-4c55-9d8e-2b1f0c9e7a11`,
    pools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }],
    earlyKill: false,
    recovery: true,
    softOffline: true,
    iomem: IOMEM,
  });
  // One process maps 16 hugepages, the first of which holds every page of the one-DIMM storm.
  writeFakeProcesses(root, PFN_BASE);
  const writesBefore = apiWrites(cluster);

  const agent = spawn(
    process.execPath,
    [...hookedAgentArgs(options.command, options.hook, { nodeName, kubeconfig: cluster.kubeconfig, root, stateDir, metricsPort: 0 }), "--log-level", "info"],
    {
      stdio: ["ignore", "pipe", "pipe"],
      env: {
        ...process.env,
        NODE_ENV: "production",
        STORM_KMSG: join(root, "dev", "kmsg"),
        STORM_STATE_FILE: join(stateDir, "agent-state.json"),
        STORM_RESULT: resultFile,
        STORM_RATE: String(settings.rate),
        STORM_SECONDS: String(settings.seconds),
        STORM_PAGES: String(shape.pages),
        STORM_PFN_BASE: String(PFN_BASE),
        STORM_BURST: String(settings.burst),
        STORM_WARMUP_MS: String(settings.warmupSeconds * 1000),
        STORM_QUIET_MS: String(settings.quietSeconds * 1000),
        STORM_RING_LINES: String(settings.ringLines),
      },
    },
  );
  const pid = agent.pid ?? 0;
  const exited = new Promise<void>((resolve) =>
    agent.once("exit", () => {
      resolve();
    }),
  );
  // The log as a container runtime would take it: every line counted, none kept.
  const log: StormResult["log"] = { lines: 0, bytes: 0, warnLines: 0, warnsByMessage: {} };
  let port: number | undefined;
  let carry = "";
  agent.stdout.setEncoding("utf8").on("data", (chunk: string) => {
    log.bytes += Buffer.byteLength(chunk);
    const lines = (carry + chunk).split("\n");
    carry = lines.pop() ?? "";
    for (const line of lines) {
      log.lines++;
      if (line.includes('"level":"warn"')) {
        log.warnLines++;
        const msg = /"msg":"([^"]*)"/.exec(line)?.[1] ?? "";
        log.warnsByMessage[msg] = (log.warnsByMessage[msg] ?? 0) + 1;
      }
      if (port === undefined && line.includes("serving /metrics")) port = Number(/"port":(\d+)/.exec(line)?.[1]);
    }
  });
  let done: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (done = resolve));
  agent.stderr.setEncoding("utf8").on("data", (chunk: string) => {
    for (const line of chunk.split("\n")) {
      if (line === "agent-storm: done") done();
      else if (line !== "") process.stderr.write(`${line}\n`);
    }
  });
  let stopped: string | undefined;
  const deadline = Date.now() + (settings.warmupSeconds + settings.seconds + settings.quietSeconds + 180) * 1000;
  const watchdog = setInterval(() => {
    let rssMiB: number;
    try {
      rssMiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0) / 1024;
    } catch {
      return;
    }
    if (rssMiB > options.maxRssMiB) stopped = `RSS ${Math.round(rssMiB)} MiB passed ${options.maxRssMiB} MiB: killed`;
    else if (Date.now() > deadline) stopped = "did not finish in time: killed";
    if (stopped === undefined) return;
    agent.kill("SIGKILL");
    done();
  }, 1000);
  await Promise.race([finished, exited]);
  let metrics: Record<string, number> = {};
  if (port !== undefined && stopped === undefined)
    try {
      metrics = agentMetrics(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text());
    } catch {
      // Reported as empty.
    }
  agent.kill("SIGTERM");
  const killLater = setTimeout(() => agent.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(killLater);
  clearInterval(watchdog);

  const writesAfter = apiWrites(cluster);
  const byKind: Record<string, number> = {};
  for (const [key, after] of writesAfter) {
    const delta = after - (writesBefore.get(key) ?? 0);
    if (delta > 0) byKind[key] = delta;
  }
  const sum = (test: (key: string) => boolean): number =>
    Object.entries(byKind)
      .filter(([key]) => test(key))
      .reduce((total, [, n]) => total + n, 0);
  const severities = kubectl(cluster, [
    "get",
    "memoryerrorevents",
    "-l",
    `${nodeLabel}=${nodeName}`,
    "-o",
    "jsonpath={range .items[*]}{.spec.severity}{'\\n'}{end}",
  ]);
  const eventsAtEnd: Record<string, number> = {};
  for (const severity of severities.split("\n").filter((s) => s !== "")) eventsAtEnd[severity] = (eventsAtEnd[severity] ?? 0) + 1;
  let health: StormResult["health"] = null;
  try {
    const text = kubectl(cluster, ["get", "nodememoryhealths", nodeName, "-o", "json"]);
    const object = JSON.parse(text) as { spec?: { correctedErrorPages?: unknown[] } };
    health = { correctedErrorPages: object.spec?.correctedErrorPages?.length ?? 0, bytes: JSON.stringify(object).length };
  } catch {
    // Never applied.
  }

  const hook = JSON.parse(readFileSync(resultFile, "utf8")) as HookResult;
  rmSync(dir, { recursive: true, force: true });
  const before = hook.before ?? { t: 0, rssMiB: 0, heapMiB: 0, cpuSeconds: 0 };
  const last = hook.after ?? hook.samples.at(-1) ?? before;
  const stormEnd = hook.stormEnd ?? last;
  const during = hook.samples.filter((s) => s.t >= 0);
  const cpuDuringStorm = stormEnd.cpuSeconds - before.cpuSeconds;
  return {
    shape: shape.name,
    description: shape.description,
    pages: shape.pages,
    offeredRecords: hook.records,
    offeredRecordsPerSecond: settings.rate,
    sustainedRecordsPerSecond: Math.round((hook.recordsReadByStormEnd ?? hook.recordsRead) / settings.seconds),
    recordsRead: hook.recordsRead,
    recordsLost: hook.recordsLost,
    caughtUpSeconds: hook.drainedSeconds === undefined ? null : round(hook.drainedSeconds),
    cpuSecondsDuringStorm: round(cpuDuringStorm, 2),
    cpuPercentOfCoreDuringStorm: round((cpuDuringStorm / settings.seconds) * 100),
    cpuSecondsPer1000Records: hook.recordsRead > 0 ? round(((last.cpuSeconds - before.cpuSeconds) / hook.recordsRead) * 1000, 4) : 0,
    rssMiB: { before: before.rssMiB, peak: round(Math.max(hook.peakRssMiB, ...during.map((s) => s.rssMiB))), after: last.rssMiB },
    rssPassedLimitAtSeconds: during.find((s) => s.rssMiB > AGENT_MEMORY_LIMIT_MIB)?.t ?? null,
    heapMiB: { before: before.heapMiB, peak: round(Math.max(before.heapMiB, ...during.map((s) => s.heapMiB))), after: last.heapMiB },
    api: {
      memoryErrorEventCreates: sum((k) => k.startsWith("POST memoryerrorevents 201")),
      memoryErrorEventCreateConflicts: sum((k) => k.startsWith("POST memoryerrorevents 409")),
      memoryErrorEventStatusWrites: sum((k) => k.includes(" memoryerrorevents/status ")),
      nodeMemoryHealthApplies: sum((k) => / nodememoryhealths /.test(k)),
      writes: sum(() => true),
      byKind,
    },
    eventsAtEnd,
    health,
    stateFile: {
      writes: hook.stateWrites.count,
      writesDuringStorm: hook.stateWrites.duringStorm,
      fsyncs: hook.stateWrites.fsyncs,
      bytesWritten: hook.stateWrites.bytes,
      largestWriteBytes: hook.stateWrites.maxBytes,
      writeMs: Math.round(hook.stateWrites.ms),
      bytesAtEnd: hook.stateFileBytes ?? null,
    },
    log,
    timeline: during.filter((s, i) => i % 20 === 0).map((s) => ({ ...s, t: Math.round(s.t), cpuSeconds: round(s.cpuSeconds - before.cpuSeconds, 2) })),
    agentMetrics: metrics,
    ...(stopped !== undefined && { stopped }),
  };
}

/** One table: a row per figure, a column per shape. */
export function stormTable(results: StormResult[], settings: StormSettings): string {
  const n = (x: number | null | undefined): string => (x === null || x === undefined ? "-" : x.toLocaleString("en"));
  const rows: [string, (r: StormResult) => string][] = [
    ["records offered (rate x seconds)", (r) => `${n(r.offeredRecords)} (${n(r.offeredRecordsPerSecond)}/s x ${settings.seconds} s)`],
    ["records/s the agent read, sustained", (r) => n(r.sustainedRecordsPerSecond)],
    ["records read / lost (ring overwritten)", (r) => `${n(r.recordsRead)} / ${n(r.recordsLost)}`],
    ["caught up with the storm after", (r) => (r.caughtUpSeconds === null ? "never" : `${r.caughtUpSeconds} s`)],
    ["CPU during the storm (s, % of a core)", (r) => `${r.cpuSecondsDuringStorm} s, ${r.cpuPercentOfCoreDuringStorm}%`],
    ["CPU s per 1,000 records (storm + quiet)", (r) => n(r.cpuSecondsPer1000Records)],
    ["RSS MiB before / peak / after", (r) => `${r.rssMiB.before} / ${r.rssMiB.peak} / ${r.rssMiB.after}`],
    [`RSS past the chart's ${AGENT_MEMORY_LIMIT_MIB} MiB limit at`, (r) => (r.rssPassedLimitAtSeconds === null ? "never" : `${r.rssPassedLimitAtSeconds} s`)],
    ["heap MiB before / peak / after", (r) => `${r.heapMiB.before} / ${r.heapMiB.peak} / ${r.heapMiB.after}`],
    ["MemoryErrorEvent creates (201) / 409s", (r) => `${n(r.api.memoryErrorEventCreates)} / ${n(r.api.memoryErrorEventCreateConflicts)}`],
    [
      "events at the end, by severity",
      (r) =>
        Object.entries(r.eventsAtEnd)
          .map(([s, c]) => `${s} ${n(c)}`)
          .join(", ") || "none",
    ],
    ["NodeMemoryHealth applies", (r) => n(r.api.nodeMemoryHealthApplies)],
    ["API writes in all", (r) => n(r.api.writes)],
    ["state-file writes (during the storm)", (r) => `${n(r.stateFile.writes)} (${n(r.stateFile.writesDuringStorm)})`],
    ["state-file bytes written / largest write", (r) => `${n(r.stateFile.bytesWritten)} / ${n(r.stateFile.largestWriteBytes)}`],
    ["time in state-file writes (ms)", (r) => n(r.stateFile.writeMs)],
    ["state file at the end (bytes)", (r) => n(r.stateFile.bytesAtEnd)],
    ["log lines (warn) / bytes", (r) => `${n(r.log.lines)} (${n(r.log.warnLines)}) / ${n(r.log.bytes)}`],
    ["stopped by the bench", (r) => r.stopped ?? "no"],
  ];
  const header = ["", ...results.map((r) => r.description)];
  const body = rows.map(([label, cell]) => [label, ...results.map(cell)]);
  const widths = header.map((_, i) => Math.max(...[header, ...body].map((row) => (row[i] ?? "").length)));
  const line = (row: string[]): string => `| ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(" | ")} |`;
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
}
