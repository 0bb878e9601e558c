// Benchmark of the operator on the real local control plane: KWOK nodes at 100, 300 and 1,000 (30 pods
// each, 5% with hugepages), then a storm of MemoryErrorEvents. Prints event-to-decision and
// event-to-eviction latency (p50, p99), the operator's RSS and CPU, and API requests per event; saves
// bench/results/operator.json. BENCH_SCALES=100,300 limits the scales; BENCH_EVENTS sets the storm size and
// BENCH_RATE its rate in events per second (0 sends them all at once).
import { execFileSync, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { KubeConfig } from "@kubernetes/client-node";
import { group, memoryErrorEventName, nodeLabel, version } from "../crds/naming.ts";
import { KubeRest } from "../operator/kube/rest.ts";
import { kwokNodeAnnotation, startControlPlane, stopControlPlane } from "../test/e2e/cluster/control-plane.ts";
import { applyCrdFiles } from "../test/e2e/cluster/objects.ts";

const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
const scales = (process.env.BENCH_SCALES ?? "100,300,1000").split(",").map(Number);
const EVENTS = Number(process.env.BENCH_EVENTS ?? 300);
const RATE = Number(process.env.BENCH_RATE ?? 10);
const PODS_PER_NODE = 30;
const HUGEPAGE_EVERY = 20; // 5%
const crd = `/apis/${group}/${version}`;

async function pool<T>(items: T[], concurrency: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await fn(items[next++] as T);
    }),
  );
}

const percentile = (values: number[], p: number): number => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
};

function procSample(pid: number): { rssMiB: number; cpuSeconds: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  const ticks = Number(stat[11]) + Number(stat[12]);
  return { rssMiB: rssKb / 1024, cpuSeconds: ticks / 100 };
}

async function metric(port: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return text
    .split("\n")
    .filter((l) => l.startsWith(name) && !l.includes('verb="WATCH"'))
    .reduce((sum, l) => sum + Number(l.split(" ").pop()), 0);
}

async function addNodes(rest: KubeRest, from: number, to: number): Promise<void> {
  const resources = { cpu: "64", memory: "256Gi", pods: "110", "hugepages-2Mi": "1Gi" };
  await pool(
    Array.from({ length: to - from }, (_, i) => from + i),
    32,
    (i) =>
      rest.request("POST", "/api/v1/nodes", {
        body: {
          metadata: { name: `bench-${i}`, annotations: { [kwokNodeAnnotation.key]: kwokNodeAnnotation.value }, labels: { type: "kwok", "mce-bench": "true" } },
          status: { capacity: resources, allocatable: resources },
        },
      }),
  );
  await pool(
    Array.from({ length: to - from }, (_, i) => from + i),
    32,
    (i) =>
      rest.request("PATCH", `${crd}/nodememoryhealths/bench-${i}`, {
        query: { fieldManager: "bench", force: true },
        patch: "apply",
        body: {
          apiVersion: `${group}/${version}`,
          kind: "NodeMemoryHealth",
          metadata: { name: `bench-${i}` },
          spec: {
            nodeName: `bench-${i}`,
            bootID: "bench",
            kernelVersion: "6.1.0-56-amd64",
            observedAt: new Date().toISOString(),
            hugepagePools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }],
          },
        },
      }),
  );
  const pods = Array.from({ length: (to - from) * PODS_PER_NODE }, (_, k) => from * PODS_PER_NODE + k);
  await pool(pods, 48, (k) => {
    const node = `bench-${Math.floor(k / PODS_PER_NODE)}`;
    const huge = k % HUGEPAGE_EVERY === 0;
    const resources = { cpu: "10m", memory: "16Mi", ...(huge ? { "hugepages-2Mi": "8Mi" } : {}) };
    return rest.request("POST", "/api/v1/namespaces/bench/pods", {
      body: {
        metadata: { name: `pod-${k}`, labels: { app: `app-${k % 50}`, huge: String(huge) } },
        spec: {
          nodeName: node,
          terminationGracePeriodSeconds: 0,
          containers: [{ name: "app", image: "registry.k8s.io/pause:3.10", resources: { requests: resources, limits: resources } }],
        },
      },
    });
  });
}

interface Result {
  nodes: number;
  pods: number;
  events: number;
  decisionP50Ms: number;
  decisionP99Ms: number;
  evictionP50Ms: number;
  evictionP99Ms: number;
  operatorRssMiB: number;
  operatorHeapUsedMiB: number;
  operatorPeakRssMiB: number;
  operatorCpuSecondsDuringStorm: number;
  stormSeconds: number;
  apiRequestsPerEvent: number;
  syncSeconds: number;
}

