// mce-agent: one per node (DaemonSet). Flags and environment in, the agent composed and run, /metrics
// and /healthz served, a clean stop on SIGTERM.
import { statSync } from "node:fs";
import type { Server } from "node:http";
import { http } from "./node-http.ts";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Agent } from "./agent.ts";
import { systemClock } from "./clock.ts";
import { EarlySignaller, type EarlySignalName } from "./early-signal.ts";
import { HostFiles } from "./host.ts";
import { KmsgSource } from "./kmsg.ts";
import { KubeApi, loadKubeConfig, watchMemoryErrorEvents, watchPods } from "./kube.ts";
import { isLogLevel, jsonLogger, type Logger } from "./log.ts";
import { HugetlbIndex, readProcess } from "./mappings.ts";
import { AgentMetrics } from "./metrics.ts";
import { hostPoolFiles, PoolReplacer } from "./pool-replacement.ts";
import { RASDAEMON_DB, rasdaemonCorrectedErrors } from "./rasdaemon.ts";
import { ReplaySource } from "./replay.ts";
import { errnoCode, openDevice, type LineSource } from "./source.ts";
import { AgentState } from "./state.ts";
import { enableTraceEvents, TracefsSource } from "./tracefs.ts";

const USAGE = `usage: node agent/main.ts [flags]
  --node-name NAME        this node (default: $NODE_NAME, from the downward API)
  --kubeconfig FILE       kubeconfig to use (default: in-cluster service account)
  --host-root DIR         where the host's /proc, /sys, /dev and /var are (default: /)
  --state-dir DIR         cursor and undelivered events (default: /var/lib/mce-agent)
  --replay FILE           read kernel lines from FILE ('<offset-seconds> <line>' or kmsg records) instead of the kernel
  --metrics-port PORT     /metrics and /healthz (default: 9464; 0 picks a free port)
  --log-level LEVEL       debug, info, warn, error (default: info)
  --index-interval SEC    hugetlb index refresh (default: 5)
  --health-interval SEC   NodeMemoryHealth check (default: 30)
  --queue-capacity N      most undelivered events kept on disk (default: 1000)`;

class UsageError extends Error {}

export interface Config {
  nodeName: string;
  kubeconfig?: string | undefined;
  hostRoot: string;
  stateDir: string;
  replay?: string | undefined;
  metricsPort: number;
  logLevel: "debug" | "info" | "warn" | "error";
  indexIntervalMs: number;
  healthIntervalMs: number;
  queueCapacity: number;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function number(flag: string, text: string, { min, max, integer }: { min: number; max: number; integer: boolean }): number {
  const value = Number(text);
  if (text.trim() === "" || !Number.isFinite(value) || (integer && !Number.isInteger(value)) || value < min || value > max) {
    throw new UsageError(`--${flag} '${text}': expected ${integer ? "an integer" : "a number"} from ${min} to ${max}`);
  }
  return value;
}

function directory(flag: string, path: string): string {
  try {
    if (statSync(path).isDirectory()) return resolve(path);
  } catch {
    // Reported below.
  }
  throw new UsageError(`--${flag} '${path}': not a directory`);
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): Config {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        "node-name": { type: "string" },
        kubeconfig: { type: "string" },
        "host-root": { type: "string", default: "/" },
        "state-dir": { type: "string", default: "/var/lib/mce-agent" },
        replay: { type: "string" },
        "metrics-port": { type: "string", default: "9464" },
        "log-level": { type: "string", default: "info" },
        "index-interval": { type: "string", default: "5" },
        "health-interval": { type: "string", default: "30" },
        "queue-capacity": { type: "string", default: "1000" },
      },
    });
  } catch (error) {
    throw new UsageError(error instanceof Error ? error.message : String(error));
  }
  const v = parsed.values;
  const nodeName = v["node-name"] ?? env.NODE_NAME;
  if (nodeName === undefined || nodeName === "") throw new UsageError("no node name: set NODE_NAME (downward API spec.nodeName) or --node-name");
  if (nodeName.length > 253 || !DNS_SUBDOMAIN.test(nodeName)) throw new UsageError(`node name '${nodeName}' is not a DNS subdomain`);
  if (v.kubeconfig === undefined && env.KUBERNETES_SERVICE_HOST === undefined)
    throw new UsageError("no --kubeconfig and not running in a cluster (KUBERNETES_SERVICE_HOST unset)");
  const logLevel = v["log-level"];
  if (!isLogLevel(logLevel)) throw new UsageError(`--log-level '${logLevel}': expected debug, info, warn or error`);
  if (v.replay !== undefined) {
    try {
      if (!statSync(v.replay).isFile()) throw new Error();
    } catch {
      throw new UsageError(`--replay '${v.replay}': not a readable file`);
    }
  }
  return {
    nodeName,
    kubeconfig: v.kubeconfig,
    hostRoot: directory("host-root", v["host-root"]),
    stateDir: resolve(v["state-dir"]),
    replay: v.replay,
    metricsPort: number("metrics-port", v["metrics-port"], { min: 0, max: 65535, integer: true }),
    logLevel,
    indexIntervalMs: number("index-interval", v["index-interval"], { min: 0.1, max: 3600, integer: false }) * 1000,
    healthIntervalMs: number("health-interval", v["health-interval"], { min: 1, max: 3600, integer: false }) * 1000,
    queueCapacity: number("queue-capacity", v["queue-capacity"], { min: 1, max: 1_000_000, integer: true }),
  };
}

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

