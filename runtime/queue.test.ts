import { describe, expect, it } from "vitest";
import { WorkQueue } from "./queue.ts";
import type { Clock } from "./clock.ts";
import { FakeClock } from "./testing/fake-clock.ts";

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** A queue of one worker that only counts its runs. */
function countingQueue(clock: Clock): { q: WorkQueue; runs: () => number } {
  let calls = 0;
  const q = new WorkQueue(
    () => {
      calls += 1;
      return Promise.resolve(undefined);
    },
    { concurrency: 1, clock },
  );
  return { q, runs: () => calls };
}

describe("WorkQueue", () => {
  it("coalesces a key added many times while it waits", async () => {
    const seen: string[] = [];
    let release: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const q = new WorkQueue(
      async (key) => {
        seen.push(key);
        if (key === "block") await gate;
        return undefined;
      },
      { concurrency: 1, clock: new FakeClock() },
    );
    q.add("block");
    for (let i = 0; i < 5; i++) q.add("a");
    expect(q.depth).toBe(2);
    release();
    await q.idle();
    expect(seen).toEqual(["block", "a"]);
  });

  it("never works one key twice at once, and re-runs it when added during work", async () => {
    let running = 0;
    let most = 0;
    let runs = 0;
    const q = new WorkQueue(
      async () => {
        running += 1;
        most = Math.max(most, running);
        runs += 1;
        if (runs === 1) q.add("k");
        await tick();
        running -= 1;
        return undefined;
      },
      { concurrency: 4, clock: new FakeClock() },
    );
    q.add("k");
    await q.idle();
    await q.idle();
    expect([most, runs]).toEqual([1, 2]);
  });

  it("bounds concurrency", async () => {
    let running = 0;
    let most = 0;
    const q = new WorkQueue(
      async () => {
        running += 1;
        most = Math.max(most, running);
        await tick();
        running -= 1;
        return undefined;
      },
      { concurrency: 3, clock: new FakeClock() },
    );
    for (let i = 0; i < 20; i++) q.add(`k${i}`);
    await q.idle();
    expect(most).toBe(3);
  });

  it("backs off a failing key exponentially and forgets on success", async () => {
    const clock = new FakeClock();
    let calls = 0;
    const delays: number[] = [];
    const q = new WorkQueue(
      () => {
        calls += 1;
        return calls <= 3 ? Promise.reject(new Error("API server down")) : Promise.resolve(undefined);
      },
      { concurrency: 1, baseDelayMs: 100, clock },
    );
    q.onError = (_key, _error, delay) => delays.push(delay);
    q.add("k");
    for (let i = 0; i < 4; i++) {
      await q.idle();
      await clock.advance(10_000);
    }
    expect(delays).toEqual([100, 200, 400]);
    expect(calls).toBe(4);
    expect(clock.pending).toEqual([]);
  });

  it("keeps the earlier time when a waiting key is added again later", async () => {
    const clock = new FakeClock();
    const { q, runs } = countingQueue(clock);
    q.addAfter("k", 1000);
    await clock.advance(900);
    q.addAfter("k", 1000);
    q.addAfter("k", 5000);
    expect(clock.pending).toEqual([100]);
    await clock.advance(100);
    await q.idle();
    expect(runs()).toBe(1);
    q.addAfter("k", 1000);
    q.addAfter("k", 10);
    expect(clock.pending).toEqual([10]);
  });

  it("adds a key once its adds pause, and at the latest the longest wait after the first", async () => {
    const clock = new FakeClock();
    const { q, runs } = countingQueue(clock);
    q.addQuiet("k", 1000, 5000);
    await clock.advance(900);
    q.addQuiet("k", 1000, 5000);
    expect(clock.pending).toEqual([1000]);
    await clock.advance(999);
    expect(runs()).toBe(0);
    await clock.advance(1);
    await q.idle();
    expect(runs()).toBe(1);
    // A steady stream of adds, one every 500 ms: worked on 5 s after the first.
    for (let t = 0; t < 5000; t += 500) {
      q.addQuiet("k", 1000, 5000);
      await clock.advance(500);
    }
    await q.idle();
    expect(runs()).toBe(2);
  });

  it("adds a key at once when its longest wait is past before its timer ran (a busy event loop)", async () => {
    const fake = new FakeClock();
    let late = 0;
    const clock: Clock = {
      now: () => fake.now() + late,
      setTimeout: fake.setTimeout.bind(fake),
      clearTimeout: fake.clearTimeout.bind(fake),
      sleep: fake.sleep.bind(fake),
    };
    const { q, runs } = countingQueue(clock);
    q.addQuiet("k", 1000, 5000);
    late = 6000;
    q.addQuiet("k", 1000, 5000);
    await q.idle();
    expect(runs()).toBe(1);
    expect(fake.pending).toEqual([]);
  });

  it("requeues after the delay a worker asks for", async () => {
    const clock = new FakeClock();
    let calls = 0;
    const q = new WorkQueue(() => Promise.resolve(++calls === 1 ? { requeueAfterMs: 5000 } : undefined), { concurrency: 1, clock });
    q.add("k");
    await q.idle();
    expect(clock.pending).toEqual([5000]);
    await clock.advance(5000);
    await q.idle();
    expect(calls).toBe(2);
  });
});
