// `mce-operator simulate`: runs a scenario's timeline through the containment model with no cluster.
// Each error is decided against the cluster as the earlier ones left it: pools shrink, evicted pods go,
// tainted nodes count against the budget. Evictions blocked by a PodDisruptionBudget stay blocked.
// Corrected errors are counted per page and DIMM as the node's agent would, and each page's prevention is
// decided as the event reconciler does (corrected.ts).
import type { DefaultedContainmentPolicy, MemoryErrorEventStatusPod } from "../../crds/generated.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { assembleKernelErrors } from "../../kernel/assemble.ts";
import { formatPfn, HUGEPAGE_SIZES as sizes, hugepageBytes, hugepageHeadPfn, pagesPerHugepage, parseHex } from "../../kernel/pfn.ts";
import type { HugepageSize } from "../../kernel/pfn.ts";
import { decideContainment } from "../model/containment.ts";
import type { Decision } from "../model/containment.ts";
import { clusterBudget } from "../model/escalation.ts";
import type { NodeActionTaken } from "../model/escalation.ts";
import { correctedHourly, type SoftOfflineSupport } from "../model/risk.ts";
import { countedInPool } from "../model/prediction.ts";
import { staleCapacity } from "../model/quarantine.ts";
import type { ClusterBudget, DisruptionBudgetState, Mapper, MemoryError, NodeState, PodState } from "../model/types.ts";
import { parseDuration } from "../model/duration.ts";
import { policyForNode, selectorMatches } from "../model/selector.ts";
import type { Scenario, ScenarioEntry, ScenarioMapping, ScenarioPod } from "./scenario.ts";
import { AgentCounts, preventPage } from "./corrected.ts";
import type { PageEvent, SimulatedPrevention } from "./corrected.ts";

export interface SimulatedStep {
  at: string;
  node: string;
  /** A memory error; absent on a DIMM's corrected errors that name no page (see dimm). */
  error?: {
    pfn: string;
    severity: MemoryError["severity"];
    pageType?: string | undefined;
    result?: string | undefined;
    hugepage?: { size: HugepageSize; headPfn: string } | undefined;
    /** Corrected errors on the page at this time. */
    count?: number | undefined;
    dimm?: string | undefined;
  };
  /** Corrected errors on a DIMM that name no page. */
  dimm?: { name: string; label?: string | undefined; count: number } | undefined;
  policy: string;
  kernelLines: string[];
  /** The containment decision of the error's MemoryErrorEvent; a page's later corrected errors make no event. */
  decision?: Decision;
  /** The risk model's decisions on pages with corrected errors, as the event reconciler records them. */
  preventions?: SimulatedPrevention[];
  /** Why no decision was made (no or conflicting policies). */
  undecided?: string;
  capacity: { size: HugepageSize; advertisedBytes: number; realBytes: number; quarantinedBytes: number }[];
}

export interface SimulationResult {
  description?: string | undefined;
  nodes: number;
  pods: number;
  steps: SimulatedStep[];
  warnings: string[];
  summary: {
    errors: number;
    evictions: number;
    softOfflines: number;
    earlySignals: number;
    quarantinedBytes: number;
    taintedNodes: string[];
    cordonedNodes: string[];
    heldNodeActions: number;
  };
}

interface LiveNode extends NodeState {
  allocatableBytes: Partial<Record<HugepageSize, number>>;
  quarantinedBytes: Partial<Record<HugepageSize, number>>;
  pools: NodeState["pools"];
  softOffline: SoftOfflineSupport;
  /** What the node's agent counts of its corrected errors. */
  corrected: AgentCounts;
  /** The node's corrected-error events, one per page. */
  pageEvents: Map<number, PageEvent>;
}

interface LivePod extends PodState {
  mappings: ScenarioMapping[];
}

