// ClusterActions in memory, recording every call, for the reconciler's unit tests.
import type { ContainmentPolicyStatus, MemoryErrorEvent, MemoryErrorEventStatus, NodeMemoryHealthStatus } from "../../crds/generated.ts";
import type { ClusterActions, EvictionOutcome, NodeCondition, ObjectRef, QuarantinePod } from "../actions.ts";
import { cordonedByAnnotation } from "../state.ts";

type Raw = Record<string, unknown>;

export class FakeCluster implements ClusterActions {
  readonly calls: string[] = [];
  readonly eventStatus = new Map<string, MemoryErrorEventStatus>();
  readonly healthStatus = new Map<string, NodeMemoryHealthStatus>();
  readonly policyStatus = new Map<string, ContainmentPolicyStatus>();
  readonly quarantinePods = new Map<string, QuarantinePod>();
  readonly recorded: { about: ObjectRef; type: string; reason: string; message: string }[] = [];
  /** What the next evictions answer, per pod "namespace/name"; evicted when absent. */
  readonly evictionAnswers = new Map<string, EvictionOutcome[]>();
  /** Statuses written for an event, in order. */
  readonly history = new Map<string, MemoryErrorEventStatus[]>();
  /** Makes the named call throw, to stand in for an API server that is down. */
  failing: string | undefined;

  /** Makes calls starting with the key throw this error, as the API server would answer them. */
  readonly refusals = new Map<string, Error>();

  private call(what: string): void {
    if (this.failing && what.startsWith(this.failing)) throw new Error(`${what}: connection refused`);
    for (const [prefix, error] of this.refusals) if (what.startsWith(prefix)) throw error;
    this.calls.push(what);
  }

  /** Objects the fake API server holds, so an apply can answer with the whole object. */
  readonly events = new Map<string, MemoryErrorEvent>();

  applyEventStatus(name: string, status: MemoryErrorEventStatus): Promise<MemoryErrorEvent> {
    this.call(`status ${name}`);
    const clean = JSON.parse(JSON.stringify(status)) as MemoryErrorEventStatus;
    this.eventStatus.set(name, clean);
    this.history.set(name, [...(this.history.get(name) ?? []), clean]);
    const held = this.events.get(name);
    if (!held) throw new Error(`no MemoryErrorEvent ${name} in the fake API server`);
    // The agent's earlySignals stay as the agent wrote them.
    const updated = { ...held, status: { ...clean, earlySignals: held.status?.earlySignals } };
    this.events.set(name, updated);
    return Promise.resolve(structuredClone(updated));
  }
  applyHealthStatus(name: string, status: NodeMemoryHealthStatus): Promise<void> {
    this.call(`health ${name}`);
    this.healthStatus.set(name, status);
    return Promise.resolve();
  }
  applyPolicyStatus(name: string, status: ContainmentPolicyStatus): Promise<void> {
    this.call(`policy ${name}`);
    this.policyStatus.set(name, status);
    return Promise.resolve();
  }
  evictPod(namespace: string, name: string): Promise<EvictionOutcome> {
    this.call(`evict ${namespace}/${name}`);
    return Promise.resolve(this.evictionAnswers.get(`${namespace}/${name}`)?.shift() ?? { kind: "evicted" });
  }
  deletePod(namespace: string, name: string): Promise<void> {
    this.call(`delete ${namespace}/${name}`);
    this.quarantinePods.delete(`${namespace}/${name}`);
    return Promise.resolve();
  }
  /** Nodes the fake API server holds, as the API returns them; a taint or cordon answers with the changed one. */
  readonly nodes = new Map<string, Raw>();
  private changeNode(nodeName: string, change: (node: Raw) => Raw): Promise<Raw> {
    const old = this.nodes.get(nodeName) ?? { metadata: { name: nodeName, resourceVersion: "1" }, spec: {} };
    const changed = change(structuredClone(old));
    const metadata = changed.metadata as Raw;
    metadata.resourceVersion = String(Number(metadata.resourceVersion ?? 0) + 1);
    this.nodes.set(nodeName, changed);
    return Promise.resolve(structuredClone(changed));
  }
  taintNode(nodeName: string, key: string, reason: string): Promise<Raw> {
    this.call(`taint ${nodeName} ${key}`);
    return this.changeNode(nodeName, (node) => {
      const spec = node.spec as { taints?: Raw[] };
      spec.taints = [...(spec.taints ?? []), { key, value: reason, effect: "NoSchedule" }];
      return node;
    });
  }
  cordonNode(nodeName: string): Promise<Raw> {
    this.call(`cordon ${nodeName}`);
    return this.changeNode(nodeName, (node) => {
      const metadata = node.metadata as { annotations?: Record<string, string> };
      metadata.annotations = { ...metadata.annotations, [cordonedByAnnotation]: "true" };
      (node.spec as Raw).unschedulable = true;
      return node;
    });
  }
  /** The conditions set, per node, in order. */
  readonly nodeConditions = new Map<string, NodeCondition[]>();
  setNodeCondition(nodeName: string, condition: NodeCondition): Promise<void> {
    this.call(`condition ${nodeName} ${condition.status} ${condition.reason}`);
    this.nodeConditions.set(nodeName, [...(this.nodeConditions.get(nodeName) ?? []), condition]);
    return Promise.resolve();
  }
  createQuarantinePod(pod: QuarantinePod): Promise<void> {
    this.call(`quarantine ${pod.nodeName} ${pod.size} ${pod.bytes}`);
    this.quarantinePods.set(`${pod.namespace}/${pod.name}`, pod);
    return Promise.resolve();
  }
  recordEvent(about: ObjectRef, type: string, reason: string, message: string): Promise<void> {
    this.recorded.push({ about, type, reason, message });
    return Promise.resolve();
  }

  /** The calls that change the cluster, leaving out status writes. */
  get effects(): string[] {
    return this.calls.filter((c) => !/^(status|health|policy) /.test(c));
  }
}
