// Runs work for one key (a MemoryErrorEvent's name) one pass at a time, always on the latest value
// offered: a value offered during a pass runs after it, a failed pass is retried with the latest value
// after a backoff, and a pass that must wait (a mapper still holds the page) is repeated after a while,
// or at once when a new value is offered. The early signal and the pool replacement both run this way.
import type { Clock } from "./clock.ts";
import type { Logger } from "./log.ts";

export interface KeyedRunnerOptions<T> {
  /** One pass; "again" repeats it after `recheckMs` unless something newer is offered first. */
  run: (value: T) => Promise<"done" | "again">;
  /** What the work is, for the retry log line ("early signal"). */
  what: string;
  clock: Clock;
  log: Logger;
  /** The first retry after a failed pass (default 5 s)… */
  retryMs?: number;
  /** …doubling up to this (default: retryMs, so no doubling). */
  maxRetryMs?: number;
  recheckMs?: number;
}

export class KeyedRunner<T> {
  readonly #options: KeyedRunnerOptions<T>;
  readonly #latest = new Map<string, T>();
  readonly #running = new Set<string>();
  readonly #forgotten = new Set<string>();
  readonly #wake = new Map<string, () => void>();

  constructor(options: KeyedRunnerOptions<T>) {
    this.#options = options;
  }

  offer(key: string, value: T, signal: AbortSignal, retryMs = this.#options.retryMs ?? 5000): void {
    this.#latest.set(key, value);
    this.#forgotten.delete(key);
    this.#wake.get(key)?.();
    if (this.#running.has(key)) return;
    this.#running.add(key);
    const { run, what, clock, log, maxRetryMs = retryMs, recheckMs = 5000 } = this.#options;
    void (async () => {
      let delay = retryMs;
      for (let next = this.#latest.get(key); next !== undefined && !signal.aborted; next = this.#latest.get(key)) {
        this.#latest.delete(key);
        try {
          if ((await run(next)) === "again" && !this.#latest.has(key) && !this.#forgotten.has(key)) {
            this.#latest.set(key, next);
            await this.#pause(key, recheckMs, signal);
          }
          delay = retryMs;
        } catch (error) {
          log.warn(`${what} not finished; will retry`, { memoryErrorEvent: key, error, retryInMs: delay });
          if (!this.#latest.has(key) && !this.#forgotten.has(key)) this.#latest.set(key, next);
          await clock.sleep(delay, signal);
          delay = Math.min(delay * 2, maxRetryMs);
        }
      }
      this.#running.delete(key);
      this.#forgotten.delete(key);
    })();
  }

  /** The key is gone: stop waiting on it and run nothing more for it. */
  forget(key: string): void {
    this.#forgotten.add(key);
    this.#latest.delete(key);
    this.#wake.get(key)?.();
  }

  /** Sleeps `ms`, or less when the key is offered again or forgotten. */
  async #pause(key: string, ms: number, signal: AbortSignal): Promise<void> {
    const wake = new AbortController();
    const stop = (): void => {
      wake.abort();
    };
    signal.addEventListener("abort", stop, { once: true });
    this.#wake.set(key, stop);
    try {
      await this.#options.clock.sleep(ms, wake.signal);
    } finally {
      this.#wake.delete(key);
      signal.removeEventListener("abort", stop);
    }
  }
}
