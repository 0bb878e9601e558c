// Wires the pieces: informers keep ClusterState current and enqueue names; one work queue per kind feeds
// that kind's reconciler; a periodic resync re-queues everything (level-triggered: a missed watch event
// costs at most one resync period); leader election decides whether this replica acts at all. Memory
// errors have their queue to themselves, so node health and policy status, which can wait a moment, never
// delay a decision or an eviction; their names are also held back briefly so a burst on one node coalesces.
import { isDeepStrictEqual } from "node:util";
import type { DefaultedContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "../crds/generated.ts";
import { group, version } from "../crds/naming.ts";
import { parseResource } from "../crds/validate.ts";
import type { Clock, Timer } from "../runtime/clock.ts";
import { Informer, type InformerOptions, type ListWatchClient } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import { WorkQueue } from "../runtime/queue.ts";
import type { WorkResult } from "../runtime/queue.ts";
import type { ClusterActions } from "./actions.ts";
import type { OperatorMetrics } from "./metrics.ts";
import type { ReconcileContext } from "./reconcile/context.ts";
import { EventReconciler } from "./reconcile/event.ts";
import { NodeReconciler } from "./reconcile/node.ts";
import { PolicyReconciler } from "./reconcile/policy.ts";
import { ClusterState, nodeInfo, pdbInfo, podInfo } from "./state.ts";

export interface ControllerOptions {
  namespace: string;
  concurrency: number;
  resyncMs: number;
  clock: Clock;
}

/** Node health and policy status are written once the changes that call for them pause for this long… */
const backgroundQuietMs = 1000;
/** …and at the latest this long after the first: one write for an event's whole pass, even a slow one. */
const backgroundMaxWaitMs = 5000;
const crd = (plural: string): string => `/apis/${group}/${version}/${plural}`;

/** The kinds the operator reconciles, each with its own queue of names. */
export type WorkKind = "event" | "node" | "policy";

export class Controller {
  readonly state = new ClusterState();
  /** One queue per kind: memory errors first; node health and policy status lower priority, coalesced. */
  readonly queues: Record<WorkKind, WorkQueue>;
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
    const context: ReconcileContext = {
      state: this.state,
      actions,
      metrics,
      log,
      namespace: options.namespace,
      now: () => options.clock.now(),
      enqueueNode: (name) => {
        this.enqueue("node", name);
      },
    };
    const reconcilers: Record<WorkKind, { reconcile(name: string): Promise<WorkResult> }> = {
      event: new EventReconciler(context),
      node: new NodeReconciler(context),
      policy: new PolicyReconciler(context),
    };
    const queue = (kind: WorkKind, concurrency: number): WorkQueue => {
      const q = new WorkQueue((name) => this.work(name, reconcilers[kind]), { concurrency, clock: options.clock });
      q.onError = (name, error, retryInMs) => {
        metrics.reconcileErrors.inc({ kind });
        log.warn("reconcile failed, retrying", { kind, name, error, retryInMs });
      };
      return q;
    };
    this.queues = { event: queue("event", options.concurrency), node: queue("node", 2), policy: queue("policy", 1) };
    this.watchCluster(client);
  }

  /** One informer per kind the operator reads: each keeps its part of the cache and queues what it affects. */
  private watchCluster(client: ListWatchClient): void {
    const { log, options } = this;
    const onError = (what: string) => (error: unknown, retryInMs: number) => {
      log.warn("watch failed, restarting", { resource: what, error, retryInMs });
    };
    const { state } = this;
    const watch = <T>(informer: Omit<InformerOptions<T>, "clock" | "onError">): void => {
      const what = informer.path.slice(informer.path.lastIndexOf("/") + 1);
      // The informer's own watch length (240-300 s) fits the runtime client's 330 s limit on silence.
      this.informers.push(new Informer(client, { ...informer, clock: options.clock, onError: onError(what) }));
    };
    watch<MemoryErrorEvent>({
      path: crd("memoryerrorevents"),
      transform: (raw) => raw as unknown as MemoryErrorEvent,
      onUpsert: (_key, event) => {
        state.upsertEvent(event);
        this.enqueue("event", event.metadata.name);
      },
      onDelete: (_key, event) => {
        state.deleteEvent(event.metadata.name);
        this.enqueue("node", event.spec.nodeName);
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
    watch<DefaultedContainmentPolicy | undefined>({
      path: crd("containmentpolicies"),
      // The CRD's defaults are applied here, once, for everything downstream; the API server has applied
      // them already, unless the policy was stored under an older CRD.
      transform: (raw) => {
        const name = typeof raw.metadata === "object" && raw.metadata !== null ? String((raw.metadata as { name?: unknown }).name) : "?";
        try {
          return parseResource("ContainmentPolicy", raw, `ContainmentPolicy ${name}`, { celRules: false });
        } catch (error) {
          log.error("policy ignored: it breaks the CRD's schema", { policy: name, error });
          return undefined;
        }
      },
      onUpsert: (key, policy) => {
        if (policy) state.policies.set(policy.metadata.name, policy);
        else state.policies.delete(key);
        this.enqueuePolicies();
      },
      onDelete: (key) => {
        state.policies.delete(key);
        this.enqueuePolicies();
      },
    });
    watch({
      path: "/api/v1/nodes",
      transform: nodeInfo,
      onUpsert: (_key, node) => {
        const old = state.nodes.get(node.name);
        state.upsertNode(node);
        if (!old || !isDeepStrictEqual(old.labels, node.labels)) this.enqueuePolicies();
        if (!isDeepStrictEqual(old?.allocatableBytes, node.allocatableBytes)) this.nodeChanged(node.name);
        // A person's untaint or uncordon frees a budget slot: held actions elsewhere may go now.
        if (old && (old.cordonedByUs !== node.cordonedByUs || !isDeepStrictEqual(old.taintKeys, node.taintKeys))) this.enqueueHeld();
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
    for (const q of Object.values(this.queues)) q.stop();
    this.watching?.abort();
    this.watching = undefined;
  }

  private resync(): void {
    if (!this.acting) return;
    for (const name of this.state.events.keys()) this.enqueue("event", name);
    for (const name of this.state.nodes.keys()) this.enqueue("node", name);
    this.enqueuePolicies();
    this.resyncTimer = this.options.clock.setTimeout(() => {
      this.resync();
    }, this.options.resyncMs);
  }

  private enqueue(kind: WorkKind, name: string): void {
    if (!this.acting) return;
    if (kind === "event") this.queues.event.add(name);
    else this.queues[kind].addQuiet(name, backgroundQuietMs, backgroundMaxWaitMs);
    this.updateDepth();
  }

  private updateDepth(): void {
    this.metrics.queueDepth.set(Object.values(this.queues).reduce((sum, q) => sum + q.depth, 0));
  }

  private enqueuePolicies(): void {
    for (const name of this.state.policies.keys()) this.enqueue("policy", name);
  }

  /** Events whose taint or cordon the budget holds: retried when it may have freed up. */
  private enqueueHeld(): void {
    for (const e of this.state.events.values()) if (e.status?.nodeAction?.state === "HeldByBudget") this.enqueue("event", e.metadata.name);
  }

  /** A node's capacity, pools or pods changed: its events may now finish or release quarantine. */
  private nodeChanged(nodeName: string): void {
    this.enqueue("node", nodeName);
    for (const e of this.state.eventsOn(nodeName))
      if (
        e.status?.phase === "Pending" ||
        e.status?.quarantine?.some((q) => q.state === "Quarantined") ||
        // A page with corrected errors is watched: the agent's report carries its count.
        e.status?.prevention?.state === "Watching"
      )
        this.enqueue("event", e.metadata.name);
  }

  private async work(name: string, reconciler: { reconcile(name: string): Promise<WorkResult> }): Promise<WorkResult> {
    if (!this.acting) return undefined;
    try {
      return await reconciler.reconcile(name);
    } finally {
      this.updateDepth();
    }
  }
}
