// The agent's Kubernetes I/O, behind the narrow interfaces the rest of the agent uses: create events,
// apply its NodeMemoryHealth, watch its node's pods and events, and the early signal's writes.
import { ApiException, CoreV1Api, CustomObjectsApi, KubeConfig, ListWatch, PatchStrategy, setHeaderOptions, Watch, type KubernetesListObject, type KubernetesObject, type V1Pod } from "@kubernetes/client-node";
import type { MemoryErrorEvent, MemoryErrorEventStatusEarlySignal, NodeMemoryHealth } from "../crds/generated.ts";
import { crdInfo } from "../crds/generated.ts";
import { group, nodeLabel, version } from "../crds/naming.ts";
import type { Clock } from "./clock.ts";
import type { EarlySignalApi, PodRef } from "./early-signal.ts";
import { containersOf, type PodDirectory, type PodInfo } from "./event.ts";
import type { Logger } from "./log.ts";
import type { EventSink } from "./reporter.ts";

export const FIELD_MANAGER = "mce-agent";

const events = crdInfo.MemoryErrorEvent.plural;
const healths = crdInfo.NodeMemoryHealth.plural;

export function loadKubeConfig(file: string | undefined): KubeConfig {
  const config = new KubeConfig();
  if (file === undefined) config.loadFromCluster();
  else config.loadFromFile(file);
  return config;
}

export interface HealthSink {
  apply(health: NodeMemoryHealth): Promise<void>;
}

const apply = setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply);
const merge = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

/** Carries the HTTP status on `code`, as the reporter reads it, whatever the client threw. */
function statusOf(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

export class KubeApi implements EventSink, HealthSink, EarlySignalApi {
  readonly #custom: CustomObjectsApi;
  readonly #core: CoreV1Api;
  readonly #nodeName: string;
  readonly #clock: Clock;

  constructor(config: KubeConfig, nodeName: string, clock: Clock) {
    this.#custom = config.makeApiClient(CustomObjectsApi);
    this.#core = config.makeApiClient(CoreV1Api);
    this.#nodeName = nodeName;
    this.#clock = clock;
  }

  async create(event: MemoryErrorEvent): Promise<"created" | "exists"> {
    try {
      await this.#custom.createClusterCustomObject({ group, version, plural: events, body: event, fieldManager: FIELD_MANAGER });
      return "created";
    } catch (error) {
      if (statusOf(error) === 409) return "exists";
      throw error;
    }
  }

  async apply(health: NodeMemoryHealth): Promise<void> {
    await this.#custom.patchClusterCustomObject({ group, version, plural: healths, name: health.metadata.name, body: health, fieldManager: FIELD_MANAGER, force: true }, apply);
  }

  async annotatePod(pod: PodRef, annotations: Record<string, string>): Promise<void> {
    await this.#core.patchNamespacedPod({ namespace: pod.namespace, name: pod.name, body: { metadata: { annotations } } }, merge);
  }

  async podEvent(pod: PodRef, key: string, reason: string, message: string): Promise<void> {
    const now = new Date(this.#clock.now());
    try {
      await this.#core.createNamespacedEvent({
        namespace: pod.namespace,
        body: {
          // Named after the memory error and pod, so a retry cannot post the notice twice.
          metadata: { name: `${key}.${pod.uid.slice(0, 8)}`, namespace: pod.namespace },
          involvedObject: { apiVersion: "v1", kind: "Pod", namespace: pod.namespace, name: pod.name, uid: pod.uid },
          reason,
          message: message.slice(0, 1024),
          type: "Warning",
          source: { component: FIELD_MANAGER, host: this.#nodeName },
          reportingComponent: `${group}/agent`,
          reportingInstance: this.#nodeName,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
    } catch (error) {
      if (statusOf(error) !== 409) throw error;
    }
  }

  async applyEarlySignals(eventName: string, earlySignals: MemoryErrorEventStatusEarlySignal[]): Promise<void> {
    await this.#custom.patchClusterCustomObjectStatus(
      { group, version, plural: events, name: eventName, body: { apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", metadata: { name: eventName }, status: { earlySignals } }, fieldManager: FIELD_MANAGER, force: true },
      apply,
    );
  }
}

/**
 * Keeps a ListWatch running: client-node's stops on an error (the API server went away), so it is
 * started again after a capped backoff until `signal` aborts.
 */
function keepWatching(informer: ListWatch<KubernetesObject>, what: string, clock: Clock, log: Logger, signal: AbortSignal): void {
  let delay = 1000;
  informer.on("connect", () => {
    delay = 1000;
  });
  informer.on("error", (error: unknown) => {
    if (signal.aborted) return;
    log.warn("watch failed; restarting", { watch: what, error, retryInMs: delay });
    void clock.sleep(delay, signal).then(() => {
      if (!signal.aborted) informer.start().catch((e: unknown) => { log.warn("watch restart failed", { watch: what, error: e }); });
    });
    delay = Math.min(delay * 2, 30_000);
  });
  signal.addEventListener(
    "abort",
    () => {
      void informer.stop();
    },
    { once: true },
  );
  informer.start().catch((error: unknown) => { log.warn("watch start failed", { watch: what, error }); });
}

/** The pods on this node (field selector spec.nodeName), by uid, from a watch. */
export function watchPods(config: KubeConfig, nodeName: string, clock: Clock, log: Logger, signal: AbortSignal): PodDirectory {
  const core = config.makeApiClient(CoreV1Api);
  const fieldSelector = `spec.nodeName=${nodeName}`;
  const informer = new ListWatch<V1Pod>("/api/v1/pods", new Watch(config), () => core.listPodForAllNamespaces({ fieldSelector }), false, undefined, fieldSelector);
  const byUID = new Map<string, PodInfo>();
  const keep = (pod: V1Pod): void => {
    const uid = pod.metadata?.uid;
    if (uid === undefined) return;
    const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])];
    byUID.set(uid, { uid, namespace: pod.metadata?.namespace ?? "", name: pod.metadata?.name ?? "", containers: containersOf(statuses), annotations: pod.metadata?.annotations ?? {} });
  };
  informer.on("add", keep);
  informer.on("update", keep);
  informer.on("delete", (pod) => {
    if (pod.metadata?.uid !== undefined) byUID.delete(pod.metadata.uid);
  });
  keepWatching(informer, `pods on ${nodeName}`, clock, log, signal);
  return { pod: (uid) => byUID.get(uid) };
}

/** Calls `onEvent` for every MemoryErrorEvent of this node as it is added or changed. */
export function watchMemoryErrorEvents(config: KubeConfig, nodeName: string, onEvent: (event: MemoryErrorEvent) => void, clock: Clock, log: Logger, signal: AbortSignal): void {
  const custom = config.makeApiClient(CustomObjectsApi);
  const labelSelector = `${nodeLabel}=${nodeName}`;
  type Event = MemoryErrorEvent & KubernetesObject;
  // The custom objects client returns untyped JSON.
  const list = async (): Promise<KubernetesListObject<Event>> => (await custom.listClusterCustomObject({ group, version, plural: events, labelSelector })) as KubernetesListObject<Event>;
  const informer = new ListWatch<Event>(`/apis/${group}/${version}/${events}`, new Watch(config), list, false, labelSelector);
  informer.on("add", (event) => {
    onEvent(event);
  });
  informer.on("update", (event) => {
    onEvent(event);
  });
  keepWatching(informer, `memory error events of ${nodeName}`, clock, log, signal);
}
