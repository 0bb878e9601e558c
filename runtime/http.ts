// The programs' own small Kubernetes HTTP client, the agent's and the operator's: a kubeconfig or the
// in-cluster service account in, JSON requests and list-then-watch out, over node:http(s). It exists so
// neither program loads @kubernetes/client-node, whose generated models alone cost about 80 MiB of RSS
// (bench/client-memory.bench.ts): on every node for the agent, and against the operator's 256 MiB. For
// the same reason it uses node's own HTTP client (undici costs ~27 MiB) and loads the YAML parser
// (~12 MiB) only to read a kubeconfig file, never in the cluster.
//
// One case it leaves to client-node: a kubeconfig whose user needs a credential plugin (`exec`,
// `auth-provider`) or whose cluster is behind a `proxy-url`. loadKubeconfig then, and only then, loads
// client-node (a dynamic import in client-node-credentials.ts) and takes each request's credentials and
// connection from it; the in-cluster service account and a kubeconfig with a token, a token file or a
// client certificate never load it.
import { readFileSync } from "node:fs";
import type { Agent as HttpAgent, IncomingMessage } from "node:http";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join } from "node:path";
import { ApiError, type Query, type WatchEvent } from "./api.ts";
import { systemClock, type Clock } from "./clock.ts";
import type { ListWatchClient } from "./informer.ts";
import { http, https } from "./node-http.ts";

const parseYaml = (text: string): unknown => (createRequire(import.meta.url)("yaml") as typeof import("yaml")).parse(text);

export const APPLY_PATCH = "application/apply-patch+yaml";
export const MERGE_PATCH = "application/merge-patch+json";
export const STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json";
export const JSON_PATCH = "application/json-patch+json";
export const JSON_CONTENT = "application/json";

export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";
/** How long a token read from a file is used before the file is read again (projected tokens rotate). */
export const TOKEN_REREAD_MS = 60_000;

/** Where and how to reach one API server. */
export interface ClusterConfig {
  /** Base URL, without a trailing slash; may carry a path prefix. */
  server: string;
  ca?: Buffer | undefined;
  cert?: Buffer | undefined;
  key?: Buffer | undefined;
  insecureSkipTLSVerify?: boolean | undefined;
  /** The name the server's certificate must carry, when not the server URL's host (tls-server-name). */
  tlsServerName?: string | undefined;
  /** The bearer token to send now, if any; called for every request. */
  token?: (() => string | undefined) | undefined;
  /** Sent with every request: Impersonate-User, a basic Authorization. */
  headers?: Record<string, string> | undefined;
  /**
   * Credentials something else works out for each request (client-node's credential plugins, see
   * client-node-credentials.ts): headers to send, and the connection pool to send the request through.
   */
  authorize?: (() => Promise<Authorization>) | undefined;
  /** Releases what `authorize` holds (its connection pools); called by KubeClient.close. */
  close?: (() => void) | undefined;
}

/** One request's credentials from `ClusterConfig.authorize`. */
export interface Authorization {
  headers: Record<string, string>;
  agent: HttpAgent;
}

// ---- configuration ----

