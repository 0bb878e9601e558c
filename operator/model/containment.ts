// The containment model: one pure function from a memory error and the cluster around it to a decision,
// with a reason for every part. No I/O and no clock: `now` is an input. The operator, the simulator and
// the kernel tier all call it, so what the cluster does and what we predict the kernel did never drift.
import type {
  ContainmentPolicySpec,
  MemoryErrorEventSpec,
  MemoryErrorEventSpecMapper,
  MemoryErrorEventStatusNodeAction,
  MemoryErrorEventStatusPod,
  MemoryErrorEventStatusPoolReplacement,
  MemoryErrorEventStatusPrediction,
  MemoryErrorEventStatusQuarantine,
  NodeMemoryHealthStatus,
} from "../../crds/generated.ts";
import { formatPfn, hugepageBytes, PAGE_SIZE_BYTES } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { selectProfile } from "../../kernel/profiles.ts";
import { formatDuration, parseDuration } from "./duration.ts";
import { decidePoolReplacement } from "./replacement.ts";
import type { ReplacementRecord } from "./replacement.ts";
import { selectorMatches } from "./selector.ts";
import type { LabelSelector } from "./selector.ts";

export type Severity = MemoryErrorEventSpec["severity"];
export type Mapper = MemoryErrorEventSpecMapper;
export type PoolEffect = NonNullable<MemoryErrorEventStatusPrediction["poolEffect"]>;