function expandNodes(scenario: Scenario): LiveNode[] {
  return scenario.nodes.flatMap((n) =>
    Array.from({ length: n.replicas ?? 1 }, (_, i): LiveNode => {
      const pools = (n.pools ?? []).map((p) => ({ size: p.size, numaNode: p.numaNode ?? 0, total: p.total, free: p.free }));
      const allocatableBytes = Object.fromEntries(
        sizes.map((s) => {
          const stated = n.allocatable?.[s];
          return [s, stated ? parseQuantity(stated) : pools.filter((p) => p.size === s).reduce((sum, p) => sum + p.total * hugepageBytes(s), 0)];
        }),
      );
      return {
        name: n.replicas ? `${n.name}-${i}` : n.name,
        labels: n.labels ?? {},
        kernelRelease: n.kernelRelease ?? "6.1.0-56-amd64",
        earlyKill: n.earlyKill ?? false,
        pools,
        allocatableBytes,
        quarantinedBytes: {},
        tainted: false,
        cordoned: false,
        history: [],
        poisonedHugepages: [],
        numaMemory: n.freeMemory === undefined ? undefined : [{ numaNode: 0, freeBytes: parseQuantity(n.freeMemory), free2MiBlocks: n.free2MiBlocks }],
        replacements: [],
        softOffline: { available: n.softOffline, enableSoftOffline: n.enableSoftOffline },
        corrected: new AgentCounts(),
        pageEvents: new Map(),
      };
    }),
  );
}

function livePod(p: ScenarioPod): LivePod {
  const namespace = p.namespace ?? "default";
  return {
    uid: `${namespace}/${p.name}`,
    namespace,
    name: p.name,
    nodeName: p.node,
    labels: p.labels ?? {},
    annotations: p.annotations ?? {},
    priority: p.priority ?? 0,
    hugepageRequestBytes: Object.fromEntries(sizes.flatMap((s) => (p.hugepages?.[s] ? [[s, parseQuantity(p.hugepages[s])]] : []))),
    mappings: p.mappings ?? [],
  };
}

/** The processes whose hugetlb mappings contain the poisoned hugepage, as the agent's index finds them. */
function findMappers(pods: readonly LivePod[], nodeName: string, size: HugepageSize, headPfn: number, signalled: ReadonlySet<number>): Mapper[] {
  const perPage = pagesPerHugepage(size);
  return pods.flatMap((pod) =>
    pod.nodeName !== nodeName
      ? []
      : pod.mappings.flatMap((m): Mapper[] => {
          const first = parseHex(m.headPfn, `pod ${pod.name} mapping headPfn`);
          const index = (headPfn - first) / perPage;
          if (m.size !== size || index < 0 || index >= (m.count ?? 1)) return [];
          const start = m.virtualStart === undefined ? undefined : parseHex(m.virtualStart, "virtualStart") + index * hugepageBytes(size);
          return [
            {
              pid: m.pid,
              command: m.command,
              podUID: pod.uid,
              podNamespace: pod.namespace,
              podName: pod.name,
              container: m.container ?? "main",
              mapping: m.hugetlbfsFile ? "Shared" : "Private",
              ...(m.hugetlbfsFile ? { hugetlbfsFile: m.hugetlbfsFile } : {}),
              ...(start === undefined ? {} : { virtualStart: formatPfn(start), virtualEnd: formatPfn(start + hugepageBytes(size)) }),
              killPolicy: m.killPolicy ?? "Default",
              signalledByKernel: signalled.has(m.pid),
            },
          ];
        }),
  );
}

/** Which hugepage size holds a pfn: the one a mapping covers, else the node's only pool size. */
function sizeOf(pods: readonly LivePod[], node: LiveNode, pfn: number, stated: HugepageSize | undefined): HugepageSize | undefined {
  if (stated) return stated;
  for (const size of sizes) if (findMappers(pods, node.name, size, hugepageHeadPfn(pfn, size), new Set()).length > 0) return size;
  const poolSizes = [...new Set(node.pools.map((p) => p.size))];
  return poolSizes.length === 1 ? poolSizes[0] : undefined;
}

