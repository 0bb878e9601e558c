// mce-agent: one per node (DaemonSet). Flags and environment in, the agent composed and run, /metrics
// and /healthz served, a clean stop on SIGTERM.
import type { Server } from "node:http";
import { http } from "../runtime/node-http.ts";
import { join } from "node:path";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { FlagError } from "../runtime/flags.ts";
import { jsonLogger, type Logger } from "../runtime/log.ts";
import { Agent } from "./agent.ts";
import { agentUsage, parseConfig, type Config } from "./config.ts";
import { EarlySignaller, type EarlySignalName } from "./early-signal.ts";
import { HostFiles } from "./host.ts";
import { KmsgSource } from "./kmsg.ts";
import { KubeApi, loadKubeConfig, watchMemoryErrorEvents, watchPods } from "./kube.ts";
import { HugetlbIndex, readProcess } from "./mappings.ts";
import { AgentMetrics } from "./metrics.ts";
import { hostPoolFiles, PoolReplacer } from "./pool-replacement.ts";
import { RASDAEMON_DB, rasdaemonCorrectedErrors, rasdaemonDimmErrors } from "./rasdaemon.ts";
import { hostSoftOfflineFiles, SoftOffliner } from "./soft-offline.ts";
import { ReplaySource } from "./replay.ts";
import { errnoCode, openDevice, type LineSource } from "./source.ts";
import { AgentState } from "./state.ts";
import { enableTraceEvents, TracefsSource } from "./tracefs.ts";

/** Probes /dev/kmsg: open and close it, so the start-up line can say whether it is readable. */
async function probeKmsg(path: string): Promise<string | undefined> {
  try {
    await (await openDevice(path)).close();
    return undefined;
  } catch (error) {
    return `${path}: ${errnoCode(error) ?? String(error)}`;
  }
}

/** Two routes need no web framework: node:http keeps the agent's memory down (express costs ~20 MiB). */
async function serveMetrics(metrics: AgentMetrics, port: number, log: Logger): Promise<Server> {
  const server = http.createServer((req, res) => {
    if (req.method === "GET" && req.url === "/metrics") {
      void metrics.registry.metrics().then((text) => {
        res.writeHead(200, { "Content-Type": metrics.registry.contentType }).end(text);
      });
    } else if (req.method === "GET" && req.url === "/healthz") {
      res.writeHead(200, { "Content-Type": "text/plain" }).end("ok\n");
    } else {
      res.writeHead(404, { "Content-Type": "text/plain" }).end("not found\n");
    }
  });
  return new Promise((resolveServer, reject) => {
    server.once("error", reject);
    server.listen(port, () => {
      const address = server.address();
      log.info("serving /metrics and /healthz", { port: typeof address === "object" && address !== null ? address.port : port });
      resolveServer(server);
    });
  });
}

/**
 * Where kernel lines come from: /dev/kmsg and the tracefs memory-failure events, or a recorded log; with
 * why each one that is not read is not. A replay file that cannot be read comes back as its error.
 */
async function openLineSources(
  config: Config,
  host: HostFiles,
  state: AgentState,
  clock: Clock,
  log: Logger,
  metrics: AgentMetrics,
): Promise<{ sources: LineSource[]; unavailable: Record<string, string>; tracefs: string[] } | string> {
  const sources: LineSource[] = [];
  const unavailable: Record<string, string> = {};
  const kmsgPath = host.path("dev/kmsg");
  let tracefs: string[] = [];
  if (config.replay === undefined) {
    const kmsgProblem = await probeKmsg(kmsgPath);
    if (kmsgProblem === undefined) {
      sources.push(
        new KmsgSource({
          open: () => openDevice(kmsgPath),
          clock,
          log,
          after: state.cursor("kmsg"),
          onLost: (n) => {
            metrics.lostRecords.inc(n);
          },
        }),
      );
    } else unavailable.kmsg = kmsgProblem;
    const probe = enableTraceEvents(host);
    if (probe.available) {
      tracefs = probe.events;
      sources.push(new TracefsSource({ open: () => openDevice(join(probe.dir, "trace_pipe")), clock }));
    } else unavailable.tracefs = probe.reason;
  } else {
    try {
      sources.push(new ReplaySource({ file: config.replay, clock, after: state.cursor("replay") }));
    } catch (error) {
      return (error as Error).message;
    }
    unavailable.kmsg = unavailable.tracefs = "replaying a recorded log instead";
  }
  return { sources, unavailable, tracefs };
}

/** What the agent reads on this node, and why each thing it does not read is missing, for its first log line. */
function whatIsRead(
  host: HostFiles,
  sources: readonly LineSource[],
  tracefs: readonly string[],
  unavailable: Record<string, string>,
  rasdaemonMissing: string | undefined,
): { available: string[]; unavailable: Record<string, string> } {
  const memory = host.memory();
  const absent = (name: string, present: boolean, why: string): string[] => {
    if (!present) unavailable[name] = why;
    return present ? [name] : [];
  };
  const available = [
    ...sources.map((source) => (source.name === "tracefs" ? `tracefs (${tracefs.join(", ")})` : source.name)),
    ...absent("meminfo HardwareCorrupted", memory.hardwareCorruptedBytes !== undefined, "no HardwareCorrupted in /proc/meminfo"),
    ...absent("hugepage pools", memory.hugepagePools.length > 0, "no hugepage pools in /sys"),
    ...absent("memory_failure counters", memory.memoryFailureCounters.length > 0, "not in this kernel (added in about 6.3)"),
    ...absent("EDAC counters", memory.edacCorrected !== undefined, "no EDAC memory controllers"),
    ...absent("rasdaemon", rasdaemonMissing === undefined, rasdaemonMissing ?? ""),
    ...absent("early-kill sysctl", memory.capabilities.earlyKill !== undefined, "no vm.memory_failure_early_kill"),
    ...absent("soft offline", memory.capabilities.softOffline === true, "no soft_offline_page"),
    ...absent("hwpoison debugfs", memory.capabilities.injection === true, "debugfs hwpoison not there"),
  ];
  return { available, unavailable };
}

