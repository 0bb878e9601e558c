// The operator process: configuration from flags and environment, the controller, leader election,
// the metrics and health endpoints, and a clean shutdown on SIGTERM that gives the lease up.
import { hostname } from "node:os";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import express from "express";
import type { Server } from "node:http";
import { Controller } from "./controller.ts";
import { KubeActions } from "./kube/actions.ts";
import { KubeLeases } from "./kube/leases.ts";
import { KubeRest } from "./kube/rest.ts";
import { LeaderElector } from "./leader.ts";
import { jsonLogger } from "./log.ts";
import type { Level, Logger } from "./log.ts";
import { OperatorMetrics } from "./metrics.ts";
import { parseDuration } from "./model/duration.ts";
import { systemClock } from "./queue.ts";

export interface OperatorConfig {
  kubeconfig?: string | undefined;
  namespace: string;
  metricsAddress: string;
  metricsPort: number;
  leaderElect: boolean;
  leaseName: string;
  identity: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  concurrency: number;
  resyncMs: number;
  logLevel: Level;
  quarantinePriorityClass?: string | undefined;
}

export class ConfigError extends Error {}

const options = {
  kubeconfig: { type: "string" },
  namespace: { type: "string" },
  "metrics-address": { type: "string" },
  "metrics-port": { type: "string" },
  "leader-elect": { type: "string" },
  "lease-name": { type: "string" },
  identity: { type: "string" },
  "lease-duration": { type: "string" },
  "renew-deadline": { type: "string" },
  "retry-period": { type: "string" },
  concurrency: { type: "string" },
  resync: { type: "string" },
  "log-level": { type: "string" },
  "quarantine-priority-class": { type: "string" },
} as const;

export const operatorUsage = `mce-operator run [flags]   (every flag also reads MCE_<FLAG> from the environment)
  --kubeconfig PATH            default $KUBECONFIG, else in-cluster
  --namespace NS               quarantine pods, events and the lease (default $POD_NAMESPACE or mce-system)
  --metrics-address ADDR       default 0.0.0.0
  --metrics-port PORT          /metrics, /healthz, /readyz (default 8080)
  --leader-elect true|false    default true
  --lease-name NAME            default mce-operator
  --identity ID                default $POD_NAME or host-pid
  --lease-duration D           default 15s; --renew-deadline D default 10s; --retry-period D default 2s
  --concurrency N              memory errors reconciled at once (default 16)
  --resync D                   re-queue everything this often (default 5m)
  --log-level debug|info|warn|error
  --quarantine-priority-class NAME`;