interface EntryError {
  pfn: number;
  severity: MemoryError["severity"];
  pageType?: string | undefined;
  result?: string | undefined;
  size?: HugepageSize | undefined;
  count: number;
  dimm?: string | undefined;
  signalled: Set<number>;
  lines: string[];
}

function entryErrors(entry: ScenarioEntry, where: string, warnings: string[]): EntryError[] {
  if (entry.error) {
    const e = entry.error;
    return [
      {
        pfn: parseHex(e.pfn, `${where}.error.pfn`),
        severity: e.severity,
        pageType: e.pageType,
        result: e.result,
        size: e.size,
        count: e.count ?? 1,
        dimm: e.dimm,
        signalled: new Set(),
        lines: [],
      },
    ];
  }
  // Scenario authors paste logs from mail and issues: quote markers and elisions are read as such.
  const assembled = assembleKernelErrors(entry.kernel ?? "", { pasted: true });
  for (const u of assembled.unrecognized) warnings.push(`${where}.kernel line ${u.line}: not understood, no event made (${u.reason}): ${u.text}`);
  return assembled.errors.map((e) => ({
    pfn: e.pfn,
    severity: e.severity,
    pageType: e.pageType,
    result: e.result,
    size: undefined,
    count: 1,
    signalled: new Set(e.signalled.map((s) => s.pid)),
    lines: e.lines,
  }));
}

function applyOutcome(
  node: LiveNode,
  pods: LivePod[],
  decision: Decision,
  size: HugepageSize | undefined,
  headPfn: number,
  blocked: ReadonlySet<string>,
  now: number,
): LivePod[] {
  const { prediction, quarantine, nodeAction } = decision;
  const change = prediction.pool;
  if (size && change) {
    const pool = node.pools.find((p) => p.size === size);
    // A free page (dissolved or soft offlined) leaves total and free; a mapped one only the total, now.
    const wasFree = prediction.poolEffect === "Dissolved" || (prediction.poolEffect === "Migrated" && prediction.mappers.length === 0);
    if (pool)
      node.pools = node.pools.map((p) =>
        p === pool ? { ...p, total: p.total + change.totalDelta, free: Math.max(0, p.free + (wasFree ? change.freeDelta : 0)) } : p,
      );
    if (prediction.poolEffect !== "None") node.poisonedHugepages = [...node.poisonedHugepages, { size, headPfn, inPool: countedInPool(prediction.poolEffect) }];
  }
  if (!decision.dryRun) {
    for (const q of quarantine) node.quarantinedBytes[q.size] = (node.quarantinedBytes[q.size] ?? 0) + q.bytes;
    replace(node, decision, now);
    if (nodeAction.state === "Planned") {
      node.lastNodeActionAt = now;
      if (nodeAction.action === "Cordon") node.cordoned = true;
      else node.tainted = true;
    }
  }
  return carryOutEvictions(pods, decision.pods, blocked);
}

/**
 * A planned replacement, as the kernel is expected to answer it: given where the model calls it likely
 * (the pool grows back and the quarantine is released), refused where it is uncertain (the capacity
 * stays quarantined), so the timeline never promises capacity the kernel may not give.
 */
function replace(node: LiveNode, decision: Decision, now: number): void {
  const r = decision.poolReplacement;
  if (r?.action !== "Replace" || r.state !== "Planned" || !r.size) return;
  const size = r.size;
  const given = r.expected === "Likely";
  r.state = given ? "Given" : "Refused";
  r.message = `assumed ${given ? "given" : "refused"} by the kernel`;
  node.replacements = [...(node.replacements ?? []), { at: now, size, state: r.state }];
  if (!given) return;
  const bytes = hugepageBytes(size);
  node.pools = node.pools.map((p) => (p.size === size && p.numaNode === r.numaNode ? { ...p, total: p.total + 1, free: p.free + 1 } : p));
  node.quarantinedBytes[size] = Math.max(0, (node.quarantinedBytes[size] ?? 0) - bytes);
  node.numaMemory = node.numaMemory?.map((m) =>
    m.numaNode === r.numaNode
      ? {
          ...m,
          freeBytes: m.freeBytes - bytes,
          free2MiBlocks: m.free2MiBlocks === undefined ? undefined : Math.max(0, m.free2MiBlocks - bytes / hugepageBytes("2Mi")),
        }
      : m,
  );
}