/** Starts the operator and resolves with its metrics port once its caches are synced. */
async function startOperator(kubeconfig: string): Promise<{ child: ReturnType<typeof spawn>; port: number }> {
  // The heap limit the chart sets (operator.maxHeapMiB).
  const child = spawn(
    "node_modules/.bin/node",
    [
      "--max-old-space-size=256",
      "operator/cli.ts",
      "run",
      `--kubeconfig=${kubeconfig}`,
      "--namespace=mce-system",
      "--metrics-address=127.0.0.1",
      "--metrics-port=0",
      "--leader-elect=false",
    ],
    {
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  const port = await new Promise<number>((resolve, reject) => {
    let found = 0;
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.includes('"msg":"operator started"')) found = Number(/"metrics":"[^"]*:(\d+)"/.exec(line)?.[1] ?? 0);
      if (line.includes('"msg":"caches synced, reconciling"')) resolve(found);
      if (line.includes('"level":"error"')) process.stderr.write(`${line}\n`);
    });
    child.once("exit", (code) => {
      reject(new Error(`operator exited with ${String(code)}`));
    });
  });
  return { child, port };
}

type StormEvent = {
  metadata: { name: string };
  spec: { observedAt: string };
  status?: { decidedAt?: string; pods?: { lastAttemptAt?: string; state: string }[] };
};

