// Wires the pieces: informers keep ClusterState current and enqueue keys; work queues feed the
// reconciler; a periodic resync re-queues everything (level-triggered: a missed watch event costs at
// most one resync period); leader election decides whether this replica acts at all. Memory errors have
// a queue of their own, so node health and policy status, which can wait a moment, never delay a
// decision or an eviction; their keys are also held back briefly so a burst on one node coalesces.
import type { ContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "../crds/generated.ts";
import { group, version } from "../crds/naming.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { Informer, type InformerOptions, type ListWatchClient } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import { WorkQueue } from "../runtime/queue.ts";
import type { ClusterActions } from "./actions.ts";
import type { OperatorMetrics } from "./metrics.ts";
import { Reconciler } from "./reconciler.ts";
import { ClusterState, nodeInfo, pdbInfo, podInfo } from "./state.ts";

export interface ControllerOptions {
  namespace: string;
  concurrency: number;
  resyncMs: number;
  clock: Clock;
}

const backgroundDelayMs = 1000;
// The server ends each watch before client-node's 30 s inactivity limit would abort it.
const watchSeconds = { min: 20, max: 27 };
const crd = (plural: string): string => `/apis/${group}/${version}/${plural}`;

export class Controller {
  readonly state = new ClusterState();
  readonly queue: WorkQueue;
  /** Node health and policy status: lower priority, coalesced. */
  readonly background: WorkQueue;
  readonly reconciler: Reconciler;
  private readonly informers: Pick<Informer<unknown>, "run" | "hasSynced" | "synced">[] = [];
  private watching: AbortController | undefined;
  private readonly log: Logger;
  private readonly metrics: OperatorMetrics;
  private readonly options: ControllerOptions;
  private resyncTimer: Timer;
  private acting = false;

  constructor(client: ListWatchClient, actions: ClusterActions, metrics: OperatorMetrics, log: Logger, options: ControllerOptions) {
    this.log = log;
    this.metrics = metrics;
    this.options = options;
    this.reconciler = new Reconciler(this.state, actions, metrics, log, {
      namespace: options.namespace,
      now: () => options.clock.now(),
      enqueueNode: (name) => {
        this.enqueue(`node/${name}`);
      },
    });
    this.queue = new WorkQueue((key) => this.work(key), { concurrency: options.concurrency, clock: options.clock });
    this.background = new WorkQueue((key) => this.work(key), { concurrency: 2, clock: options.clock });
    for (const q of [this.queue, this.background])
      q.onError = (key, error, retryInMs) => {
        metrics.reconcileErrors.inc({ kind: key.split("/")[0] ?? "" });
        log.warn("reconcile failed, retrying", { key, error, retryInMs });
      };
    const onError = (what: string) => (error: unknown, retryInMs: number) => {
      log.warn("watch failed, restarting", { resource: what, error, retryInMs });
    };
    const { state } = this;
    const watch = <T>(informer: Omit<InformerOptions<T>, "clock" | "watchSeconds" | "onError">): void => {
      const what = informer.path.slice(informer.path.lastIndexOf("/") + 1);
      this.informers.push(new Informer(client, { ...informer, clock: options.clock, watchSeconds, onError: onError(what) }));
    };
    watch<MemoryErrorEvent>({
      path: crd("memoryerrorevents"),
      transform: (raw) => raw as unknown as MemoryErrorEvent,
      onUpsert: (_key, event) => {
        state.upsertEvent(event);
        this.enqueue(`event/${event.metadata.name}`);
      },
      onDelete: (_key, event) => {
        state.deleteEvent(event.metadata.name);
        this.enqueue(`node/${event.spec.nodeName}`);
      },
    });
    watch<NodeMemoryHealth>({
      path: crd("nodememoryhealths"),
      transform: (raw) => raw as unknown as NodeMemoryHealth,
      onUpsert: (_key, health) => {
        state.upsertHealth(health, options.clock.now());
        this.nodeChanged(health.metadata.name);
      },
      onDelete: (_key, health) => {
        state.deleteHealth(health.metadata.name);
      },
    });
    watch<ContainmentPolicy>({
      path: crd("containmentpolicies"),
      transform: (raw) => raw as unknown as ContainmentPolicy,
      onUpsert: (_key, policy) => {
        state.policies.set(policy.metadata.name, policy);
        this.enqueuePolicies();
      },
      onDelete: (_key, policy) => {
        state.policies.delete(policy.metadata.name);
        this.enqueuePolicies();
      },
    });
    watch({
      path: "/api/v1/nodes",
      transform: nodeInfo,
      onUpsert: (_key, node) => {
        const old = state.nodes.get(node.name);
        state.nodes.set(node.name, node);
        if (!old || JSON.stringify(old.labels) !== JSON.stringify(node.labels)) this.enqueuePolicies();
        if (JSON.stringify(old?.allocatableBytes) !== JSON.stringify(node.allocatableBytes)) this.nodeChanged(node.name);
      },
      onDelete: (_key, node) => {
        state.nodes.delete(node.name);
        this.enqueuePolicies();
      },
    });
    watch({
      path: "/apis/policy/v1/poddisruptionbudgets",
      transform: pdbInfo,
      onUpsert: (key, pdb) => state.pdbs.set(key, pdb),
      onDelete: (key) => state.pdbs.delete(key),
    });
    watch({
      path: "/api/v1/pods",
      transform: podInfo,
      onUpsert: (key, pod) => {
        state.upsertPod(key, pod);
      },
      onDelete: (key, pod) => {
        state.deletePod(key);
        // A mapper gone may finish an eviction or free a private poisoned page.
        if (pod.nodeName) this.nodeChanged(pod.nodeName);
      },
    });
  }

  /** Watches start at once, so a standby replica is ready to act the moment it becomes leader. */
  start(): void {
    if (this.watching) return;
    const watching = new AbortController();
    this.watching = watching;
    for (const informer of this.informers)
      informer.run(watching.signal).catch((error: unknown) => {
        this.log.error("watch stopped", { error });
      });
  }

  get isActing(): boolean {
    return this.acting;
  }

  get synced(): boolean {
    return this.informers.every((i) => i.hasSynced);
  }

  async waitForSync(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.synced));
  }

  /** Starts acting: everything is queued once, then on change and at every resync. */
  async startActing(): Promise<void> {
    await this.waitForSync();
    this.acting = true;
    this.log.info("caches synced, reconciling", { events: this.state.events.size, nodes: this.state.nodes.size, pods: this.state.pods.size });
    this.resync();
  }

  stopActing(): void {
    this.acting = false;
    this.options.clock.clearTimeout(this.resyncTimer);
  }

  stop(): void {
    this.stopActing();
    this.queue.stop();
    this.background.stop();
    this.watching?.abort();
    this.watching = undefined;
  }

  private resync(): void {
    if (!this.acting) return;
    for (const name of this.state.events.keys()) this.enqueue(`event/${name}`);
    for (const name of this.state.nodes.keys()) this.enqueue(`node/${name}`);
    this.enqueuePolicies();
    this.resyncTimer = this.options.clock.setTimeout(() => {
      this.resync();
    }, this.options.resyncMs);
  }

  private enqueue(key: string): void {
    if (!this.acting) return;
    if (key.startsWith("event/")) this.queue.add(key);
    else this.background.addAfter(key, backgroundDelayMs);
    this.metrics.queueDepth.set(this.queue.depth + this.background.depth);
  }

  private enqueuePolicies(): void {
    for (const name of this.state.policies.keys()) this.enqueue(`policy/${name}`);
  }

  /** A node's capacity, pools or pods changed: its events may now finish or release quarantine. */
  private nodeChanged(nodeName: string): void {
    this.enqueue(`node/${nodeName}`);
    for (const e of this.state.eventsOn(nodeName))
      if (e.status?.phase === "Pending" || e.status?.quarantine?.some((q) => q.state === "Quarantined")) this.enqueue(`event/${e.metadata.name}`);
  }

  private async work(key: string): Promise<{ requeueAfterMs?: number } | undefined> {
    if (!this.acting) return undefined;
    const slash = key.indexOf("/");
    const kind = key.slice(0, slash);
    const name = key.slice(slash + 1);
    try {
      if (kind === "event") return await this.reconciler.reconcileEvent(name);
      if (kind === "node") return await this.reconciler.reconcileNode(name);
      return await this.reconciler.reconcilePolicy(name);
    } finally {
      this.metrics.queueDepth.set(this.queue.depth + this.background.depth);
    }
  }
}