export function simulate(scenario: Scenario): SimulationResult {
  const nodes = expandNodes(scenario);
  let pods = scenario.pods.map(livePod);
  const warnings: string[] = [];
  const steps: SimulatedStep[] = [];
  const taken: NodeActionTaken[] = [];
  const start = Date.parse(scenario.start ?? "2026-01-01T00:00:00Z");
  const byName = new Map(nodes.map((n) => [n.name, n]));
  for (const p of pods) if (!byName.has(p.nodeName)) throw new Error(`pods: ${p.namespace}/${p.name} runs on unknown node ${p.nodeName}`);
  const pdbs = pdbsOf(scenario);

  /** Decides the pages' preventions in turn, each seeing the pods and pools the ones before it left. */
  const prevent = (node: LiveNode, events: readonly PageEvent[], policy: DefaultedContainmentPolicy, now: number, at: string): SimulatedPrevention[] =>
    events.map((event) => {
      const prevention = preventPage({
        event,
        counts: node.corrected,
        node,
        support: node.softOffline,
        pods: pods.filter((p) => p.nodeName === node.name),
        pdbs,
        policy: policy.spec,
        budget: budgetOf(nodes, taken),
        now,
        at,
      });
      pods = carryOutEvictions(pods, prevention.pods, blockedByDisruptionBudget(pods, scenario));
      // The agent reports its soft offline as a SoftOffline error: the capacity the pool lost is
      // quarantined as any lost hugepage's is, while the kubelet still advertises it.
      const lost = prevention.state === "Done" ? prevention.pool : undefined;
      if (lost !== undefined && lost.totalDelta < 0 && policy.spec.capacityQuarantine.enabled) {
        const inPool = node.poisonedHugepages.filter((p) => p.size === lost.size && p.inPool).length;
        const stale = staleCapacity(lost.size, node, 0, inPool);
        node.quarantinedBytes[lost.size] = Math.max(node.quarantinedBytes[lost.size] ?? 0, stale);
      }
      return prevention;
    });

  scenario.timeline.forEach((entry, i) => {
    const where = `timeline[${i}]`;
    const now = start + parseDuration(entry.at, `${where}.at`);
    const targets = entry.node ? [byName.get(entry.node)] : nodes.filter((n) => selectorMatches(entry.nodes, n.labels));
    if (targets.some((t) => t === undefined)) throw new Error(`${where}.node: unknown node ${entry.node ?? ""}`);
    for (const node of targets as LiveNode[]) {
      const match = policyForNode(scenario.policies, node.labels);
      const policy = match.kind === "matched" ? match.policy : undefined;
      const undecided =
        match.kind === "matched"
          ? undefined
          : match.kind === "none"
            ? "no ContainmentPolicy selects this node"
            : `policies ${match.policies.join(", ")} select this node equally specifically`;
      if (entry.dimm) {
        const { name, label, count } = entry.dimm;
        const dimm = node.corrected.countDimm(name, label, now, count);
        const step: SimulatedStep = {
          at: entry.at,
          node: node.name,
          dimm: { name, label, count },
          policy: policy?.metadata.name ?? "",
          kernelLines: [],
          capacity: [],
        };
        // The agent's next report carries the DIMM's count: every page on it still Watching is decided again.
        if (policy) step.preventions = prevent(node, watchedOnDimm(node, dimm), policy, now, entry.at);
        else step.undecided = undecided;
        step.capacity = capacityOf(node);
        steps.push(step);
        continue;
      }
      for (const e of entryErrors(entry, where, warnings)) {
        const corrected = e.severity === "Corrected";
        const size = sizeOf(pods, node, e.pfn, e.size);
        const headPfn = size ? hugepageHeadPfn(e.pfn, size) : e.pfn;
        const notHuge = e.pageType !== undefined && !/huge/.test(e.pageType);
        const hugepage = size && !notHuge ? { size, headPfn, numaNode: 0 } : undefined;
        const mappers = hugepage ? findMappers(pods, node.name, hugepage.size, headPfn, e.signalled) : [];
        // A page's first corrected error is its event; the agent only counts the later ones.
        const isEvent = !corrected || !node.pageEvents.has(e.pfn);
        if (corrected) {
          node.corrected.countPage(e.pfn, now, e.count, { hugepage, dimm: e.dimm });
          if (isEvent) node.pageEvents.set(e.pfn, { pfn: e.pfn, hugepage, mappers });
        }
        // The kernel's corrected-errors collector retired the page ("RAS: Soft-offlining pfn").
        const retired = e.severity === "SoftOffline" && e.result !== "Failed";
        if (retired) node.corrected.retire(e.pfn, now);
        const error: MemoryError = {
          nodeName: node.name,
          pfn: e.pfn,
          severity: e.severity,
          pageType: e.pageType,
          result: e.result,
          hugepage,
          mappers,
          observedAt: now,
        };
        const step: SimulatedStep = {
          at: entry.at,
          node: node.name,
          error: {
            pfn: formatPfn(e.pfn),
            severity: e.severity,
            pageType: e.pageType,
            result: e.result,
            hugepage: hugepage && { size: hugepage.size, headPfn: formatPfn(headPfn) },
            ...(corrected && { count: e.count, dimm: e.dimm }),
          },
          policy: policy?.metadata.name ?? "",
          kernelLines: e.lines,
          capacity: [],
        };
        if (!policy) {
          step.undecided = undecided;
        } else {
          if (isEvent) {
            const decision = decideNode(node, error, pods, pdbs, policy, nodes, taken, now);
            if (decision.nodeAction.state === "Planned") taken.push({ eventName: `${where}/${node.name}/${formatPfn(e.pfn)}`, node: node.name, at: now });
            pods = applyOutcome(node, pods, decision, size, headPfn, blockedByDisruptionBudget(pods, scenario), now);
            step.decision = decision;
          }
          const own = node.pageEvents.get(e.pfn);
          if ((corrected || retired) && own) step.preventions = prevent(node, [own], policy, now, entry.at);
          // Errors on a DIMM count for every page on it: another watched page may be past the DIMM's threshold now.
          const dimm = corrected && e.dimm !== undefined ? node.corrected.dimm(e.dimm)?.name : undefined;
          if (dimm !== undefined) {
            const others = prevent(
              node,
              watchedOnDimm(node, dimm).filter((w) => w.pfn !== e.pfn),
              policy,
              now,
              entry.at,
            ).filter((p) => p.state !== "Watching");
            if (others.length > 0) step.preventions = [...(step.preventions ?? []), ...others];
          }
        }
        if (isEvent) node.history = [...node.history, { at: now, severity: e.severity }];
        step.capacity = capacityOf(node);
        steps.push(step);
      }
    }
  });
  return { description: scenario.description, nodes: nodes.length, pods: scenario.pods.length, steps, warnings, summary: summarize(steps, nodes) };
}

