// A keyed, coalescing work queue in the shape of client-go's workqueue: a key waiting is queued once
// however often it is added; a key being worked on is never worked on twice at once, and an add during
// work re-runs it after; failures back off per key, exponentially; workers are bounded.
export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => {
    clearTimeout(handle as NodeJS.Timeout);
  },
};

export interface QueueOptions {
  concurrency: number;
  baseDelayMs?: number;
  maxDelayMs?: number;
  clock?: Clock;
}

/** What a worker says about a key: done, try again after a delay, or failed (back off). */
export type WorkResult = { requeueAfterMs?: number } | undefined;

export class WorkQueue {
  private readonly queue: string[] = [];
  private readonly queued = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly delayed = new Map<string, { due: number; handle: unknown }>();
  private readonly failures = new Map<string, number>();
  private readonly options: Required<QueueOptions>;
  private readonly work: (key: string) => Promise<WorkResult>;
  private active = 0;
  private stopped = false;
  private idleWaiters: (() => void)[] = [];
  onError: (key: string, error: unknown, retryInMs: number) => void = () => undefined;

  constructor(work: (key: string) => Promise<WorkResult>, options: QueueOptions) {
    this.work = work;
    this.options = { baseDelayMs: 200, maxDelayMs: 300_000, clock: systemClock, ...options };
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
    const due = this.options.clock.now() + ms;
    const previous = this.delayed.get(key);
    if (previous !== undefined) {
      if (previous.due <= due) return;
      this.options.clock.clearTimeout(previous.handle);
    }
    const handle = this.options.clock.setTimeout(() => {
      this.delayed.delete(key);
      this.add(key);
    }, ms);
    this.delayed.set(key, { due, handle });
  }

  /** Resolves when nothing is queued or running (delayed keys do not count). */
  idle(): Promise<void> {
    if (this.depth === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  stop(): void {
    this.stopped = true;
    for (const { handle } of this.delayed.values()) this.options.clock.clearTimeout(handle);
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
