// List-then-watch one collection into a map of what `transform` keeps of each object, for both
// programs: the agent through its light HTTP client, the operator through its REST layer, each behind
// ListWatchClient. A watch the server ends is resumed from the last resourceVersion seen; 410 Gone
// (too old) lists again and reports what vanished meanwhile as deleted; any other failure restarts
// after a capped exponential backoff (429, a CRD's storage still starting or API priority and fairness,
// after a short flat pause instead).
import type { Clock } from "./clock.ts";
import { apiStatusOf, type Query, type WatchEvent } from "./api.ts";

/** The two calls an informer makes; both of the programs' clients have them. */
export interface ListWatchClient {
  request<T>(method: "GET", path: string, options: { query?: Query; signal?: AbortSignal }): Promise<T>;
  /**
   * One watch request: calls `onEvent` for each event until the server ends the stream (resolves) or it
   * fails (rejects; an ERROR event ends it with the ApiError of its Status, so 410 Gone has status 410).
   * Aborting `signal` resolves.
   */
  watch(path: string, query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void>;
}

export interface InformerOptions<T> {
  /** The collection, e.g. /api/v1/pods or /apis/mce-operator.io/v1alpha1/memoryerrorevents. */
  path: string;
  /** labelSelector, fieldSelector. */
  query?: Query;
  /** What is kept of an object: a slim copy, or the object itself. */
  transform: (raw: Record<string, unknown>) => T;
  /** An object new, or changed (another resourceVersion): from a list or the watch. */
  onUpsert?: (key: string, object: T) => void;
  /** An object deleted: a DELETED event, gone from a new list, or replaced by another of the same name (another uid). */
  onDelete?: (key: string, object: T) => void;
  /** A list or watch failed; the next attempt is in `retryInMs`. */
  onError?: (error: unknown, retryInMs: number) => void;
  clock: Clock;
  /** Default 250 ms doubling to 30 s; reset by a list or an event that got through. */
  backoff?: { initialMs: number; maxMs: number };
  /**
   * The server is asked to end each watch after a random time in this range, so a quiet watch ends
   * cleanly before the client's own silence limit (default 240 to 300 s).
   */
  watchSeconds?: { min: number; max: number };
  pageSize?: number;
}

interface ListAnswer {
  metadata?: { resourceVersion?: string; continue?: string };
  items?: Record<string, unknown>[];
}

interface Meta {
  name?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
}

const metaOf = (raw: Record<string, unknown>): Meta => raw.metadata ?? {};

/** namespace/name, or the name of a cluster-scoped object. */
export function objectKey(raw: Record<string, unknown>): string {
  const { namespace, name = "" } = metaOf(raw);
  return namespace ? `${namespace}/${name}` : name;
}

const isTimeout = (error: unknown): boolean => error instanceof Error && error.name === "TimeoutError";
/** A watch that the server ends this soon with no event is ended by something in the way (a proxy), not by its timeout. */
const TOO_SOON_MS = 1000;
const TOO_MANY_REQUESTS_PAUSE_MS = 1000;

export class Informer<T> {
  /** What is kept of each object, by key. */
  readonly store = new Map<string, T>();
  /** Resolves after the first complete list. */
  readonly synced: Promise<void>;
  hasSynced = false;
  readonly #client: ListWatchClient;
  readonly #options: InformerOptions<T>;
  /** Each object's uid and resourceVersion: a changed uid is a new object, an unchanged resourceVersion no change. */
  readonly #versions = new Map<string, { uid: string | undefined; resourceVersion: string | undefined }>();
  #resourceVersion = "";
  #markSynced: () => void = () => undefined;