export interface MemoryError {
  nodeName: string;
  pfn: number;
  severity: Severity;
  /** The kernel's page-type words, when it printed them. */
  pageType?: string | undefined;
  result?: string | undefined;
  hugepage?: { size: HugepageSize; headPfn: number; numaNode?: number | undefined } | undefined;
  mappers: readonly Mapper[];
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
  tainted: boolean;
  cordoned: boolean;
  lastNodeActionAt?: number | undefined;
  /** Earlier errors on this node, with when they were observed. */
  history: readonly { at: number; severity: Severity }[];
  poisonedHugepages: readonly PoisonedHugepage[];
  /** Whether the node's agent can write its hugepage pools; undefined when it has not said. */
  poolResize?: boolean | undefined;
  /** Free memory per NUMA node, as the agent last reported it. */
  numaMemory?: readonly { numaNode: number; freeBytes: number; free2MiBlocks?: number | undefined }[] | undefined;
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

export interface ClusterBudget {
  totalNodes: number;
  /** Nodes the operator has tainted or cordoned now. */
  actionedNodes: ReadonlySet<string>;
  /** When each recent node action was taken (for the circuit breaker). */
  nodeActionTimes: readonly number[];
  evictionsInFlight: number;
}

export interface ContainmentInput {
  error: MemoryError;
  node: NodeState;
  /** Pods on the error's node. */
  pods: readonly PodState[];
  pdbs: readonly DisruptionBudgetState[];
  /** The matching policy's spec, with the CRD's defaults applied. */
  policy: ContainmentPolicySpec;
  budget: ClusterBudget;
  now: number;
}

export interface MapperOutcome {
  pid: number;
  command: string;
  podUID?: string | undefined;
  /** BUS_MCEERR_AO at the error, or nothing. */
  atError: "AO" | "None";
  /** Every mapper gets BUS_MCEERR_AR when it touches any byte of the hugepage. */
  onAccess: "AR" | "None";
  reason: string;
}

export interface KernelPrediction extends MemoryErrorEventStatusPrediction {
  kernelProfile: string;
  verified: boolean;
  poolEffect: PoolEffect;
  lostBytes: number;
  memoryLostBytes: number;
  reason: string;
  /** /proc/meminfo HardwareCorrupted grows by this much (4 KiB per newly poisoned raw page). */
  hardwareCorruptedDelta: number;
  /** si_addr_lsb of the SIGBUS: the whole hugepage is the unit of loss (21 for 2 MiB, 30 for 1 GiB). */
  signalAddressLsb?: number | undefined;
  /** The page-type words the kernel prints for this page. */
  pageType?: string | undefined;
  /** Change to the pool, and when it happens. */
  pool?: { size: HugepageSize; totalDelta: number; freeDelta: number; when: string } | undefined;
  mappers: MapperOutcome[];
}

export interface HealthVerdict {
  health: NonNullable<NodeMemoryHealthStatus["health"]>;
  uncorrectedErrors: number;
  correctedErrors: number;
  window: string;
}

export interface Decision {
  prediction: KernelPrediction;
  pods: MemoryErrorEventStatusPod[];
  quarantine: MemoryErrorEventStatusQuarantine[];
  nodeAction: MemoryErrorEventStatusNodeAction;
  /** A replacement hugepage for the one the pool lost; absent when the policy leaves replacement off. */
  poolReplacement?: MemoryErrorEventStatusPoolReplacement | undefined;
  health: HealthVerdict;
  /** The phase the event reaches once every action is carried out. */
  phase: "Contained" | "Escalated" | "Ignored";
  dryRun: boolean;
}

/** Errors that lost data: the ones escalation counts (corrected and soft-offline lose nothing). */
export const isUncorrected = (s: Severity): boolean => s === "ActionOptional" || s === "ActionRequired" || s === "Fatal";

function mapperOutcome(mapper: Mapper, earlyKill: boolean, warns: boolean, severity: Severity): MapperOutcome {
  const early = mapper.killPolicy === "Early" || (mapper.killPolicy === "Default" && earlyKill);
  const base = { pid: mapper.pid, command: mapper.command, podUID: mapper.podUID || undefined };
  if (severity === "SoftOffline" || severity === "Corrected")
    return { ...base, atError: "None", onAccess: "None", reason: "no data was lost: nobody is signalled" };
  const why = mapper.killPolicy === "Default" ? `vm.memory_failure_early_kill=${earlyKill ? 1 : 0}` : `PR_MCE_KILL_${mapper.killPolicy.toUpperCase()}`;
  const atError = early && warns ? "AO" : "None";
  const reason =
    atError === "AO"
      ? `${why}: BUS_MCEERR_AO at the error, then BUS_MCEERR_AR on any access`
      : early
        ? `${why}, but this kernel profile does not promise BUS_MCEERR_AO: BUS_MCEERR_AR on first access`
        : `${why}: no signal until it touches the hugepage, then BUS_MCEERR_AR`;
  return { ...base, atError, onAccess: "AR", reason };
}

/** What the kernel did or will do with the page, under the node's kernel profile. */
export function predictKernelOutcome(error: MemoryError, node: NodeState, profileOverride?: string): KernelPrediction {
  const choice = selectProfile(node.kernelRelease, profileOverride);
  const { profile } = choice;
  const poisons = error.severity !== "Corrected";
  const base = { kernelProfile: profile.name, verified: choice.verified, hardwareCorruptedDelta: poisons ? PAGE_SIZE_BYTES : 0 };
  const mappers = error.mappers.map((m) => mapperOutcome(m, node.earlyKill, profile.advisorySignalToEarlyMappers, error.severity));
  const page = error.hugepage;
  const pfn = formatPfn(error.pfn);
  if (error.severity === "Corrected")
    return { ...base, poolEffect: "None", lostBytes: 0, memoryLostBytes: 0, mappers, reason: `corrected error at ${pfn}: no data lost, nothing poisoned` };
  if (!page)
    return {
      ...base,
      poolEffect: "NotHugepage",
      lostBytes: 0,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      reason: `${pfn} is not in a hugepage (${error.pageType ?? "page type unknown"}): the kernel contains it at 4 KiB`,
    };
  const size = page.size;
  const bytes = hugepageBytes(size);
  const where = `${size} hugepage ${formatPfn(page.headPfn)}`;
  if (/already (hardware )?poisoned/.test(error.pageType ?? "") || node.poisonedHugepages.some((p) => p.headPfn === page.headPfn && p.size === size))
    return {
      ...base,
      hardwareCorruptedDelta: 0,
      poolEffect: "None",
      lostBytes: 0,
      memoryLostBytes: 0,
      mappers,
      pageType: error.pageType,
      reason: `${where} was already poisoned: nothing new is lost`,
    };
  if (error.severity === "SoftOffline")
    return {
      ...base,
      poolEffect: "Migrated",
      lostBytes: bytes,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      // In use, the copy is taken from the free pool and the old page dissolved once freed: free -1 either way.
      pool: { size, totalDelta: -1, freeDelta: -1, when: "now" },
      reason: `soft offline of ${where}: data moved to a new hugepage, the old one leaves the pool; nobody is signalled`,
    };
  const free = error.pageType === "free huge page" || (error.pageType === undefined && error.mappers.length === 0);
  if (free) {
    if (!profile.dissolvesFreeHugepage)
      return {
        ...base,
        poolEffect: "Unknown",
        lostBytes: bytes,
        memoryLostBytes: bytes,
        mappers,
        pageType: "free huge page",
        kernelResult: "Recovered",
        reason: `free ${where}: assuming the whole hugepage is lost (${choice.reason})`,
      };
    return {
      ...base,
      poolEffect: "Dissolved",
      lostBytes: bytes,
      memoryLostBytes: PAGE_SIZE_BYTES,
      mappers,
      pageType: "free huge page",
      kernelResult: "Recovered",
      pool: { size, totalDelta: -1, freeDelta: -1, when: "now" },
      reason: `free ${where} is dissolved: the pool loses one hugepage, memory loses only 4 KiB`,
    };
  }
  const shared = error.mappers.some((m) => m.mapping === "Shared");
  const signalAddressLsb = Math.log2(bytes);
  const kernelResult = size === "1Gi" ? "Failed" : "Recovered";
  const signalled = mappers.filter((m) => m.atError === "AO").length;
  const who = `${error.mappers.length} mapper(s), ${signalled} warned with BUS_MCEERR_AO; all get BUS_MCEERR_AR on access`;
  if (shared && profile.sharedPageHeldForever)
    return {
      ...base,
      poolEffect: "HeldForever",
      lostBytes: bytes,
      memoryLostBytes: bytes,
      mappers,
      pageType: "huge page",
      kernelResult,
      signalAddressLsb,
      pool: { size, totalDelta: 0, freeDelta: -1, when: "for ever: never given back, even after munmap and unlink" },
      reason: `shared hugetlbfs ${where}: lost to every mapper and the file (reads return EIO); ${who}`,
    };
  return {
    ...base,
    poolEffect: "ReleasedOnUnmap",
    lostBytes: bytes,
    // Once the last mapper unmaps it, all but the poisoned 4 KiB return to free memory.
    memoryLostBytes: PAGE_SIZE_BYTES,
    mappers,
    pageType: "huge page",
    kernelResult,
    signalAddressLsb,
    // Measured on 6.1: nr_hugepages drops at the error; free, against the pool before the mapper took the
    // page, is one short once the mapper is gone.
    pool: { size, totalDelta: -1, freeDelta: -1, when: "the total at once; the mapper keeps its mapping until it exits" },
    reason:
      (size === "1Gi" ? `in-use ${where}: the kernel reports Failed (EBUSY); ` : `private ${where}: `) + `lost to its mapper and taken out of the pool; ${who}`,
  };
}

/** A poisoned hugepage nr_hugepages still counts: a shared hugetlbfs page for ever (or, not knowing, any). */
export function countedInPool(effect: PoolEffect): boolean {
  return effect === "HeldForever" || effect === "Unknown";
}

/**
 * Hugepage bytes the kubelet advertises beyond what the pools can really give: their total after
 * `totalDelta`, less `poisonedInPool` pages nr_hugepages still counts. Nothing where it advertises none.
 */
export function staleCapacity(size: HugepageSize, node: Pick<NodeState, "pools" | "allocatableBytes">, totalDelta: number, poisonedInPool: number): number {
  const bytes = hugepageBytes(size);
  const total = node.pools.filter((p) => p.size === size).reduce((sum, p) => sum + p.total, 0);
  return Math.max(0, (node.allocatableBytes[size] ?? 0) - (total + totalDelta - poisonedInPool) * bytes);
}

function quarantineFor(
  prediction: KernelPrediction,
  error: MemoryError,
  node: NodeState,
  policy: ContainmentPolicySpec,
  dryRun: boolean,
): MemoryErrorEventStatusQuarantine[] {
  const size = error.hugepage?.size;
  if (!size || prediction.lostBytes === 0 || policy.capacityQuarantine?.enabled === false) return [];
  const inPool = node.poisonedHugepages.filter((p) => p.size === size && p.inPool).length;
  const before = staleCapacity(size, node, 0, inPool);
  const stillInPool = countedInPool(prediction.poolEffect);
  // A page still counted in nr_hugepages is not subtracted twice: it leaves the total only when unmapped.
  const after = stillInPool ? staleCapacity(size, node, 0, inPool + 1) : staleCapacity(size, node, prediction.pool?.totalDelta ?? 0, inPool);
  const bytes = after - before;
  return bytes > 0 ? [{ size, bytes, state: dryRun ? "DryRun" : "Planned" }] : [];
}

function decidePods(input: ContainmentInput, prediction: KernelPrediction, dryRun: boolean): MemoryErrorEventStatusPod[] {
  const { error, pods, pdbs, policy, budget } = input;
  if (prediction.poolEffect === "None" || prediction.poolEffect === "Migrated" || prediction.poolEffect === "NotHugepage") return [];
  const early = policy.podActions?.earlySignal;
  const eviction = policy.podActions?.eviction;
  const safety = policy.safety;
  const mapperPods = new Set(error.mappers.map((m) => m.podUID).filter((uid): uid is string => Boolean(uid)));
  const targets = pods
    .filter((p) => mapperPods.has(p.uid))
    .sort((a, b) => a.priority - b.priority || a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name));
  let slots = Math.max(0, (safety?.maxEvictionsInFlight ?? 10) - budget.evictionsInFlight);
  const planned = dryRun ? "DryRun" : "Planned";
  return targets.map((pod): MemoryErrorEventStatusPod => {
    const own = prediction.mappers.filter((m) => m.podUID === pod.uid);
    const kernelSignal = own.some((m) => m.atError === "AO") ? "AO" : "AROnAccess";
    const base = { uid: pod.uid, namespace: pod.namespace, name: pod.name, kernelSignal, attempts: 0 } as const;
    if (safety?.excludedNamespaces?.includes(pod.namespace))
      return { ...base, action: "None", state: "Skipped", reason: `namespace ${pod.namespace} is excluded by the policy` };
    const excludedLabels = safety?.excludedPodLabels;
    if (excludedLabels && Object.keys(excludedLabels).length > 0 && selectorMatches({ matchLabels: excludedLabels }, pod.labels))
      return { ...base, action: "None", state: "Skipped", reason: "the pod's labels are excluded by the policy" };
    const annotation = early?.optInAnnotation ?? "mce-operator.io/early-signal";
    if (early?.enabled !== false && pod.annotations[annotation] === "true") {
      const ranges = error.mappers.filter((m) => m.podUID === pod.uid && m.virtualStart).map((m) => `${m.virtualStart ?? ""}-${m.virtualEnd ?? ""}`);
      const signal = early?.signal ?? "SIGUSR1";
      return {
        ...base,
        action: "EarlySignal",
        state: planned,
        signal,
        reason: `opted in by ${annotation}: the agent sends ${signal} to ${own.length} process(es) and publishes the lost range(s) ${[...new Set(ranges)].join(", ") || "(unknown)"}`,
      };
    }
    if (eviction?.enabled === false)
      return { ...base, action: "None", state: "Skipped", reason: "eviction is disabled by the policy: the pod will crash with BUS_MCEERR_AR on access" };
    const blocking = pdbs
      .filter((b) => b.namespace === pod.namespace && b.disruptionsAllowed <= 0 && selectorMatches(b.selector, pod.labels))
      .map((b) => b.name);
    const pdbNote = blocking.length > 0 ? `; PodDisruptionBudget ${blocking.join(", ")} allows no disruption now, so eviction is retried with backoff` : "";
    const why = `maps the poisoned hugepage and will crash with BUS_MCEERR_AR on access: evict early${pdbNote}`;
    if (!dryRun && slots === 0)
      return { ...base, action: "Evict", state: "Planned", reason: `${why}; waiting for an eviction slot (${safety?.maxEvictionsInFlight ?? 10} in flight)` };
    slots -= 1;
    return { ...base, action: "Evict", state: planned, reason: why };
  });
}

