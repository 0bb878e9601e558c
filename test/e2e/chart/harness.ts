// Helpers for the chart's e2e tests: the pinned helm, kubeconfigs for service-account tokens, a
// recording proxy in front of the API server (every request a component makes, with the answer), the
// operator and agent as processes, a Prometheus server, and RBAC coverage of recorded requests.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { request as httpsRequest } from "node:https";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { parse, parseAllDocuments } from "yaml";
import { toolPath } from "../cluster/tools.ts";
import { waitFor } from "../cluster/helpers.ts";

export const repoRoot = new URL("../../../", import.meta.url).pathname;
export const chartDir = join(repoRoot, "charts", "mce-operator");

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(command: string, args: string[], options: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): Promise<RunResult> {
  const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd ?? repoRoot, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin.end(options.input);
  const code = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c) => {
      resolve(c ?? 1);
    });
  });
  return { code, stdout, stderr };
}

const helmHome = mkdtempSync(join(tmpdir(), "mce-helm-"));

/** The pinned helm with its cache, config and data in a temporary directory. */
export function helm(args: string[], kubeconfig?: string): Promise<RunResult> {
  return run(toolPath("helm"), [...args, ...(kubeconfig === undefined ? [] : ["--kubeconfig", kubeconfig])], {
    env: {
      PATH: process.env.PATH ?? "",
      HOME: helmHome,
      HELM_CACHE_HOME: join(helmHome, "cache"),
      HELM_CONFIG_HOME: join(helmHome, "config"),
      HELM_DATA_HOME: join(helmHome, "data"),
    },
  });
}

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** `helm template` of the chart with the given values; throws with helm's error. */
export async function template(values: Record<string, unknown> = {}, release = "mce", namespace = "mce-system"): Promise<K8sObject[]> {
  const dir = mkdtempSync(join(tmpdir(), "mce-values-"));
  const file = join(dir, "values.yaml");
  writeFileSync(file, JSON.stringify(values));
  const result = await helm(["template", release, chartDir, "--namespace", namespace, "-f", file]);
  if (result.code !== 0) throw new Error(`helm template failed: ${result.stderr}`);
  return parseAllDocuments(result.stdout)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

export function valuesFile(values: Record<string, unknown>): string {
  const file = join(mkdtempSync(join(tmpdir(), "mce-values-")), "values.yaml");
  writeFileSync(file, JSON.stringify(values));
  return file;
}

/**
 * A kubeconfig for `token` against the cluster of `adminKubeconfig`, or against `server`: the recording
 * proxy, plain HTTP on loopback (client-node accepts http:// only with insecure-skip-tls-verify).
 */
export function tokenKubeconfig(adminKubeconfig: string, token: string, name: string, server?: string): string {
  const admin = new KubeConfig();
  admin.loadFromFile(adminKubeconfig);
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("the admin kubeconfig has no current cluster");
  const ca = cluster.caData ?? (cluster.caFile === undefined ? undefined : readFileSync(cluster.caFile).toString("base64"));
  const config = {
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      {
        name: "e2e",
        cluster: server === undefined ? { server: cluster.server, "certificate-authority-data": ca } : { server, "insecure-skip-tls-verify": true },
      },
    ],
    users: [{ name, user: { token } }],
    contexts: [{ name, context: { cluster: "e2e", user: name } }],
    "current-context": name,
  };
  const file = join(mkdtempSync(join(tmpdir(), `mce-${name}-`)), "kubeconfig");
  writeFileSync(file, JSON.stringify(config), { mode: 0o600 });
  return file;
}

export interface RecordedRequest {
  method: string;
  url: string;
  status: number;
}