  constructor(client: ListWatchClient, options: InformerOptions<T>) {
    this.#client = client;
    this.#options = options;
    this.synced = new Promise((resolve) => (this.#markSynced = resolve));
  }

  /** Lists and watches until `signal` aborts. */
  async run(signal: AbortSignal): Promise<void> {
    const { clock, onError } = this.#options;
    const { initialMs, maxMs } = this.#options.backoff ?? { initialMs: 250, maxMs: 30_000 };
    let delay = initialMs;
    // Read through a function: the loop's condition does not hold for the awaits inside it.
    const stopped = (): boolean => signal.aborted;
    while (!stopped()) {
      try {
        if (this.#resourceVersion === "") {
          await this.#list(signal);
          delay = initialMs;
        }
        const started = clock.now();
        let events = 0;
        await this.#watch(signal, () => {
          events++;
          delay = initialMs;
        });
        if (!stopped() && events === 0 && clock.now() - started < TOO_SOON_MS)
          throw new Error(`watch ${this.#options.path}: the server ended the watch at once, with no event`);
      } catch (error) {
        if (stopped()) return;
        if (apiStatusOf(error) === 410) {
          this.#resourceVersion = "";
          continue;
        }
        // A watch that fell silent past the client's limit: resume from where it was, at once.
        if (isTimeout(error) && this.#resourceVersion !== "") continue;
        const pause = apiStatusOf(error) === 429 ? Math.max(initialMs, TOO_MANY_REQUESTS_PAUSE_MS) : delay;
        onError?.(error, pause);
        await clock.sleep(pause, signal);
        if (pause === delay) delay = Math.min(delay * 2, maxMs);
      }
    }
  }

  async #list(signal: AbortSignal): Promise<void> {
    const { path, query, pageSize = 500 } = this.#options;
    // Each page becomes slim copies before the next is asked for: 30,000 pods' raw objects held at once
    // outgrew the chart's 256 MiB heap while the operator listed them.
    const listed = new Set<string>();
    let next: string | undefined;
    let version: string;
    do {
      const page = await this.#client.request<ListAnswer>("GET", path, { query: { ...query, limit: pageSize, continue: next }, signal });
      for (const item of page.items ?? []) {
        listed.add(objectKey(item));
        this.#upsert(item);
      }
      next = page.metadata?.continue || undefined;
      version = page.metadata?.resourceVersion ?? "";
    } while (next !== undefined);
    for (const key of [...this.store.keys()]) if (!listed.has(key)) this.#delete(key);
    this.#resourceVersion = version;
    if (!this.hasSynced) {
      this.hasSynced = true;
      this.#markSynced();
    }
  }

  #watch(signal: AbortSignal, seen: () => void): Promise<void> {
    const { path, query, watchSeconds = { min: 240, max: 300 } } = this.#options;
    const timeoutSeconds = watchSeconds.min + Math.floor(Math.random() * (watchSeconds.max - watchSeconds.min + 1));
    return this.#client.watch(
      path,
      { ...query, resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
      (event) => {
        if (event.type === "ERROR") return;
        const { resourceVersion } = metaOf(event.object);
        if (resourceVersion) this.#resourceVersion = resourceVersion;
        seen();
        if (event.type === "BOOKMARK") return;
        if (event.type === "DELETED") this.#delete(objectKey(event.object), event.object);
        else this.#upsert(event.object);
      },
      signal,
    );
  }

  #upsert(raw: Record<string, unknown>): void {
    const key = objectKey(raw);
    const { uid, resourceVersion } = metaOf(raw);
    const before = this.#versions.get(key);
    if (before !== undefined && before.uid !== undefined && uid !== undefined && before.uid !== uid) this.#delete(key);
    else if (before?.resourceVersion !== undefined && before.resourceVersion === resourceVersion) return;
    const object = this.#options.transform(raw);
    this.#versions.set(key, { uid, resourceVersion });
    this.store.set(key, object);
    this.#options.onUpsert?.(key, object);
  }

  /** Forgets the object; `last` is its final state when the watch showed it. */
  #delete(key: string, last?: Record<string, unknown>): void {
    const kept = this.store.get(key);
    this.#versions.delete(key);
    if (!this.store.delete(key) || kept === undefined) return;
    this.#options.onDelete?.(key, last === undefined ? kept : this.#options.transform(last));
  }
}
