// Carries out the early-signal actions the operator plans for pods on this node: the kernel's own
// BUS_MCEERR_AO cannot be sent from user space to another process, so the agent publishes the lost
// virtual ranges (pod annotation and a Kubernetes Event), sends the configured signal to the pod's
// processes that mapped the poisoned hugepage, and records the outcome in status.earlySignals.
// Idempotent: an entry already recorded is never redone, after a restart either.
import type { MemoryErrorEvent, MemoryErrorEventSpecMapper, MemoryErrorEventStatusEarlySignal, MemoryErrorEventStatusPod } from "../crds/generated.ts";
import { lostRangesAnnotation } from "../crds/naming.ts";
import { clip } from "../crds/validate.ts";
import type { Clock } from "../runtime/clock.ts";
import { ValueQueue } from "../runtime/queue.ts";
import type { PodDirectory } from "./event.ts";
import type { Logger } from "../runtime/log.ts";
import type { ProcessInfo } from "./mappings.ts";
import type { AgentMetrics } from "./metrics.ts";

export type EarlySignalName = NonNullable<MemoryErrorEventStatusPod["signal"]>;

export interface PodRef {
  namespace: string;
  name: string;
  uid: string;
}

/** The API writes the early signal needs; the real one is in kube.ts. */
export interface EarlySignalApi {
  /** Merge-patches the pod's annotations. */
  annotatePod(pod: PodRef, annotations: Record<string, string>): Promise<void>;
  /** Server-side applies status.earlySignals (the agent's entries, all of them) with field manager mce-agent. */
  applyEarlySignals(eventName: string, earlySignals: MemoryErrorEventStatusEarlySignal[]): Promise<void>;
}

/** process.kill behind an interface, so tests never signal anything real. */
export interface Signaller {
  kill(pid: number, signal: EarlySignalName): void;
}

export interface EarlySignallerOptions {
  api: EarlySignalApi;
  signaller: Signaller;
  pods: PodDirectory;
  /** What /proc says of a pid now: the pid may have exited or been reused since the error. */
  process: (pid: number) => ProcessInfo | undefined;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
  /** The pause before a failed pass is tried again (default 5 s). */
  retryMs?: number;
}

const WAITING = new Set<MemoryErrorEventStatusPod["state"]>(["Planned", "InProgress"]);

export class EarlySignaller {
  readonly #options: EarlySignallerOptions;
  /** Outcomes carried out by this process, kept until status shows them, so a failed status write never signals twice. */
  readonly #carriedOut = new Map<string, Map<string, MemoryErrorEventStatusEarlySignal>>();
  readonly #queue: ValueQueue<MemoryErrorEvent>;

  constructor(options: EarlySignallerOptions) {
    this.#options = options;
    const { clock, log, retryMs = 5000 } = options;
    this.#queue = new ValueQueue(
      async (_name, event) => {
        await this.reconcile(event);
        return undefined;
      },
      { clock, baseDelayMs: retryMs, maxDelayMs: retryMs },
    );
    this.#queue.onError = (name, error, retryInMs) => {
      log.warn("early signal not finished; will retry", { memoryErrorEvent: name, error, retryInMs });
    };
  }

  /**
   * Reconciles `event` in the background, one pass at a time per event: a change seen during a pass
   * is reconciled after it, and a failed pass is retried after `retryMs` with the latest version.
   */
  offer(event: MemoryErrorEvent): void {
    this.#queue.offer(event.metadata.name, event);
  }

  /** Starts nothing more; a pass under way finishes. */
  stop(): void {
    this.#queue.stop();
  }

  /** Does whatever early signals `event` plans and nobody did yet; rejects when a write failed (retry later). */
  async reconcile(event: MemoryErrorEvent): Promise<void> {
    const name = event.metadata.name;
    const recorded = event.status?.earlySignals ?? [];
    const carried = this.#carriedOut.get(name) ?? new Map<string, MemoryErrorEventStatusEarlySignal>();
    for (const entry of recorded) carried.delete(entry.uid);
    const done = new Set([...recorded.map((entry) => entry.uid), ...carried.keys()]);
    const planned = (event.status?.pods ?? []).filter((pod) => pod.action === "EarlySignal" && WAITING.has(pod.state) && !done.has(pod.uid));
    if (planned.length === 0 && carried.size === 0) {
      this.#carriedOut.delete(name);
      return;
    }
    this.#carriedOut.set(name, carried);
    for (const pod of planned) carried.set(pod.uid, await this.#signal(event, pod));
    // Kept until the status this agent watches shows them: a watch event older than the write must
    // not look like a signal still to send.
    await this.#options.api.applyEarlySignals(name, [...recorded, ...carried.values()]);
  }

  async #signal(event: MemoryErrorEvent, pod: MemoryErrorEventStatusPod): Promise<MemoryErrorEventStatusEarlySignal> {
    const { api, signaller, pods, process, clock, log, metrics } = this.#options;
    const ref: PodRef = { namespace: pod.namespace, name: pod.name, uid: pod.uid };
    const signal = pod.signal ?? "SIGBUS";
    const at = new Date(clock.now()).toISOString();
    const object = { memoryErrorEvent: event.metadata.name, pod: `${pod.namespace}/${pod.name}` };
    // Only processes still in that pod: a pid the error named may have exited and been reused.
    const mappers = (event.spec.mappers ?? []).filter((m) => m.podUID === pod.uid && process(m.pid)?.pod?.podUID === pod.uid);
    const pids = [...new Set(mappers.map((m) => m.pid))];
    if (pids.length === 0) {
      metrics.earlySignals.inc({ state: "Failed" });
      log.warn("early signal: no process of the pod that mapped the hugepage is running", object);
      return { uid: pod.uid, state: "Failed", signal, at, message: "no process of the pod that mapped the poisoned hugepage is running any more" };
    }
    const ranges = [...new Set(mappers.flatMap(rangeOf))];
    // Published before the signal, so a handler woken by it finds the ranges.
    const previous = pods.pod(pod.uid)?.annotations[lostRangesAnnotation];
    const published = [...new Set([...(previous === undefined || previous === "" ? [] : previous.split(",")), ...ranges])];
    await api.annotatePod(ref, { [lostRangesAnnotation]: published.join(",") });
    const failures: string[] = [];
    for (const pid of pids) {
      try {
        signaller.kill(pid, signal);
      } catch (error) {
        failures.push(`pid ${pid}: ${error instanceof Error ? error.message : String(error)}`);
      }
    }
    const state = failures.length === pids.length ? "Failed" : "Done";
    metrics.earlySignals.inc({ state });
    log.info("early signal carried out", { ...object, signal, pids, lostRanges: ranges, state, failures });
    return { uid: pod.uid, state, signal, pids, lostRanges: ranges, at, ...(failures.length > 0 && { message: clip(failures.join("; "), 1024) }) };
  }
}

function rangeOf(mapper: MemoryErrorEventSpecMapper): string[] {
  return mapper.virtualStart === undefined || mapper.virtualEnd === undefined ? [] : [`${mapper.virtualStart}-${mapper.virtualEnd}`];
}