export interface RecordingProxy {
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

/**
 * A plain-HTTP proxy on 127.0.0.1 that forwards every request (watches included, streamed) to the API
 * server of `adminKubeconfig` and records method, URL and the answer's status. The client's own
 * Authorization header goes through: the API server authenticates the component, not the proxy.
 */
export async function recordingProxy(adminKubeconfig: string): Promise<RecordingProxy> {
  const admin = new KubeConfig();
  admin.loadFromFile(adminKubeconfig);
  const cluster = admin.getCurrentCluster();
  if (!cluster) throw new Error("no current cluster");
  const target = new URL(cluster.server);
  const ca = cluster.caData !== undefined ? Buffer.from(cluster.caData, "base64") : cluster.caFile !== undefined ? readFileSync(cluster.caFile) : undefined;
  const requests: RecordedRequest[] = [];
  const server: Server = createServer((req: IncomingMessage, res) => {
    const headers = { ...req.headers, host: target.host };
    const upstream = httpsRequest({ hostname: target.hostname, port: target.port, path: req.url, method: req.method, headers, ca }, (answer) => {
      requests.push({ method: req.method ?? "", url: req.url ?? "", status: answer.statusCode ?? 0 });
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on("error", (error) => {
      requests.push({ method: req.method ?? "", url: req.url ?? "", status: 502 });
      if (!res.headersSent) res.writeHead(502);
      res.end(String(error));
    });
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}

/** What RBAC sees of a request: verb, API group, resource (with subresource), namespace, name. */
export interface RequestAttributes {
  verb: string;
  apiGroup: string;
  resource: string;
  namespace?: string;
  name?: string;
}

export function requestAttributes(method: string, url: string): RequestAttributes | undefined {
  const parsed = new URL(url, "http://x");
  const parts = parsed.pathname.split("/").filter((p) => p !== "");
  let apiGroup: string;
  let rest: string[];
  if (parts[0] === "api") {
    apiGroup = "";
    rest = parts.slice(2);
  } else if (parts[0] === "apis") {
    apiGroup = parts[1] ?? "";
    rest = parts.slice(3);
  } else return undefined;
  let namespace: string | undefined;
  if (rest[0] === "namespaces" && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [resource = "", name, subresource] = rest;
  const watch = parsed.searchParams.get("watch");
  const verb =
    method === "GET"
      ? name !== undefined
        ? "get"
        : watch === "true" || watch === "1"
          ? "watch"
          : "list"
      : method === "POST"
        ? "create"
        : method === "PUT"
          ? "update"
          : method === "PATCH"
            ? "patch"
            : method === "DELETE"
              ? name !== undefined
                ? "delete"
                : "deletecollection"
              : method.toLowerCase();
  return { verb, apiGroup, resource: subresource === undefined ? resource : `${resource}/${subresource}`, namespace, name };
}

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  resourceNames?: string[];
}

/** One grant: a verb on a resource, from a rule, in a namespace (Role) or everywhere (ClusterRole). */
export interface Grant {
  verb: string;
  apiGroup: string;
  resource: string;
  namespace?: string;
  resourceNames?: string[];
}

export function grantsOf(rules: PolicyRule[], namespace?: string): Grant[] {
  return rules.flatMap((rule) =>
    rule.apiGroups.flatMap((apiGroup) =>
      rule.resources.flatMap((resource) => rule.verbs.map((verb) => ({ verb, apiGroup, resource, namespace, resourceNames: rule.resourceNames }))),
    ),
  );
}

export function covers(grant: Grant, request: RequestAttributes): boolean {
  return (
    grant.verb === request.verb &&
    grant.apiGroup === request.apiGroup &&
    grant.resource === request.resource &&
    (grant.namespace === undefined || grant.namespace === request.namespace) &&
    (grant.resourceNames === undefined || (request.name !== undefined && grant.resourceNames.includes(request.name)))
  );
}

export const grantName = (g: Grant): string =>
  `${g.verb} ${g.apiGroup === "" ? "core" : g.apiGroup}/${g.resource}${g.namespace === undefined ? "" : ` in ${g.namespace}`}${g.resourceNames ? ` named ${g.resourceNames.join(",")}` : ""}`;

export interface Process {
  child: ChildProcess;
  logFile: string;
  exited: Promise<number | null>;
  /** JSON log lines so far. */
  logs(): Record<string, unknown>[];
  stop(): Promise<number | null>;
}

export function startProcess(name: string, args: string[], dir: string): Process {
  const logFile = join(dir, `${name}.log`);
  const child = spawn(join(repoRoot, "node_modules", ".bin", "node"), args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  const out = createWriteStream(logFile);
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => {
      resolve(code);
    }),
  );
  return {
    child,
    logFile,
    exited,
    logs: () => {
      let text: string;
      try {
        text = readFileSync(logFile, "utf8");
      } catch {
        return [];
      }
      return text
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

/** The port a process logged it serves metrics on. */
export async function metricsPort(p: Process, message: string, field: string): Promise<number> {
  return waitFor(
    `${p.logFile}: "${message}"`,
    () => {
      const line = p.logs().find((l) => l.msg === message);
      if (line === undefined) return Promise.resolve(undefined);
      const value = String(line[field]);
      return Promise.resolve(Number(value.split(":").pop()));
    },
    { timeoutMs: 30_000 },
  );
}

export interface PrometheusServer {
  url: string;
  child: ChildProcess;
  stop(): Promise<void>;
}

/** Debian's Prometheus on 127.0.0.1 with a temporary config and data directory. */
export async function startPrometheus(targets: { port: number; labels: Record<string, string> }[], ruleFile: string, dir: string): Promise<PrometheusServer> {
  const port = await freePort();
  const config = {
    global: { scrape_interval: "1s", scrape_timeout: "900ms", evaluation_interval: "1s" },
    rule_files: [ruleFile],
    scrape_configs: [{ job_name: "mce", static_configs: targets.map((t) => ({ targets: [`127.0.0.1:${t.port}`], labels: t.labels })) }],
  };
  const configFile = join(dir, "prometheus.yml");
  writeFileSync(configFile, JSON.stringify(config));
  const check = await run("promtool", ["check", "config", configFile]);
  if (check.code !== 0) throw new Error(`promtool check config: ${check.stdout}${check.stderr}`);
  const log = createWriteStream(join(dir, "prometheus.log"));
  const child = spawn("prometheus", [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.pipe(log);
  child.stderr.pipe(log);
  const url = `http://127.0.0.1:${port}`;
  await waitFor("Prometheus ready", async () => (await fetch(`${url}/-/ready`)).ok, { timeoutMs: 30_000 });
  const exited = new Promise<void>((resolve) =>
    child.once("exit", () => {
      resolve();
    }),
  );
  return {
    url,
    child,
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) =>
    server.close(() => {
      resolve();
    }),
  );
  return port;
}

export function readYaml(path: string): unknown {
  return parse(readFileSync(path, "utf8"));
}
