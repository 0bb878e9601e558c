// What the model reads: a memory error, the node and pods around it, the cluster's budget and the policy,
// each in the model's own terms (numbers, not the API's strings). Built from the operator's cache by
// operator/state.ts and from a scenario file by the simulator.
import type {
  DefaultedContainmentPolicySpec,
  MemoryErrorEventSpec,
  MemoryErrorEventSpecMapper,
  MemoryErrorEventStatusPoolReplacement,
  MemoryErrorEventStatusPrediction,
} from "../../crds/generated.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import type { LabelSelector } from "./selector.ts";
import type { HourlyCount } from "../../crds/hourly.ts";

export type Severity = MemoryErrorEventSpec["severity"];
export type Mapper = MemoryErrorEventSpecMapper;
export type PoolEffect = NonNullable<MemoryErrorEventStatusPrediction["poolEffect"]>;
/** A ContainmentPolicy's spec with the CRD's defaults applied (once, where it enters the cache). */
export type Policy = DefaultedContainmentPolicySpec;
export type NodeActionKind = "None" | "Taint" | "Cordon";
export type ReplacementState = NonNullable<MemoryErrorEventStatusPoolReplacement["state"]>;

/** Errors that lost data: the ones escalation counts one for one (corrected and soft-offline lose nothing). */
export const isUncorrected = (s: Severity): boolean => s === "ActionOptional" || s === "ActionRequired" || s === "Fatal";

export interface MemoryError {
  nodeName: string;
  pfn: number;
  severity: Severity;
  /** The kernel's page-type words, when it printed them. */
  pageType?: string | undefined;
  result?: string | undefined;
  hugepage?: { size: HugepageSize; headPfn: number; numaNode?: number | undefined } | undefined;
  mappers: readonly Mapper[];
  /** A machine check the kernel found in the banks as it booted: the error is from before this boot. */
  loggedAtBoot?: boolean | undefined;
  /** Pids the kernel signalled for this pfn after the error, on a later access (the agent's status.kernelSignals). */
  signalledLater?: readonly number[] | undefined;
  /**
   * For the agent's own soft offline: how its pool changed, as the agent read it before and after (the
   * soft-offline result on the page's corrected-error event), so nothing about it is guessed.
   */
  poolTotalDelta?: number | undefined;
  observedAt: number;
}

export interface HugepagePool {
  size: HugepageSize;
  numaNode: number;
  total: number;
  free: number;
}

export interface PoisonedHugepage {
  size: HugepageSize;
  headPfn: number;
  /** Still counted in nr_hugepages: mapped private pages until unmapped, shared pages for ever. */
  inPool: boolean;
}

/** A replacement asked for on the node by another error, for the per-window limits. */
export interface ReplacementRecord {
  at: number;
  size: HugepageSize;
  state: ReplacementState;
}

/** Corrected errors in one hour, as the agent counts them (NodeMemoryHealth's hourly buckets). */
export type { HourlyCount };

/** One earlier error on a node, as escalation counts it. */
export interface ErrorRecord {
  at: number;
  severity: Severity;
}

export interface NodeState {
  name: string;
  labels: Readonly<Record<string, string>>;
  kernelRelease?: string | undefined;
  /** vm.memory_failure_early_kill */
  earlyKill: boolean;
  /** Pools as the agent last reported them before this error. */
  pools: readonly HugepagePool[];
  /** What the kubelet advertises as allocatable, per size, in bytes; it reads the pool only at start. */
  allocatableBytes: Partial<Record<HugepageSize, number>>;
  /** The node carries the policy's taint now (a person may have removed it). */
  tainted: boolean;
  /** The node is unschedulable because the operator cordoned it (a person may have uncordoned it). */
  cordoned: boolean;
  /** When the operator last tainted or cordoned it, for the cooldown. */
  lastNodeActionAt?: number | undefined;
  /** Earlier errors on this node, with when they were observed. */
  history: readonly ErrorRecord[];
  poisonedHugepages: readonly PoisonedHugepage[];
  /** Whether the node's agent can write its hugepage pools; undefined when it has not said. */
  poolResize?: boolean | undefined;
  /** Free memory per NUMA node, as the agent last reported it. */
  numaMemory?: readonly { numaNode: number; freeBytes: number; free2MiBlocks?: number | undefined }[] | undefined;
  /**
   * The node's corrected errors per hour as its agent counts them: its DIMMs' where EDAC or rasdaemon
   * counts per DIMM, else its pages'. A page's later errors are only counted there, never events.
   */
  correctedHourly?: readonly HourlyCount[] | undefined;
  /** Replacement hugepages asked for on this node by its other errors. */
  replacements?: readonly ReplacementRecord[] | undefined;
}

export interface PodState {
  uid: string;
  namespace: string;
  name: string;
  nodeName: string;
  labels: Readonly<Record<string, string>>;
  annotations: Readonly<Record<string, string>>;
  priority: number;
  hugepageRequestBytes: Partial<Record<HugepageSize, number>>;
}

export interface DisruptionBudgetState {
  namespace: string;
  name: string;
  selector: LabelSelector;
  disruptionsAllowed: number;
}

/** What the cluster-wide limits on node actions and evictions see; computed by escalation.ts's clusterBudget. */
export interface ClusterBudget {
  totalNodes: number;
  /** Nodes tainted or cordoned by the operator now, or about to be (an action in flight). */
  actionedNodes: ReadonlySet<string>;
  /** When each node action the operator took (or is taking) happened, once each: the circuit breaker counts them. */
  nodeActionTimes: readonly number[];
  evictionsInFlight: number;
}
