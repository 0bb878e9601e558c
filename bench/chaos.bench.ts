// The storm under chaos, on the real local control plane: every node's agent replays memory errors on
// hugepages its pods map while agents and operator replicas are killed with SIGKILL at random moments and
// the API server is taken down again and again. At the end one table: kernel lines fed; events expected,
// created, duplicated, missing; evictions expected, issued, repeated, missing; events stuck in a phase
// that is not final; samples where more nodes were tainted or cordoned than the budget allows. Saved as
// bench/results/chaos.json. CHAOS_SECONDS (storm length, default 300), CHAOS_NODES (6), CHAOS_KILLS
// (agent and operator kills each, 100), CHAOS_OUTAGES (API-server outages of 5-30 s, 10), CHAOS_SEED.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import { writeFakeHost, writeFakeProcess } from "../agent/fake-host.ts";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import { group, nodeLabel, version } from "../crds/naming.ts";
import { KubeRest } from "../operator/kube/rest.ts";
import {
  kwokNodeAnnotation,
  startComponent,
  startControlPlane,
  stopComponent,
  stopControlPlane,
  type ClusterState,
} from "../test/e2e/cluster/control-plane.ts";
import { applyCrdFiles } from "../test/e2e/cluster/objects.ts";

const SECONDS = Number(process.env.CHAOS_SECONDS ?? 300);
const NODES = Number(process.env.CHAOS_NODES ?? 6);
const KILLS = Number(process.env.CHAOS_KILLS ?? 100);
const OUTAGES = Number(process.env.CHAOS_OUTAGES ?? 10);
const ERRORS_PER_NODE = Math.max(1, Math.floor(SECONDS / 6));
const BUDGET_PERCENT = 34;
const crd = `/apis/${group}/${version}`;
const namespace = "chaos";
const bootID = "c4a05c4a-0000-4000-8000-000000000001";

