// List-then-watch one resource into a map of slim objects. client-node's informer stops for good on
// a watch error and keeps whole objects; this one restarts with backoff, re-lists on 410 Gone (and
// reports what vanished meanwhile as deletions), and keeps only what `transform` returns.
import type { Query, WatchEvent } from "./rest.ts";

export interface ListWatchClient {
  request<T>(method: "GET", path: string, options: { query?: Query }): Promise<T>;
  watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, done: (error: unknown) => void): Promise<AbortController>;
}

interface ListResponse {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: Record<string, unknown>[];
}

export interface ReflectorOptions<T> {
  /** Collection path, e.g. /api/v1/pods or /apis/mce-operator.io/v1alpha1/memoryerrorevents */
  path: string;
  query?: Query;
  transform: (raw: Record<string, unknown>) => T;
  onUpsert?: (key: string, obj: T) => void;
  onDelete?: (key: string, obj: T) => void;
  onError?: (error: unknown, retryInMs: number) => void;
  sleep?: (ms: number) => Promise<void>;
  pageSize?: number;
}

export function objectKey(raw: Record<string, unknown>): string {
  const metadata = (raw.metadata ?? {}) as { name?: string; namespace?: string };
  return metadata.namespace ? `${metadata.namespace}/${metadata.name ?? ""}` : (metadata.name ?? "");
}

const statusCode = (error: unknown): number | undefined => {
  if (typeof error !== "object" || error === null) return undefined;
  const e = error as { status?: unknown; code?: unknown; statusCode?: unknown };
  const code = e.status ?? e.statusCode ?? e.code;
  return typeof code === "number" ? code : undefined;
};

const isTimeout = (error: unknown): boolean => error instanceof Error && error.name === "TimeoutError";

export class Reflector<T> {
  readonly store = new Map<string, T>();
  private readonly client: ListWatchClient;
  private readonly options: ReflectorOptions<T>;
  private resourceVersion = "";
  private stopped = false;
  private abort: AbortController | undefined;
  private backoffMs = 0;
  private syncedResolve: (() => void) | undefined;
  /** Resolves after the first complete list. */
  readonly synced: Promise<void>;
  hasSynced = false;

  constructor(client: ListWatchClient, options: ReflectorOptions<T>) {
    this.client = client;
    this.options = options;
    this.synced = new Promise((resolve) => (this.syncedResolve = resolve));
  }

  start(): void {
    this.stopped = false;
    void this.run();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  private async list(): Promise<void> {
    const fresh = new Map<string, T>();
    let continueToken: string | undefined;
    do {
      const page = await this.client.request<ListResponse>("GET", this.options.path, {
        query: { ...this.options.query, limit: this.options.pageSize ?? 500, continue: continueToken },
      });
      for (const raw of page.items ?? []) fresh.set(objectKey(raw), this.options.transform(raw));
      continueToken = page.metadata?.continue || undefined;
      this.resourceVersion = page.metadata?.resourceVersion ?? "";
    } while (continueToken);
    for (const [key, old] of this.store) if (!fresh.has(key)) this.delete(key, old);
    for (const [key, obj] of fresh) this.upsert(key, obj);
    this.hasSynced = true;
    this.syncedResolve?.();
  }

  private upsert(key: string, obj: T): void {
    this.store.set(key, obj);
    this.options.onUpsert?.(key, obj);
  }

  private delete(key: string, obj: T): void {
    this.store.delete(key);
    this.options.onDelete?.(key, obj);
  }

  private async run(): Promise<void> {
    const sleep = this.options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
    while (!this.stopped) {
      let error: unknown;
      try {
        if (!this.resourceVersion) await this.list();
        error = await this.watchOnce();
      } catch (e) {
        error = e ?? new Error("list failed");
      }
      // stop() may have been called while the request was in flight.
      if (this.isStopped()) return;
      // A quiet watch ends at the client's inactivity timeout: resume from where it was, at once.
      if (error === undefined || isTimeout(error)) continue;
      if (statusCode(error) === 410) {
        this.resourceVersion = "";
        continue;
      }
      // 429 (a CRD's storage still initializing, or API priority and fairness) asks for a retry soon, not a
      // growing backoff that would keep a just-installed operator unsynced for half a minute.
      this.backoffMs = statusCode(error) === 429 ? 1000 : Math.min(this.backoffMs ? this.backoffMs * 2 : 250, 30_000);
      this.options.onError?.(error, this.backoffMs);
      await sleep(this.backoffMs);
    }
  }

  private isStopped(): boolean {
    return this.stopped;
  }

  /** One watch request; resolves with its error, or undefined when the server closed it normally. */
  private watchOnce(): Promise<unknown> {
    return new Promise((resolve) => {
      let expired = false;
      const onEvent = (event: WatchEvent): void => {
        const rv = (event.object.metadata as { resourceVersion?: string } | undefined)?.resourceVersion;
        if (event.type === "ERROR") {
          if (statusCode(event.object) === 410) expired = true;
          return;
        }
        if (rv) this.resourceVersion = rv;
        if (event.type === "BOOKMARK") return;
        const key = objectKey(event.object);
        if (event.type === "DELETED") {
          const old = this.store.get(key);
          if (old !== undefined) this.delete(key, old);
        } else {
          this.upsert(key, this.options.transform(event.object));
        }
        this.backoffMs = 0;
      };
      this.client
        // The server ends the watch before client-node's 30 s inactivity timeout would abort it.
        .watch(
          this.options.path,
          { ...this.options.query, resourceVersion: this.resourceVersion, timeoutSeconds: 20 + Math.floor(Math.random() * 8) },
          onEvent,
          (error: unknown) => {
            resolve(expired ? { status: 410 } : (error ?? undefined));
          },
        )
        .then((abort) => (this.abort = abort))
        .catch(resolve);
    });
  }
}
