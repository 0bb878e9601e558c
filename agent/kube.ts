// The agent's Kubernetes I/O, behind the narrow interfaces the rest of the agent uses: create events,
// apply its NodeMemoryHealth, watch its node's pods and events, and the early signal's and pool
// replacement's writes.
import type {
  MemoryErrorEvent,
  MemoryErrorEventStatus,
  MemoryErrorEventStatusEarlySignal,
  MemoryErrorEventStatusKernelSignal,
  MemoryErrorEventStatusPoolReplacementResult,
  MemoryErrorEventStatusSoftOfflineResult,
  NodeMemoryHealth,
} from "../crds/generated.ts";
import { crdInfo } from "../crds/generated.ts";
import { group, nodeLabel, version } from "../crds/naming.ts";
import { apiStatusOf } from "../runtime/api.ts";
import type { Clock } from "../runtime/clock.ts";
import { Informer } from "../runtime/informer.ts";
import type { Logger } from "../runtime/log.ts";
import type { EarlySignalApi, PodRef } from "./early-signal.ts";
import { containersOf, type PodDirectory, type PodInfo } from "./event.ts";
import { APPLY_PATCH, inClusterConfig, KubeClient, loadKubeconfigFile, MERGE_PATCH } from "../runtime/http.ts";
import type { PoolReplacementApi } from "./pool-replacement.ts";
import type { SoftOfflineApi } from "./soft-offline.ts";
import type { EventSink } from "./reporter.ts";

export const FIELD_MANAGER = "mce-agent";

const events = crdInfo.MemoryErrorEvent.plural;
const healths = crdInfo.NodeMemoryHealth.plural;
const customPath = `/apis/${group}/${version}`;

/** A client for the kubeconfig `file`, or for the in-cluster service account when there is none. */
export function loadKubeConfig(file: string | undefined, clock: Clock): KubeClient {
  return new KubeClient(file === undefined ? inClusterConfig(process.env, undefined, clock) : loadKubeconfigFile(file, undefined, clock), {
    userAgent: FIELD_MANAGER,
  });
}

export interface HealthSink {
  apply(health: NodeMemoryHealth): Promise<void>;
}

const applyQuery = { fieldManager: FIELD_MANAGER, force: true };

/** The parts of a MemoryErrorEvent's status the agent owns (field manager mce-agent, status subresource). */
export type AgentStatus = Pick<MemoryErrorEventStatus, "earlySignals" | "poolReplacementResult" | "kernelSignals" | "softOfflineResult">;

interface OwnedStatus {
  uid: string | undefined;
  /** As the watch last showed it. */
  observed: AgentStatus;
  /** As this process last applied it: at least as new as anything the watch showed. */
  own: AgentStatus;
}

function agentStatusOf(status: MemoryErrorEventStatus | undefined): AgentStatus {
  const { earlySignals, poolReplacementResult, kernelSignals, softOfflineResult } = status ?? {};
  return {
    ...(earlySignals !== undefined && { earlySignals }),
    ...(poolReplacementResult !== undefined && { poolReplacementResult }),
    ...(kernelSignals !== undefined && { kernelSignals }),
    ...(softOfflineResult !== undefined && { softOfflineResult }),
  };
}

export class KubeApi implements EventSink, HealthSink, EarlySignalApi, PoolReplacementApi, SoftOfflineApi {
  readonly #client: KubeClient;
  /**
   * Server-side apply removes a field its manager owned and leaves out of the next apply, so every
   * status apply by mce-agent carries all the agent owns of that event, not only the part it changes:
   * what this process applied, else what the watch last showed (after a restart). Only events the
   * agent wrote something into are kept.
   */
  readonly #agentStatus = new Map<string, OwnedStatus>();
  /** The status apply in flight per event: applies of one event go one at a time, each built when it is sent. */
  readonly #statusWrites = new Map<string, Promise<void>>();

  constructor(client: KubeClient) {
    this.#client = client;
  }

  async create(event: MemoryErrorEvent): Promise<"created" | "exists"> {
    try {
      await this.#client.request("POST", `${customPath}/${events}`, { query: { fieldManager: FIELD_MANAGER }, body: event });
      return "created";
    } catch (error) {
      if (apiStatusOf(error) === 409) return "exists";
      throw error;
    }
  }