async function main(): Promise<number> {
  let config: Config;
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`mce-agent: ${error.message}\n${USAGE}\n`);
    return 2;
  }
  const log = jsonLogger(config.logLevel);
  const clock = systemClock;
  const host = new HostFiles(config.hostRoot);
  const bootID = host.bootID();
  if (bootID === undefined || bootID === "") {
    log.error("cannot read the boot id; events are named by it", { file: host.path("proc/sys/kernel/random/boot_id") });
    return 1;
  }
  const kernelVersion = host.kernelRelease();
  const metrics = new AgentMetrics();
  const state = new AgentState({ dir: config.stateDir, bootID, log, capacity: config.queueCapacity });

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
    sources.push(new ReplaySource({ file: config.replay, clock, after: state.cursor("replay") }));
    unavailable.kmsg = unavailable.tracefs = "replaying a recorded log instead";
  }
  const memory = host.memory();
  const rasdaemonPath = host.path(RASDAEMON_DB);
  const rasdaemon = host.exists(RASDAEMON_DB);
  const absent = (name: string, present: boolean, why: string): string[] => {
    if (!present) unavailable[name] = why;
    return present ? [name] : [];
  };
  log.info("mce-agent starting", {
    node: config.nodeName,
    bootID,
    kernel: kernelVersion,
    hostRoot: config.hostRoot,
    available: [
      ...sources.map((source) => (source.name === "tracefs" ? `tracefs (${tracefs.join(", ")})` : source.name)),
      ...absent("meminfo HardwareCorrupted", memory.hardwareCorruptedBytes !== undefined, "no HardwareCorrupted in /proc/meminfo"),
      ...absent("hugepage pools", memory.hugepagePools.length > 0, "no hugepage pools in /sys"),
      ...absent("memory_failure counters", memory.memoryFailureCounters.length > 0, "not in this kernel (added in about 6.3)"),
      ...absent("EDAC counters", memory.edacCorrected !== undefined, "no EDAC memory controllers"),
      ...absent("rasdaemon", rasdaemon, `no ${rasdaemonPath}`),
      ...absent("early-kill sysctl", memory.capabilities.earlyKill !== undefined, "no vm.memory_failure_early_kill"),
      ...absent("soft offline", memory.capabilities.softOffline === true, "no soft_offline_page"),
      ...absent("hwpoison debugfs", memory.capabilities.injection === true, "debugfs hwpoison not there"),
    ],
    unavailable,
  });

  let kube: ReturnType<typeof loadKubeConfig>;
  try {
    kube = loadKubeConfig(config.kubeconfig);
  } catch (error) {
    log.error("cannot load the Kubernetes client configuration", {
      kubeconfig: config.kubeconfig ?? "in-cluster",
      error: error instanceof Error ? error.message : String(error),
    });
    return 2;
  }
  const api = new KubeApi(kube, config.nodeName, clock);
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
    sources,
    reading: { kmsg: sources.some((s) => s.name === "kmsg"), tracefs: sources.some((s) => s.name === "tracefs") },
    rasdaemonCorrected: rasdaemon ? () => rasdaemonCorrectedErrors(rasdaemonPath) : undefined,
    clock,
    log,
    metrics,
    indexIntervalMs: config.indexIntervalMs,
    healthIntervalMs: config.healthIntervalMs,
  });
  const replacer = new PoolReplacer({
    nodeName: config.nodeName,
    api,
    files: hostPoolFiles(host),
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
      signaller.offer(event, abort.signal);
      replacer.offer(event, abort.signal);
    },
    clock,
    log,
    abort.signal,
    (name) => {
      api.forget(name);
      replacer.forget(name);
    },
  );
  const server = await serveMetrics(metrics, config.metricsPort, log);
  const stop = (signal: NodeJS.Signals): void => {
    log.info("stopping", { signal });
    abort.abort();
    // Whatever still holds the event loop (a request in flight) must not keep a stopping pod alive.
    setTimeout(() => process.exit(0), 10_000).unref();
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
