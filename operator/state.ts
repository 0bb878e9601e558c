// The operator's view of the cluster: slim copies of what the model needs, kept by the reflectors, and
// the functions that turn them into the model's input. At 30,000 pods a full V1Pod each would cost
// hundreds of MiB; a PodInfo is a few hundred bytes.
import type { DefaultedContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "../crds/generated.ts";
import { parseQuantity } from "../crds/quantity.ts";
import { parseResource } from "../crds/validate.ts";
import { HUGEPAGE_SIZES, parseHex } from "../kernel/pfn.ts";
import type { HugepageSize } from "../kernel/pfn.ts";
import { clusterBudget, nodeHealth } from "./model/escalation.ts";
import type { NodeActionTaken, NodeHealth } from "./model/escalation.ts";
import { countedInPool } from "./model/prediction.ts";
import { staleCapacity } from "./model/quarantine.ts";
import type { HeldQuarantine } from "./model/quarantine.ts";
import { correctedHourly } from "./model/risk.ts";
import type { CorrectedPage, DimmCounts, HourlyCount } from "./model/risk.ts";
import { policyForNode } from "./model/selector.ts";
import type { PolicyMatch } from "./model/selector.ts";
import type { ClusterBudget, DisruptionBudgetState, ErrorRecord, MemoryError, NodeState, PodState, PoisonedHugepage, Policy } from "./model/types.ts";

const parsedCorrected = new WeakMap<NodeMemoryHealth, { pages: CorrectedPage[]; dimms: DimmCounts[]; hourly: HourlyCount[] }>();

const hourlyCounts = (hourly: readonly { hour: string; count: number }[] | undefined): HourlyCount[] =>
  (hourly ?? []).flatMap((h) => {
    const hour = Date.parse(h.hour);
    return Number.isNaN(hour) ? [] : [{ hour, count: h.count }];
  });

/** Label on the placeholder pods that hold quarantined capacity, naming the event. */
export const quarantineEventLabel = "mce-operator.io/quarantine-for";
export const quarantineSizeLabel = "mce-operator.io/quarantine-size";
/** Annotation the operator sets on a node it cordoned, so it never undoes a person's cordon. */
export const cordonedByAnnotation = "mce-operator.io/cordoned";
/** The CRD's defaults, for a node no policy selects (its health is still kept). */
export const defaultPolicy: Policy = parseResource("ContainmentPolicy", { metadata: { name: "defaults" }, spec: {} }, "the CRD's defaults").spec;
export const defaultTaintKey = defaultPolicy.escalation.taintKey;

export interface PodInfo extends PodState {
  deleting: boolean;
  /** For a quarantine placeholder: the event it holds capacity for. */
  quarantineFor?: string | undefined;
}

export interface NodeInfo {
  name: string;
  resourceVersion?: string | undefined;
  labels: Record<string, string>;
  unschedulable: boolean;
  /** Unschedulable, and the operator's annotation says it cordoned it: a person's uncordon ends it. */
  cordonedByUs: boolean;
  taintKeys: string[];
  allocatableBytes: Partial<Record<HugepageSize, number>>;
  degradedCondition?: { status: string; reason: string; message: string; lastTransitionTime?: string | undefined } | undefined;
}

type Raw = Record<string, unknown>;
const obj = (v: unknown): Raw => (typeof v === "object" && v !== null ? (v as Raw) : {});
const str = (v: unknown): string => (typeof v === "string" ? v : "");
const strings = (v: unknown): Record<string, string> =>
  Object.fromEntries(Object.entries(obj(v)).filter((e): e is [string, string] => typeof e[1] === "string"));

export function podInfo(raw: Raw): PodInfo {
  const metadata = obj(raw.metadata);
  const spec = obj(raw.spec);
  const requests: Partial<Record<HugepageSize, number>> = {};
  for (const c of (spec.containers ?? []) as Raw[])
    for (const size of HUGEPAGE_SIZES) {
      const q = strings(obj(obj(c.resources).requests))[`hugepages-${size}`];
      if (q) requests[size] = (requests[size] ?? 0) + parseQuantity(q);
    }
  const labels = strings(metadata.labels);
  const annotations = strings(metadata.annotations);
  // Only our own annotations matter; dropping the rest keeps the cache small.
  const ours = Object.fromEntries(Object.entries(annotations).filter(([k]) => k.startsWith("mce-operator.io/")));
  return {
    uid: str(metadata.uid),
    namespace: str(metadata.namespace),
    name: str(metadata.name),
    nodeName: str(spec.nodeName),
    labels,
    annotations: ours,
    priority: typeof spec.priority === "number" ? spec.priority : 0,
    hugepageRequestBytes: requests,
    deleting: metadata.deletionTimestamp !== undefined || ["Succeeded", "Failed"].includes(String(obj(raw.status).phase)),
    quarantineFor: labels[quarantineEventLabel],
  };
}

export function nodeInfo(raw: Raw): NodeInfo {
  const metadata = obj(raw.metadata);
  const spec = obj(raw.spec);
  const status = obj(raw.status);
  const allocatable = strings(status.allocatable);
  const condition = ((status.conditions ?? []) as Raw[]).find((c) => c.type === "HugepageMemoryDegraded");
  return {
    name: str(metadata.name),
    resourceVersion: str(metadata.resourceVersion) || undefined,
    labels: strings(metadata.labels),
    unschedulable: spec.unschedulable === true,
    cordonedByUs: spec.unschedulable === true && strings(metadata.annotations)[cordonedByAnnotation] === "true",
    taintKeys: ((spec.taints ?? []) as Raw[]).map((t) => String(t.key)),
    allocatableBytes: Object.fromEntries(
      HUGEPAGE_SIZES.flatMap((s) => (allocatable[`hugepages-${s}`] ? [[s, parseQuantity(allocatable[`hugepages-${s}`] ?? "0")]] : [])),
    ),
    degradedCondition: condition && {
      status: String(condition.status),
      reason: String(condition.reason),
      message: String(condition.message),
      lastTransitionTime: typeof condition.lastTransitionTime === "string" ? condition.lastTransitionTime : undefined,
    },
  };
}

export function pdbInfo(raw: Raw): DisruptionBudgetState {
  const metadata = obj(raw.metadata);
  return {
    namespace: str(metadata.namespace),
    name: str(metadata.name),
    selector: obj(obj(raw.spec).selector),
    disruptionsAllowed: Number(obj(raw.status).disruptionsAllowed ?? 0),
  };
}

/** etcd's resourceVersions grow with every write; anything not a plain number is taken as new. */
function olderVersion(a: string | undefined, b: string | undefined): boolean {
  return a !== undefined && b !== undefined && /^\d+$/.test(a) && /^\d+$/.test(b) && BigInt(a) < BigInt(b);
}

/** The node action an event's status records as applied or being applied, if any. */
function nodeActionTaken(event: MemoryErrorEvent): NodeActionTaken | undefined {
  const action = event.status?.nodeAction;
  if (!action?.appliedAt || (action.state !== "InProgress" && action.state !== "Done")) return undefined;
  return { eventName: event.metadata.name, node: event.spec.nodeName, at: Date.parse(action.appliedAt) };
}

const errorRecords = (events: readonly MemoryErrorEvent[]): ErrorRecord[] =>
  events.map((e) => ({ at: Date.parse(e.spec.observedAt), severity: e.spec.severity }));

export class ClusterState {
  readonly events = new Map<string, MemoryErrorEvent>();
  readonly health = new Map<string, NodeMemoryHealth>();
  /** When the operator received each node's latest report, on its own clock (see staleCapacity). */
  private readonly healthSeenAt = new Map<string, number>();
  readonly policies = new Map<string, DefaultedContainmentPolicy>();
  readonly nodes = new Map<string, NodeInfo>();
  /**
   * Taints and cordons a pass has let through the budget and is recording, by event name: they count
   * from the moment of the check until the event's InProgress status reaches the cache, so two passes can
   * never both take the last slot.
   */
  readonly nodeActionsInFlight = new Map<string, NodeActionTaken>();
  /** Pods a pass is evicting, by uid, naming the event: claimed from the check until the InProgress status lands. */
  readonly evictionsInFlight = new Map<string, string>();
  readonly pdbs = new Map<string, DisruptionBudgetState>();
  readonly pods = new Map<string, PodInfo>();
  private readonly podsByNode = new Map<string, Map<string, PodInfo>>();
  private readonly eventsByNode = new Map<string, Set<string>>();

  upsertPod(key: string, pod: PodInfo): void {
    this.deletePod(key);
    this.pods.set(key, pod);
    if (!pod.nodeName) return;
    const onNode = this.podsByNode.get(pod.nodeName) ?? new Map<string, PodInfo>();
    this.podsByNode.set(pod.nodeName, onNode);
    onNode.set(pod.uid, pod);
  }

  /** Caches a node unless the cache already holds a newer version (our own patch's answer can be ahead of the watch). */
  upsertNode(node: NodeInfo): void {
    const cached = this.nodes.get(node.name);
    if (cached && olderVersion(node.resourceVersion, cached.resourceVersion)) return;
    this.nodes.set(node.name, node);
  }

  deletePod(key: string): void {
    const old = this.pods.get(key);
    if (!old) return;
    this.pods.delete(key);
    this.podsByNode.get(old.nodeName)?.delete(old.uid);
  }

  /** Caches an event unless the cache already holds a newer version (a watch event can trail our own write). */
  upsertEvent(event: MemoryErrorEvent): void {
    const cached = this.events.get(event.metadata.name);
    if (cached && olderVersion(event.metadata.resourceVersion, cached.metadata.resourceVersion)) return;
    this.events.set(event.metadata.name, event);
    const names = this.eventsByNode.get(event.spec.nodeName) ?? new Set<string>();
    this.eventsByNode.set(event.spec.nodeName, names);
    names.add(event.metadata.name);
  }

  deleteEvent(name: string): void {
    const old = this.events.get(name);
    this.events.delete(name);
    if (old) this.eventsByNode.get(old.spec.nodeName)?.delete(name);
  }

  /**
   * Caches a node's health. A new report (the agent writes observedAt each time) is stamped with the
   * operator's clock, so it can be ordered against what the operator itself did; one seen at start-up,
   * when nothing tells when it arrived, keeps the agent's own observedAt.
   */
  upsertHealth(health: NodeMemoryHealth, now: number): void {
    const name = health.metadata.name;
    const old = this.health.get(name);
    this.health.set(name, health);
    if (old?.spec.observedAt !== health.spec.observedAt) this.healthSeenAt.set(name, old ? now : Date.parse(health.spec.observedAt));
  }

  deleteHealth(name: string): void {
    this.health.delete(name);
    this.healthSeenAt.delete(name);
  }

  podsOn(nodeName: string): PodInfo[] {
    return [...(this.podsByNode.get(nodeName)?.values() ?? [])];
  }

  podByUid(nodeName: string, uid: string): PodInfo | undefined {
    return this.podsByNode.get(nodeName)?.get(uid);
  }

  eventsOn(nodeName: string): MemoryErrorEvent[] {
    return [...(this.eventsByNode.get(nodeName) ?? [])].flatMap((n) => this.events.get(n) ?? []);
  }

  /** The quarantines of one size a node's events hold now. */
  heldQuarantines(nodeName: string, size: HugepageSize): HeldQuarantine[] {
    return this.eventsOn(nodeName).flatMap((e) =>
      (e.status?.quarantine ?? [])
        .filter((q) => q.size === size && q.state === "Quarantined")
        .map((q) => ({
          eventName: e.metadata.name,
          bytes: q.bytes,
          replaced: e.status?.poolReplacement?.state === "Given" || e.status?.poolReplacementResult?.state === "Given",
          decidedAt: e.status?.decidedAt ?? e.spec.observedAt,
        })),
    );
  }

  /** The node as the model sees it, from the Node, its NodeMemoryHealth and its other events. */
  nodeState(nodeName: string, except?: string): NodeState {
    const node = this.nodes.get(nodeName);
    const health = this.health.get(nodeName);
    const others = this.eventsOn(nodeName).filter((e) => e.metadata.name !== except);
    const boot = health?.spec.bootID;
    const poisoned: PoisonedHugepage[] = others.flatMap((e) => {
      const page = e.spec.hugepage;
      const effect = e.status?.prediction?.poolEffect;
      if (!page || !effect || effect === "None" || (boot && e.spec.bootID !== boot)) return [];
      return [{ size: page.size, headPfn: parseHex(page.headPfn, `${e.metadata.name} spec.hugepage.headPfn`), inPool: countedInPool(effect) }];
    });
    return {
      name: nodeName,
      labels: node?.labels ?? {},
      kernelRelease: health?.spec.kernelVersion,
      earlyKill: health?.spec.capabilities?.earlyKill ?? false,
      pools: (health?.spec.hugepagePools ?? []).map((p) => ({ size: p.size, numaNode: p.numaNode, total: p.total, free: p.free })),
      allocatableBytes: node?.allocatableBytes ?? {},
      tainted: node ? this.taintedByUs(node) : false,
      cordoned: node?.cordonedByUs ?? false,
      lastNodeActionAt: this.lastNodeActionAt(nodeName, except),
      history: errorRecords(others),
      correctedHourly: ClusterState.correctedOf(health).hourly,
      poisonedHugepages: poisoned,
      numaMemory: health?.spec.numaMemory,
      poolResize: health?.spec.capabilities?.poolResize,
      replacements: others.flatMap((e) => {
        const r = e.status?.poolReplacement;
        return r?.action === "Replace" && r.size && r.state
          ? [{ at: Date.parse(r.requestedAt ?? e.status?.decidedAt ?? e.spec.observedAt), size: r.size, state: r.state }]
          : [];
      }),
    };
  }

  /** The node carries the taint key of one of the policies. */
  taintedByUs(node: NodeInfo): boolean {
    const keys = new Set([defaultTaintKey, ...[...this.policies.values()].map((p) => p.spec.escalation.taintKey)]);
    return node.taintKeys.some((k) => keys.has(k));
  }

  /** When the operator last tainted or cordoned the node, for the cooldown; `except` an event that is asking. */
  lastNodeActionAt(nodeName: string, except?: string): number | undefined {
    const times = this.eventsOn(nodeName).flatMap((e) => (e.metadata.name === except ? [] : (nodeActionTaken(e)?.at ?? [])));
    for (const t of this.nodeActionsInFlight.values()) if (t.node === nodeName && t.eventName !== except) times.push(t.at);
    return times.length > 0 ? Math.max(...times) : undefined;
  }

  /** The budget as the model counts it: see escalation.ts's clusterBudget. */
  budget(): ClusterBudget {
    const actionedNow = [...this.nodes.values()].filter((n) => n.cordonedByUs || this.taintedByUs(n)).map((n) => n.name);
    const taken: NodeActionTaken[] = [];
    const inFlight = [...this.nodeActionsInFlight.values()];
    let evictionsInFlight = 0;
    for (const e of this.events.values()) {
      const t = nodeActionTaken(e);
      if (t) (e.status?.nodeAction?.state === "InProgress" ? inFlight : taken).push(t);
      for (const p of e.status?.pods ?? []) if (p.action === "Evict" && (p.state === "InProgress" || p.state === "Blocked")) evictionsInFlight += 1;
    }
    return clusterBudget({ totalNodes: this.nodes.size, actionedNow, taken, inFlight, evictionsInFlight });
  }

  /** Another event's eviction of a pod, in flight or recorded, that this event's must follow. */
  evictionOf(nodeName: string, uid: string, except: string): { eventName: string; state: string } | undefined {
    const claimed = this.evictionsInFlight.get(uid);
    if (claimed !== undefined && claimed !== except) return { eventName: claimed, state: "InProgress" };
    for (const e of this.eventsOn(nodeName)) {
      if (e.metadata.name === except) continue;
      const entry = e.status?.pods?.find(
        (p) => p.uid === uid && (p.action === "Evict" || p.action === "Delete") && p.state !== "Planned" && p.state !== "DryRun",
      );
      if (entry) return { eventName: e.metadata.name, state: entry.state };
    }
    return undefined;
  }

  /** The policy that governs a node. */
  policyFor(nodeName: string): PolicyMatch {
    return policyForNode([...this.policies.values()], this.nodes.get(nodeName)?.labels ?? {});
  }

  /** The node's health now, counted by the policy that governs it (the CRD's defaults when none does). */
  nodeHealth(nodeName: string, now: number): NodeHealth {
    const match = this.policyFor(nodeName);
    const policy = match.kind === "matched" ? match.policy.spec : defaultPolicy;
    const health = this.health.get(nodeName);
    const corrected = ClusterState.correctedOf(health).hourly;
    return nodeHealth(errorRecords(this.eventsOn(nodeName)), policy.escalation, now, corrected);
  }

  /** The model's view of an event. */
  /**
   * A report's corrected errors in the risk model's terms, parsed once per report object: every pass over
   * the node's events reads them (its state, its health, each watched page), a report changes far less often.
   */
  static correctedOf(health: NodeMemoryHealth | undefined): { pages: CorrectedPage[]; dimms: DimmCounts[]; hourly: HourlyCount[] } {
    if (health === undefined) return { pages: [], dimms: [], hourly: [] };
    let parsed = parsedCorrected.get(health);
    if (parsed === undefined) {
      const pages = ClusterState.correctedPages(health);
      const dimms = ClusterState.dimmCounts(health);
      parsed = { pages, dimms, hourly: correctedHourly(dimms, pages) };
      parsedCorrected.set(health, parsed);
    }
    return parsed;
  }

  /** The pages with corrected errors the node's agent counts, in the risk model's terms. */
  static correctedPages(health: NodeMemoryHealth | undefined): CorrectedPage[] {
    const where = `NodeMemoryHealth ${health?.metadata.name ?? "?"} spec.correctedErrorPages`;
    return (health?.spec.correctedErrorPages ?? []).map((page) => ({
      pfn: parseHex(page.pfn, `${where} pfn`),
      hugepage: page.hugepage && {
        size: page.hugepage.size,
        headPfn: parseHex(page.hugepage.headPfn, `${where} hugepage.headPfn`),
        numaNode: page.hugepage.numaNode,
      },
      dimm: page.dimm,
      hourly: hourlyCounts(page.hourly),
      softOfflined: page.softOfflined === true,
    }));
  }

  /** The node's DIMMs with their corrected errors per hour, in the risk model's terms. */
  static dimmCounts(health: NodeMemoryHealth | undefined): DimmCounts[] {
    return (health?.spec.dimms ?? []).map((dimm) => ({ name: dimm.name, label: dimm.label, hourly: hourlyCounts(dimm.hourly) }));
  }

  /**
   * An event with what the cluster knows of it beyond its own object: for the agent's own soft offline,
   * how the pool changed, from the result the agent recorded on the page's corrected-error event (written
   * before it reported the soft offline, so on the same watch it arrives first).
   */
  memoryErrorOf(event: MemoryErrorEvent): MemoryError {
    const error = ClusterState.memoryError(event);
    const { spec } = event;
    if (spec.source !== "Agent" || spec.severity !== "SoftOffline") return error;
    const result = this.eventsOn(spec.nodeName).find(
      (e) => e.spec.severity === "Corrected" && e.spec.pfn === spec.pfn && e.spec.bootID === spec.bootID && e.status?.softOfflineResult?.state === "Done",
    )?.status?.softOfflineResult;
    if (result?.poolBefore === undefined || result.poolAfter === undefined) return error;
    return { ...error, poolTotalDelta: result.poolAfter - result.poolBefore };
  }

  static memoryError(event: MemoryErrorEvent): MemoryError {
    const { spec } = event;
    const where = `MemoryErrorEvent ${event.metadata.name}`;
    return {
      nodeName: spec.nodeName,
      pfn: parseHex(spec.pfn, `${where} spec.pfn`),
      severity: spec.severity,
      pageType: spec.pageType,
      result: spec.result,
      loggedAtBoot: spec.loggedAtBoot,
      hugepage: spec.hugepage && {
        size: spec.hugepage.size,
        headPfn: parseHex(spec.hugepage.headPfn, `${where} spec.hugepage.headPfn`),
        numaNode: spec.hugepage.numaNode,
      },
      mappers: spec.mappers ?? [],
      signalledLater: event.status?.kernelSignals?.map((s) => s.pid),
      observedAt: Date.parse(spec.observedAt),
    };
  }

  /**
   * Hugepage bytes the kubelet advertises on a node beyond what its pools can give, per size; empty
   * while the agent's last report predates the node's last change (an error, a replacement hugepage, or
   * a mapper leaving), because until then the reported pools may still count pages the kernel has taken
   * away or not count one it gave. Each change is compared on the clock it was stamped with: errors and
   * replacements on the agent's (its report's observedAt), evictions on the operator's (when the report
   * arrived), since a node's clock and the operator's may differ by more than the gap between them.
   */
  staleCapacity(nodeName: string): Partial<Record<HugepageSize, number>> {
    const node = this.nodes.get(nodeName);
    const health = this.health.get(nodeName);
    if (!node || !health) return {};
    const events = this.eventsOn(nodeName).filter((e) => e.spec.bootID === health.spec.bootID);
    const at = (text: string | undefined): number => (text ? Date.parse(text) : 0);
    const onNode = Math.max(0, ...events.flatMap((e) => [at(e.spec.observedAt), at(e.status?.poolReplacementResult?.at)]));
    const byOperator = Math.max(0, ...events.flatMap((e) => (e.status?.pods ?? []).map((p) => at(p.lastAttemptAt))));
    const reported = at(health.spec.observedAt);
    if (reported <= onNode || (this.healthSeenAt.get(nodeName) ?? reported) <= byOperator) return {};
    const state = this.nodeState(nodeName);
    return Object.fromEntries(
      HUGEPAGE_SIZES.map((size) => [size, staleCapacity(size, state, 0, state.poisonedHugepages.filter((p) => p.size === size && p.inPool).length)]),
    );
  }
}
