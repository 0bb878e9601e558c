// Benchmark of the operator at the largest clusters, on the real local control plane configured as a large
// cluster is (watch cache and API priority and fairness as shipped, the inflight limits kube-up and
// perf-tests give 3,000+ nodes): KWOK nodes grown to 1,000, 2,000 and 5,000 (30 pods each, 5% with
// hugepages), and at each scale, in one run:
// - the API server's floor: one bare status patch (the operator's server-side apply of an event's status)
//   and one bare eviction, sampled one at a time before the operator starts;
// - a steady storm (10 memory errors a second): event → decision written and first eviction issued, the
//   operator's API requests per error by verb and resource, its RSS, heap and CPU, and its overhead as a
//   ratio over the floor (a decision is one status patch and one eviction after the event is created);
// - a burst (300 errors at once over 100 nodes, three each, under a policy whose thresholds call for a
//   taint and a cordon on every one of them): time until every decision is written and every eviction
//   issued, and whether the node budget and the circuit breaker held throughout (a watch on the nodes).
// The figures print as one table at the end and are saved in bench/results/operator.json. Ctrl-C, SIGTERM
// or a failure tears the operator and the control plane down. BENCH_SCALES (1000,2000,5000),
// BENCH_PODS_PER_NODE (30), BENCH_EVENTS (300), BENCH_RATE (10/s) and BENCH_BURST (300) change the shape.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { group, memoryErrorEventName, nodeLabel, version } from "../crds/naming.ts";
import { KubeRest } from "../operator/kube/rest.ts";
import type { WatchEvent } from "../runtime/api.ts";
import { loadKubeconfig } from "../runtime/http.ts";
import { kwokNodeAnnotation, startControlPlane, stopControlPlane, type ClusterState } from "../test/e2e/cluster/control-plane.ts";
import { applyCrdFiles } from "../test/e2e/cluster/objects.ts";
import { imageEntrypoint } from "../test/e2e/build.ts";
import { peerTable, percentile, runPeer, type PeerResult } from "./peer.ts";

const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
const SCALES = (process.env.BENCH_SCALES ?? "1000,2000,5000").split(",").map(Number);
const PODS_PER_NODE = Number(process.env.BENCH_PODS_PER_NODE ?? 30);
const STEADY_EVENTS = Number(process.env.BENCH_EVENTS ?? 300);
const RATE = Number(process.env.BENCH_RATE ?? 10);
const BURST_EVENTS = Number(process.env.BENCH_BURST ?? 300);
const BURST_NODES = 100;
/** `peer` (the agent beside Node Problem Detector) and `scales`; both by default. */
const CASES = new Set((process.env.BENCH_CASES ?? "peer,scales").split(","));
const FLOOR_SAMPLES = 100;
const HUGEPAGE_EVERY = 20; // 5%
/** The burst's policy: a taint at the second error of a node, a cordon at the third; 1% of the nodes; 30 actions a minute. */
const BURST_SAFETY = { maxUnavailableNodesPercent: 1, circuitBreaker: { maxNodeActions: 30, window: "1m" } };
const TAINT_KEY = "mce-operator.io/hugepage-memory-failing";
const crd = `/apis/${group}/${version}`;
const NAMESPACE = "bench";
/** charts/mce-operator/values.yaml, operator.maxHeapMiB. */
const OPERATOR_HEAP_MIB = 256;

// Everything the run starts, so that any way out takes it down.
const children = new Set<ChildProcess>();
let cluster: ClusterState | undefined;
let workDir: string | undefined;
function teardown(): void {
  for (const child of children) child.kill("SIGKILL");
  children.clear();
  if (cluster) stopControlPlane(cluster);
  cluster = undefined;
  if (workDir) rmSync(workDir, { recursive: true, force: true });
  workDir = undefined;
}
for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    console.error(`\n${signal}: tearing the operator and the control plane down`);
    teardown();
    process.exit(130);
  });

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const round = (n: number, digits = 1): number => Number(n.toFixed(digits));

interface Spread {
  p50: number;
  p99: number;
  max: number;
}
function spread(values: readonly number[]): Spread {
  const sorted = [...values].sort((a, b) => a - b);
  return { p50: percentile(sorted, 0.5), p99: percentile(sorted, 0.99), max: Math.max(...values) };
}

