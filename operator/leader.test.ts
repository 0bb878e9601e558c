import { describe, expect, it } from "vitest";
import { LeaderElector } from "./leader.ts";
import type { Lease, LeaseClient } from "./leader.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";

/** An in-memory Lease with the API server's optimistic concurrency. */
class FakeLeases implements LeaseClient {
  lease: Lease | undefined;
  private version = 0;
  down = false;
  get(): Promise<Lease | undefined> {
    if (this.down) return Promise.reject(new Error("connection refused"));
    return Promise.resolve(this.lease && structuredClone(this.lease));
  }
  create(lease: Lease): Promise<Lease> {
    if (this.lease) return Promise.reject(new Error("409 AlreadyExists"));
    this.lease = { ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.version) } };
    return Promise.resolve(structuredClone(this.lease));
  }
  replace(lease: Lease): Promise<Lease> {
    if (this.down) return Promise.reject(new Error("connection refused"));
    if (lease.metadata.resourceVersion !== this.lease?.metadata.resourceVersion) return Promise.reject(new Error("409 Conflict"));
    this.lease = { ...lease, metadata: { ...lease.metadata, resourceVersion: String(++this.version) } };
    return Promise.resolve(structuredClone(this.lease));
  }
}

function options(identity: string, log: string[]): Omit<ConstructorParameters<typeof LeaderElector>[1], "clock"> {
  return {
    identity,
    namespace: "mce-system",
    name: "mce-operator",
    leaseDurationMs: 15_000,
    renewDeadlineMs: 10_000,
    retryPeriodMs: 2_000,
    onStartedLeading: () => log.push(`${identity} leads`),
    onStoppedLeading: () => log.push(`${identity} stops`),
  };
}

function candidate(leases: FakeLeases, clock: FakeClock, identity: string, log: string[]): LeaderElector {
  return new LeaderElector(leases, { ...options(identity, log), clock });
}

async function run(clock: FakeClock, ms: number): Promise<void> {
  for (let t = 0; t < ms; t += 1000) await clock.advance(1000);
}

describe("LeaderElector", () => {
  it("lets only one of two candidates lead", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const log: string[] = [];
    const a = candidate(leases, clock, "a", log);
    const b = candidate(leases, clock, "b", log);
    a.start();
    await settle();
    b.start();
    await run(clock, 60_000);
    expect(log).toEqual(["a leads"]);
    expect([a.leading, b.leading]).toEqual([true, false]);
  });

  it("hands over within the lease duration when the leader dies", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const log: string[] = [];
    let aAlive = true;
    // a's own view of the API: once a is dead, none of its calls arrive.
    const aClient: LeaseClient = {
      get: () => (aAlive ? leases.get() : new Promise(() => undefined)),
      create: (l) => leases.create(l),
      replace: (l) => (aAlive ? leases.replace(l) : new Promise(() => undefined)),
    };
    const a = new LeaderElector(aClient, { ...options("a", log), clock });
    a.start();
    await settle();
    const b = candidate(leases, clock, "b", log);
    b.start();
    await run(clock, 10_000);
    aAlive = false;
    const diedAt = clock.now();
    await run(clock, 30_000);
    expect(b.leading).toBe(true);
    expect(Date.parse(leases.lease?.spec.acquireTime ?? "") - diedAt).toBeLessThanOrEqual(15_000 + 2_000);
    expect(leases.lease?.spec.leaseTransitions).toBe(1);
  });

  it("takes over at once after a clean release", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const log: string[] = [];
    const a = candidate(leases, clock, "a", log);
    a.start();
    await settle();
    const b = candidate(leases, clock, "b", log);
    b.start();
    await run(clock, 4_000);
    await a.release();
    const releasedAt = clock.now();
    await run(clock, 4_000);
    expect(b.leading).toBe(true);
    expect(Date.parse(leases.lease?.spec.acquireTime ?? "") - releasedAt).toBeLessThanOrEqual(4_000);
  });

  it("steps down when it cannot renew within the renew deadline", async () => {
    const clock = new FakeClock();
    const leases = new FakeLeases();
    const log: string[] = [];
    const a = candidate(leases, clock, "a", log);
    a.start();
    await settle();
    leases.down = true;
    await run(clock, 12_000);
    expect(log).toEqual(["a leads", "a stops"]);
  });
});
