// The operator process: configuration from flags and environment, the controller, leader election,
// the metrics and health endpoints, and a clean shutdown on SIGTERM that gives the lease up.
import { hostname } from "node:os";
import express from "express";
import type { Server } from "node:http";
import { systemClock, type Clock } from "../runtime/clock.ts";
import { FlagError, flagUsage, parseFlags, type FlagSpecs } from "../runtime/flags.ts";
import { inClusterConfig, loadKubeconfig, type ClusterConfig } from "../runtime/http.ts";
import { jsonLogger, LOG_LEVELS, type Logger, type LogLevel } from "../runtime/log.ts";
import { Controller } from "./controller.ts";
import { KubeActions } from "./kube/actions.ts";
import { KubeLeases } from "./kube/leases.ts";
import { KubeRest } from "./kube/rest.ts";
import { LeaderElector } from "./leader.ts";
import { OperatorMetrics } from "./metrics.ts";

export const operatorFlags = {
  kubeconfig: { type: "string", env: "KUBECONFIG", help: "kubeconfig to use (default: the in-cluster service account)" },
  namespace: { type: "string", env: "POD_NAMESPACE", default: "mce-system", help: "where quarantine pods, events and the lease go" },
  "metrics-address": { type: "string", default: "0.0.0.0", help: "address of /metrics, /healthz and /readyz" },
  "metrics-port": { type: "integer", default: 8080, min: 0, max: 65535, help: "port of /metrics, /healthz and /readyz (0 picks a free port)" },
  "leader-elect": { type: "boolean", default: true, help: "act only while holding the lease (false: a single replica acts at once)" },
  "lease-name": { type: "string", default: "mce-operator", help: "the coordination.k8s.io Lease" },
  identity: { type: "string", env: "POD_NAME", help: "this replica's name in the lease (default: host-pid)" },
  "lease-duration": { type: "duration", default: "15s", min: "1s", help: "how long a lease not renewed holds others off" },
  "renew-deadline": { type: "duration", default: "10s", min: "1s", help: "how long the leader tries to renew before it steps down" },
  "retry-period": { type: "duration", default: "2s", min: "100ms", help: "how often the lease is tried or renewed" },
  concurrency: { type: "integer", default: 16, min: 1, max: 256, help: "memory errors reconciled at once" },
  resync: { type: "duration", default: "5m", min: "1s", help: "how often everything is queued again" },
  "log-level": { type: "enum", default: "info", values: LOG_LEVELS, help: "the least level logged" },
  "quarantine-priority-class": { type: "string", help: "priority class of the quarantine placeholder pods" },
} as const satisfies FlagSpecs;

export const operatorUsage = flagUsage("usage: mce-operator run [flags]", operatorFlags);

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
  logLevel: LogLevel;
  quarantinePriorityClass?: string | undefined;
}

/** Reads the configuration, or "help" for --help; throws a FlagError that names the flag and what was wrong. */
export function parseConfig(argv: readonly string[], env: Record<string, string | undefined>): OperatorConfig | "help" {
  const parsed = parseFlags(operatorFlags, argv, env);
  if (parsed.help) return "help";
  const v = parsed.values;
  const config: OperatorConfig = {
    kubeconfig: v.kubeconfig,
    namespace: v.namespace,
    metricsAddress: v["metrics-address"],
    metricsPort: v["metrics-port"],
    leaderElect: v["leader-elect"],
    leaseName: v["lease-name"],
    identity: v.identity ?? `${hostname()}-${process.pid}`,
    leaseDurationMs: v["lease-duration"],
    renewDeadlineMs: v["renew-deadline"],
    retryPeriodMs: v["retry-period"],
    concurrency: v.concurrency,
    resyncMs: v.resync,
    logLevel: v["log-level"],
    quarantinePriorityClass: v["quarantine-priority-class"],
  };
  if (config.renewDeadlineMs >= config.leaseDurationMs) throw new FlagError("--renew-deadline must be shorter than --lease-duration");
  if (config.retryPeriodMs >= config.renewDeadlineMs) throw new FlagError("--retry-period must be shorter than --renew-deadline");
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

/**
 * Where the API server is and how to authenticate: the kubeconfig file (a token, a token file, a client
 * certificate; a credential plugin loads @kubernetes/client-node for itself alone), else the in-cluster
 * service account, whose token is read again as the kubelet rotates it.
 */
export async function clusterConfig(kubeconfig: string | undefined, clock: Clock = systemClock): Promise<ClusterConfig> {
  return kubeconfig ? loadKubeconfig(kubeconfig, undefined, clock) : inClusterConfig(process.env, undefined, clock);
}

export async function startOperator(
  config: OperatorConfig,
  clock: Clock = systemClock,
  log: Logger = jsonLogger(config.logLevel, { fields: { component: "mce-operator" }, clock }),
): Promise<RunningOperator> {
  const rest = new KubeRest(await clusterConfig(config.kubeconfig, clock));
  const metrics = new OperatorMetrics();
  rest.onRequest = (verb, resource) => {
    metrics.apiRequests.inc({ verb, resource });
  };
  const actions = new KubeActions(rest, { quarantinePriorityClass: config.quarantinePriorityClass, clock });
  const controller = new Controller(rest, actions, metrics, log, {
    namespace: config.namespace,
    concurrency: config.concurrency,
    resyncMs: config.resyncMs,
    clock,
  });
  const elector = config.leaderElect
    ? new LeaderElector(new KubeLeases(rest, config.namespace, config.leaseName), {
        identity: config.identity,
        namespace: config.namespace,
        name: config.leaseName,
        leaseDurationMs: config.leaseDurationMs,
        renewDeadlineMs: config.renewDeadlineMs,
        retryPeriodMs: config.retryPeriodMs,
        clock,
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
      await rest.close();
      log.info("operator stopped", { identity: config.identity });
    },
  };
}

/** Runs until SIGTERM or SIGINT; returns the exit code. */
export async function runOperator(argv: string[]): Promise<number> {
  let config: OperatorConfig | "help";
  try {
    config = parseConfig(argv, process.env);
  } catch (e) {
    if (!(e instanceof FlagError)) throw e;
    process.stderr.write(`mce-operator run: ${e.message}\n${operatorUsage}\n`);
    return 2;
  }
  if (config === "help") {
    process.stdout.write(`${operatorUsage}\n`);
    return 0;
  }
  let running: RunningOperator;
  try {
    running = await startOperator(config);
  } catch (e) {
    // A kubeconfig that cannot be read, no service account, the metrics port taken: said in one line.
    process.stderr.write(`mce-operator run: ${e instanceof Error ? e.message : String(e)}\n`);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const shutdown = (): void => {
      void running.stop().then(resolve);
    };
    process.once("SIGTERM", shutdown);
    process.once("SIGINT", shutdown);
  });
  return 0;
}