function judgeHealth(input: ContainmentInput): HealthVerdict & { effective: number } {
  const { node, error, policy, now } = input;
  const windowText = policy.escalation?.window ?? "24h";
  const windowMs = parseDuration(windowText, "spec.escalation.window");
  const inWindow = [...node.history, { at: error.observedAt, severity: error.severity }].filter((e) => e.at > now - windowMs && e.at <= now);
  const uncorrectedErrors = inWindow.filter((e) => isUncorrected(e.severity)).length;
  const correctedErrors = inWindow.length - uncorrectedErrors;
  const perCorrected = policy.escalation?.countCorrected ?? 0;
  const effective = uncorrectedErrors + (perCorrected > 0 ? Math.floor(correctedErrors / perCorrected) : 0);
  const cordonAfter = policy.escalation?.cordonAfter ?? 4;
  const health = effective === 0 ? "Healthy" : effective < cordonAfter ? "Degraded" : "Failing";
  return { health, uncorrectedErrors, correctedErrors, window: formatDuration(windowMs), effective };
}

function decideNodeAction(input: ContainmentInput, effective: number, dryRun: boolean): MemoryErrorEventStatusNodeAction {
  const { node, policy, budget, now } = input;
  const taintAfter = policy.escalation?.taintAfter ?? 2;
  const cordonAfter = policy.escalation?.cordonAfter ?? 4;
  if (cordonAfter <= taintAfter) throw new Error(`spec.escalation: cordonAfter (${cordonAfter}) must be greater than taintAfter (${taintAfter})`);
  const window = policy.escalation?.window ?? "24h";
  const counted = `${effective} uncorrected error(s) in ${window}`;
  const action = effective >= cordonAfter ? "Cordon" : effective >= taintAfter ? "Taint" : "None";
  if (action === "None") return { action, reason: `${counted}, below the taint threshold ${taintAfter}` };
  const threshold = action === "Cordon" ? `cordon threshold ${cordonAfter}` : `taint threshold ${taintAfter}`;
  if (action === "Cordon" ? node.cordoned : node.tainted || node.cordoned)
    return { action, state: "Done", reason: `${counted} (${threshold}); the node already has it` };
  const safety = policy.safety;
  const cooldownMs = parseDuration(safety?.cooldown ?? "10m", "spec.safety.cooldown");
  if (node.lastNodeActionAt !== undefined && now - node.lastNodeActionAt < cooldownMs)
    return {
      action,
      state: "HeldByBudget",
      reason: `${counted} (${threshold}), but the node was acted on less than ${safety?.cooldown ?? "10m"} ago (cooldown)`,
    };
  const breakerWindow = safety?.circuitBreaker?.window ?? "1h";
  const breakerMs = parseDuration(breakerWindow, "spec.safety.circuitBreaker.window");
  const maxActions = safety?.circuitBreaker?.maxNodeActions ?? 5;
  const recent = budget.nodeActionTimes.filter((t) => t > now - breakerMs && t <= now).length;
  if (recent >= maxActions)
    return {
      action,
      state: "HeldByBudget",
      reason: `${counted} (${threshold}), but the circuit breaker is open: ${recent} node actions in ${breakerWindow} (limit ${maxActions})`,
    };
  const percent = safety?.maxUnavailableNodesPercent ?? 10;
  const allowed = Math.floor((budget.totalNodes * percent) / 100);
  if (!budget.actionedNodes.has(node.name) && budget.actionedNodes.size + 1 > allowed)
    return {
      action,
      state: "HeldByBudget",
      reason: `${counted} (${threshold}), but ${budget.actionedNodes.size} of ${budget.totalNodes} nodes are already tainted or cordoned (budget ${percent}% = ${allowed})`,
    };
  return { action, state: dryRun ? "DryRun" : "Planned", reason: `${counted} reached the ${threshold}` };
}

