// The agent's Prometheus metrics, in a registry of its own (prefix mce_agent_), served on /metrics.
import { Counter, Gauge, Histogram, Registry } from "prom-client";

export class AgentMetrics {
  readonly registry = new Registry();
  readonly kernelLines = new Counter({
    name: "mce_agent_kernel_lines_total",
    help: "Kernel lines read, by source.",
    labelNames: ["source"],
    registers: [this.registry],
  });
  readonly errors = new Counter({
    name: "mce_agent_memory_errors_total",
    help: "Memory errors assembled from kernel lines, by source and severity.",
    labelNames: ["source", "severity"],
    registers: [this.registry],
  });
  readonly parseErrors = new Counter({
    name: "mce_agent_parse_errors_total",
    help: "Lines that looked like memory-failure lines but fit no known shape, by source.",
    labelNames: ["source"],
    registers: [this.registry],
  });
  readonly lostRecords = new Counter({
    name: "mce_agent_kmsg_lost_records_total",
    help: "kmsg records the kernel overwrote before the agent read them.",
    registers: [this.registry],
  });
  readonly notMemory = new Counter({
    name: "mce_agent_machine_checks_not_memory_total",
    help: "Machine checks at a physical address outside System RAM (MMIO, reserved ranges): no memory error event is made.",
    registers: [this.registry],
  });
  readonly expiredLines = new Counter({
    name: "mce_agent_orphan_lines_total",
    help: "Memory-failure lines no error completed within the grouping window.",
    registers: [this.registry],
  });
  readonly queueDepth = new Gauge({ name: "mce_agent_queue_depth", help: "MemoryErrorEvents waiting to be delivered.", registers: [this.registry] });
  readonly queueDropped = new Counter({
    name: "mce_agent_queue_dropped_total",
    help: "Events dropped because the on-disk queue was full (only corrected errors are ever dropped).",
    labelNames: ["severity"],
    registers: [this.registry],
  });
  readonly delivered = new Counter({
    name: "mce_agent_events_delivered_total",
    help: "MemoryErrorEvents delivered, by outcome (created, exists, rejected).",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly deliveryFailures = new Counter({
    name: "mce_agent_delivery_failures_total",
    help: "Failed attempts to deliver an event (retried with backoff).",
    registers: [this.registry],
  });
  readonly reportLatency = new Histogram({
    name: "mce_agent_report_latency_seconds",
    help: "From reading the kernel line to the event being accepted by the API server.",
    buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15, 60, 300],
    registers: [this.registry],
  });
  readonly indexProcesses = new Gauge({ name: "mce_agent_index_processes", help: "Processes the hugetlb index tracks.", registers: [this.registry] });
  readonly indexHugepages = new Gauge({ name: "mce_agent_index_hugepages", help: "Mapped hugepages the hugetlb index knows.", registers: [this.registry] });
  readonly indexScan = new Histogram({
    name: "mce_agent_index_scan_seconds",
    help: "Time of one incremental refresh of the hugetlb index.",
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [this.registry],
  });
  readonly earlySignals = new Counter({
    name: "mce_agent_early_signals_total",
    help: "Early-signal actions carried out, by outcome (Done, Failed).",
    labelNames: ["state"],
    registers: [this.registry],
  });
  readonly poolReplacements = new Counter({
    name: "mce_agent_pool_replacements_total",
    help: "Pool replacements carried out, by hugepage size and outcome (Given, Refused, Skipped).",
    labelNames: ["size", "outcome"],
    registers: [this.registry],
  });
  readonly softOfflines = new Counter({
    name: "mce_agent_soft_offlines_total",
    help: "Soft offlines of pages with corrected errors carried out on the operator's request, by outcome (done, failed).",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly correctedErrors = new Counter({
    name: "mce_agent_corrected_errors_total",
    help: "Corrected memory errors read from the kernel, by whether they made the page's event (first) or were only counted (counted).",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
  readonly healthApplies = new Counter({
    name: "mce_agent_node_health_applies_total",
    help: "NodeMemoryHealth applies, by outcome (ok, error).",
    labelNames: ["outcome"],
    registers: [this.registry],
  });
}
