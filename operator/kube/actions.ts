// ClusterActions on a real API server.
import { randomBytes } from "node:crypto";
import type { ContainmentPolicyStatus, MemoryErrorEvent, MemoryErrorEventStatus, NodeMemoryHealthStatus } from "../../crds/generated.ts";
import { group, version } from "../../crds/naming.ts";
import { clip } from "../../crds/validate.ts";
import type { ClusterActions, EvictionOutcome, NodeCondition, ObjectRef, QuarantinePod } from "../actions.ts";
import { ApiError } from "../../runtime/api.ts";
import { systemClock, type Clock } from "../../runtime/clock.ts";
import { cordonedByAnnotation, quarantineEventLabel, quarantineSizeLabel } from "../state.ts";
import type { RestClient } from "./rest.ts";

export const fieldManager = "mce-operator";
/** The placeholder's image; the chart's admission policy lets the operator create pods of it only. */
export const quarantineImage = "registry.k8s.io/pause:3.10";
const crdPath = (plural: string, name: string): string => `/apis/${group}/${version}/${plural}/${name}/status`;
const tolerateGone = (e: unknown): void => {
  if (!(e instanceof ApiError) || e.status !== 404) throw e;
};

export class KubeActions implements ClusterActions {
  private readonly rest: RestClient;
  private readonly component: string;
  private readonly quarantinePriorityClass: string | undefined;
  private readonly clock: Clock;

  constructor(rest: RestClient, options: { component?: string; quarantinePriorityClass?: string | undefined; clock?: Clock } = {}) {
    this.rest = rest;
    this.component = options.component ?? "mce-operator";
    this.quarantinePriorityClass = options.quarantinePriorityClass;
    this.clock = options.clock ?? systemClock;
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }

  private async applyStatus<T>(plural: string, kind: string, name: string, status: unknown): Promise<T> {
    return this.rest.request<T>("PATCH", crdPath(plural, name), {
      query: { fieldManager, force: true },
      patch: "apply",
      body: { apiVersion: `${group}/${version}`, kind, metadata: { name }, status },
    });
  }

  applyEventStatus(name: string, status: MemoryErrorEventStatus): Promise<MemoryErrorEvent> {
    return this.applyStatus("memoryerrorevents", "MemoryErrorEvent", name, status);
  }

  async applyHealthStatus(name: string, status: NodeMemoryHealthStatus): Promise<void> {
    await this.applyStatus("nodememoryhealths", "NodeMemoryHealth", name, status);
  }

  async applyPolicyStatus(name: string, status: ContainmentPolicyStatus): Promise<void> {
    await this.applyStatus("containmentpolicies", "ContainmentPolicy", name, status);
  }

  async evictPod(namespace: string, name: string): Promise<EvictionOutcome> {
    try {
      await this.rest.request("POST", `/api/v1/namespaces/${namespace}/pods/${name}/eviction`, {
        body: { apiVersion: "policy/v1", kind: "Eviction", metadata: { name, namespace } },
      });
      return { kind: "evicted" };
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return { kind: "gone" };
      if (e instanceof ApiError && e.status === 429) return { kind: "blocked", message: e.message };
      throw e;
    }
  }

  async deletePod(namespace: string, name: string): Promise<void> {
    await this.rest.request("DELETE", `/api/v1/namespaces/${namespace}/pods/${name}`).catch(tolerateGone);
  }

  async taintNode(nodeName: string, key: string, reason: string): Promise<Record<string, unknown>> {
    type Node = Record<string, unknown> & { metadata: { resourceVersion: string }; spec: { taints?: { key: string }[] } };
    const node = await this.rest.request<Node>("GET", `/api/v1/nodes/${nodeName}`);
    const taints = node.spec.taints ?? [];
    if (taints.some((t) => t.key === key)) return node;
    // A JSON patch with the resourceVersion test fails instead of overwriting a taint added meanwhile.
    return this.rest.request("PATCH", `/api/v1/nodes/${nodeName}`, {
      patch: "json",
      body: [
        { op: "test", path: "/metadata/resourceVersion", value: node.metadata.resourceVersion },
        { op: "add", path: "/spec/taints", value: [...taints, { key, value: reason, effect: "NoSchedule", timeAdded: this.now() }] },
      ],
    });
  }

  async cordonNode(nodeName: string): Promise<Record<string, unknown>> {
    return this.rest.request("PATCH", `/api/v1/nodes/${nodeName}`, {
      patch: "merge",
      body: { metadata: { annotations: { [cordonedByAnnotation]: "true" } }, spec: { unschedulable: true } },
    });
  }

  async setNodeCondition(nodeName: string, condition: NodeCondition): Promise<void> {
    await this.rest.request("PATCH", `/api/v1/nodes/${nodeName}/status`, {
      patch: "strategic",
      body: { status: { conditions: [{ type: "HugepageMemoryDegraded", ...condition, lastHeartbeatTime: this.now() }] } },
    });
  }

  async createQuarantinePod(pod: QuarantinePod): Promise<void> {
    const quantity = `${pod.bytes / 2 ** 20}Mi`;
    try {
      await this.rest.request("POST", `/api/v1/namespaces/${pod.namespace}/pods`, {
        body: {
          apiVersion: "v1",
          kind: "Pod",
          metadata: {
            name: pod.name,
            namespace: pod.namespace,
            labels: { "app.kubernetes.io/managed-by": "mce-operator", [quarantineEventLabel]: pod.eventName, [quarantineSizeLabel]: pod.size },
            annotations: { "mce-operator.io/reason": `holds ${quantity} of hugepages-${pod.size} that the kernel removed after memory error ${pod.eventName}` },
            ownerReferences: [{ apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", name: pod.eventName, uid: pod.eventUID }],
          },
          spec: {
            // Bound to the node directly: the scheduler counts it against the node's hugepages, and it can
            // never land anywhere else.
            nodeName: pod.nodeName,
            priorityClassName: this.quarantinePriorityClass,
            automountServiceAccountToken: false,
            enableServiceLinks: false,
            terminationGracePeriodSeconds: 0,
            tolerations: [{ operator: "Exists" }],
            securityContext: { runAsNonRoot: true, runAsUser: 65535, seccompProfile: { type: "RuntimeDefault" } },
            containers: [
              {
                name: "quarantine",
                image: quarantineImage,
                // No CPU limit: a 1m quota throttles runc's init so hard that the sandbox never started on
                // the emulated real node (the shim timed out); pause needs no CPU once it runs.
                resources: {
                  requests: { cpu: "1m", memory: "8Mi", [`hugepages-${pod.size}`]: quantity },
                  limits: { memory: "8Mi", [`hugepages-${pod.size}`]: quantity },
                },
                securityContext: { allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } },
              },
            ],
          },
        },
      });
    } catch (e) {
      if (!(e instanceof ApiError) || e.status !== 409) throw e;
    }
  }

  async recordEvent(about: ObjectRef, type: "Normal" | "Warning", reason: string, message: string): Promise<void> {
    const namespace = about.namespace ?? "default";
    const now = this.now();
    await this.rest.request("POST", `/api/v1/namespaces/${namespace}/events`, {
      body: {
        apiVersion: "v1",
        kind: "Event",
        metadata: { name: `${about.name}.${randomBytes(8).toString("hex")}`, namespace },
        involvedObject: { kind: about.kind, name: about.name, namespace: about.namespace, uid: about.uid, apiVersion: about.apiVersion },
        type,
        reason,
        message: clip(message, 1024),
        source: { component: this.component },
        reportingComponent: this.component,
        reportingInstance: this.component,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      },
    });
  }
}
