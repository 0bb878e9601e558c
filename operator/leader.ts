// Leader election on a coordination.k8s.io Lease, after client-go's leaderelection: a candidate takes the
// lease when its holder has not renewed it for leaseDuration (timed by this process's own clock from
// when it last saw the record change, so clock skew between nodes does not matter), the leader renews
// every retryPeriod and steps down if it cannot renew within renewDeadline, and releases on shutdown.
import type { Clock, Timer } from "../runtime/clock.ts";

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease {
  metadata: { name: string; namespace: string; resourceVersion?: string };
  spec: LeaseSpec;
}

/** The three calls election needs; `replace` must fail when resourceVersion is stale. */
export interface LeaseClient {
  get(): Promise<Lease | undefined>;
  create(lease: Lease): Promise<Lease>;
  replace(lease: Lease): Promise<Lease>;
}

export interface ElectionOptions {
  identity: string;
  namespace: string;
  name: string;
  leaseDurationMs: number;
  renewDeadlineMs: number;
  retryPeriodMs: number;
  clock: Clock;
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
  onError?: (error: unknown) => void;
}

const microTime = (ms: number): string => new Date(ms).toISOString().replace(/Z$/, "000Z");

export class LeaderElector {
  private readonly client: LeaseClient;
  private readonly options: ElectionOptions;
  private observed: { record: string; at: number } | undefined;
  private lastRenew = 0;
  private timer: Timer;
  private stopped = false;
  leading = false;

  constructor(client: LeaseClient, options: ElectionOptions) {
    if (options.renewDeadlineMs >= options.leaseDurationMs) throw new Error("renewDeadline must be shorter than leaseDuration");
    if (options.retryPeriodMs >= options.renewDeadlineMs) throw new Error("retryPeriod must be shorter than renewDeadline");
    this.client = client;
    this.options = options;
  }

  start(): void {
    this.stopped = false;
    void this.tick();
  }

  /** One attempt to acquire or renew; public so tests can drive it step by step. */
  async tryAcquireOrRenew(): Promise<boolean> {
    const { clock, identity, namespace, name, leaseDurationMs } = this.options;
    const now = clock.now();
    const spec: LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    const current = await this.client.get();
    if (!current) {
      await this.client.create({ metadata: { name, namespace }, spec });
      this.observed = { record: JSON.stringify(spec), at: now };
      return true;
    }
    const record = JSON.stringify(current.spec);
    if (this.observed?.record !== record) this.observed = { record, at: now };
    const holder = current.spec.holderIdentity ?? "";
    const heldByOther = holder !== "" && holder !== identity;
    const durationMs = (current.spec.leaseDurationSeconds ?? 0) * 1000;
    if (heldByOther && this.observed.at + durationMs > now) return false;
    const next: LeaseSpec =
      holder === identity
        ? { ...current.spec, renewTime: microTime(now), leaseDurationSeconds: spec.leaseDurationSeconds }
        : { ...spec, leaseTransitions: (current.spec.leaseTransitions ?? 0) + 1 };
    const updated = await this.client.replace({ metadata: current.metadata, spec: next });
    this.observed = { record: JSON.stringify(updated.spec), at: now };
    return true;
  }

  private schedule(): void {
    if (!this.stopped) this.timer = this.options.clock.setTimeout(() => void this.tick(), this.options.retryPeriodMs);
  }

  private async tick(): Promise<void> {
    const { clock, renewDeadlineMs } = this.options;
    let ok = false;
    try {
      ok = await this.tryAcquireOrRenew();
    } catch (error) {
      this.options.onError?.(error);
    }
    if (this.stopped) return;
    if (ok) {
      this.lastRenew = clock.now();
      if (!this.leading) {
        this.leading = true;
        this.options.onStartedLeading();
      }
    } else if (this.leading && clock.now() - this.lastRenew >= renewDeadlineMs) {
      this.leading = false;
      this.options.onStoppedLeading();
    }
    this.schedule();
  }

  /** Stops campaigning; a leader gives the lease up so the next one need not wait it out. */
  async release(): Promise<void> {
    this.stopped = true;
    this.options.clock.clearTimeout(this.timer);
    if (!this.leading) return;
    this.leading = false;
    const current = await this.client.get();
    if (current?.spec.holderIdentity !== this.options.identity) return;
    await this.client.replace({
      metadata: current.metadata,
      spec: { ...current.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: microTime(this.options.clock.now()) },
    });
  }
}
