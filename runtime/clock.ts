// Time, injected: everything in either program that waits, schedules or stamps goes through a Clock,
// so a test moves time itself (runtime/testing/fake-clock.ts) and never sleeps.

/** A timer set by Clock.setTimeout, for clearTimeout. */
export type Timer = unknown;

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Resolves after `ms`, or early (without rejecting) when `signal` aborts. Holds the process open meanwhile. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
  /** Calls `fn` after `ms`; does not by itself hold the process open. */
  setTimeout(fn: () => void, ms: number): Timer;
  clearTimeout(timer: Timer): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise((resolve) => {
      if (signal?.aborted === true) {
        resolve();
        return;
      }
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal?.addEventListener("abort", done, { once: true });
    }),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (timer) => {
    clearTimeout(timer as NodeJS.Timeout | undefined);
  },
};