/** Counts toward a total, printed at most every 5 s with its rate: building 150,000 pods takes minutes. */
class Progress {
  private done = 0;
  private readonly started = Date.now();
  private printed = Date.now();
  private readonly what: string;
  private readonly total: number;
  constructor(what: string, total: number) {
    this.what = what;
    this.total = total;
  }
  add(n = 1): void {
    this.done += n;
    if (Date.now() - this.printed >= 5000 || this.done === this.total) this.print();
  }
  private print(): void {
    this.printed = Date.now();
    const seconds = (Date.now() - this.started) / 1000;
    const rate = this.done / Math.max(seconds, 0.001);
    const eta = this.done < this.total ? `, ${Math.ceil((this.total - this.done) / rate)} s to go` : "";
    console.log(`  ${this.what} ${this.done.toLocaleString("en")} / ${this.total.toLocaleString("en")} (${Math.round(rate)}/s${eta})`);
  }
}

function procSample(pid: number): { rssMiB: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return { rssMiB: rssKb / 1024, cpuSeconds: (Number(stat[11]) + Number(stat[12])) / 100 };
}

/**
 * The operator's /metrics, asked again after a reset: a kept-alive connection its server closed just as
 * the next scrape went out (ECONNRESET) ended a run at 2,000 nodes.
 */
async function scrape(url: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await (await fetch(url)).text();
    } catch (error) {
      if (attempt === 3) throw error;
      await sleep(200);
    }
  }
}

/** One metric's samples from the operator's /metrics, by their labels. */
async function metricSamples(port: number, name: string): Promise<Map<string, number>> {
  const text = await scrape(`http://127.0.0.1:${port}/metrics`);
  const samples = new Map<string, number>();
  for (const line of text.split("\n")) {
    const m = /^(\w+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (m?.[1] === name) samples.set(m[2] ?? "", Number(m[3]));
  }
  return samples;
}

/** Until the operator's queues have been empty for 2 s (at most 2 min). */
async function idle(port: number): Promise<void> {
  let quiet = 0;
  for (let i = 0; i < 240 && quiet < 4; i++) {
    quiet = ((await metricSamples(port, "mce_operator_queue_depth")).get("") ?? 0) === 0 ? quiet + 1 : 0;
    await sleep(500);
  }
}

/** The operator's API requests by "VERB resource", watches left out. */
async function requestsByResource(port: number): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const [labels, value] of await metricSamples(port, "mce_operator_api_requests_total")) {
    const verb = /verb="([^"]*)"/.exec(labels)?.[1] ?? "";
    if (verb === "WATCH") continue;
    out.set(`${verb} ${/resource="([^"]*)"/.exec(labels)?.[1] ?? ""}`, value);
  }
  return out;
}

const nodeName = (i: number): string => `bench-${i}`;
const podName = (node: number, j: number): string => `pod-${node * PODS_PER_NODE + j}`;
const isHugepagePod = (node: number, j: number): boolean => (node * PODS_PER_NODE + j) % HUGEPAGE_EVERY === 0;
/** The burst's nodes of a scale: its last BURST_NODES, labelled with the scale, under the burst policy. */
const burstLabel = "mce-bench/burst";
const isBurstNode = (i: number, scale: number): boolean => i >= scale - BURST_NODES;

/** Nodes [from, to), their NodeMemoryHealth reports and their pods, with progress. */
async function grow(rest: KubeRest, from: number, to: number): Promise<void> {
  const resources = { cpu: "64", memory: "256Gi", pods: "110", "hugepages-2Mi": "1Gi" };
  const indexes = Array.from({ length: to - from }, (_, i) => from + i);
  const nodes = new Progress("nodes", indexes.length);
  await pool(indexes, 32, async (i) => {
    const labels: Record<string, string> = { type: "kwok", "mce-bench": "true", ...(isBurstNode(i, to) && { [burstLabel]: String(to) }) };
    await rest.request("POST", "/api/v1/nodes", {
      body: {
        metadata: { name: nodeName(i), annotations: { [kwokNodeAnnotation.key]: kwokNodeAnnotation.value }, labels },
        status: { capacity: resources, allocatable: resources },
      },
    });
    await rest.request("PATCH", `${crd}/nodememoryhealths/${nodeName(i)}`, {
      query: { fieldManager: "bench", force: true },
      patch: "apply",
      body: {
        apiVersion: `${group}/${version}`,
        kind: "NodeMemoryHealth",
        metadata: { name: nodeName(i) },
        spec: {
          nodeName: nodeName(i),
          bootID: "bench",
          kernelVersion: "6.1.0-56-amd64",
          observedAt: new Date().toISOString(),
          hugepagePools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }],
        },
      },
    });
    nodes.add();
  });
  const pods = indexes.flatMap((i) => Array.from({ length: PODS_PER_NODE }, (_, j) => [i, j] as const));
  const made = new Progress("pods", pods.length);
  await pool(pods, 48, async ([i, j]) => {
    const huge = isHugepagePod(i, j);
    const requests = { cpu: "10m", memory: "16Mi", ...(huge && { "hugepages-2Mi": "8Mi" }) };
    await rest.request("POST", `/api/v1/namespaces/${NAMESPACE}/pods`, {
      body: {
        metadata: { name: podName(i, j), labels: { app: `app-${(i * PODS_PER_NODE + j) % 50}`, huge: String(huge) } },
        spec: {
          nodeName: nodeName(i),
          terminationGracePeriodSeconds: 0,
          containers: [{ name: "app", image: "registry.k8s.io/pause:3.10", resources: { requests, limits: requests } }],
        },
      },
    });
    made.add();
  });
}