/** Reads the configuration, or throws a ConfigError that names the flag and what was wrong. */
export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): OperatorConfig {
  let values: Partial<Record<keyof typeof options, string>>;
  try {
    values = parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new ConfigError((e as Error).message);
  }
  const get = (flag: keyof typeof options): string | undefined => values[flag] ?? env[`MCE_${flag.toUpperCase().replaceAll("-", "_")}`];
  const duration = (flag: keyof typeof options, fallback: string): number => {
    try {
      return parseDuration(get(flag) ?? fallback, `--${flag}`);
    } catch (e) {
      throw new ConfigError((e as Error).message);
    }
  };
  const integer = (flag: keyof typeof options, fallback: number, min: number, max: number): number => {
    const text = get(flag);
    const n = text === undefined ? fallback : Number(text);
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not an integer from ${min} to ${max}`);
    return n;
  };
  const boolean = (flag: keyof typeof options, fallback: boolean): boolean => {
    const text = get(flag);
    if (text === undefined) return fallback;
    if (text !== "true" && text !== "false") throw new ConfigError(`--${flag}: ${JSON.stringify(text)} is not true or false`);
    return text === "true";
  };
  const logLevel = get("log-level") ?? "info";
  if (!["debug", "info", "warn", "error"].includes(logLevel))
    throw new ConfigError(`--log-level: ${JSON.stringify(logLevel)} is not debug, info, warn or error`);
  const config: OperatorConfig = {
    kubeconfig: get("kubeconfig") ?? env.KUBECONFIG,
    namespace: get("namespace") ?? env.POD_NAMESPACE ?? "mce-system",
    metricsAddress: get("metrics-address") ?? "0.0.0.0",
    metricsPort: integer("metrics-port", 8080, 0, 65535),
    leaderElect: boolean("leader-elect", true),
    leaseName: get("lease-name") ?? "mce-operator",
    identity: get("identity") ?? env.POD_NAME ?? `${hostname()}-${process.pid}`,
    leaseDurationMs: duration("lease-duration", "15s"),
    renewDeadlineMs: duration("renew-deadline", "10s"),
    retryPeriodMs: duration("retry-period", "2s"),
    concurrency: integer("concurrency", 16, 1, 256),
    resyncMs: duration("resync", "5m"),
    logLevel: logLevel as Level,
    quarantinePriorityClass: get("quarantine-priority-class"),
  };
  if (config.renewDeadlineMs >= config.leaseDurationMs) throw new ConfigError("--renew-deadline must be shorter than --lease-duration");
  if (config.retryPeriodMs >= config.renewDeadlineMs) throw new ConfigError("--retry-period must be shorter than --renew-deadline");
  return config;
}

export interface RunningOperator {
  controller: Controller;
  metrics: OperatorMetrics;
  server: Server;
  port: number;
  rest: KubeRest;
  stop(): Promise<void>;
}

export async function startOperator(
  config: OperatorConfig,
  log: Logger = jsonLogger(config.logLevel, { component: "mce-operator" }),
): Promise<RunningOperator> {
  const kubeConfig = new KubeConfig();
  if (config.kubeconfig) kubeConfig.loadFromFile(config.kubeconfig);
  else kubeConfig.loadFromCluster();
  const rest = new KubeRest(kubeConfig);
  const metrics = new OperatorMetrics();
  rest.onRequest = (verb) => {
    metrics.apiRequests.inc({ verb });
  };
  const actions = new KubeActions(rest, { quarantinePriorityClass: config.quarantinePriorityClass });
  const controller = new Controller(rest, actions, metrics, log, {
    namespace: config.namespace,
    concurrency: config.concurrency,
    resyncMs: config.resyncMs,
    clock: systemClock,
  });
  const elector = config.leaderElect
    ? new LeaderElector(new KubeLeases(rest, config.namespace, config.leaseName), {
        identity: config.identity,
        namespace: config.namespace,
        name: config.leaseName,
        leaseDurationMs: config.leaseDurationMs,
        renewDeadlineMs: config.renewDeadlineMs,
        retryPeriodMs: config.retryPeriodMs,
        clock: systemClock,
        onStartedLeading: () => {
          log.info("became leader", { identity: config.identity, lease: `${config.namespace}/${config.leaseName}` });
          metrics.leader.set(1);
          void controller.startActing();
        },
        onStoppedLeading: () => {
          log.warn("lost the lease: stopped acting", { identity: config.identity });
          metrics.leader.set(0);
          controller.stopActing();
        },
        onError: (error) => {
          log.debug("lease attempt failed", { error });
        },
      })
    : undefined;

  const app = express();
  app.get("/metrics", (_req, res) => {
    void metrics.registry.metrics().then((text) => res.type(metrics.registry.contentType).send(text));
  });
  app.get("/healthz", (_req, res) => {
    res.send("ok");
  });
  app.get("/readyz", (_req, res) => {
    const ready = controller.synced && (!elector || elector.leading || !controller.isActing);
    res.status(ready ? 200 : 503).send(ready ? "ok" : controller.synced ? "lost the lease" : "caches not synced");
  });
  const server = await new Promise<Server>((resolve, reject) => {
    const s = app.listen(config.metricsPort, config.metricsAddress, () => {
      resolve(s);
    });
    s.once("error", reject);
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : config.metricsPort;
  log.info("operator started", {
    identity: config.identity,
    namespace: config.namespace,
    metrics: `${config.metricsAddress}:${port}`,
    leaderElect: config.leaderElect,
  });

  controller.start();
  if (elector) elector.start();
  else void controller.startActing();

  return {
    controller,
    metrics,
    server,
    port,
    rest,
    stop: async () => {
      controller.stop();
      await elector?.release().catch((e: unknown) => {
        log.warn("could not release the lease", { error: e });
      });
      await new Promise<void>((resolve) =>
        server.close(() => {
          resolve();
        }),
      );
      log.info("operator stopped", { identity: config.identity });
    },
  };
}

/** Runs until SIGTERM or SIGINT; returns the exit code. */
export async function runOperator(argv: string[]): Promise<number> {
  let config: OperatorConfig;
  try {
    config = parseConfig(argv, process.env);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    process.stderr.write(`mce-operator run: ${e.message}\n${operatorUsage}\n`);
    return 2;
  }
  const running = await startOperator(config);
  await new Promise<void>((resolve) => {
    const shutdown = (): void => {
      void running.stop().then(resolve);
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  });
  return 0;
}
