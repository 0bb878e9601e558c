// The narrow interface through which the operator changes the cluster. The reconciler sees only this;
// operator/kube/actions.ts implements it on the API server, operator/testing/fake-cluster.ts in memory.
import type { ContainmentPolicyStatus, MemoryErrorEvent, MemoryErrorEventStatus, NodeMemoryHealthStatus } from "../crds/generated.ts";
import type { HugepageSize } from "../kernel/pfn.ts";

export type EvictionOutcome =
  | { kind: "evicted" }
  /** 429: a PodDisruptionBudget allows no disruption now (the API server's message names it). */
  | { kind: "blocked"; message: string }
  | { kind: "gone" };

export interface ObjectRef {
  kind: "Pod" | "Node";
  name: string;
  namespace?: string | undefined;
  uid?: string | undefined;
  apiVersion: string;
}

export interface QuarantinePod {
  namespace: string;
  name: string;
  eventName: string;
  eventUID: string;
  nodeName: string;
  size: HugepageSize;
  bytes: number;
}

/** The HugepageMemoryDegraded Node condition; lastTransitionTime moves only when status does, as metav1.Condition defines. */
export interface NodeCondition {
  status: "True" | "False";
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export interface ClusterActions {
  /** Server-side apply of the operator's part of an event's status (field manager mce-operator); resolves to the object the API server now holds. */
  applyEventStatus(name: string, status: MemoryErrorEventStatus): Promise<MemoryErrorEvent>;
  applyHealthStatus(name: string, status: NodeMemoryHealthStatus): Promise<void>;
  applyPolicyStatus(name: string, status: ContainmentPolicyStatus): Promise<void>;
  evictPod(namespace: string, name: string): Promise<EvictionOutcome>;
  deletePod(namespace: string, name: string): Promise<void>;
  /**
   * Adds a NoSchedule taint with this key (never NoExecute: it ignores PodDisruptionBudgets); resolves to
   * the Node the API server now holds.
   */
  taintNode(nodeName: string, key: string, reason: string): Promise<Record<string, unknown>>;
  /** Marks the node unschedulable and annotates it as cordoned by the operator; resolves to the Node the API server now holds. */
  cordonNode(nodeName: string): Promise<Record<string, unknown>>;
  /** Sets the HugepageMemoryDegraded condition, with the transition time the caller computed. */
  setNodeCondition(nodeName: string, condition: NodeCondition): Promise<void>;
  /** Creates the placeholder pod; creating one that exists is not an error. */
  createQuarantinePod(pod: QuarantinePod): Promise<void>;
  recordEvent(about: ObjectRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void>;
}
