// The agent's own small Kubernetes HTTP client: a kubeconfig or the in-cluster service account in,
// JSON requests and list-then-watch out, over node:http(s). It exists so the agent never loads
// @kubernetes/client-node, whose generated models alone cost about 86 MiB of RSS on every node; for the
// same reason it uses node's own HTTP client (undici costs ~27 MiB) and loads the YAML parser (~12 MiB)
// only to read a kubeconfig file, never in the cluster.
import { readFileSync } from "node:fs";
import type { Agent as HttpAgent, IncomingMessage } from "node:http";
import { http, https } from "./node-http.ts";
import { createRequire } from "node:module";
import { dirname, isAbsolute, join } from "node:path";

const parseYaml = (text: string): unknown => (createRequire(import.meta.url)("yaml") as typeof import("yaml")).parse(text);

export const APPLY_PATCH = "application/apply-patch+yaml";
export const MERGE_PATCH = "application/merge-patch+json";
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
  /** The bearer token to send now, if any; called for every request. */
  token?: (() => string | undefined) | undefined;
}

/** A request the API server answered with an error status; `code` is the HTTP status, as the reporter reads it. */
export class KubeApiError extends Error {
  readonly code: number;
  /** The Status object's reason (AlreadyExists, Conflict, Expired...), or the HTTP status text. */
  readonly reason: string;

  constructor(code: number, reason: string, message: string) {
    super(message);
    this.name = "KubeApiError";
    this.code = code;
    this.reason = reason;
  }
}

/** The HTTP status of a KubeApiError, undefined for anything else (the server was not reached). */
export function apiStatusOf(error: unknown): number | undefined {
  return error instanceof KubeApiError ? error.code : undefined;
}

// ---- configuration ----

/** A token from a file, read again once it is older than `rereadMs`; the last good one is kept if a read fails. */
export function tokenFromFile(file: string, rereadMs = TOKEN_REREAD_MS, now: () => number = Date.now): () => string | undefined {
  let token: string | undefined;
  let readAt = -Infinity;
  return () => {
    if (now() - readAt >= rereadMs) {
      try {
        token = readFileSync(file, "utf8").trim();
        readAt = now();
      } catch (error) {
        if (token === undefined)
          throw new Error(`cannot read the token file ${file}: ${error instanceof Error ? error.message : String(error)}`, { cause: error });
      }
    }
    return token;
  };
}

/** The in-cluster config: KUBERNETES_SERVICE_HOST/PORT and the mounted service account token and CA. */
export function inClusterConfig(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): ClusterConfig {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (host === undefined || host === "" || port === undefined || port === "")
    throw new Error("not running in a cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT must be set");
  const token = tokenFromFile(join(dir, "token"));
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

/** The kubeconfig's current context (or `context`): server, TLS material and credentials, files resolved against the kubeconfig's directory. */
export function loadKubeconfigFile(file: string, context?: string): ClusterConfig {
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
  const userName = optionalString(ctx, "user", `context '${contextName}'`);
  const user = userName === undefined || userName === "" ? {} : named(config.users, "user", userName, file);
  const base = dirname(file);
  const where = (kind: string, name: string): string => `${file}: ${kind} '${name}'`;
  // Inline base64 data wins over a file, as in kubectl.
  const material = (object: Record<string, unknown>, key: string, what: string): Buffer | undefined => {
    const data = optionalString(object, `${key}-data`, what);
    if (data !== undefined && data !== "") return Buffer.from(data, "base64");
    const path = optionalString(object, key, what);
    if (path === undefined || path === "") return undefined;
    return readFileSync(isAbsolute(path) ? path : join(base, path));
  };
  const server = optionalString(cluster, "server", where("cluster", clusterName));
  if (server === undefined || server === "") throw new Error(`${where("cluster", clusterName)} has no server`);
  const userWhere = where("user", userName ?? "");
  for (const unsupported of ["exec", "auth-provider", "username"]) {
    if (user[unsupported] !== undefined)
      throw new Error(`${userWhere}: '${unsupported}' credentials are not supported by mce-agent; use a token, a token file or a client certificate`);
  }
  const tokenText = optionalString(user, "token", userWhere);
  const tokenPath = optionalString(user, "tokenFile", userWhere);
  let token: (() => string | undefined) | undefined;
  if (tokenText !== undefined && tokenText !== "") token = () => tokenText;
  else if (tokenPath !== undefined && tokenPath !== "") {
    token = tokenFromFile(isAbsolute(tokenPath) ? tokenPath : join(base, tokenPath));
    token();
  }
  const insecure = cluster["insecure-skip-tls-verify"];
  return {
    server: server.replace(/\/+$/, ""),
    ca: material(cluster, "certificate-authority", where("cluster", clusterName)),
    cert: material(user, "client-certificate", userWhere),
    key: material(user, "client-key", userWhere),
    insecureSkipTLSVerify: insecure === true || insecure === "true",
    token,
  };
}

// ---- requests ----

export type Query = Record<string, string | number | boolean | undefined>;

export interface RequestOptions {
  query?: Query | undefined;
  body?: unknown;
  /** Content-Type of the body: JSON_CONTENT (the default), APPLY_PATCH or MERGE_PATCH. */
  contentType?: string | undefined;
  signal?: AbortSignal | undefined;
}

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Record<string, unknown>;
}

