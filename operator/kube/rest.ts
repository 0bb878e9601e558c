// A thin REST client over client-node's KubeConfig (auth, TLS) and fetch: exactly the verbs and patch
// types the operator needs, raw JSON in and out (no model classes: less memory for 30,000 pods), and
// one error type that carries the HTTP status and the API server's own message.
import { HttpMethod, RequestContext, Watch } from "@kubernetes/client-node";
import type { KubeConfig } from "@kubernetes/client-node";
// client-node's TLS settings come as an undici dispatcher, which Node's built-in fetch may not accept.
import { fetch } from "undici";

export class ApiError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.reason = reason;
  }
}

/** True when the request never reached an API server that answered (refused, reset, timed out). */
export function isUnreachable(error: unknown): boolean {
  return !(error instanceof ApiError) || error.status >= 500;
}

export type PatchType = "apply" | "merge" | "strategic" | "json";
const patchContentType: Record<PatchType, string> = {
  apply: "application/apply-patch+yaml",
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
};

export type Query = Record<string, string | number | boolean | undefined>;

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Record<string, unknown>;
}

export class KubeRest {
  private readonly kubeConfig: KubeConfig;
  private readonly watcher: Watch;
  /** Told of every request sent (the verb), for the API-requests metric. */
  onRequest: (verb: string) => void = () => undefined;

  constructor(kubeConfig: KubeConfig) {
    this.kubeConfig = kubeConfig;
    this.watcher = new Watch(kubeConfig);
  }

  private url(path: string, query: Query = {}): string {
    const server = this.kubeConfig.getCurrentCluster()?.server;
    if (!server) throw new Error("the kubeconfig has no current cluster");
    const url = new URL(server.replace(/\/$/, "") + path);
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    return url.toString();
  }

  async request<T>(
    method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE",
    path: string,
    options: { query?: Query; body?: unknown; patch?: PatchType } = {},
  ): Promise<T> {
    const context = new RequestContext(this.url(path, options.query), HttpMethod[method]);
    await this.kubeConfig.applySecurityAuthentication(context);
    const headers = context.getHeaders();
    if (options.body !== undefined) headers["Content-Type"] = options.patch ? patchContentType[options.patch] : "application/json";
    headers.Accept = "application/json";
    this.onRequest(method);
    const response = await fetch(context.getUrl(), {
      method,
      headers,
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
      dispatcher: context.getDispatcher(),
      signal: AbortSignal.timeout(30_000),
    });
    const text = await response.text();
    if (!response.ok) {
      let status: { reason?: string; message?: string } = {};
      try {
        status = JSON.parse(text) as typeof status;
      } catch {
        // not a Status object: keep the raw text as the message
      }
      throw new ApiError(response.status, status.reason ?? response.statusText, `${method} ${path}: ${response.status} ${status.message ?? text}`);
    }
    return (text ? JSON.parse(text) : {}) as T;
  }

  /** Streams watch events until the server or `abort` ends it; `done` gets the error, if any. */
  async watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, done: (error: unknown) => void): Promise<AbortController> {
    this.onRequest("WATCH");
    return this.watcher.watch(
      path,
      { ...query, allowWatchBookmarks: true },
      (type: string, object: Record<string, unknown>) => {
        onEvent({ type: type as WatchEvent["type"], object });
      },
      done,
    );
  }
}
