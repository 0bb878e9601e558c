// A Clock that moves only when a test moves it: timers and sleepers fire when `advance` passes their time.
import type { Clock, Timer } from "../clock.ts";

interface Pending {
  id: number;
  at: number;
  fire: () => void;
}

export class FakeClock implements Clock {
  #now: number;
  #timers: Pending[] = [];
  #next = 0;

  constructor(start = Date.parse("2026-01-01T00:00:00Z")) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): Timer {
    const id = ++this.#next;
    this.#timers.push({ id, at: this.#now + Math.max(0, ms), fire: fn });
    return id;
  }

  clearTimeout(timer: Timer): void {
    this.#timers = this.#timers.filter((t) => t.id !== timer);
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted === true) {
        resolve();
        return;
      }
      const abort = (): void => {
        this.clearTimeout(timer);
        resolve();
      };
      const timer = this.setTimeout(() => {
        signal?.removeEventListener("abort", abort);
        resolve();
      }, ms);
      signal?.addEventListener("abort", abort, { once: true });
    });
  }

  /**
   * Moves time forward by `ms` and fires every timer due by then, earliest first, letting their
   * continuations run; a timer they set that is already due fires too.
   */
  async advance(ms: number): Promise<void> {
    this.#now += ms;
    for (let round = 0; round < 1000; round++) {
      const due = this.#timers.filter((t) => t.at <= this.#now).sort((a, b) => a.at - b.at || a.id - b.id);
      this.#timers = this.#timers.filter((t) => t.at > this.#now);
      for (const timer of due) timer.fire();
      await settle();
      if (!this.#timers.some((t) => t.at <= this.#now)) return;
    }
    throw new Error("FakeClock.advance: timers keep setting timers that are already due");
  }

  /** Milliseconds until each pending timer fires, soonest first. */
  get pending(): number[] {
    return this.#timers.map((t) => t.at - this.#now).sort((a, b) => a - b);
  }
}

/** Lets pending promise continuations and immediate callbacks run. */
export async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}
