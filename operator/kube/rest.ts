// A thin REST client over client-node's KubeConfig (auth, TLS) and fetch: exactly the verbs and patch
// types the operator needs, raw JSON in and out (no model classes: less memory for 30,000 pods), and
// the runtime's ApiError, which carries the HTTP status and the API server's own message.
import { HttpMethod, RequestContext, Watch } from "@kubernetes/client-node";
import type { KubeConfig } from "@kubernetes/client-node";
// client-node's TLS settings come as an undici dispatcher, which Node's built-in fetch may not accept.
import { fetch } from "undici";
import { ApiError, type Query, type WatchEvent } from "../../runtime/api.ts";
import type { ListWatchClient } from "../../runtime/informer.ts";

export type PatchType = "apply" | "merge" | "strategic" | "json";
const patchContentType: Record<PatchType, string> = {
  apply: "application/apply-patch+yaml",
  merge: "application/merge-patch+json",
  strategic: "application/strategic-merge-patch+json",
  json: "application/json-patch+json",
};

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  patch?: PatchType;
  signal?: AbortSignal;
}

/** The requests KubeActions and KubeLeases make: KubeRest, or a fake in their tests. */
export interface RestClient {
  request<T>(method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE", path: string, options?: RequestOptions): Promise<T>;
}

export class KubeRest implements RestClient, ListWatchClient {
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

  async request<T>(method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE", path: string, options: RequestOptions = {}): Promise<T> {
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
      signal: options.signal === undefined ? AbortSignal.timeout(30_000) : AbortSignal.any([options.signal, AbortSignal.timeout(30_000)]),
    });
    const text = await response.text();
    if (!response.ok) throw ApiError.fromResponse(`${method} ${path}`, response.status, response.statusText, text);
    return (text ? JSON.parse(text) : {}) as T;
  }

  /**
   * One watch request: events until the server ends it (resolves) or it fails (rejects; an ERROR event
   * ends it with its Status as an ApiError). Aborting `signal` resolves.
   */
  async watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    this.onRequest("WATCH");
    // Set from callbacks: an ERROR event's Status, and client-node's handle on the request.
    const watch: { failure?: ApiError; request?: AbortController } = {};
    const ended = new Promise<unknown>((resolve) => {
      this.watcher
        .watch(
          path,
          { ...query, allowWatchBookmarks: true },
          (type: string, object: Record<string, unknown>) => {
            if (watch.failure !== undefined) return;
            if (type === "ERROR") {
              watch.failure = ApiError.fromStatus(`watch ${path}`, object);
              watch.request?.abort();
              return;
            }
            onEvent({ type: type as WatchEvent["type"], object });
          },
          resolve,
        )
        .then((controller) => {
          watch.request = controller;
          if (watch.failure !== undefined || signal.aborted) controller.abort();
        }, resolve);
    });
    const aborted = (): boolean => signal.aborted;
    const abort = (): void => watch.request?.abort();
    signal.addEventListener("abort", abort, { once: true });
    try {
      const error = await ended;
      // Read through a function: the check before the await does not hold after it.
      if (aborted()) return;
      if (watch.failure !== undefined) throw watch.failure;
      if (error !== undefined && error !== null) throw error instanceof Error ? error : new Error(`watch ${path} failed`, { cause: error });
    } finally {
      signal.removeEventListener("abort", abort);
    }
  }
}