/** A token from a file, read again once it is older than `rereadMs`; the last good one is kept if a read fails. */
export function tokenFromFile(file: string, clock: Pick<Clock, "now"> = systemClock, rereadMs = TOKEN_REREAD_MS): () => string | undefined {
  let token: string | undefined;
  let readAt = -Infinity;
  return () => {
    if (clock.now() - readAt >= rereadMs) {
      try {
        token = readFileSync(file, "utf8").trim();
        readAt = clock.now();
      } catch (error) {
        if (token === undefined)
          throw new Error(`cannot read the token file ${file}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
    }
    return token;
  };
}

/** The in-cluster config: KUBERNETES_SERVICE_HOST/PORT and the mounted service account token and CA. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR, clock: Pick<Clock, "now"> = systemClock): ClusterConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (host === undefined || host === "" || port === undefined || port === "")
    throw new Error("not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
  const token = tokenFromFile(join(dir, "token"), clock);
  token(); // fail now, not at the first request, when there is no token
  return { server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`, ca: readFileSync(join(dir, "ca.crt")), token };
}

function record(value: unknown, what: string): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw new Error(`${what}: expected a mapping`);
  return value as Record<string, unknown>;
}

function optionalString(object: Record<string, unknown>, key: string, what: string): string | undefined {
  const value = object[key];
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "string") throw new Error(`${what}.${key}: expected a string`);
  return value;
}

function named(list: unknown, field: string, name: string, file: string): Record<string, unknown> {
  if (!Array.isArray(list)) throw new Error(`${file}: no ${field}s`);
  const entry = (list as unknown[]).find((e): e is Record<string, unknown> => typeof e === "object" && e !== null && (e as { name?: unknown }).name === name);
  if (entry === undefined) throw new Error(`${file}: no ${field} named '${name}'`);
  return record(entry[field] ?? {}, `${file}: ${field} '${name}'`);
}

/** The entries a kubeconfig's context names, read but not yet interpreted. */
interface KubeconfigContext {
  file: string;
  context: string;
  clusterName: string;
  cluster: Record<string, unknown>;
  userName: string;
  user: Record<string, unknown>;
}

function readKubeconfig(file: string, context: string | undefined): KubeconfigContext {
  let document: unknown;
  try {
    document = parseYaml(readFileSync(file, "utf8"));
  } catch (error) {
    throw new Error(`cannot read kubeconfig ${file}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
  }
  const config = record(document, file);
  const contextName = context ?? optionalString(config, "current-context", file);
  if (contextName === undefined || contextName === "") throw new Error(`${file}: no current-context`);
  const ctx = named(config.contexts, "context", contextName, file);
  const clusterName = optionalString(ctx, "cluster", `context '${contextName}'`);
  if (clusterName === undefined) throw new Error(`${file}: context '${contextName}' names no cluster`);
  const cluster = named(config.clusters, "cluster", clusterName, file);
  const userName = optionalString(ctx, "user", `context '${contextName}'`) ?? "";
  const user = userName === "" ? {} : named(config.users, "user", userName, file);
  return { file, context: contextName, clusterName, cluster, userName, user };
}

/** What in this context only @kubernetes/client-node can serve, or undefined. */
function needsClientNode({ cluster, user }: KubeconfigContext): string | undefined {
  if (user.exec !== undefined && user.exec !== null) return "'exec' credentials";
  if (user["auth-provider"] !== undefined && user["auth-provider"] !== null) return "'auth-provider' credentials";
  if (typeof cluster["proxy-url"] === "string" && cluster["proxy-url"] !== "") return "a 'proxy-url'";
  return undefined;
}

function clusterConfigOf(entry: KubeconfigContext, clock: Pick<Clock, "now">): ClusterConfig {
  const { file, cluster, clusterName, user, userName } = entry;
  const base = dirname(file);
  const clusterWhere = `${file}: cluster '${clusterName}'`;
  const userWhere = `${file}: user '${userName}'`;
  // Inline base64 data wins over a file, as in kubectl.
  const material = (object: Record<string, unknown>, key: string, what: string): Buffer | undefined => {
    const data = optionalString(object, `${key}-data`, what);
    if (data !== undefined && data !== "") return Buffer.from(data, "base64");
    const path = optionalString(object, key, what);
    if (path === undefined || path === "") return undefined;
    return readFileSync(isAbsolute(path) ? path : join(base, path));
  };
  const server = optionalString(cluster, "server", clusterWhere);
  if (server === undefined || server === "") throw new Error(`${clusterWhere} has no server`);
  const tokenText = optionalString(user, "token", userWhere);
  // kubectl's tokenFile, and the token-file client-node also read.
  const tokenPath = optionalString(user, "tokenFile", userWhere) ?? optionalString(user, "token-file", userWhere);
  let token: (() => string | undefined) | undefined;
  if (tokenText !== undefined && tokenText !== "") token = () => tokenText;
  else if (tokenPath !== undefined && tokenPath !== "") {
    token = tokenFromFile(isAbsolute(tokenPath) ? tokenPath : join(base, tokenPath), clock);
    token();
  }
  const headers: Record<string, string> = {};
  const username = optionalString(user, "username", userWhere);
  if (username !== undefined && username !== "")
    headers.Authorization = `Basic ${Buffer.from(`${username}:${optionalString(user, "password", userWhere) ?? ""}`).toString("base64")}`;
  const impersonate = optionalString(user, "as", userWhere);
  if (impersonate !== undefined && impersonate !== "") headers["Impersonate-User"] = impersonate;
  const insecure = cluster["insecure-skip-tls-verify"];
  return {
    server: server.replace(/\/+$/, ""),
    ca: material(cluster, "certificate-authority", clusterWhere),
    cert: material(user, "client-certificate", userWhere),
    key: material(user, "client-key", userWhere),
    insecureSkipTLSVerify: insecure === true || insecure === "true",
    tlsServerName: optionalString(cluster, "tls-server-name", clusterWhere) || undefined,
    token,
    headers: Object.keys(headers).length === 0 ? undefined : headers,
  };
}

/**
 * The kubeconfig's current context (or `context`): server, TLS material and credentials (a token, a
 * token file read again as it rotates, a client certificate, basic auth), files resolved against the
 * kubeconfig's directory. Never loads @kubernetes/client-node: a context that needs it (a credential
 * plugin, a proxy) is refused. The agent's loader; the operator's is loadKubeconfig.
 */
export function loadKubeconfigFile(file: string, context?: string, clock: Pick<Clock, "now"> = systemClock): ClusterConfig {
  const entry = readKubeconfig(file, context);
  const unsupported = needsClientNode(entry);
  if (unsupported !== undefined)
    throw new Error(
      `${file}: context '${entry.context}': ${unsupported}: not supported by mce-agent, which never loads @kubernetes/client-node; use a token, a token file or a client certificate`,
    );
  return clusterConfigOf(entry, clock);
}

/**
 * As loadKubeconfigFile, and a context that needs a credential plugin (`exec`, `auth-provider`) or a
 * `proxy-url` too: for that one, and only then, @kubernetes/client-node is loaded (about 80 MiB of RSS)
 * and gives each request its credentials and connection, as it did when the operator used it for all.
 */
export async function loadKubeconfig(file: string, context?: string, clock: Pick<Clock, "now"> = systemClock): Promise<ClusterConfig> {
  const entry = readKubeconfig(file, context);
  if (needsClientNode(entry) === undefined) return clusterConfigOf(entry, clock);
  const { loadWithClientNode } = await import("./client-node-credentials.ts");
  return loadWithClientNode(file, entry.context);
}

// ---- requests ----

export interface RequestOptions {
  query?: Query | undefined;
  body?: unknown;
  /** Content-Type of the body: JSON_CONTENT (the default), or a patch's: APPLY_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, JSON_PATCH. */
  contentType?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface KubeClientOptions {
  /** Per request, not for watches (default 30 s). */
  requestTimeoutMs?: number;
  /** The longest silence on a watch before the client gives up on it (default 330 s): above any timeoutSeconds it asks for. */
  watchIdleMs?: number;
  /** Default mce-agent. */
  userAgent?: string;
}

export class KubeClient implements ListWatchClient {
  readonly server: string;
  readonly #config: ClusterConfig;
  readonly #agent: HttpAgent;
  readonly #requestTimeoutMs: number;
  readonly #watchIdleMs: number;
  readonly #userAgent: string;

  constructor(config: ClusterConfig, options: KubeClientOptions = {}) {
    this.#config = config;
    this.server = config.server.replace(/\/+$/, "");
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#watchIdleMs = options.watchIdleMs ?? 330_000;
    this.#userAgent = options.userAgent ?? "mce-agent";
    this.#agent = this.server.startsWith("https:")
      ? new https.Agent({
          keepAlive: true,
          ca: config.ca,
          cert: config.cert,
          key: config.key,
          rejectUnauthorized: config.insecureSkipTLSVerify !== true,
          servername: config.tlsServerName,
        })
      : new http.Agent({ keepAlive: true });
  }

  url(path: string, query: Query = {}): string {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value));
    return url.toString();
  }

  /** The request's headers and the pool to send it through: the token's and the config's, or `authorize`'s. */
  async #credentials(method: string, path: string, contentType: string | undefined): Promise<{ headers: Record<string, string>; agent: HttpAgent }> {
    const headers: Record<string, string> = { Accept: JSON_CONTENT, "User-Agent": this.#userAgent, ...this.#config.headers };
    if (contentType !== undefined) headers["Content-Type"] = contentType;
    const token = this.#config.token?.();
    if (token !== undefined && token !== "") headers.Authorization = `Bearer ${token}`;
    if (this.#config.authorize === undefined) return { headers, agent: this.#agent };
    let authorization: Authorization;
    try {
      authorization = await this.#config.authorize();
    } catch (error) {
      throw new Error(`${method} ${path}: no credentials: ${error instanceof Error ? error.message.trim() : String(error)}`, { cause: error });
    }
    return { headers: { ...headers, ...authorization.headers }, agent: authorization.agent };
  }

  /** Sends a request; resolves with a 2xx response whose body is still to be read. `idleMs` limits silence on the socket. */
  async #send(method: string, path: string, options: RequestOptions, signal: AbortSignal, idleMs: number): Promise<IncomingMessage> {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const url = new URL(this.url(path, options.query));
    const send = url.protocol === "https:" ? https.request : http.request;
    const { headers, agent } = await this.#credentials(method, path, body === undefined ? undefined : (options.contentType ?? JSON_CONTENT));
    return new Promise((resolve, reject) => {
      const req = send(url, { method, headers, agent, signal, timeout: idleMs }, (response) => {
        const status = response.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve(response);
        else apiError(method, path, response).then(reject, reject);
      });
      req.on("timeout", () => req.destroy(Object.assign(new Error("timed out"), { name: "TimeoutError" })));
      req.on("error", (error) => {
        reject(unreachable(method, path, error));
      });
      req.end(body);
    });
  }

  /** One request; the parsed JSON answer, or an ApiError carrying the status and the API server's message. */
  async request<T>(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string, options: RequestOptions = {}): Promise<T> {
    const timeout = AbortSignal.timeout(this.#requestTimeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    let text;
    try {
      text = await readBody(await this.#send(method, path, options, signal, this.#requestTimeoutMs));
    } catch (error) {
      if (error instanceof ApiError || (error instanceof Error && error.message.startsWith(`${method} ${path}: `))) throw error;
      throw unreachable(method, path, timeout.aborted ? Object.assign(new Error("timed out"), { name: "TimeoutError" }) : error);
    }
    if (text === "") return {} as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new Error(`${method} ${path}: the answer is not JSON: ${text.slice(0, 200)}`);
    }
  }

  /**
   * One watch request (`watch=true` is added): calls `onEvent` for each event until the server ends the
   * stream (resolves) or it fails (rejects; an ERROR event's Status becomes an ApiError, so 410 Gone
   * has status 410). Aborting `signal` resolves.
   */
  async watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    let response;
    try {
      response = await this.#send("GET", path, { query: { ...query, watch: true } }, signal, this.#watchIdleMs);
    } catch (error) {
      if (signal.aborted) return;
      throw error;
    }
    const decoder = new TextDecoder();
    let buffered = "";
    const line = (text: string): void => {
      if (text.trim() === "") return;
      let event: WatchEvent;
      try {
        event = JSON.parse(text) as WatchEvent;
      } catch {
        throw new Error(`watch ${path}: not a watch event: ${text.slice(0, 200)}`);
      }
      if (event.type === "ERROR") throw ApiError.fromStatus(`watch ${path}`, event.object);
      onEvent(event);
    };
    try {
      for await (const chunk of response as AsyncIterable<Buffer>) {
        buffered += decoder.decode(chunk, { stream: true });
        let newline;
        while ((newline = buffered.indexOf("\n")) >= 0) {
          const text = buffered.slice(0, newline);
          buffered = buffered.slice(newline + 1);
          line(text);
        }
      }
      line(buffered + decoder.decode());
    } catch (error) {
      response.destroy();
      if (signal.aborted) return;
      if (error instanceof ApiError || (error instanceof Error && error.message.startsWith("watch "))) throw error;
      throw unreachable("watch", path, error);
    }
  }

  /** Closes the connection pools. */
  close(): Promise<void> {
    this.#agent.destroy();
    this.#config.close?.();
    return Promise.resolve();
  }
}

async function readBody(response: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of response as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

/** A failure with no answer from the API server (refused, reset, timed out), its cause in the message. */
function unreachable(method: string, path: string, error: unknown): Error {
  const cause = error instanceof Error && error.name === "AbortError" && error.cause instanceof Error ? error.cause : error;
  const what = cause instanceof Error ? (cause.name === "TimeoutError" ? "timed out" : cause.message) : String(cause);
  const wrapped = new Error(`${method} ${path}: ${what}`, { cause: error });
  if (cause instanceof Error && cause.name === "TimeoutError") wrapped.name = "TimeoutError";
  return wrapped;
}

async function apiError(method: string, path: string, response: IncomingMessage): Promise<ApiError> {
  const text = await readBody(response).catch(() => "");
  return ApiError.fromResponse(`${method} ${path}`, response.statusCode ?? 0, response.statusMessage ?? "", text);
}