interface StatusObject {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

export interface KubeClientOptions {
  /** Per request, not for watches (default 30 s). */
  requestTimeoutMs?: number;
  /** The longest silence on a watch before the client gives up on it (default 330 s): above any timeoutSeconds it asks for. */
  watchIdleMs?: number;
  userAgent?: string;
}

export class KubeClient {
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
      ? new https.Agent({ keepAlive: true, ca: config.ca, cert: config.cert, key: config.key, rejectUnauthorized: config.insecureSkipTLSVerify !== true })
      : new http.Agent({ keepAlive: true });
  }

  url(path: string, query: Query = {}): string {
    const url = new URL(this.server + path);
    for (const [key, value] of Object.entries(query)) if (value !== undefined) url.searchParams.set(key, String(value));
    return url.toString();
  }

  #headers(contentType: string | undefined): Record<string, string> {
    const headers: Record<string, string> = { Accept: JSON_CONTENT, "User-Agent": this.#userAgent };
    if (contentType !== undefined) headers["Content-Type"] = contentType;
    const token = this.#config.token?.();
    if (token !== undefined && token !== "") headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  /** Sends a request; resolves with a 2xx response whose body is still to be read. `idleMs` limits silence on the socket. */
  #send(method: string, path: string, options: RequestOptions, signal: AbortSignal, idleMs: number): Promise<IncomingMessage> {
    const body = options.body === undefined ? undefined : JSON.stringify(options.body);
    const url = new URL(this.url(path, options.query));
    const send = url.protocol === "https:" ? https.request : http.request;
    return new Promise((resolve, reject) => {
      const req = send(
        url,
        { method, headers: this.#headers(body === undefined ? undefined : (options.contentType ?? JSON_CONTENT)), agent: this.#agent, signal, timeout: idleMs },
        (response) => {
          const status = response.statusCode ?? 0;
          if (status >= 200 && status < 300) resolve(response);
          else apiError(method, path, response).then(reject, reject);
        },
      );
      req.on("timeout", () => req.destroy(Object.assign(new Error("timed out"), { name: "TimeoutError" })));
      req.on("error", (error) => {
        reject(unreachable(method, path, error));
      });
      req.end(body);
    });
  }

  /** One request; the parsed JSON answer, or a KubeApiError carrying the status and the API server's message. */
  async request<T>(method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE", path: string, options: RequestOptions = {}): Promise<T> {
    const timeout = AbortSignal.timeout(this.#requestTimeoutMs);
    const signal = options.signal === undefined ? timeout : AbortSignal.any([options.signal, timeout]);
    let text;
    try {
      text = await readBody(await this.#send(method, path, options, signal, this.#requestTimeoutMs));
    } catch (error) {
      if (error instanceof KubeApiError || (error instanceof Error && error.message.startsWith(`${method} ${path}: `))) throw error;
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
   * stream (resolves) or it fails (rejects; an ERROR event's Status becomes a KubeApiError, so 410 Gone
   * has code 410). Aborting `signal` resolves.
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
      if (event.type === "ERROR") {
        const status = event.object as StatusObject;
        throw new KubeApiError(
          status.code ?? 500,
          status.reason ?? "Unknown",
          `watch ${path}: ${status.code ?? ""} ${status.message ?? JSON.stringify(status)}`,
        );
      }
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
      if (error instanceof KubeApiError || (error instanceof Error && error.message.startsWith("watch "))) throw error;
      throw unreachable("watch", path, error);
    }
  }

  /** Closes the connection pool. */
  close(): Promise<void> {
    this.#agent.destroy();
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

async function apiError(method: string, path: string, response: IncomingMessage): Promise<KubeApiError> {
  const text = await readBody(response).catch(() => "");
  let status: StatusObject = {};
  try {
    status = JSON.parse(text) as StatusObject;
  } catch {
    // Not a Status object (a proxy's page): the raw text is the message.
  }
  const code = response.statusCode ?? 0;
  const statusText = response.statusMessage ?? "";
  const message = typeof status.message === "string" ? status.message : text.slice(0, 500) || statusText;
  return new KubeApiError(code, status.reason ?? statusText, `${method} ${path}: ${code} ${status.reason ?? statusText}: ${message}`);
}

// ---- list, then watch ----

/** What an informer keeps of each object: enough to report it deleted. */
export interface ObjectMeta {
  name: string;
  namespace?: string | undefined;
  uid?: string | undefined;
  resourceVersion?: string | undefined;
}

export interface InformerOptions {
  /** The collection, e.g. /api/v1/pods or /apis/mce-operator.io/v1alpha1/memoryerrorevents. */
  path: string;
  /** labelSelector, fieldSelector. */
  query?: Query | undefined;
  /** An object new to the informer, or changed (another resourceVersion): from the list or the watch. */
  onUpsert: (object: Record<string, unknown>, meta: ObjectMeta) => void;
  /** An object deleted: a DELETED event, or gone from a re-list. */
  onDelete?: ((meta: ObjectMeta) => void) | undefined;
  /** A list or watch failed; the next attempt is in `retryInMs`. */
  onError?: ((error: unknown, retryInMs: number) => void) | undefined;
  /** Resolves after `ms`, or early when `signal` aborts. */
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  backoff?: { initialMs: number; maxMs: number } | undefined;
  /** The server ends each watch after a random time in this range, so quiet watches end cleanly (default 240 to 300 s). */
  watchSeconds?: { min: number; max: number } | undefined;
  pageSize?: number | undefined;
}

function metaOf(object: Record<string, unknown>): ObjectMeta {
  const m = (object.metadata ?? {}) as Partial<ObjectMeta>;
  return { name: m.name ?? "", namespace: m.namespace, uid: m.uid, resourceVersion: m.resourceVersion };
}

/** By uid when there is one: a deleted and re-created object is two objects. */
function keyOf(meta: ObjectMeta): string {
  return meta.uid ?? `${meta.namespace ?? ""}/${meta.name}`;
}

interface ListAnswer {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: Record<string, unknown>[];
}

/**
 * Lists, then watches from the list's resourceVersion, until `signal` aborts. A watch the server ends
 * is resumed from the last resourceVersion seen; 410 Gone (too old) re-lists, and objects missing from
 * the new list are reported deleted; any other failure restarts after a capped exponential backoff.
 */
export async function runInformer(client: KubeClient, options: InformerOptions, signal: AbortSignal): Promise<void> {
  const { initialMs, maxMs } = options.backoff ?? { initialMs: 1000, maxMs: 30_000 };
  const { min, max } = options.watchSeconds ?? { min: 240, max: 300 };
  const known = new Map<string, ObjectMeta>();
  let resourceVersion = "";
  let delay = initialMs;
  // Read through a function: the loop's condition does not hold for the awaits inside it.
  const stopped = (): boolean => signal.aborted;

  const upsert = (object: Record<string, unknown>): void => {
    const meta = metaOf(object);
    const key = keyOf(meta);
    const before = known.get(key);
    known.set(key, meta);
    if (before?.resourceVersion === undefined || before.resourceVersion !== meta.resourceVersion) options.onUpsert(object, meta);
  };
  const remove = (key: string, meta: ObjectMeta): void => {
    if (!known.delete(key)) return;
    options.onDelete?.(meta);
  };

  const list = async (): Promise<void> => {
    const items: Record<string, unknown>[] = [];
    let next: string | undefined;
    let version: string;
    do {
      const page = await client.request<ListAnswer>("GET", options.path, {
        query: { ...options.query, limit: options.pageSize ?? 500, continue: next },
        signal,
      });
      items.push(...(page.items ?? []));
      next = page.metadata?.continue ?? undefined;
      if (next === "") next = undefined;
      version = page.metadata?.resourceVersion ?? "";
    } while (next !== undefined);
    const listed = new Set(items.map((item) => keyOf(metaOf(item))));
    for (const [key, meta] of known) if (!listed.has(key)) remove(key, meta);
    for (const item of items) upsert(item);
    resourceVersion = version;
  };

  while (!signal.aborted) {
    try {
      if (resourceVersion === "") {
        await list();
        delay = initialMs;
      }
      const timeoutSeconds = min + Math.floor(Math.random() * (max - min + 1));
      const started = Date.now();
      let events = 0;
      await client.watch(
        options.path,
        { ...options.query, resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
        (event) => {
          events++;
          const meta = metaOf(event.object);
          if (meta.resourceVersion !== undefined && meta.resourceVersion !== "") resourceVersion = meta.resourceVersion;
          delay = initialMs;
          if (event.type === "BOOKMARK") return;
          if (event.type === "DELETED") remove(keyOf(meta), meta);
          else upsert(event.object);
        },
        signal,
      );
      // The server ended the watch (its timeoutSeconds): resume at once, unless it ends watches as soon as
      // they start (a proxy in the way), which must not become a tight loop against the API server.
      if (events === 0 && Date.now() - started < 1000) throw new Error(`watch ${options.path}: the server ended the watch at once, with no event`);
    } catch (error) {
      if (stopped()) return;
      if (apiStatusOf(error) === 410) {
        resourceVersion = "";
        continue;
      }
      // A watch that fell silent past the client's limit: resume from where it was, at once.
      if (error instanceof Error && error.name === "TimeoutError" && resourceVersion !== "") continue;
      options.onError?.(error, delay);
      await options.sleep(delay, signal);
      delay = Math.min(delay * 2, maxMs);
    }
  }
}
