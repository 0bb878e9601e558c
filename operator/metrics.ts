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
    help: "Requests sent to the API server, by verb (WATCH counts watch connections).",
    labelNames: ["verb"],
    registers: [this.registry],
  });
  readonly leader = new Gauge({ name: "mce_operator_leader", help: "1 while this replica holds the leader lease.", registers: [this.registry] });

  constructor(defaults = true) {
    if (defaults) collectDefaultMetrics({ register: this.registry });
  }
}
