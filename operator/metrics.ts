// The operator's Prometheus metrics, on a registry of its own (prefix mce_operator_).
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

export class OperatorMetrics {
  readonly registry = new Registry();
  readonly memoryErrors = new Counter({
    name: "mce_operator_memory_errors_total",
    help: "Memory errors decided, by severity, the kernel's page type and result.",
    labelNames: ["severity", "page_type", "result"],
    registers: [this.registry],
  });
  readonly actions = new Counter({
    name: "mce_operator_actions_total",
    help: "Containment actions carried out, by type (evict, delete, early_signal, quarantine, release, taint, cordon) and outcome.",
    labelNames: ["action", "outcome"],
    registers: [this.registry],
  });
  readonly poolReplacements = new Counter({
    name: "mce_operator_pool_replacements_total",
    help: "Replacement hugepages asked of the nodes' agents, by hugepage size and outcome (requested, given, refused, skipped).",
    labelNames: ["size", "outcome"],
    registers: [this.registry],
  });
  readonly softOfflines = new Counter({
    name: "mce_operator_soft_offlines_total",
    help: "Soft offlines of pages with corrected errors the nodes' agents carried out, by outcome (done, failed, skipped).",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly capacityLostBytes = new Gauge({
    name: "mce_operator_hugepage_capacity_lost_bytes",
    help: "Hugepage capacity the node's pools lost to memory errors in this boot and no replacement gave back, by node and hugepage size.",
    labelNames: ["node", "size"],
    registers: [this.registry],
  });
  readonly quarantinedBytes = new Gauge({
    name: "mce_operator_quarantined_bytes",
    help: "Hugepage capacity held out of scheduling, by node and hugepage size.",
    labelNames: ["node", "size"],
    registers: [this.registry],
  });
  // Corrected errors in the node's policy's prevention window, set by the node reconciler with
  // NodeMemoryHealth's worstDimm. Bounded: a series only for a DIMM (at most the CRD's 128 a node) or a
  // node with errors in the window, removed when they age out or the node goes (setCorrectedErrors).
  readonly dimmCorrectedErrors = new Gauge({
    name: "mce_operator_dimm_corrected_errors",
    help: "Corrected errors of a DIMM in the prevention window of the node's policy, by node, DIMM (EDAC location, e.g. mc0/dimm1) and the DIMM's label; only DIMMs with errors in the window.",
    labelNames: ["node", "dimm", "dimm_label"],
    registers: [this.registry],
  });
  readonly worstPageCorrectedErrors = new Gauge({
    name: "mce_operator_worst_page_corrected_errors",
    help: "Corrected errors in the prevention window of the node's page with the most that is not retired yet (soft offline), by node; only nodes with such a page.",
    labelNames: ["node"],
    registers: [this.registry],
  });
  readonly preventionThreshold = new Gauge({
    name: "mce_operator_prevention_threshold",
    help: "The node's policy's spec.prevention thresholds (scope dimm or page), for the nodes that have corrected errors in the window.",
    labelNames: ["node", "scope"],
    registers: [this.registry],
  });
  readonly decisionLatency = new Histogram({
    name: "mce_operator_event_to_decision_seconds",
    help: "Time from a MemoryErrorEvent's creation to its decision written in status.",
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly evictionsBlocked = new Counter({
    name: "mce_operator_evictions_blocked_total",
    help: "Evictions refused (429) because a PodDisruptionBudget allowed no disruption.",
    registers: [this.registry],
  });
  readonly evictionsPending = new Gauge({
    name: "mce_operator_evictions_pending",
    help: "Evictions planned, in progress or blocked.",
    registers: [this.registry],
  });
  readonly breakerOpen = new Gauge({
    name: "mce_operator_circuit_breaker_open",
    help: "1 while the circuit breaker holds node actions back.",
    registers: [this.registry],
  });
  readonly nodeActionsHeld = new Counter({
    name: "mce_operator_node_actions_held_total",
    help: "Taints and cordons held back by the safety budget, the circuit breaker or the cooldown.",
    labelNames: ["action"],
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({ name: "mce_operator_queue_depth", help: "Keys waiting or being reconciled.", registers: [this.registry] });
  readonly reconcileErrors = new Counter({
    name: "mce_operator_reconcile_errors_total",
    help: "Reconciles that failed and were retried with backoff, by kind.",
    labelNames: ["kind"],
    registers: [this.registry],
  });
  readonly apiRequests = new Counter({
    name: "mce_operator_api_requests_total",
    help: "Requests sent to the API server, by verb (WATCH counts watch connections) and resource (pods/eviction, memoryerrorevents/status...).",
    labelNames: ["verb", "resource"],
    registers: [this.registry],
  });
  readonly leader = new Gauge({ name: "mce_operator_leader", help: "1 while this replica holds the leader lease.", registers: [this.registry] });

  /** The DIMM series set per node, so that the ones dropping out are removed; a node is here while it has any corrected-error series. */
  private readonly correctedSeries = new Map<string, DimmLabels[]>();

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }

  /**
   * Sets a node's corrected-error gauges to what its policy's prevention window holds now: a DIMM with
   * none in the window loses its series, and a node with none at all (or undefined: the node is gone)
   * loses all of them, its thresholds too.
   */
  setCorrectedErrors(node: string, errors: CorrectedErrorGauges | undefined): void {
    const dimms = (errors?.dimms ?? [])
      .filter((d) => d.correctedErrors > 0)
      .map((d) => ({ labels: { node, dimm: d.dimm, dimm_label: d.label ?? "" }, value: d.correctedErrors }));
    const key = (l: DimmLabels): string => JSON.stringify([l.dimm, l.dimm_label]);
    const set = dimms.map((d) => d.labels);
    const kept = new Set(set.map(key));
    for (const old of this.correctedSeries.get(node) ?? []) if (!kept.has(key(old))) this.dimmCorrectedErrors.remove(old);
    for (const d of dimms) this.dimmCorrectedErrors.set(d.labels, d.value);
    const worstPage = errors?.worstPage !== undefined && errors.worstPage > 0 ? errors.worstPage : undefined;
    if (worstPage === undefined) this.worstPageCorrectedErrors.remove({ node });
    else this.worstPageCorrectedErrors.set({ node }, worstPage);
    const any = errors !== undefined && (dimms.length > 0 || worstPage !== undefined);
    for (const scope of ["dimm", "page"] as const) {
      if (any) this.preventionThreshold.set({ node, scope }, errors.thresholds[scope]);
      else this.preventionThreshold.remove({ node, scope });
    }
    if (any) this.correctedSeries.set(node, set);
    else this.correctedSeries.delete(node);
  }

  /** Removes the corrected-error series of the nodes that are gone (the reconciler is not called for a deleted node). */
  forgetCorrectedErrors(present: (node: string) => boolean): void {
    for (const node of [...this.correctedSeries.keys()]) if (!present(node)) this.setCorrectedErrors(node, undefined);
  }
}

interface DimmLabels {
  node: string;
  dimm: string;
  dimm_label: string;
}

/** A node's corrected errors in its policy's prevention window, as the node reconciler counts them. */
export interface CorrectedErrorGauges {
  /** Every DIMM the agent counts; the ones with none in the window get no series. */
  dimms: readonly { dimm: string; label?: string | undefined; correctedErrors: number }[];
  /** The not yet retired page with the most, if any page has one in the window. */
  worstPage: number | undefined;
  /** The policy's spec.prevention dimmThreshold and pageThreshold. */
  thresholds: { dimm: number; page: number };
}
