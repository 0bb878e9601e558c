// An in-memory ListWatchClient for informer tests: each list and watch request takes the next scripted
// answer; a watch with no script left stays open until the informer stops it.
import { ApiError, type Query, type WatchEvent } from "../api.ts";
import type { ListWatchClient } from "../informer.ts";

export type ListAnswer = { metadata: { resourceVersion: string; continue?: string }; items: Record<string, unknown>[] } | ApiError | Error;

export interface WatchScript {
  events?: WatchEvent[];
  /** Ends the stream with this failure after the events (an ApiError, or any error for a dropped connection). */
  error?: Error;
}

export class FakeListWatch implements ListWatchClient {
  readonly lists: ListAnswer[] = [];
  readonly watches: WatchScript[] = [];
  /** The query of every request, in order: ["list", query] or ["watch", query]. */
  readonly requests: ["list" | "watch", Query][] = [];
  /** Resolves the watch the informer holds open, once there is one. */
  #open: (() => void) | undefined;
  #waiting: (() => void)[] = [];

  request<T>(_method: "GET", _path: string, options: { query?: Query }): Promise<T> {
    this.requests.push(["list", options.query ?? {}]);
    const answer = this.lists.shift() ?? new ApiError(500, "InternalError", "no list scripted");
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer as T);
  }

  async watch(_path: string, query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    this.requests.push(["watch", query]);
    const script = this.watches.shift();
    if (script === undefined) {
      await new Promise<void>((resolve) => {
        this.#open = resolve;
        signal.addEventListener(
          "abort",
          () => {
            resolve();
          },
          { once: true },
        );
        for (const wake of this.#waiting.splice(0)) wake();
      });
      return;
    }
    for (const event of script.events ?? []) onEvent(event);
    if (script.error !== undefined) throw script.error;
  }

  /** Resolves once the informer has used every script and holds a watch open. */
  whenIdle(): Promise<void> {
    if (this.#open !== undefined && this.watches.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  /** The server ends the watch held open (its timeoutSeconds ran out). */
  endOpenWatch(): void {
    const end = this.#open;
    this.#open = undefined;
    end?.();
  }

  /** The queries of the watch requests. */
  get watchQueries(): Query[] {
    return this.requests.filter(([kind]) => kind === "watch").map(([, query]) => query);
  }
}
