// The operator's REST client: the runtime's HTTP client (runtime/http.ts, the agent's too) with exactly
// the verbs and patch types the operator needs, raw JSON in and out (no model classes: less memory for
// 30,000 pods), the runtime's ApiError, which carries the HTTP status and the API server's own message,
// and a count of the requests sent. @kubernetes/client-node is not loaded for it (about 80 MiB of RSS):
// only a kubeconfig that needs a credential plugin loads it (runtime/client-node-credentials.ts).
import type { KubeConfig } from "@kubernetes/client-node";
import { resourceOf, type Query, type WatchEvent } from "../../runtime/api.ts";
import { fromKubeConfig, isKubeConfig } from "../../runtime/client-node-credentials.ts";
import { APPLY_PATCH, JSON_PATCH, KubeClient, MERGE_PATCH, STRATEGIC_MERGE_PATCH, type ClusterConfig, type KubeClientOptions } from "../../runtime/http.ts";
import type { ListWatchClient } from "../../runtime/informer.ts";

export type PatchType = "apply" | "merge" | "strategic" | "json";
const patchContentType: Record<PatchType, string> = {
  apply: APPLY_PATCH,
  merge: MERGE_PATCH,
  strategic: STRATEGIC_MERGE_PATCH,
  json: JSON_PATCH,
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
  readonly client: KubeClient;
  /** Told of every request sent (the verb and the resource it names), for the API-requests metric. */
  onRequest: (verb: string, resource: string) => void = () => undefined;

  /**
   * From a ClusterConfig (runtime/http.ts: inClusterConfig, loadKubeconfig), or from a KubeConfig of
   * client-node for the tests and benchmarks that already hold one (its credentials are asked for
   * each request, as for a credential plugin).
   */
  constructor(config: ClusterConfig | KubeConfig, options: KubeClientOptions = {}) {
    this.client = new KubeClient(isKubeConfig(config) ? fromKubeConfig(config) : config, { userAgent: "mce-operator", ...options });
  }

  request<T>(method: "GET" | "POST" | "PATCH" | "PUT" | "DELETE", path: string, options: RequestOptions = {}): Promise<T> {
    this.onRequest(method, resourceOf(path));
    return this.client.request<T>(method, path, {
      query: options.query,
      body: options.body,
      contentType: options.patch === undefined ? undefined : patchContentType[options.patch],
      signal: options.signal,
    });
  }

  /**
   * One watch request: events until the server ends it (resolves) or it fails (rejects; an ERROR event
   * ends it with its Status as an ApiError, so 410 Gone has status 410). Aborting `signal` resolves.
   */
  async watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return;
    this.onRequest("WATCH", resourceOf(path));
    await this.client.watch(path, { ...query, allowWatchBookmarks: true }, onEvent, signal);
  }

  /** Closes the connection pool. */
  close(): Promise<void> {
    return this.client.close();
  }
}