/** The whole decision for one memory error. */
export function decideContainment(input: ContainmentInput): Decision {
  const dryRun = input.policy.mode !== "Enforce";
  const prediction = predictKernelOutcome(input.error, input.node, input.policy.kernelProfile);
  const pods = decidePods(input, prediction, dryRun);
  const quarantine = quarantineFor(prediction, input.error, input.node, input.policy, dryRun);
  const { effective, ...health } = judgeHealth(input);
  const nodeAction = decideNodeAction(input, effective, dryRun);
  const poolReplacement = decidePoolReplacement(prediction, input.error, input.node, input.policy, input.now, dryRun);
  const escalated = nodeAction.action !== "None" && nodeAction.state !== "HeldByBudget";
  const nothing = pods.length === 0 && quarantine.length === 0 && nodeAction.action === "None";
  const phase = escalated ? "Escalated" : nothing && (prediction.poolEffect === "None" || prediction.poolEffect === "NotHugepage") ? "Ignored" : "Contained";
  return { prediction, pods, quarantine, nodeAction, poolReplacement, health, phase, dryRun };
}

/** Software unpoison (a test facility) clears the poison mark only: a dissolved hugepage does not come back. */
export function predictUnpoison(): { hardwareCorruptedDelta: number; poolTotalDelta: number } {
  return { hardwareCorruptedDelta: -PAGE_SIZE_BYTES, poolTotalDelta: 0 };
}