/** Until KWOK has marked every pod Running: its status patches would otherwise load the API server under the storm. */
async function settle(rest: KubeRest): Promise<number> {
  const started = Date.now();
  for (;;) {
    const page = await rest.request<{ items: unknown[] }>("GET", `/api/v1/namespaces/${NAMESPACE}/pods`, {
      query: { fieldSelector: "status.phase!=Running", limit: 1 },
    });
    if (page.items.length === 0) return (Date.now() - started) / 1000;
    if (Date.now() - started > 1_800_000) throw new Error("KWOK did not mark every pod Running within 30 min");
    await sleep(5000);
  }
}

interface Floor {
  statusPatchMs: Spread;
  evictionMs: Spread;
}

/** One bare server-side apply of an event's status and one bare eviction at a time, before the operator runs. */
async function floor(rest: KubeRest, scale: number, firstNewNode: number): Promise<Floor> {
  const name = `bench-floor-${scale}`;
  await rest.request("POST", `${crd}/memoryerrorevents`, {
    body: {
      apiVersion: `${group}/${version}`,
      kind: "MemoryErrorEvent",
      metadata: { name, labels: { [nodeLabel]: nodeName(0) } },
      spec: { nodeName: nodeName(0), bootID: "floor", observedAt: new Date().toISOString(), source: "Injected", pfn: "0x10", severity: "Corrected" },
    },
  });
  const patches: number[] = [];
  for (let i = 0; i < FLOOR_SAMPLES; i++) {
    const t = performance.now();
    await rest.request("PATCH", `${crd}/memoryerrorevents/${name}/status`, {
      query: { fieldManager: "mce-operator", force: true },
      patch: "apply",
      body: {
        apiVersion: `${group}/${version}`,
        kind: "MemoryErrorEvent",
        metadata: { name },
        status: {
          phase: "Pending",
          decidedAt: new Date().toISOString(),
          pods: [{ uid: `u-${i}`, name: `p-${i}`, namespace: NAMESPACE, action: "Evict", state: "InProgress" }],
        },
      },
    });
    patches.push(performance.now() - t);
  }
  await rest.request("DELETE", `${crd}/memoryerrorevents/${name}`);
  // Pods without hugepages on this scale's new nodes, outside the storms' reach.
  const evictions: number[] = [];
  for (let i = 0; i < FLOOR_SAMPLES; i++) {
    const node = firstNewNode + i;
    const j = isHugepagePod(node, 1) ? 2 : 1;
    const t = performance.now();
    await rest.request("POST", `/api/v1/namespaces/${NAMESPACE}/pods/${podName(node, j)}/eviction`, {
      body: { apiVersion: "policy/v1", kind: "Eviction", metadata: { name: podName(node, j), namespace: NAMESPACE } },
    });
    evictions.push(performance.now() - t);
  }
  return { statusPatchMs: spread(patches.map((v) => round(v))), evictionMs: spread(evictions.map((v) => round(v))) };
}