/** The node's corrected-error events still Watching whose page is on the DIMM. */
function watchedOnDimm(node: LiveNode, dimmName: string): PageEvent[] {
  const dimm = node.corrected.dimm(dimmName);
  if (!dimm) return [];
  return [...node.pageEvents.values()]
    .filter((event) => {
      const on = node.corrected.page(event.pfn)?.dimm;
      return event.decided === undefined && on !== undefined && (on === dimm.name || on === dimm.label);
    })
    .sort((a, b) => a.pfn - b.pfn);
}

function pdbsOf(scenario: Scenario): DisruptionBudgetState[] {
  return scenario.pdbs.map((b) => ({ namespace: b.namespace ?? "default", name: b.name, selector: b.selector, disruptionsAllowed: b.disruptionsAllowed }));
}

/** Pods a PodDisruptionBudget allows no disruption now: their evictions stay blocked. */
function blockedByDisruptionBudget(pods: readonly LivePod[], scenario: Scenario): Set<string> {
  return new Set(
    pods
      .filter((p) =>
        scenario.pdbs.some((b) => (b.namespace ?? "default") === p.namespace && b.disruptionsAllowed <= 0 && selectorMatches(b.selector, p.labels)),
      )
      .map((p) => p.uid),
  );
}

/** Planned evictions go through, except those a PodDisruptionBudget blocks (marked Blocked): their pods leave. */
function carryOutEvictions(pods: LivePod[], entries: readonly MemoryErrorEventStatusPod[], blocked: ReadonlySet<string>): LivePod[] {
  for (const p of entries) if (p.action === "Evict" && p.state === "Planned" && blocked.has(p.uid)) p.state = "Blocked";
  const evicted = new Set(entries.filter((p) => p.action === "Evict" && p.state === "Planned").map((p) => p.uid));
  return evicted.size === 0 ? pods : pods.filter((p) => !evicted.has(p.uid));
}

