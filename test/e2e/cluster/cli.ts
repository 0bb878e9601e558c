// npm run cluster -- up | down | status | bench
// Runs the e2e control plane by hand; its state lives in one directory
// (MCE_CLUSTER_DIR, default ${TMPDIR:-/tmp}/mce-operator-cluster).
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { controlPlaneStatus, readState, startControlPlane, stopControlPlane, type ClusterState } from "./control-plane.ts";

const dir = process.env.MCE_CLUSTER_DIR ?? join(tmpdir(), "mce-operator-cluster");
const mib = (bytes: number): number => Math.round(bytes / 2 ** 20);

async function up(): Promise<void> {
  const state = await startControlPlane(dir);
  console.log(`control plane ${state.kubernetesVersion} ready in ${(state.readyMs / 1000).toFixed(1)}s`);
  console.log(`export KUBECONFIG=${state.kubeconfig}`);
}

function down(): void {
  const state = readState(dir);
  if (state === undefined) {
    console.log(`no cluster in ${dir}`);
    return;
  }
  stopControlPlane(state);
  console.log(`stopped; removed ${dir}`);
}

async function status(): Promise<boolean> {
  const state = readState(dir);
  if (state === undefined) {
    console.log(`no cluster in ${dir}`);
    return false;
  }
  const components = await controlPlaneStatus(state);
  console.log(`cluster in ${dir}, started ${state.startedAt}, KUBECONFIG=${state.kubeconfig}`);
  for (const c of components) {
    const health = c.running ? (c.healthy ? "healthy" : "UNHEALTHY") : "NOT RUNNING";
    console.log(`  ${c.name.padEnd(24)} pid ${String(c.pid).padEnd(8)} ${health.padEnd(12)} ${mib(c.rssBytes)} MiB`);
  }
  console.log(`  total RSS ${mib(components.reduce((sum, c) => sum + c.rssBytes, 0))} MiB`);
  return components.every((c) => c.healthy);
}

/**
 * Warm start-up figures: starts and stops a fresh cluster `runs` times, taking
 * the time to ready and the components' RSS once settled; merged into the
 * results file so the cold-build figures recorded there are kept.
 */
async function bench(runs: number, settleMs: number): Promise<void> {
  const results = new URL("../../../bench/results/control-plane.json", import.meta.url);
  const startSeconds: number[] = [];
  const rssMiB: number[] = [];
  let perComponent: Record<string, number> = {};
  for (let run = 0; run < runs; run++) {
    let state: ClusterState | undefined;
    try {
      state = await startControlPlane(mkdtempSync(join(tmpdir(), "mce-bench-")));
      startSeconds.push(state.readyMs / 1000);
      await new Promise((resolve) => setTimeout(resolve, settleMs));
      const components = await controlPlaneStatus(state);
      perComponent = Object.fromEntries(components.map((c) => [c.name, mib(c.rssBytes)]));
      rssMiB.push(mib(components.reduce((sum, c) => sum + c.rssBytes, 0)));
      console.log(`run ${run + 1}: ready in ${startSeconds.at(-1)?.toFixed(1)}s, RSS ${rssMiB.at(-1)} MiB`);
    } finally {
      if (state) stopControlPlane(state);
    }
  }
  const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;
  const previous = existsSync(results) ? (JSON.parse(readFileSync(results, "utf8")) as Record<string, unknown>) : {};
  const warmStart = {
    measuredAt: new Date().toISOString(),
    runs,
    startSeconds,
    medianStartSeconds: median(startSeconds),
    settleSeconds: settleMs / 1000,
    rssMiB,
    medianRssMiB: median(rssMiB),
    lastRunRssMiBPerComponent: perComponent,
  };
  writeFileSync(results, JSON.stringify({ ...previous, warmStart }, null, 2) + "\n");
  console.log(`median start ${warmStart.medianStartSeconds}s, median RSS ${warmStart.medianRssMiB} MiB -> ${results.pathname}`);
}

const [command, arg] = process.argv.slice(2);
switch (command) {
  case "up":
    await up();
    break;
  case "down":
    down();
    break;
  case "status":
    process.exitCode = (await status()) ? 0 : 1;
    break;
  case "bench":
    await bench(Number(arg ?? 5), 15_000);
    break;
  default:
    console.error("usage: npm run cluster -- up | down | status | bench [runs]");
    process.exitCode = 2;
}
