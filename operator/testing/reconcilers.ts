// The three reconcilers over one cache and one fake cluster, with builders for the objects their tests
// put in the cache, for operator/reconcile/*.test.ts. Objects go in as the watch would bring them.
import type { DefaultedContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "../../crds/generated.ts";
import { parseResource } from "../../crds/validate.ts";
import { OperatorMetrics } from "../metrics.ts";
import { T0 } from "../model/fixtures.ts";
import type { ReconcileContext } from "../reconcile/context.ts";
import { EventReconciler } from "../reconcile/event.ts";
import { NodeReconciler } from "../reconcile/node.ts";
import { PolicyReconciler } from "../reconcile/policy.ts";
import { silentLogger } from "../../runtime/log.ts";
import { ClusterState, nodeInfo, podInfo } from "../state.ts";
import { FakeCluster } from "./fake-cluster.ts";

export const MiB = 2 ** 20;

export function policy(spec: Record<string, unknown> = {}, name = "default"): DefaultedContainmentPolicy {
  // As the operator's cache reads a stored policy: the structural schema only (see ValidateOptions).
  return parseResource("ContainmentPolicy", { metadata: { name, generation: 1 }, spec: { mode: "Enforce", ...spec } }, name, { celRules: false });
}

export function health(node: string): NodeMemoryHealth {
  return parseResource(
    "NodeMemoryHealth",
    {
      metadata: { name: node, generation: 1 },
      spec: {
        nodeName: node,
        bootID: "boot-1",
        kernelVersion: "6.1.0-56-amd64",
        observedAt: "2026-11-25T11:59:00Z",
        hugepagePools: [{ size: "2Mi", numaNode: 0, total: 32, free: 16 }],
        capabilities: { earlyKill: false },
      },
    },
    node,
  );
}

export function memoryEvent(
  name: string,
  node: string,
  mappers: { pod: string; shared?: boolean }[],
  extra: Record<string, unknown> = {},
  at = T0,
): MemoryErrorEvent {
  return parseResource(
    "MemoryErrorEvent",
    {
      metadata: { name, uid: `uid-${name}`, generation: 1, creationTimestamp: new Date(at).toISOString() },
      spec: {
        nodeName: node,
        bootID: "boot-1",
        observedAt: new Date(at).toISOString(),
        source: "Kmsg",
        pfn: "0x5205",
        severity: "ActionOptional",
        pageType: "huge page",
        result: "Recovered",
        hugepage: { size: "2Mi", headPfn: "0x5200" },
        mappers: mappers.map((m, i) => ({
          pid: 100 + i,
          command: m.pod,
          podUID: `uid-${m.pod}`,
          podNamespace: "apps",
          podName: m.pod,
          container: "main",
          mapping: m.shared ? "Shared" : "Private",
          killPolicy: "Default",
          virtualStart: "0x7f0000200000",
          virtualEnd: "0x7f0000400000",
        })),
        ...extra,
      },
    },
    name,
  );
}

type RawNode = { metadata: { name: string; resourceVersion?: string; labels?: Record<string, string>; annotations?: Record<string, string> } } & Record<
  string,
  unknown
> & { spec: { unschedulable?: boolean; taints?: { key: string; effect: string; value?: string }[] } };

/** One cache, one fake cluster, the three reconcilers, and a clock the test moves. */
export class ReconcileHarness {
  readonly state = new ClusterState();
  readonly cluster = new FakeCluster();
  readonly enqueued: string[] = [];
  now = T0 + 100;
  readonly context: ReconcileContext = {
    state: this.state,
    actions: this.cluster,
    metrics: new OperatorMetrics(false),
    log: silentLogger,
    namespace: "mce-system",
    now: () => this.now,
    enqueueNode: (n) => this.enqueued.push(n),
  };
  readonly events = new EventReconciler(this.context);
  readonly nodes = new NodeReconciler(this.context);
  readonly policies = new PolicyReconciler(this.context);

  /** Puts an event in the fake API server and in the cache, as the watch would. */
  hold(event: MemoryErrorEvent): void {
    this.cluster.events.set(event.metadata.name, event);
    this.state.upsertEvent(event);
  }

  addPod(name: string, node: string, annotations: Record<string, string> = {}, labels: Record<string, string> = { app: name }): void {
    this.state.upsertPod(
      `apps/${name}`,
      podInfo({
        metadata: { name, namespace: "apps", uid: `uid-${name}`, labels, annotations },
        spec: { nodeName: node, containers: [{ name: "main", resources: { requests: { "hugepages-2Mi": "4Mi" } } }] },
      }),
    );
  }

  /** A Node with 64Mi of 2 MiB hugepages allocatable, and its agent's NodeMemoryHealth. */
  addNode(name: string, labels: Record<string, string> = {}): void {
    const raw: RawNode = { metadata: { name, resourceVersion: "1", labels }, spec: {}, status: { allocatable: { "hugepages-2Mi": "64Mi" } } };
    this.cluster.nodes.set(name, raw);
    this.state.upsertNode(nodeInfo(raw));
    this.state.health.set(name, health(name));
  }

  /** Changes a Node as a person (or the kubelet) would: in the API server, then in the cache as its watch brings it. */
  editNode(name: string, change: (node: RawNode) => void): void {
    const raw = structuredClone(this.cluster.nodes.get(name)) as RawNode | undefined;
    if (!raw) throw new Error(`no node ${name}`);
    change(raw);
    raw.metadata.resourceVersion = String(Number(raw.metadata.resourceVersion ?? 0) + 1);
    this.cluster.nodes.set(name, raw);
    this.state.upsertNode(nodeInfo(raw));
  }

  /** Holds the fake cluster's status write open until the returned function is called: a write in flight while something else lands. */
  holdOpen(write: "applyHealthStatus" | "applyPolicyStatus" | "setNodeCondition"): () => void {
    let release = (): void => undefined;
    const gate = new Promise<void>((resolve) => (release = resolve));
    // The three writes share a shape: a name and the object written.
    const writes = this.cluster as unknown as Record<typeof write, (name: string, body: unknown) => Promise<void>>;
    const send = writes[write].bind(this.cluster);
    writes[write] = async (name, body) => {
      await gate;
      return send(name, body);
    };
    return release;
  }
}