async function main(): Promise<number> {
  let config: Config | "help";
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof FlagError)) throw error;
    process.stderr.write(`mce-agent: ${error.message}\n${agentUsage}\n`);
    return 2;
  }
  if (config === "help") {
    process.stdout.write(`${agentUsage}\n`);
    return 0;
  }
  const clock = systemClock;
  const log = jsonLogger(config.logLevel, { clock });
  const host = new HostFiles(config.hostRoot);
  const bootID = host.bootID();
  if (bootID === undefined || bootID === "") {
    log.error("cannot read the boot id; events are named by it", { file: host.path("proc/sys/kernel/random/boot_id") });
    return 1;
  }
  const kernelVersion = host.kernelRelease();
  const metrics = new AgentMetrics();
  const state = new AgentState({ dir: config.stateDir, bootID, log, capacity: config.queueCapacity });

  const opened = await openLineSources(config, host, state, clock, log, metrics);
  if (typeof opened === "string") {
    // A bad replay file is the user's to fix: one line naming the file and line, no stack.
    process.stderr.write(`mce-agent: --replay: ${opened}\n`);
    return 2;
  }
  const { sources, unavailable, tracefs } = opened;
  const rasdaemonPath = host.path(RASDAEMON_DB);
  const rasdaemon = host.exists(RASDAEMON_DB);
  log.info("mce-agent starting", {
    node: config.nodeName,
    bootID,
    kernel: kernelVersion,
    hostRoot: config.hostRoot,
    ...whatIsRead(host, sources, tracefs, unavailable, rasdaemon ? undefined : `no ${rasdaemonPath}`),
  });

  let kube: ReturnType<typeof loadKubeConfig>;
  try {
    kube = loadKubeConfig(config.kubeconfig, clock);
  } catch (error) {
    log.error("cannot load the Kubernetes client configuration", {
      kubeconfig: config.kubeconfig ?? "in-cluster",
      error: error instanceof Error ? error.message : String(error),
    });
    return 2;
  }
  const api = new KubeApi(kube);
  const abort = new AbortController();
  const pods = watchPods(kube, config.nodeName, clock, log, abort.signal);
  const procDir = host.path("proc");
  const index = new HugetlbIndex({ procDir, clock });
  const signaller = new EarlySignaller({
    api,
    signaller: { kill: (pid: number, signal: EarlySignalName) => process.kill(pid, signal) },
    pods,
    process: (pid) => readProcess(procDir, pid),
    clock,
    log,
    metrics,
  });
  const agent = new Agent({
    nodeName: config.nodeName,
    bootID,
    kernelVersion,
    host,
    state,
    index,
    pods,
    sink: api,
    health: api,
    kernelSignals: api,
    sources,
    reading: { kmsg: sources.some((s) => s.name === "kmsg"), tracefs: sources.some((s) => s.name === "tracefs") },
    // Read from both, a record is counted from tracefs's mce_record, which carries every record, also those
    // kmsg leaves out where an EDAC driver handles them. One source (or a replay) counts what it reads.
    correctedSource: sources.some((s) => s.name === "kmsg") && tracefs.includes("mce/mce_record") ? "tracefs" : undefined,
    rasdaemonCorrected: rasdaemon ? () => rasdaemonCorrectedErrors(rasdaemonPath) : undefined,
    rasdaemonDimms: rasdaemon ? (now) => rasdaemonDimmErrors(rasdaemonPath, now) : undefined,
    clock,
    log,
    metrics,
    indexIntervalMs: config.indexIntervalMs,
    healthIntervalMs: config.healthIntervalMs,
  });
  const poolFiles = hostPoolFiles(host);
  const offliner = new SoftOffliner({
    nodeName: config.nodeName,
    api,
    files: hostSoftOfflineFiles(host, poolFiles),
    retired: (pfn, at, page) => {
      agent.softOfflined(pfn, at, page);
    },
    clock,
    log,
    metrics,
  });
  const replacer = new PoolReplacer({
    nodeName: config.nodeName,
    api,
    files: poolFiles,
    writes: state,
    refreshHealth: () => {
      agent.refreshHealth();
    },
    clock,
    log,
    metrics,
  });
  watchMemoryErrorEvents(
    kube,
    config.nodeName,
    (event) => {
      // First, so a status apply carries what the agent already owns of this event.
      api.observe(event);
      signaller.offer(event);
      replacer.offer(event);
      offliner.offer(event);
    },
    clock,
    log,
    abort.signal,
    (name) => {
      api.forget(name);
      replacer.forget(name);
      offliner.forget(name);
    },
  );
  const server = await serveMetrics(metrics, config.metricsPort, log);
  const stop = (signal: NodeJS.Signals): void => {
    log.info("stopping", { signal });
    abort.abort();
    signaller.stop();
    replacer.stop();
    offliner.stop();
    // Whatever still holds the event loop (a request in flight) must not keep a stopping pod alive.
    clock.setTimeout(() => process.exit(0), 10_000);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
  await agent.run(abort.signal);
  await new Promise((done) => server.close(done));
  server.closeAllConnections();
  log.info("stopped", { queued: state.queue.length });
  return 0;
}

process.exitCode = await main();