  async apply(health: NodeMemoryHealth): Promise<void> {
    await this.#client.request("PATCH", `${customPath}/${healths}/${encodeURIComponent(health.metadata.name)}`, {
      query: applyQuery,
      body: health,
      contentType: APPLY_PATCH,
    });
  }

  async annotatePod(pod: PodRef, annotations: Record<string, string>): Promise<void> {
    await this.#client.request("PATCH", `/api/v1/namespaces/${encodeURIComponent(pod.namespace)}/pods/${encodeURIComponent(pod.name)}`, {
      body: { metadata: { annotations } },
      contentType: MERGE_PATCH,
    });
  }

  /** Notes what the agent owns of `event`'s status as the watch shows it; call it for every event watched. */
  observe(event: MemoryErrorEvent): void {
    const name = event.metadata.name;
    const observed = agentStatusOf(event.status);
    let known = this.#agentStatus.get(name);
    // The same name on another object: the event was deleted and made again.
    if (known?.uid !== undefined && event.metadata.uid !== undefined && known.uid !== event.metadata.uid) known = undefined;
    if (known === undefined && Object.keys(observed).length === 0) {
      this.#agentStatus.delete(name);
      return;
    }
    known ??= { uid: event.metadata.uid, observed: {}, own: {} };
    known.uid ??= event.metadata.uid;
    known.observed = observed;
    this.#agentStatus.set(name, known);
  }

  /** The event is deleted: nothing of it is kept. */
  forget(eventName: string): void {
    this.#agentStatus.delete(eventName);
  }

  async applyEarlySignals(eventName: string, earlySignals: MemoryErrorEventStatusEarlySignal[]): Promise<void> {
    await this.#applyStatus(eventName, { earlySignals });
  }

  async applyPoolReplacementResult(eventName: string, result: MemoryErrorEventStatusPoolReplacementResult): Promise<void> {
    await this.#applyStatus(eventName, { poolReplacementResult: result });
  }

  async applySoftOfflineResult(eventName: string, result: MemoryErrorEventStatusSoftOfflineResult): Promise<void> {
    await this.#applyStatus(eventName, { softOfflineResult: result });
  }

  /** Adds processes the kernel signalled for the event's pfn after it was made to those already recorded. */
  async addKernelSignals(eventName: string, signals: MemoryErrorEventStatusKernelSignal[]): Promise<void> {
    const known = this.#agentStatus.get(eventName);
    const recorded = known?.own.kernelSignals ?? known?.observed.kernelSignals ?? [];
    const byPid = new Map([...recorded, ...signals].map((s) => [s.pid, s]));
    await this.#applyStatus(eventName, { kernelSignals: [...byPid.values()].slice(-256) });
  }

  async #applyStatus(eventName: string, part: AgentStatus): Promise<void> {
    const known = this.#agentStatus.get(eventName) ?? { uid: undefined, observed: {}, own: {} };
    this.#agentStatus.set(eventName, known);
    Object.assign(known.own, part);
    const send = async (): Promise<void> => {
      const status: AgentStatus = { ...known.observed, ...known.own };
      await this.#client.request("PATCH", `${customPath}/${events}/${encodeURIComponent(eventName)}/status`, {
        query: applyQuery,
        body: { apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", metadata: { name: eventName }, status },
        contentType: APPLY_PATCH,
      });
    };
    const write = (this.#statusWrites.get(eventName) ?? Promise.resolve()).then(send, send);
    this.#statusWrites.set(eventName, write);
    try {
      await write;
    } finally {
      if (this.#statusWrites.get(eventName) === write) this.#statusWrites.delete(eventName);
    }
  }
}

/** Runs an informer until `signal` aborts, logging each failure and the backoff before the next attempt. */
function keepWatching<T>(
  client: KubeClient,
  what: string,
  options: {
    path: string;
    query: Record<string, string>;
    transform: (raw: Record<string, unknown>) => T;
    onUpsert: (object: T) => void;
    onDelete: (object: T) => void;
  },
  clock: Clock,
  log: Logger,
  signal: AbortSignal,
): void {
  const informer = new Informer(client, {
    ...options,
    onUpsert: (_key, object) => {
      options.onUpsert(object);
    },
    onDelete: (_key, object) => {
      options.onDelete(object);
    },
    onError: (error, retryInMs) => {
      log.warn("watch failed; restarting", { watch: what, error, retryInMs });
    },
    clock,
    backoff: { initialMs: 1000, maxMs: 30_000 },
  });
  informer.run(signal).catch((error: unknown) => {
    log.error("watch stopped", { watch: what, error });
  });
}

interface PodObject {
  metadata?: { uid?: string; namespace?: string; name?: string; annotations?: Record<string, string> };
  status?: Partial<Record<"initContainerStatuses" | "containerStatuses" | "ephemeralContainerStatuses", { name: string; containerID?: string }[]>>;
}

/** What the agent keeps of a pod. */
function podInfo(object: Record<string, unknown>): PodInfo {
  const pod = object as PodObject;
  const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? []), ...(pod.status?.ephemeralContainerStatuses ?? [])];
  return {
    uid: pod.metadata?.uid ?? "",
    namespace: pod.metadata?.namespace ?? "",
    name: pod.metadata?.name ?? "",
    containers: containersOf(statuses),
    annotations: pod.metadata?.annotations ?? {},
  };
}

/** The pods on this node (field selector spec.nodeName), by uid, from a watch. */
export function watchPods(client: KubeClient, nodeName: string, clock: Clock, log: Logger, signal: AbortSignal): PodDirectory {
  const byUID = new Map<string, PodInfo>();
  keepWatching(
    client,
    `pods on ${nodeName}`,
    {
      path: "/api/v1/pods",
      query: { fieldSelector: `spec.nodeName=${nodeName}` },
      transform: podInfo,
      onUpsert: (pod) => {
        if (pod.uid !== "") byUID.set(pod.uid, pod);
      },
      onDelete: (pod) => {
        byUID.delete(pod.uid);
      },
    },
    clock,
    log,
    signal,
  );
  return { pod: (uid) => byUID.get(uid) };
}

/** Calls `onEvent` for every MemoryErrorEvent of this node as it is added or changed, and `onDelete` with the name of one deleted. */
export function watchMemoryErrorEvents(
  client: KubeClient,
  nodeName: string,
  onEvent: (event: MemoryErrorEvent) => void,
  clock: Clock,
  log: Logger,
  signal: AbortSignal,
  onDelete?: (name: string) => void,
): void {
  keepWatching(
    client,
    `memory error events of ${nodeName}`,
    {
      path: `${customPath}/${events}`,
      query: { labelSelector: `${nodeLabel}=${nodeName}` },
      // The API server's JSON, of the CRD's schema.
      transform: (object) => object as unknown as MemoryErrorEvent,
      onUpsert: onEvent,
      onDelete: (event) => onDelete?.(event.metadata.name),
    },
    clock,
    log,
    signal,
  );
}