// A seeded generator, so a run can be repeated.
let seed = Number(process.env.CHAOS_SEED ?? 1);
const random = (): number => {
  seed = (seed * 1103515245 + 12345) % 2 ** 31;
  return seed / 2 ** 31;
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

interface Managed {
  name: string;
  args: string[];
  child?: ChildProcess;
  kills: number;
}

function launch(process_: Managed): void {
  process_.child = spawn("node_modules/.bin/node", process_.args, { stdio: "ignore" });
}

function kill(process_: Managed): void {
  process_.child?.kill("SIGKILL");
  process_.kills += 1;
}

const pfnOf = (node: number, error: number): number => 0x40000 + node * 0x8000 + error * 0x200 + 5;

/** A /dev/kmsg-style replay: the verdicts still to come, timed from now (the agent times lines from its own start). */
function writeReplay(file: string, node: number, elapsedSeconds: number): void {
  const lines = Array.from({ length: ERRORS_PER_NODE }, (_, e) => {
    const at = Math.max(0, 3 + (e * (SECONDS - 10)) / ERRORS_PER_NODE - elapsedSeconds);
    return `3,${e + 1},${Math.round(at * 1e6)},-;Memory failure: 0x${pfnOf(node, e).toString(16)}: recovery action for huge page: Recovered`;
  });
  // The first record sets the clock: a leading record in the past keeps every later offset right.
  writeFileSync(file, `6,0,0,-;chaos replay\n${lines.join("\n")}\n`);
}

async function list<T>(rest: KubeRest, path: string): Promise<T[]> {
  return (await rest.request<{ items: T[] }>("GET", path)).items;
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "mce-chaos-"));
  const cluster: ClusterState = await startControlPlane(dir);
  const managed: Managed[] = [];
  const stopAll = (): void => {
    for (const m of managed) m.child?.kill("SIGKILL");
    stopControlPlane(cluster);
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const)
    process.once(signal, () => {
      stopAll();
      process.exit(130);
    });
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfig);
    const rest = new KubeRest(kc);
    await applyCrdFiles(rest);
    for (const ns of [namespace, "mce-system"]) await rest.request("POST", "/api/v1/namespaces", { body: { metadata: { name: ns } } });
    await sleep(2000);
    await rest.request("POST", `${crd}/containmentpolicies`, {
      body: {
        apiVersion: `${group}/${version}`,
        kind: "ContainmentPolicy",
        metadata: { name: "chaos" },
        spec: {
          mode: "Enforce",
          nodeSelector: { matchLabels: { "mce-chaos": "true" } },
          podActions: { eviction: { backoff: "1s" } },
          escalation: { taintAfter: 3, cordonAfter: 6, window: "1h" },
          safety: {
            maxUnavailableNodesPercent: BUDGET_PERCENT,
            maxEvictionsInFlight: 1000,
            circuitBreaker: { maxNodeActions: 1000, window: "1h" },
            cooldown: "1s",
          },
        },
      },
    });
    const resources = { cpu: "64", memory: "256Gi", pods: "500", "hugepages-2Mi": `${2 * (ERRORS_PER_NODE + 8)}Mi` };
    const nodeName = (n: number): string => `chaos-${n}`;
    console.log(`${NODES} nodes, ${ERRORS_PER_NODE} errors each over ${SECONDS} s; ${KILLS} agent and ${KILLS} operator kills, ${OUTAGES} API-server outages`);
    const hosts: { root: string; state: string; replay: string }[] = [];
    for (let n = 0; n < NODES; n++) {
      await rest.request("POST", "/api/v1/nodes", {
        body: {
          metadata: { name: nodeName(n), annotations: { [kwokNodeAnnotation.key]: kwokNodeAnnotation.value }, labels: { type: "kwok", "mce-chaos": "true" } },
          status: { capacity: resources, allocatable: resources },
        },
      });
      const root = join(dir, `host-${n}`);
      writeFakeHost(root, { bootID, pools: [{ size: "2Mi", numaNode: 0, total: ERRORS_PER_NODE + 8, free: 8 }], earlyKill: false, recovery: true });
      for (let e = 0; e < ERRORS_PER_NODE; e++) {
        const res = { cpu: "10m", memory: "16Mi", "hugepages-2Mi": "2Mi" };
        const pod = await rest.request<{ metadata: { uid: string } }>("POST", `/api/v1/namespaces/${namespace}/pods`, {
          body: {
            metadata: { name: `w-${n}-${e}` },
            spec: {
              nodeName: nodeName(n),
              terminationGracePeriodSeconds: 0,
              containers: [{ name: "app", image: "registry.k8s.io/pause:3.10", resources: { requests: res, limits: res } }],
            },
          },
        });
        const uid = pod.metadata.uid.replaceAll("-", "_");
        writeFakeProcess(join(root, "proc"), {
          pid: 10_000 + e,
          comm: `w-${e}`,
          cgroup: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid}.slice/cri-containerd-${"cd".repeat(32)}.scope\n`,
          vmas: [{ start: 0x7f0000000000, size: "2Mi", pfns: [pfnOf(n, e) - 5] }],
        });
      }
      const state = join(dir, `state-${n}`);
      mkdirSync(state);
      hosts.push({ root, state, replay: join(dir, `replay-${n}.txt`) });
    }
    // Every pod Running before the storm.
    for (;;) {
      const pods = await list<{ status?: { phase?: string } }>(rest, `/api/v1/namespaces/${namespace}/pods`);
      if (pods.filter((p) => p.status?.phase === "Running").length === NODES * ERRORS_PER_NODE) break;
      await sleep(1000);
    }

    const operators: Managed[] = ["op-a", "op-b"].map((identity) => ({
      name: identity,
      kills: 0,
      args: [
        "operator/cli.ts",
        "run",
        `--kubeconfig=${cluster.kubeconfig}`,
        "--namespace=mce-system",
        "--metrics-port=0",
        `--identity=${identity}`,
        "--lease-duration=4s",
        "--renew-deadline=3s",
        "--retry-period=500ms",
        "--resync=10s",
      ],
    }));
    const agents: Managed[] = hosts.map((h, n) => ({
      name: nodeName(n),
      kills: 0,
      args: [
        "agent/main.ts",
        ...["--node-name", nodeName(n), "--kubeconfig", cluster.kubeconfig, "--host-root", h.root, "--state-dir", h.state],
        ...["--replay", h.replay, "--metrics-port", "0", "--health-interval", "1", "--index-interval", "1"],
      ],
    }));
    managed.push(...operators, ...agents);
    const started = Date.now();
    const elapsed = (): number => (Date.now() - started) / 1000;
    agents.forEach((a, n) => {
      writeReplay(hosts[n]?.replay ?? "", n, 0);
      launch(a);
    });
    for (const o of operators) launch(o);

    // Budget: how many nodes carry the operator's taint or cordon, sampled through the storm.
    const allowed = Math.floor((NODES * BUDGET_PERCENT) / 100);
    let samples = 0;
    let overBudget = 0;
    let maxActioned = 0;
    const sampling = { on: true };
    const sampler = (async () => {
      while (sampling.on) {
        try {
          const nodes = await list<{ spec?: { unschedulable?: boolean; taints?: { key: string }[] } }>(rest, "/api/v1/nodes?labelSelector=mce-chaos%3Dtrue");
          const actioned = nodes.filter(
            (x) => x.spec?.unschedulable === true || (x.spec?.taints ?? []).some((t) => t.key === "mce-operator.io/memory-failing"),
          ).length;
          samples += 1;
          maxActioned = Math.max(maxActioned, actioned);
          if (actioned > allowed) overBudget += 1;
        } catch {
          // The API server is down: nothing to sample.
        }
        await sleep(1000);
      }
    })();

    // Chaos: kills spread over the storm at random moments, outages between them.
    const chaosSeconds = SECONDS - 10;
    const agentKillAt = Array.from({ length: KILLS }, () => random() * chaosSeconds).sort((a, b) => a - b);
    const operatorKillAt = Array.from({ length: KILLS }, () => random() * chaosSeconds).sort((a, b) => a - b);
    const outages = Array.from({ length: OUTAGES }, (_, i) => ({ at: ((i + 0.5) * chaosSeconds) / OUTAGES, seconds: 5 + Math.round(random() * 25) }));
    let outageSeconds = 0;
    const chaos = [
      (async () => {
        for (const at of agentKillAt) {
          await sleep(Math.max(0, at - elapsed()) * 1000);
          const n = Math.floor(random() * agents.length);
          const agent = agents[n];
          if (!agent) continue;
          kill(agent);
          await sleep(200 + random() * 800);
          writeReplay(hosts[n]?.replay ?? "", n, elapsed());
          launch(agent);
        }
      })(),
      (async () => {
        for (const at of operatorKillAt) {
          await sleep(Math.max(0, at - elapsed()) * 1000);
          const operator = operators[Math.floor(random() * operators.length)];
          if (!operator) continue;
          kill(operator);
          await sleep(200 + random() * 800);
          launch(operator);
        }
      })(),
      (async () => {
        for (const outage of outages) {
          await sleep(Math.max(0, outage.at - elapsed()) * 1000);
          const argv = stopComponent(cluster, "kube-apiserver");
          await sleep(outage.seconds * 1000);
          outageSeconds += outage.seconds;
          await startComponent(cluster, "kube-apiserver", argv);
        }
      })(),
    ];
    const progress = setInterval(() => {
      console.log(
        `  ${Math.round(elapsed())} s: ${agents.reduce((s, a) => s + a.kills, 0)} agent kills, ${operators.reduce((s, o) => s + o.kills, 0)} operator kills, ${outageSeconds} s of outage`,
      );
    }, 30_000);
    await Promise.all(chaos);
    clearInterval(progress);

    // The storm's lines all come within SECONDS; then everything must settle on its own.
    const expectedPfns = new Set(Array.from({ length: NODES }, (_, n) => Array.from({ length: ERRORS_PER_NODE }, (_, e) => pfnOf(n, e))).flat());
    const deadline = Date.now() + (SECONDS + 180) * 1000 - (Date.now() - started);
    let events: MemoryErrorEvent[] = [];
    const final = (e: MemoryErrorEvent): boolean => e.status?.phase !== undefined && e.status.phase !== "Pending";
    while (Date.now() < deadline) {
      try {
        events = await list<MemoryErrorEvent>(rest, `${crd}/memoryerrorevents`);
        if (events.length >= expectedPfns.size && events.every(final)) break;
      } catch {
        // The API server is coming back.
      }
      await sleep(2000);
    }
    const settledSeconds = elapsed();
    sampling.on = false;
    await sampler;
    const kube = await list<{ reason?: string; involvedObject: { uid?: string; name?: string } }>(rest, `/api/v1/namespaces/${namespace}/events`);
    const pods = await list<{ metadata: { name: string } }>(rest, `/api/v1/namespaces/${namespace}/pods`);
    const evictions = new Map<string, number>();
    for (const e of kube.filter((x) => x.reason === "EvictedForMemoryError"))
      evictions.set(e.involvedObject.name ?? "", (evictions.get(e.involvedObject.name ?? "") ?? 0) + 1);
    const byPfn = new Map<number, number>();
    for (const e of events) byPfn.set(Number.parseInt(e.spec.pfn, 16), (byPfn.get(Number.parseInt(e.spec.pfn, 16)) ?? 0) + 1);
    const eventsByNode = events.filter((e) => e.metadata.labels?.[nodeLabel]?.startsWith("chaos-"));
    const result = {
      date: new Date().toISOString(),
      commit: execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      cores: cpus().length,
      seed: Number(process.env.CHAOS_SEED ?? 1),
      nodes: NODES,
      stormSeconds: SECONDS,
      settledAfterSeconds: Math.round(settledSeconds),
      agentKills: agents.reduce((s, a) => s + a.kills, 0),
      operatorKills: operators.reduce((s, o) => s + o.kills, 0),
      apiServerOutages: OUTAGES,
      apiServerOutageSeconds: outageSeconds,
      linesFed: NODES * ERRORS_PER_NODE,
      events: {
        expected: expectedPfns.size,
        created: eventsByNode.length,
        duplicated: [...byPfn.values()].filter((c) => c > 1).length,
        missing: [...expectedPfns].filter((p) => !byPfn.has(p)).length,
      },
      // Every pod maps one poisoned hugepage: each must be evicted once. A pod gone was evicted; a
      // second EvictedForMemoryError Event for one pod is a repeated eviction.
      evictions: {
        expected: NODES * ERRORS_PER_NODE,
        issued: NODES * ERRORS_PER_NODE - pods.length,
        repeated: [...evictions.values()].filter((c) => c > 1).length,
        missing: pods.length,
        noticesPosted: [...evictions.values()].reduce((s, c) => s + c, 0),
      },
      eventsNotFinal: events.filter((e) => !final(e)).length,
      budget: { allowedNodes: allowed, maxActionedNodes: maxActioned, samples, samplesOverBudget: overBudget },
    };
    console.log(
      [
        "",
        "| chaos | |",
        "| --- | --- |",
        `| storm | ${NODES} nodes, ${result.linesFed} kernel lines over ${SECONDS} s, settled after ${result.settledAfterSeconds} s |`,
        `| chaos | ${result.agentKills} agent and ${result.operatorKills} operator SIGKILLs, ${OUTAGES} API-server outages (${outageSeconds} s) |`,
        `| events | expected ${result.events.expected}, created ${result.events.created}, duplicated ${result.events.duplicated}, missing ${result.events.missing} |`,
        `| evictions | expected ${result.evictions.expected}, issued ${result.evictions.issued}, repeated ${result.evictions.repeated}, missing ${result.evictions.missing} |`,
        `| stuck | ${result.eventsNotFinal} events not in a final phase |`,
        `| budget | at most ${maxActioned} of ${NODES} nodes tainted or cordoned (allowed ${allowed}); ${overBudget} of ${samples} samples over |`,
        "",
      ].join("\n"),
    );
    mkdirSync("bench/results", { recursive: true });
    writeFileSync("bench/results/chaos.json", `${JSON.stringify(result, null, 2)}\n`);
    console.log("saved bench/results/chaos.json");
  } finally {
    stopAll();
  }
}

await main();