/** Starts the operator as its image and the chart run it and resolves once its caches are synced. */
async function startOperator(kubeconfig: string): Promise<{ child: ChildProcess; port: number; syncSeconds: number }> {
  const started = Date.now();
  const [, ...entry] = imageEntrypoint("operator/Dockerfile");
  const child = spawn(
    process.execPath,
    [...entry, "run", `--kubeconfig=${kubeconfig}`, "--namespace=mce-system", "--metrics-address=127.0.0.1", "--metrics-port=0", "--leader-elect=false"],
    // The image's NODE_ENV and the chart's heap limit (operator.maxHeapMiB).
    {
      env: { ...process.env, NODE_ENV: "production", NODE_OPTIONS: `--max-old-space-size=${OPERATOR_HEAP_MIB}` },
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  children.add(child);
  child.once("exit", () => {
    children.delete(child);
  });
  const port = await new Promise<number>((resolve, reject) => {
    let found = 0;
    createInterface({ input: child.stdout as NodeJS.ReadableStream }).on("line", (line) => {
      if (line.includes('"msg":"operator started"')) found = Number(/"metrics":"[^"]*:(\d+)"/.exec(line)?.[1] ?? 0);
      if (line.includes('"msg":"caches synced, reconciling"')) resolve(found);
      if (line.includes('"level":"error"')) process.stderr.write(`${line}\n`);
    });
    child.once("exit", (code) => {
      reject(new Error(`operator exited with ${String(code)}`));
    });
  });
  return { child, port, syncSeconds: (Date.now() - started) / 1000 };
}

type BenchEvent = {
  metadata: { name: string };
  spec: { observedAt: string };
  status?: {
    decidedAt?: string;
    pods?: { lastAttemptAt?: string; state: string }[];
    nodeAction?: { action: string; state: string; appliedAt?: string };
  };
};

function memoryError(node: number, j: number, pfn: number, uid: string | undefined, observedAt: string): { name: string; body: unknown } {
  const name = memoryErrorEventName(nodeName(node), "bench", pfn);
  const body = {
    apiVersion: `${group}/${version}`,
    kind: "MemoryErrorEvent",
    metadata: { name, labels: { [nodeLabel]: nodeName(node) } },
    spec: {
      nodeName: nodeName(node),
      bootID: "bench",
      observedAt,
      source: "Injected",
      pfn: `0x${pfn.toString(16)}`,
      severity: "ActionOptional",
      pageType: "huge page",
      result: "Recovered",
      hugepage: { size: "2Mi", headPfn: `0x${(pfn - 7).toString(16)}`, numaNode: 0 },
      mappers: [
        {
          pid: 1000 + j,
          command: "app",
          podUID: uid,
          podNamespace: NAMESPACE,
          podName: podName(node, j),
          container: "app",
          mapping: "Private",
          killPolicy: "Default",
        },
      ],
    },
  };
  return { name, body };
}

async function podUIDs(rest: KubeRest, selector?: string): Promise<Map<string, string>> {
  const uids = new Map<string, string>();
  let next: string | undefined;
  do {
    const page = await rest.request<{ items: { metadata: { name: string; uid: string } }[]; metadata: { continue?: string } }>(
      "GET",
      `/api/v1/namespaces/${NAMESPACE}/pods`,
      { query: { labelSelector: selector, limit: 5000, continue: next } },
    );
    for (const p of page.items) uids.set(p.metadata.name, p.metadata.uid);
    next = page.metadata.continue || undefined;
  } while (next);
  return uids;
}

/** Until every named event is decided and every eviction it holds was issued (or the pod was gone). */
async function settled(rest: KubeRest, names: Set<string>, done: (e: BenchEvent) => boolean): Promise<BenchEvent[]> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const events = (await rest.request<{ items: BenchEvent[] }>("GET", `${crd}/memoryerrorevents`)).items.filter((e) => names.has(e.metadata.name));
    if ((events.length === names.size && events.every(done)) || Date.now() > deadline) return events;
    await sleep(250);
  }
}

const issued = (e: BenchEvent): boolean =>
  e.status?.decidedAt !== undefined && (e.status.pods ?? []).every((p) => p.lastAttemptAt !== undefined || p.state === "Done");
const sinceMs = (e: BenchEvent, at: string | undefined, from?: number): number[] =>
  at === undefined ? [] : [Date.parse(at) - (from ?? Date.parse(e.spec.observedAt))];
const firstEviction = (e: BenchEvent): string | undefined =>
  (e.status?.pods ?? [])
    .map((p) => p.lastAttemptAt)
    .filter((t): t is string => t !== undefined)
    .sort()[0];

interface Steady {
  events: number;
  decisionMs: Spread;
  evictionMs: Spread;
  seconds: number;
  cpuSeconds: number;
  requestsPerError: number;
  requests: Record<string, number>;
}

