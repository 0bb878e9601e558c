// A keyed, coalescing work queue in the shape of client-go's workqueue: a key waiting is queued once
// however often it is added; a key being worked on is never worked on twice at once, and an add during
// work re-runs it after; failures back off per key, exponentially; a worker may ask for its key again
// after a delay (requeueAfter); workers are bounded. ValueQueue adds a value per key, the latest offered.
import { systemClock, type Clock, type Timer } from "./clock.ts";

export interface QueueOptions {
  /** Keys worked on at once (default: no bound). */
  concurrency?: number;
  /** The first retry after a failure (default 200 ms)… */
  baseDelayMs?: number;
  /** …doubling up to this (default 5 min). */
  maxDelayMs?: number;
  clock?: Clock;
}

/** What a worker says about a key: done, or run it again after a delay. A rejection backs the key off. */
export type WorkResult = { requeueAfterMs?: number } | undefined;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, { due: number; timer: Timer; first: number }>();
  private readonly failures = new Map<string, number>();
  private readonly options: Required<QueueOptions>;
  private readonly work: (key: string) => Promise<WorkResult>;
  private active = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  onError: (key: string, error: unknown, retryInMs: number) => void = () => undefined;

  constructor(work: (key: string) => Promise<WorkResult>, options: QueueOptions = {}) {
    this.work = work;
    this.options = { concurrency: Infinity, baseDelayMs: 200, maxDelayMs: 300_000, clock: systemClock, ...options };
  }

  /** Keys waiting or in progress. */
  get depth(): number {
    return this.queue.length + this.processing.size;
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.queue.push(key);
    this.pump();
  }

  /** Adds the key after a delay; a key already waiting keeps the earlier of the two times. */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return;
    if (ms <= 0) {
      this.add(key);
      return;
    }
    const { clock } = this.options;
    const due = clock.now() + ms;
    const previous = this.delayed.get(key);
    if (previous !== undefined) {
      if (previous.due <= due) return;
      clock.clearTimeout(previous.timer);
    }
    this.delayed.set(key, { due, timer: this.fireAt(key, ms), first: previous?.first ?? clock.now() });
  }

  /**
   * Adds the key once its adds have paused for `quietMs`, and at the latest `maxWaitMs` after the first
   * one: a burst of changes is worked on once, after the last of them, and a steady stream still is.
   */
  addQuiet(key: string, quietMs: number, maxWaitMs: number): void {
    if (this.stopped) return;
    const { clock } = this.options;
    const now = clock.now();
    const previous = this.delayed.get(key);
    const first = previous?.first ?? now;
    const due = Math.min(now + quietMs, first + maxWaitMs);
    if (previous !== undefined) clock.clearTimeout(previous.timer);
    // Past the longest wait already (a busy event loop ran the timer late): now.
    if (due <= now) {
      this.delayed.delete(key);
      this.add(key);
      return;
    }
    this.delayed.set(key, { due, timer: this.fireAt(key, due - now), first });
  }

  private fireAt(key: string, ms: number): Timer {
    return this.options.clock.setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
  }

  /** The key is gone: drops it if waiting, its delayed add and its backoff; a run in progress is not repeated. */
  forget(key: string): void {
    const delayed = this.delayed.get(key);
    if (delayed !== undefined) this.options.clock.clearTimeout(delayed.timer);
    this.delayed.delete(key);
    this.failures.delete(key);
    this.dirty.delete(key);
    if (this.queued.delete(key)) this.queue.splice(this.queue.indexOf(key), 1);
    this.pump();
  }

  /** Resolves when nothing is queued or running (delayed keys do not count). */
  idle(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    for (const { timer } of this.delayed.values()) this.options.clock.clearTimeout(timer);
    this.delayed.clear();
  }

  private pump(): void {
    while (this.active < this.options.concurrency && this.queue.length > 0) {
      const key = this.queue.shift();
      if (key === undefined) break;
      this.queued.delete(key);
      this.processing.add(key);
      this.active += 1;
      void this.runOne(key);
    }
    if (this.depth === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private async runOne(key: string): Promise<void> {
    try {
      const result = await this.work(key);
      this.failures.delete(key);
      if (result?.requeueAfterMs !== undefined) this.addAfter(key, result.requeueAfterMs);
    } catch (error) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      const delay = Math.min(this.options.baseDelayMs * 2 ** (n - 1), this.options.maxDelayMs);
      this.onError(key, error, delay);
      this.addAfter(key, delay);
    } finally {
      this.processing.delete(key);
      this.active -= 1;
      if (this.dirty.delete(key)) this.add(key);
      this.pump();
    }
  }
}

/**
 * A WorkQueue whose keys carry a value: the work for a key runs on the latest value offered for it.
 * A value is kept until a pass on it finishes with nothing more to do, so a retry or a requeue runs on
 * the latest value, and an offer made while a requeue waits runs at once.
 */
export class ValueQueue<T> {
  readonly #values = new Map<string, T>();
  readonly #queue: WorkQueue;

  constructor(work: (key: string, value: T) => Promise<WorkResult>, options: QueueOptions = {}) {
    this.#queue = new WorkQueue(async (key) => {
      const value = this.#values.get(key);
      if (value === undefined) return undefined;
      const result = await work(key, value);
      if (result?.requeueAfterMs === undefined && this.#values.get(key) === value) this.#values.delete(key);
      return result;
    }, options);
  }

  set onError(handler: (key: string, error: unknown, retryInMs: number) => void) {
    this.#queue.onError = handler;
  }

  offer(key: string, value: T): void {
    this.#values.set(key, value);
    this.#queue.add(key);
  }

  /** The key is gone: nothing more runs for it. */
  forget(key: string): void {
    this.#values.delete(key);
    this.#queue.forget(key);
  }

  idle(): Promise<void> {
    return this.#queue.idle();
  }

  stop(): void {
    this.#queue.stop();
  }
}