async function storm(rest: KubeRest, nodes: number, kubeconfig: string, runIndex: number): Promise<Result> {
  const startedAt = Date.now();
  const { child, port } = await startOperator(kubeconfig);
  const pid = child.pid ?? 0;
  try {
    const syncSeconds = (Date.now() - startedAt) / 1000;
    const before = await metric(port, "mce_operator_api_requests_total");
    const cpuBefore = procSample(pid).cpuSeconds;
    let peak = procSample(pid).rssMiB;
    const sampler = setInterval(() => {
      peak = Math.max(peak, procSample(pid).rssMiB);
    }, 250);
    // Distinct hugepage pods spread over the nodes.
    const targets = [
      ...new Set(Array.from({ length: EVENTS }, (_, i) => Math.floor(((i * 7919) % (nodes * PODS_PER_NODE)) / HUGEPAGE_EVERY) * HUGEPAGE_EVERY)),
    ];
    const podList = (
      await rest.request<{ items: { metadata: { name: string; uid: string } }[] }>("GET", "/api/v1/namespaces/bench/pods", {
        query: { labelSelector: "huge=true" },
      })
    ).items;
    const uids = new Map(podList.map((p) => [p.metadata.name, p.metadata.uid]));
    // Pods evicted by an earlier, smaller storm are gone: only those still running are targets.
    const live = targets.filter((k) => uids.has(`pod-${k}`));
    const names = new Set<string>();
    const stormStart = Date.now();
    // Events arrive at RATE per second (0: all at once), each created by its own request.
    await pool(live, RATE > 0 ? 1 : 16, async (k) => {
      if (RATE > 0) await new Promise((r) => setTimeout(r, 1000 / RATE));
      const nodeName = `bench-${Math.floor(k / PODS_PER_NODE)}`;
      const pfn = 0x1000000 + runIndex * 0x100000 + k * 512 + 7;
      const name = memoryErrorEventName(nodeName, "bench", pfn);
      names.add(name);
      await rest.request("POST", `${crd}/memoryerrorevents`, {
        body: {
          apiVersion: `${group}/${version}`,
          kind: "MemoryErrorEvent",
          metadata: { name, labels: { [nodeLabel]: nodeName } },
          spec: {
            nodeName,
            bootID: "bench",
            observedAt: new Date().toISOString(),
            source: "Injected",
            pfn: `0x${pfn.toString(16)}`,
            severity: "ActionOptional",
            pageType: "huge page",
            result: "Recovered",
            hugepage: { size: "2Mi", headPfn: `0x${(pfn - 7).toString(16)}`, numaNode: 0 },
            mappers: [
              {
                pid: 1000 + k,
                command: "app",
                podUID: uids.get(`pod-${k}`),
                podNamespace: "bench",
                podName: `pod-${k}`,
                container: "app",
                mapping: "Private",
                killPolicy: "Default",
              },
            ],
          },
        },
      });
    });
    let events: StormEvent[] = [];
    for (let tries = 0; tries < 1200; tries++) {
      events = (await rest.request<{ items: StormEvent[] }>("GET", `${crd}/memoryerrorevents`)).items.filter((e) => names.has(e.metadata.name));
      if (events.length === names.size && events.every((e) => e.status?.pods?.length && e.status.pods.every((p) => p.state === "Done"))) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const stormSeconds = (Date.now() - stormStart) / 1000;
    clearInterval(sampler);
    const after = await metric(port, "mce_operator_api_requests_total");
    const heapUsedMiB = (await metric(port, "nodejs_heap_size_used_bytes")) / 2 ** 20;
    const { rssMiB, cpuSeconds } = procSample(pid);
    const decision = events.flatMap((e) => (e.status?.decidedAt ? [Date.parse(e.status.decidedAt) - Date.parse(e.spec.observedAt)] : []));
    const eviction = events.flatMap((e) =>
      (e.status?.pods ?? []).flatMap((p) => (p.lastAttemptAt ? [Date.parse(p.lastAttemptAt) - Date.parse(e.spec.observedAt)] : [])),
    );
    return {
      nodes,
      pods: nodes * PODS_PER_NODE,
      events: names.size,
      decisionP50Ms: percentile(decision, 50),
      decisionP99Ms: percentile(decision, 99),
      evictionP50Ms: percentile(eviction, 50),
      evictionP99Ms: percentile(eviction, 99),
      operatorRssMiB: Number(rssMiB.toFixed(1)),
      operatorHeapUsedMiB: Number(heapUsedMiB.toFixed(1)),
      operatorPeakRssMiB: Number(Math.max(peak, rssMiB).toFixed(1)),
      operatorCpuSecondsDuringStorm: Number((cpuSeconds - cpuBefore).toFixed(2)),
      stormSeconds: Number(stormSeconds.toFixed(2)),
      apiRequestsPerEvent: Number(((after - before) / names.size).toFixed(1)),
      syncSeconds: Number(syncSeconds.toFixed(1)),
    };
  } finally {
    child.kill("SIGTERM");
    await new Promise((r) => child.once("exit", r));
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "mce-bench-"));
  const cluster = await startControlPlane(dir);
  // Interrupted, the benchmark still takes its cluster down.
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      stopControlPlane(cluster);
      process.exit(130);
    });
  const results: Result[] = [];
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    const rest = new KubeRest(kc);
    await applyCrdFiles(rest);
    for (const ns of ["bench", "mce-system"]) await rest.request("POST", "/api/v1/namespaces", { body: { metadata: { name: ns } } });
    await new Promise((r) => setTimeout(r, 2000));
    await rest.request("POST", `${crd}/containmentpolicies`, {
      body: {
        apiVersion: `${group}/${version}`,
        kind: "ContainmentPolicy",
        metadata: { name: "bench" },
        spec: { mode: "Enforce", escalation: { taintAfter: 100, cordonAfter: 200 }, safety: { maxEvictionsInFlight: 1000 } },
      },
    });
    let have = 0;
    for (const [i, scale] of scales.entries()) {
      const t = Date.now();
      await addNodes(rest, have, scale);
      have = scale;
      console.log(`${scale} nodes, ${scale * PODS_PER_NODE} pods created in ${((Date.now() - t) / 1000).toFixed(0)} s`);
      const r = await storm(rest, scale, cluster.kubeconfig, i);
      results.push(r);
      console.log(
        `${r.nodes} nodes, ${r.pods} pods, ${r.events} events: decision p50 ${r.decisionP50Ms} ms p99 ${r.decisionP99Ms} ms; eviction p50 ${r.evictionP50Ms} ms p99 ${r.evictionP99Ms} ms; ` +
          `operator RSS ${r.operatorRssMiB} MiB (peak ${r.operatorPeakRssMiB}, heap used ${r.operatorHeapUsedMiB}), CPU ${r.operatorCpuSecondsDuringStorm} s over ${r.stormSeconds} s; ${r.apiRequestsPerEvent} API requests per event; cache sync ${r.syncSeconds} s`,
      );
    }
  } finally {
    stopControlPlane(cluster);
  }
  mkdirSync("bench/results", { recursive: true });
  writeFileSync(
    "bench/results/operator.json",
    `${JSON.stringify({ date: new Date().toISOString(), commit, node: process.version, cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, eventsPerSecond: RATE || "burst", results }, null, 2)}\n`,
  );
  console.log("saved bench/results/operator.json");
}

await main();