async function steadyStorm(rest: KubeRest, scale: number, run: number, port: number, pid: number): Promise<Steady> {
  const uids = await podUIDs(rest, "huge=true");
  // Distinct hugepage pods spread over the nodes, off the burst's nodes and still running.
  const targets = [
    ...new Set(Array.from({ length: STEADY_EVENTS }, (_, i) => Math.floor(((i * 7919) % (scale * PODS_PER_NODE)) / HUGEPAGE_EVERY) * HUGEPAGE_EVERY)),
  ]
    .map((k) => [Math.floor(k / PODS_PER_NODE), k % PODS_PER_NODE] as const)
    .filter(([node, j]) => !isBurstNode(node, scale) && uids.has(podName(node, j)));
  // After start-up's own writes (every node's first NodeMemoryHealth status).
  await idle(port);
  const before = await requestsByResource(port);
  const cpuBefore = procSample(pid).cpuSeconds;
  const names = new Set<string>();
  const started = Date.now();
  await pool(targets, RATE > 0 ? 1 : 16, async ([node, j]) => {
    if (RATE > 0) await sleep(1000 / RATE);
    const pfn = 0x1000000 + run * 0x100000 + (node * PODS_PER_NODE + j) * 512 + 7;
    const { name, body } = memoryError(node, j, pfn, uids.get(podName(node, j)), new Date().toISOString());
    names.add(name);
    await rest.request("POST", `${crd}/memoryerrorevents`, { body });
  });
  const events = await settled(rest, names, issued);
  const seconds = (Date.now() - started) / 1000;
  // The node queue runs after the events': its writes belong to these errors too.
  await idle(port);
  const after = await requestsByResource(port);
  const requests: Record<string, number> = {};
  for (const [key, value] of after) if (value - (before.get(key) ?? 0) > 0) requests[key] = value - (before.get(key) ?? 0);
  const total = Object.values(requests).reduce((a, b) => a + b, 0);
  return {
    events: names.size,
    decisionMs: spread(events.flatMap((e) => sinceMs(e, e.status?.decidedAt))),
    evictionMs: spread(events.flatMap((e) => sinceMs(e, firstEviction(e)))),
    seconds: round(seconds),
    cpuSeconds: round(procSample(pid).cpuSeconds - cpuBefore, 2),
    requestsPerError: round(total / names.size),
    requests: Object.fromEntries(Object.entries(requests).map(([k, v]) => [k, round(v / names.size, 2)])),
  };
}

interface Burst {
  events: number;
  nodes: number;
  decisionMs: Spread;
  evictionMs: Spread;
  allDecidedMs: number;
  nodeActionsCalledFor: number;
  nodeActionsTaken: number;
  heldByBudget: number;
  budgetNodes: number;
  maxActionedNodesSeen: number;
  breakerLimit: number;
  maxActionsInBreakerWindow: number;
  held: boolean;
}

/** Nodes carrying the operator's taint or cordon, kept current by a watch, with the most seen at once. */
class ActionedNodes {
  readonly actioned = new Set<string>();
  max = 0;
  private readonly abort = new AbortController();
  private watching: Promise<void> = Promise.resolve();

  async start(rest: KubeRest): Promise<void> {
    type Node = { metadata: { name: string }; spec?: { unschedulable?: boolean; taints?: { key: string }[] } };
    const path = "/api/v1/nodes";
    const list = await rest.request<{ items: Node[]; metadata: { resourceVersion: string } }>("GET", path, { query: { labelSelector: burstLabel } });
    const see = (node: Node, gone = false): void => {
      const on = !gone && (node.spec?.unschedulable === true || (node.spec?.taints ?? []).some((t) => t.key === TAINT_KEY));
      if (on) this.actioned.add(node.metadata.name);
      else this.actioned.delete(node.metadata.name);
      this.max = Math.max(this.max, this.actioned.size);
    };
    for (const node of list.items) see(node);
    this.watching = rest
      .watch(
        path,
        { labelSelector: burstLabel, resourceVersion: list.metadata.resourceVersion, timeoutSeconds: 3600 },
        (event: WatchEvent) => {
          if (event.type === "ADDED" || event.type === "MODIFIED" || event.type === "DELETED") see(event.object as Node, event.type === "DELETED");
        },
        this.abort.signal,
      )
      .catch((e: unknown) => {
        if (!this.abort.signal.aborted) console.error(`node watch ended: ${String(e)}`);
      });
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.watching;
  }
}

