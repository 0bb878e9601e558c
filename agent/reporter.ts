// Delivers queued MemoryErrorEvents in order. The API server may be gone for a while: the head of the
// queue is retried with exponential backoff and nothing behind it overtakes it. Create is the only
// write: a 409 AlreadyExists means an earlier attempt (before a crash or a lost response) got there.
import type { MemoryErrorEvent } from "../crds/generated.ts";
import { apiStatusOf } from "../runtime/api.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Logger } from "../runtime/log.ts";
import type { AgentMetrics } from "./metrics.ts";
import type { AgentState } from "./state.ts";

export interface EventSink {
  /** Creates the event; "exists" on 409. Rejects on any other failure, with an ApiError when the API server answered. */
  create(event: MemoryErrorEvent): Promise<"created" | "exists">;
}

export interface Backoff {
  initialMs: number;
  maxMs: number;
}

export interface ReporterOptions {
  state: AgentState;
  sink: EventSink;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
  backoff?: Backoff;
}

export class Reporter {
  readonly #options: ReporterOptions;
  #wake: (() => void) | undefined;

  constructor(options: ReporterOptions) {
    this.#options = options;
  }

  /** Says the queue has something new. */
  notify(): void {
    this.#options.metrics.queueDepth.set(this.#options.state.queue.length);
    this.#wake?.();
  }

  async run(signal: AbortSignal): Promise<void> {
    const { state, sink, clock, log, metrics, backoff = { initialMs: 500, maxMs: 30_000 } } = this.#options;
    let delay = backoff.initialMs;
    while (!signal.aborted) {
      const head = state.queue[0];
      metrics.queueDepth.set(state.queue.length);
      if (head === undefined) {
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          signal.addEventListener(
            "abort",
            () => {
              resolve();
            },
            { once: true },
          );
        });
        this.#wake = undefined;
        continue;
      }
      const { event, readAt } = head;
      const object = { memoryErrorEvent: event.metadata.name };
      try {
        const outcome = await sink.create(event);
        metrics.delivered.inc({ outcome });
        metrics.reportLatency.observe(Math.max(0, clock.now() - readAt) / 1000);
        log.info(outcome === "created" ? "memory error reported" : "memory error was already reported", {
          ...object,
          pfn: event.spec.pfn,
          severity: event.spec.severity,
        });
        state.remove(event.metadata.name);
        delay = backoff.initialMs;
      } catch (error) {
        const status = apiStatusOf(error);
        if (status === 400 || status === 422) {
          // The API server will never take it; holding it would block every event behind it.
          metrics.delivered.inc({ outcome: "rejected" });
          log.error("API server rejected the memory error event; dropped", { ...object, status, error });
          state.remove(event.metadata.name);
          continue;
        }
        metrics.deliveryFailures.inc();
        log.warn("could not deliver memory error event; will retry", { ...object, status, error, retryInMs: delay, queued: state.queue.length });
        await clock.sleep(delay, signal);
        delay = Math.min(delay * 2, backoff.maxMs);
      }
    }
  }
}
