// Benchmark of the containment model at the design's scale: 1,000 nodes and 30,000 pods, 5% of them
// using hugepages. Decides a stream of memory errors on one core (one thread) and prints decisions per
// second and memory; saves the figures to bench/results/model.json.
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { hugepageBytes } from "../kernel/pfn.ts";
import { decideContainment } from "../operator/model/containment.ts";
import type { ClusterBudget, Mapper, MemoryError, NodeState, PodState } from "../operator/model/types.ts";
import { T0, mapper, node, pod, policySpec } from "../operator/model/fixtures.ts";

const NODES = 1000;
const PODS = 30_000;
const HUGEPAGE_SHARE = 0.05;
const DECISIONS = Number(process.env.BENCH_DECISIONS ?? 200_000);
const PAGES_PER_POD = 4;
const MiB = 2 ** 20;

// A deterministic generator so every run decides the same stream.
let seed = 42;
const random = (): number => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) / 2 ** 31;

const heapBefore = process.memoryUsage().heapUsed;
const nodes: NodeState[] = Array.from({ length: NODES }, (_, i) =>
  node({
    name: `node-${i}`,
    labels: { rack: `r${i % 40}` },
    earlyKill: i % 2 === 0,
    pools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }],
    allocatableBytes: { "2Mi": 1024 * MiB },
  }),
);
const podsByNode = new Map<string, PodState[]>();
// The agent's index: per node, hugepage head pfn → mappers.
const mappersByNode = new Map<string, Map<number, Mapper[]>>();
for (let i = 0; i < PODS; i++) {
  const nodeName = `node-${i % NODES}`;
  const usesHugepages = i % Math.round(1 / HUGEPAGE_SHARE) === 0;
  const p = pod(`pod-${i}`, {
    uid: `uid-${i}`,
    namespace: `ns-${i % 50}`,
    nodeName,
    annotations: i % 7 === 0 ? { "mce-operator.io/early-signal": "true" } : {},
    priority: i % 3,
    hugepageRequestBytes: usesHugepages ? { "2Mi": PAGES_PER_POD * 2 * MiB } : {},
  });
  podsByNode.set(nodeName, [...(podsByNode.get(nodeName) ?? []), p]);
  if (!usesHugepages) continue;
  const index = mappersByNode.get(nodeName) ?? new Map<number, Mapper[]>();
  mappersByNode.set(nodeName, index);
  for (let page = 0; page < PAGES_PER_POD; page++) {
    const head = 0x10000 + (index.size + page) * 512;
    index.set(head, [mapper(p.name, { podUID: p.uid, podNamespace: p.namespace, pid: 1000 + i })]);
  }
}
const snapshotHeapBytes = process.memoryUsage().heapUsed - heapBefore;

const policy = policySpec();
const budget: ClusterBudget = { totalNodes: NODES, actionedNodes: new Set(), nodeActionTimes: [], evictionsInFlight: 0 };
const errors: MemoryError[] = Array.from({ length: 4096 }, (_, i) => {
  const n = nodes[Math.floor(random() * NODES)] ?? nodes[0];
  const heads = [...(mappersByNode.get(n?.name ?? "")?.keys() ?? [])];
  const mapped = heads.length > 0 && random() < 0.7;
  const head = mapped ? (heads[Math.floor(random() * heads.length)] ?? 0) : 0x80000 + Math.floor(random() * 256) * 512;
  return {
    nodeName: n?.name ?? "node-0",
    pfn: head + Math.floor(random() * 512),
    severity: "ActionOptional",
    pageType: mapped ? "huge page" : "free huge page",
    result: "Recovered",
    hugepage: { size: "2Mi", headPfn: head, numaNode: 0 },
    mappers: mappersByNode.get(n?.name ?? "")?.get(head) ?? [],
    observedAt: T0 + i,
  };
});
const nodeByName = new Map(nodes.map((n) => [n.name, n]));

function decideOne(i: number): number {
  const error = errors[i % errors.length] ?? errors[0];
  if (!error) return 0;
  const n = nodeByName.get(error.nodeName) ?? nodes[0];
  if (!n) return 0;
  const d = decideContainment({ error, node: n, pods: podsByNode.get(n.name) ?? [], pdbs: [], policy, budget, now: error.observedAt });
  return d.pods.length;
}

for (let i = 0; i < 20_000; i++) decideOne(i); // warm-up: let the JIT settle
const start = performance.now();
let podActions = 0;
for (let i = 0; i < DECISIONS; i++) podActions += decideOne(i);
const seconds = (performance.now() - start) / 1000;
const memory = process.memoryUsage();

const result = {
  date: new Date().toISOString(),
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cores: availableParallelism(),
  threads: 1,
  nodes: NODES,
  pods: PODS,
  hugepagePods: Math.round(PODS * HUGEPAGE_SHARE),
  decisions: DECISIONS,
  podActions,
  seconds: Number(seconds.toFixed(3)),
  decisionsPerSecond: Math.round(DECISIONS / seconds),
  microsecondsPerDecision: Number(((seconds * 1e6) / DECISIONS).toFixed(2)),
  snapshotHeapMiB: Number((snapshotHeapBytes / MiB).toFixed(1)),
  heapUsedMiB: Number((memory.heapUsed / MiB).toFixed(1)),
  rssMiB: Number((memory.rss / MiB).toFixed(1)),
  hugepageBytesPerPod: PAGES_PER_POD * hugepageBytes("2Mi"),
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/model.json", `${JSON.stringify(result, null, 2)}\n`);
console.log(
  `containment model: ${result.decisionsPerSecond.toLocaleString("en")} decisions/s on one core ` +
    `(${result.microsecondsPerDecision} µs each, ${DECISIONS.toLocaleString("en")} decisions, ${NODES} nodes, ${PODS.toLocaleString("en")} pods, ${result.hugepagePods} with hugepages)`,
);
console.log(`memory: snapshot ${result.snapshotHeapMiB} MiB heap, heap used ${result.heapUsedMiB} MiB, RSS ${result.rssMiB} MiB`);
console.log("saved bench/results/model.json");