async function burst(rest: KubeRest, scale: number, run: number): Promise<Burst> {
  const nodes = Array.from({ length: BURST_NODES }, (_, i) => scale - BURST_NODES + i);
  const perNode = Math.ceil(BURST_EVENTS / BURST_NODES);
  const uids = await podUIDs(rest, undefined);
  const watch = new ActionedNodes();
  await watch.start(rest);
  const start = Date.now();
  const observedAt = new Date(start).toISOString();
  // Each error names another pod of its node, so that each has an eviction of its own to issue.
  const errors = nodes.flatMap((node) =>
    Array.from({ length: perNode }, (_, j) =>
      memoryError(node, j, 0x3000000 + run * 0x100000 + (node * PODS_PER_NODE + j) * 512 + 7, uids.get(podName(node, j)), observedAt),
    ),
  );
  const names = new Set(errors.map((e) => e.name));
  await Promise.all(errors.map((e) => rest.request("POST", `${crd}/memoryerrorevents`, { body: e.body })));
  const events = await settled(rest, names, issued);
  // The last held actions are retried on their own schedule: a few seconds more to see them.
  await sleep(5000);
  await watch.stop();
  const decisions = events.flatMap((e) => sinceMs(e, e.status?.decidedAt, start));
  const actions = events.map((e) => e.status?.nodeAction).filter((a) => a !== undefined && a.action !== "None");
  const applied = actions.flatMap((a) => (a?.appliedAt ? [Date.parse(a.appliedAt)] : [])).sort((a, b) => a - b);
  const windowMs = 60_000;
  const maxInWindow = Math.max(0, ...applied.map((t) => applied.filter((u) => u >= t && u < t + windowMs).length));
  const budgetNodes = Math.floor((scale * BURST_SAFETY.maxUnavailableNodesPercent) / 100);
  return {
    events: names.size,
    nodes: BURST_NODES,
    decisionMs: spread(decisions),
    evictionMs: spread(events.flatMap((e) => sinceMs(e, firstEviction(e), start))),
    allDecidedMs: Math.max(...decisions),
    nodeActionsCalledFor: actions.length,
    nodeActionsTaken: applied.length,
    heldByBudget: actions.filter((a) => a?.state === "HeldByBudget").length,
    budgetNodes,
    maxActionedNodesSeen: watch.max,
    breakerLimit: BURST_SAFETY.circuitBreaker.maxNodeActions,
    maxActionsInBreakerWindow: maxInWindow,
    held: watch.max <= budgetNodes && maxInWindow <= BURST_SAFETY.circuitBreaker.maxNodeActions,
  };
}

interface ScaleResult {
  nodes: number;
  pods: number;
  buildSeconds: number;
  settleSeconds: number;
  syncSeconds: number;
  floor: Floor;
  steady: Steady;
  burst: Burst;
  /** Operator's own overhead: event → first eviction issued over the floor's status patch plus eviction. */
  overP50: number;
  overP99: number;
  operatorRssMiB: number;
  operatorPeakRssMiB: number;
  operatorHeapUsedMiB: number;
  /** V8's spaces as committed (new, old, code, large_object...) and external memory. */
  operatorMemoryMiB: Record<string, number>;
}

