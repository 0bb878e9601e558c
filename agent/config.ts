// mce-agent's flags (each also read from MCE_<FLAG>, see runtime/flags.ts) and the configuration they make.
import { statSync } from "node:fs";
import { resolve } from "node:path";
import { FlagError, flagUsage, parseFlags, type FlagSpecs } from "../runtime/flags.ts";
import { LOG_LEVELS, type LogLevel } from "../runtime/log.ts";

export const agentFlags = {
  "node-name": { type: "string", env: "NODE_NAME", help: "this node (in the cluster, NODE_NAME from the downward API's spec.nodeName)" },
  kubeconfig: { type: "string", env: "KUBECONFIG", help: "kubeconfig to use (default: the in-cluster service account)" },
  "host-root": { type: "string", default: "/", help: "where the host's /proc, /sys, /dev and /var are" },
  "state-dir": { type: "string", default: "/var/lib/mce-agent", help: "the read cursor and the events not yet delivered" },
  replay: { type: "string", help: "read kernel lines from this file ('<offset-seconds> <line>' or kmsg records) instead of the kernel" },
  "metrics-port": { type: "integer", default: 9464, min: 0, max: 65535, help: "/metrics and /healthz (0 picks a free port)" },
  "log-level": { type: "enum", default: "info", values: LOG_LEVELS, help: "the least level logged" },
  "index-interval": { type: "duration", default: "5s", min: "100ms", max: "1h", help: "how often the hugetlb mapping index is refreshed" },
  "health-interval": { type: "duration", default: "30s", min: "1s", max: "1h", help: "how often NodeMemoryHealth is checked" },
  "queue-capacity": { type: "integer", default: 1000, min: 1, max: 1_000_000, help: "most undelivered events kept on disk" },
} as const satisfies FlagSpecs;

export const agentUsage = flagUsage("usage: mce-agent [flags]   (node agent/main.ts, or node dist/agent/main.js)", agentFlags);

export interface Config {
  nodeName: string;
  kubeconfig?: string | undefined;
  hostRoot: string;
  stateDir: string;
  replay?: string | undefined;
  metricsPort: number;
  logLevel: LogLevel;
  indexIntervalMs: number;
  healthIntervalMs: number;
  queueCapacity: number;
}

const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function directory(flag: string, path: string): string {
  try {
    if (statSync(path).isDirectory()) return resolve(path);
  } catch {
    // Reported below.
  }
  throw new FlagError(`--${flag} '${path}': not a directory`);
}

/** The configuration, or "help" for --help; throws a FlagError that names the flag and what is wrong. */
export function parseConfig(argv: readonly string[], env: Record<string, string | undefined>): Config | "help" {
  const parsed = parseFlags(agentFlags, argv, env);
  if (parsed.help) return "help";
  const v = parsed.values;
  const nodeName = v["node-name"];
  if (nodeName === undefined) throw new FlagError("no node name: set NODE_NAME (downward API spec.nodeName) or --node-name");
  if (nodeName.length > 253 || !DNS_SUBDOMAIN.test(nodeName)) throw new FlagError(`node name '${nodeName}' is not a DNS subdomain`);
  if (v.kubeconfig === undefined && env.KUBERNETES_SERVICE_HOST === undefined)
    throw new FlagError("no --kubeconfig and not running in a cluster (KUBERNETES_SERVICE_HOST unset)");
  if (v.replay !== undefined) {
    try {
      if (!statSync(v.replay).isFile()) throw new Error();
    } catch {
      throw new FlagError(`--replay '${v.replay}': not a readable file`);
    }
  }
  return {
    nodeName,
    kubeconfig: v.kubeconfig,
    hostRoot: directory("host-root", v["host-root"]),
    stateDir: resolve(v["state-dir"]),
    replay: v.replay,
    metricsPort: v["metrics-port"],
    logLevel: v["log-level"],
    indexIntervalMs: v["index-interval"],
    healthIntervalMs: v["health-interval"],
    queueCapacity: v["queue-capacity"],
  };
}