function budgetOf(nodes: readonly LiveNode[], taken: readonly NodeActionTaken[]): ClusterBudget {
  return clusterBudget({
    totalNodes: nodes.length,
    actionedNow: nodes.filter((n) => n.tainted || n.cordoned).map((n) => n.name),
    taken,
    inFlight: [],
    evictionsInFlight: 0,
  });
}

function decideNode(
  node: LiveNode,
  error: MemoryError,
  pods: LivePod[],
  pdbs: readonly DisruptionBudgetState[],
  policy: DefaultedContainmentPolicy,
  nodes: LiveNode[],
  taken: readonly NodeActionTaken[],
  now: number,
): Decision {
  return decideContainment({
    error,
    // Escalation counts the corrected errors the agent counts, as the operator's cache gives them.
    node: { ...node, correctedHourly: correctedHourly(node.corrected.dimms(), node.corrected.pages()) },
    pods: pods.filter((p) => p.nodeName === node.name),
    pdbs,
    policy: policy.spec,
    budget: budgetOf(nodes, taken),
    now,
  });
}

function capacityOf(node: LiveNode): SimulatedStep["capacity"] {
  return sizes.flatMap((size) => {
    const advertisedBytes = node.allocatableBytes[size] ?? 0;
    if (advertisedBytes === 0) return [];
    const total = node.pools.filter((p) => p.size === size).reduce((sum, p) => sum + p.total, 0);
    const held = node.poisonedHugepages.filter((p) => p.size === size && p.inPool).length;
    return [{ size, advertisedBytes, realBytes: (total - held) * hugepageBytes(size), quarantinedBytes: node.quarantinedBytes[size] ?? 0 }];
  });
}

function summarize(steps: SimulatedStep[], nodes: LiveNode[]): SimulationResult["summary"] {
  const decisions = steps.flatMap((s) => (s.decision ? [s.decision] : []));
  // A page decided by an earlier entry is reported again, not decided again.
  const preventions = steps.flatMap((s) => (s.preventions ?? []).filter((p) => p.decidedAt === undefined));
  const pods = [...decisions.flatMap((d) => d.pods), ...preventions.flatMap((p) => p.pods)];
  return {
    errors: steps.reduce((sum, s) => sum + (s.error?.count ?? s.dimm?.count ?? 1), 0),
    evictions: pods.filter((p) => p.action === "Evict").length,
    softOfflines: preventions.filter((p) => p.action === "SoftOffline" && p.state === "Done").length,
    earlySignals: pods.filter((p) => p.action === "EarlySignal").length,
    quarantinedBytes: nodes.reduce((sum, n) => sum + Object.values(n.quarantinedBytes).reduce((a, b) => a + b, 0), 0),
    taintedNodes: nodes.filter((n) => n.tainted && !n.cordoned).map((n) => n.name),
    cordonedNodes: nodes.filter((n) => n.cordoned).map((n) => n.name),
    heldNodeActions: decisions.filter((d) => d.nodeAction.state === "HeldByBudget").length,
  };
}