async function atScale(rest: KubeRest, kubeconfig: string, scale: number, run: number, have: number): Promise<ScaleResult> {
  const built = Date.now();
  console.log(`growing the cluster from ${have.toLocaleString("en")} to ${scale.toLocaleString("en")} nodes (${PODS_PER_NODE} pods each)`);
  await grow(rest, have, scale);
  await rest.request("POST", `${crd}/containmentpolicies`, {
    body: {
      apiVersion: `${group}/${version}`,
      kind: "ContainmentPolicy",
      metadata: { name: `burst-${scale}` },
      spec: {
        mode: "Enforce",
        nodeSelector: { matchLabels: { [burstLabel]: String(scale) } },
        escalation: { taintAfter: 2, cordonAfter: 3, taintKey: TAINT_KEY },
        safety: { ...BURST_SAFETY, maxEvictionsInFlight: 1000 },
      },
    },
  });
  const buildSeconds = (Date.now() - built) / 1000;
  console.log(`  waiting for KWOK to mark every pod Running`);
  const settleSeconds = await settle(rest);
  console.log(`  API server floor: ${FLOOR_SAMPLES} bare status patches and evictions`);
  const bare = await floor(rest, scale, have);
  console.log(`  starting the operator`);
  const { child, port, syncSeconds } = await startOperator(kubeconfig);
  const pid = child.pid ?? 0;
  let peak = 0;
  const sampler = setInterval(() => {
    peak = Math.max(peak, procSample(pid).rssMiB);
  }, 250);
  try {
    console.log(`  caches synced in ${syncSeconds.toFixed(1)} s; steady storm of ${STEADY_EVENTS} errors at ${RATE}/s`);
    const steady = await steadyStorm(rest, scale, run, port, pid);
    console.log(`  burst of ${BURST_EVENTS} errors at once over ${BURST_NODES} nodes`);
    const burstResult = await burst(rest, scale, run);
    const heap = (await metricSamples(port, "nodejs_heap_size_used_bytes")).get("") ?? 0;
    // Where the RSS goes: V8's spaces as committed, and memory outside the heap.
    const spaces: Record<string, number> = {};
    for (const [labels, bytes] of await metricSamples(port, "nodejs_heap_space_size_total_bytes"))
      spaces[/space="([^"]*)"/.exec(labels)?.[1] ?? labels] = round(bytes / 2 ** 20);
    spaces.external = round(((await metricSamples(port, "nodejs_external_memory_bytes")).get("") ?? 0) / 2 ** 20);
    const { rssMiB } = procSample(pid);
    const floorP50 = bare.statusPatchMs.p50 + bare.evictionMs.p50;
    const floorP99 = bare.statusPatchMs.p99 + bare.evictionMs.p99;
    return {
      nodes: scale,
      pods: scale * PODS_PER_NODE,
      buildSeconds: round(buildSeconds),
      settleSeconds: round(settleSeconds),
      syncSeconds: round(syncSeconds),
      floor: bare,
      steady,
      burst: burstResult,
      overP50: round(steady.evictionMs.p50 / floorP50),
      overP99: round(steady.evictionMs.p99 / floorP99),
      operatorRssMiB: round(rssMiB),
      operatorPeakRssMiB: round(Math.max(peak, rssMiB)),
      operatorHeapUsedMiB: round(heap / 2 ** 20),
      operatorMemoryMiB: spaces,
    };
  } finally {
    clearInterval(sampler);
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

/** One line per figure, one column per scale. */
function table(results: readonly ScaleResult[]): string {
  const ms = (s: Spread): string => `${s.p50} / ${s.p99} / ${s.max}`;
  const rows: [string, (r: ScaleResult) => string][] = [
    ["pods", (r) => r.pods.toLocaleString("en")],
    ["cluster built, KWOK settled (s)", (r) => `${r.buildSeconds}, ${r.settleSeconds}`],
    ["operator cache sync (s)", (r) => String(r.syncSeconds)],
    ["floor: status patch p50/p99/max (ms)", (r) => ms(r.floor.statusPatchMs)],
    ["floor: eviction p50/p99/max (ms)", (r) => ms(r.floor.evictionMs)],
    ["steady: errors at 10/s", (r) => String(r.steady.events)],
    ["steady: → decision p50/p99/max (ms)", (r) => ms(r.steady.decisionMs)],
    ["steady: → first eviction p50/p99/max (ms)", (r) => ms(r.steady.evictionMs)],
    ["steady: over the floor p50, p99 (×)", (r) => `${r.overP50}, ${r.overP99}`],
    ["steady: API requests per error", (r) => String(r.steady.requestsPerError)],
    ["steady: operator CPU (s)", (r) => `${r.steady.cpuSeconds} in ${r.steady.seconds}`],
    ["burst: errors, nodes", (r) => `${r.burst.events}, ${r.burst.nodes}`],
    ["burst: → decision p50/p99/max (ms)", (r) => ms(r.burst.decisionMs)],
    ["burst: → eviction p50/p99/max (ms)", (r) => ms(r.burst.evictionMs)],
    ["burst: node actions called for, taken, held", (r) => `${r.burst.nodeActionsCalledFor}, ${r.burst.nodeActionsTaken}, ${r.burst.heldByBudget}`],
    ["burst: nodes actioned, most / budget", (r) => `${r.burst.maxActionedNodesSeen} / ${r.burst.budgetNodes}`],
    ["burst: actions in 1 min, most / breaker", (r) => `${r.burst.maxActionsInBreakerWindow} / ${r.burst.breakerLimit}`],
    ["burst: budget and breaker held", (r) => (r.burst.held ? "yes" : "NO")],
    ["operator RSS, peak (MiB)", (r) => `${r.operatorRssMiB}, ${r.operatorPeakRssMiB}`],
    ["operator heap used (MiB)", (r) => String(r.operatorHeapUsedMiB)],
    ["operator heap committed: new, old, code, large (MiB)", (r) => ["new", "old", "code", "large_object"].map((k) => r.operatorMemoryMiB[k] ?? 0).join(", ")],
  ];
  const header = ["nodes", ...results.map((r) => r.nodes.toLocaleString("en"))];
  const lines = [header, ...rows.map(([label, cell]) => [label, ...results.map(cell)])];
  const widths = header.map((_, c) => Math.max(...lines.map((l) => (l[c] ?? "").length)));
  const requestKeys = [...new Set(results.flatMap((r) => Object.keys(r.steady.requests)))].sort();
  const breakdown = requestKeys.map((k) => `  ${k}: ${results.map((r) => r.steady.requests[k] ?? 0).join(" / ")}`);
  return [
    ...lines.map((l) => l.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join("  ")),
    "steady storm's API requests per error, by verb and resource:",
    ...breakdown,
  ].join("\n");
}

/** The peer case's figures from the last run that measured them (they carry their own date), kept when this run does not. */
type Peer = PeerResult & { commit?: string };
function previousPeer(): Peer | undefined {
  try {
    return (JSON.parse(readFileSync("bench/results/operator.json", "utf8")) as { peer?: Peer }).peer;
  } catch {
    return undefined;
  }
}

function save(results: readonly ScaleResult[], peer: Peer | undefined): void {
  mkdirSync("bench/results", { recursive: true });
  const cpu = cpus()[0]?.model ?? "unknown";
  const settings = {
    podsPerNode: PODS_PER_NODE,
    steadyEvents: STEADY_EVENTS,
    eventsPerSecond: RATE,
    burstEvents: BURST_EVENTS,
    burstNodes: BURST_NODES,
    burstSafety: BURST_SAFETY,
  };
  writeFileSync(
    "bench/results/operator.json",
    `${JSON.stringify({ date: new Date().toISOString(), commit, node: process.version, cpu, cores: cpus().length, settings, results, peer }, null, 2)}\n`,
  );
}

async function main(): Promise<void> {
  workDir = mkdtempSync(join(tmpdir(), "mce-bench-"));
  console.log("building the operator and the agent as their images hold them (tsc -p tsconfig.build.json into dist/)");
  execFileSync(process.execPath, ["node_modules/typescript/bin/tsc", "-p", "tsconfig.build.json"], { stdio: "inherit" });
  console.log("starting the control plane");
  cluster = await startControlPlane(workDir, { largeCluster: true });
  const rest = new KubeRest(await loadKubeconfig(cluster.kubeconfig));
  await applyCrdFiles(rest);
  for (const ns of [NAMESPACE, "mce-system"]) await rest.request("POST", "/api/v1/namespaces", { body: { metadata: { name: ns } } });
  await sleep(2000);
  await rest.request("POST", `${crd}/containmentpolicies`, {
    body: {
      apiVersion: `${group}/${version}`,
      kind: "ContainmentPolicy",
      metadata: { name: "bench" },
      spec: { mode: "Enforce", escalation: { taintAfter: 100, cordonAfter: 200 }, safety: { maxEvictionsInFlight: 1000 } },
    },
  });
  // On the host, before the cluster grows: the agent's line → event latency against an idle API server.
  let peer: Peer | undefined;
  if (CASES.has("peer")) {
    console.log("the agent beside Node Problem Detector on one kernel log, then line → MemoryErrorEvent on the host");
    peer = { ...(await runPeer(cluster, join(workDir, "peer"))), commit };
    // Its 1,200 events name nodes that do not exist: the operator would spend the storm on them.
    for (const plural of ["memoryerrorevents", "nodememoryhealths"]) await rest.request("DELETE", `${crd}/${plural}`);
  } else peer = previousPeer();
  const results: ScaleResult[] = [];
  let have = 0;
  for (const [run, scale] of CASES.has("scales") ? SCALES.entries() : []) {
    results.push(await atScale(rest, cluster.kubeconfig, scale, run, have));
    have = scale;
    // Each scale's figures are kept as soon as they are measured: a larger one may not fit the machine.
    save(results, peer);
    console.log(`\n${table(results)}\n`);
  }
  await rest.close();
  teardown();
  if (peer) console.log(`\n${peerTable(peer)}`);
  if (results.length > 0) console.log(`\n${table(results)}`);
  save(results, peer);
  console.log("saved bench/results/operator.json");
}

try {
  await main();
} catch (e) {
  console.error(e);
  teardown();
  process.exit(1);
}
