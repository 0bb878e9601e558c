// `npm run demo [SCENARIO.yaml]`: the main job on a real cluster, with nothing installed by hand. Brings
// up the local control plane, creates the scenario's KWOK nodes, pods, budgets and policies, starts the
// operator and one agent per node (each reading a fake /proc and /sys that map the scenario's hugepages
// and replaying the scenario's kernel lines in place of /dev/kmsg), and prints each error, the decision
// with its reason and the actions on the cluster as they happen. Ctrl-C tears everything down.
// --kubeconfig FILE uses an existing cluster instead; --exit-when-done stops once every event is final.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { parseArgs } from "node:util";
import { KubeConfig } from "@kubernetes/client-node";
import { writeFakeHost, writeFakeProcess } from "../../agent/fake-host.ts";
import type { MemoryErrorEvent } from "../../crds/generated.ts";
import { group, version } from "../../crds/naming.ts";
import { formatBytes, parseQuantity } from "../../crds/quantity.ts";
import { HUGEPAGE_SIZES, hugepageBytes, pagesPerHugepage, parseHex } from "../../kernel/pfn.ts";
import { ApiError, isUnreachable } from "../../runtime/api.ts";
import { KubeRest } from "../../operator/kube/rest.ts";
import { parseDuration } from "../../operator/model/duration.ts";
import { selectorMatches } from "../../operator/model/selector.ts";
import { parseScenario } from "../../operator/simulate/scenario.ts";
import type { Scenario, ScenarioNode } from "../../operator/simulate/scenario.ts";
import { kwokNodeAnnotation, startControlPlane, stopControlPlane } from "./cluster/control-plane.ts";
import type { ClusterState } from "./cluster/control-plane.ts";
import { applyCrdFiles } from "./cluster/objects.ts";

const { values, positionals } = parseArgs({ allowPositionals: true, options: { kubeconfig: { type: "string" }, "exit-when-done": { type: "boolean" } } });
const file = positionals[0] ?? "examples/dpdk-private-2m.yaml";
const scenario = parseScenario(readFileSync(file, "utf8"), file);
const work = mkdtempSync(join(tmpdir(), "mce-demo-"));
const children: ChildProcess[] = [];
let cluster: ClusterState | undefined;
const say = (text: string): void => {
  process.stdout.write(`${text}\n`);
};

let tornDown = false;
function teardown(): void {
  if (tornDown) return;
  tornDown = true;
  for (const child of children) child.kill("SIGTERM");
  if (cluster) stopControlPlane(cluster);
  rmSync(work, { recursive: true, force: true });
}

for (const signal of ["SIGINT", "SIGTERM"] as const)
  process.once(signal, () => {
    say("\ntearing down");
    teardown();
    process.exitCode = 130;
  });

function expandNodes(s: Scenario): (ScenarioNode & { name: string })[] {
  return s.nodes.flatMap((n) => Array.from({ length: n.replicas ?? 1 }, (_, i) => ({ ...n, name: n.replicas ? `${n.name}-${i}` : n.name })));
}

/** The kernel lines each node replays: `<offset-seconds> <line>`. */
function replayFor(nodeName: string, labels: Record<string, string>): string {
  return scenario.timeline
    .filter((e) => e.kernel && (e.node === nodeName || (e.nodes && selectorMatches(e.nodes, labels))))
    .flatMap((e) =>
      (e.kernel ?? "")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((line) => `${(3 + parseDuration(e.at, "at") / 1000).toFixed(3)} ${line}`),
    )
    .join("\n");
}

function start(name: string, args: string[], onLine: (entry: Record<string, unknown>) => void): ChildProcess {
  const child = spawn("node_modules/.bin/node", args, { stdio: ["ignore", "pipe", "inherit"] });
  children.push(child);
  createInterface({ input: child.stdout }).on("line", (line) => {
    try {
      onLine(JSON.parse(line) as Record<string, unknown>);
    } catch {
      say(`[${name}] ${line}`);
    }
  });
  return child;
}

async function main(): Promise<void> {
  let kubeconfig = values.kubeconfig;
  if (!kubeconfig) {
    say("starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)");
    cluster = await startControlPlane(join(work, "cluster"));
    kubeconfig = cluster.kubeconfig;
  }
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  const rest = new KubeRest(kc);
  await applyCrdFiles(rest);
  const namespaces = new Set(["mce-system", ...scenario.pods.map((p) => p.namespace ?? "default")]);
  for (const ns of namespaces) {
    await rest.request("POST", "/api/v1/namespaces", { body: { metadata: { name: ns } } }).catch(() => undefined);
    // Pod admission needs the namespace's default ServiceAccount, which the controller-manager creates.
    for (
      let i = 0;
      !(await rest.request("GET", `/api/v1/namespaces/${ns}/serviceaccounts/default`).then(
        () => true,
        () => false,
      ));
      i++
    ) {
      if (i > 100) throw new Error(`namespace ${ns} has no default ServiceAccount after 20 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  for (const policy of scenario.policies)
    await rest.request("PATCH", `/apis/${group}/${version}/containmentpolicies/${policy.metadata.name}`, {
      query: { fieldManager: "demo", force: true },
      patch: "apply",
      body: { apiVersion: `${group}/${version}`, kind: "ContainmentPolicy", metadata: { name: policy.metadata.name }, spec: policy.spec },
    });
  const nodes = expandNodes(scenario);
  say(`${file}: ${scenario.description ?? ""}`);
  for (const n of nodes) {
    const capacity: Record<string, string> = { cpu: "64", memory: "256Gi", pods: "110" };
    for (const size of HUGEPAGE_SIZES) {
      const bytes = n.allocatable?.[size]
        ? parseQuantity(n.allocatable[size])
        : (n.pools ?? []).filter((p) => p.size === size).reduce((sum, p) => sum + p.total * hugepageBytes(size), 0);
      if (bytes > 0) capacity[`hugepages-${size}`] = formatBytes(bytes);
    }
    await rest.request("POST", "/api/v1/nodes", {
      body: {
        metadata: { name: n.name, labels: { ...n.labels, type: "kwok" }, annotations: { [kwokNodeAnnotation.key]: kwokNodeAnnotation.value } },
        status: { capacity, allocatable: capacity },
      },
    });
    say(
      `node ${n.name}: ${
        Object.entries(capacity)
          .filter(([k]) => k.startsWith("hugepages"))
          .map(([k, v]) => `${k} ${v}`)
          .join(", ") || "no hugepages"
      }`,
    );
  }
  const uids = new Map<string, string>();
  for (const p of scenario.pods) {
    const namespace = p.namespace ?? "default";
    const resources: Record<string, string> = {
      cpu: "100m",
      memory: "64Mi",
      ...Object.fromEntries(Object.entries(p.hugepages ?? {}).map(([s, q]) => [`hugepages-${s}`, q])),
    };
    const created = await rest.request<{ metadata: { uid: string } }>("POST", `/api/v1/namespaces/${namespace}/pods`, {
      body: {
        metadata: { name: p.name, labels: p.labels, annotations: p.annotations },
        spec: {
          nodeName: p.node,
          terminationGracePeriodSeconds: 0,
          containers: [
            { name: p.mappings?.[0]?.container ?? "app", image: "registry.k8s.io/pause:3.10", resources: { requests: resources, limits: resources } },
          ],
        },
      },
    });
    uids.set(`${namespace}/${p.name}`, created.metadata.uid);
    say(
      `pod ${namespace}/${p.name} on ${p.node}${
        p.hugepages
          ? ` (${Object.entries(p.hugepages)
              .map(([s, q]) => `hugepages-${s} ${q}`)
              .join(", ")})`
          : ""
      }`,
    );
  }
  for (const b of scenario.pdbs) {
    const namespace = b.namespace ?? "default";
    await rest.request("POST", `/apis/policy/v1/namespaces/${namespace}/poddisruptionbudgets`, {
      body: { metadata: { name: b.name }, spec: { selector: b.selector, maxUnavailable: b.disruptionsAllowed } },
    });
  }

  start(
    "operator",
    [
      "operator/cli.ts",
      "run",
      `--kubeconfig=${kubeconfig}`,
      "--namespace=mce-system",
      "--metrics-address=127.0.0.1",
      "--metrics-port=0",
      "--leader-elect=false",
    ],
    (e) => {
      if (e.msg === "operator started") say(`operator: metrics at http://${String(e.metrics)}/metrics`);
      if (e.level === "warn" || e.level === "error") say(`operator: ${JSON.stringify(e)}`);
    },
  );
  for (const n of nodes) {
    const root = join(work, "hosts", n.name);
    writeFakeHost(root, {
      release: n.kernelRelease ?? "6.1.0-56-amd64",
      earlyKill: n.earlyKill ?? false,
      recovery: true,
      pools: (n.pools ?? []).map((p) => ({ size: p.size, numaNode: p.numaNode ?? 0, total: p.total, free: p.free })),
    });
    for (const p of scenario.pods.filter((x) => x.node === n.name)) {
      const uid = uids.get(`${p.namespace ?? "default"}/${p.name}`) ?? "";
      for (const m of p.mappings ?? []) {
        const head = parseHex(m.headPfn, `${p.name} headPfn`);
        const cgroup = `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll("-", "_")}.slice/cri-containerd-${m.pid.toString(16).padStart(64, "0")}.scope\n`;
        writeFakeProcess(join(root, "proc"), {
          pid: m.pid,
          comm: m.command,
          cgroup,
          vmas: [
            {
              start: parseHex(m.virtualStart ?? "0x7f0000000000", "virtualStart"),
              size: m.size,
              shared: m.hugetlbfsFile !== undefined,
              path: m.hugetlbfsFile,
              pfns: Array.from({ length: m.count ?? 1 }, (_, i) => head + i * pagesPerHugepage(m.size)),
            },
          ],
        });
      }
    }
    const replay = join(work, `${n.name}.replay`);
    writeFileSync(replay, `${replayFor(n.name, n.labels ?? {})}\n`);
    mkdirSync(join(work, "state", n.name), { recursive: true });
    start(
      `agent ${n.name}`,
      [
        "agent/main.ts",
        `--node-name=${n.name}`,
        `--kubeconfig=${kubeconfig}`,
        `--host-root=${root}`,
        `--state-dir=${join(work, "state", n.name)}`,
        `--replay=${replay}`,
        "--metrics-port=0",
        "--index-interval=1",
        "--health-interval=5",
      ],
      (e) => {
        if (e.level === "error") say(`agent ${n.name} error: ${JSON.stringify(e)}`);
      },
    );
  }
  say(`operator and ${nodes.length} agent(s) started; kernel lines replay in 3 s\n`);
  await follow(rest, scenario.timeline.filter((e) => e.kernel).length > 0);
}

/** Prints every event, decision and action as the status changes, until Ctrl-C or, asked, all is final. */
async function follow(rest: KubeRest, expectEvents: boolean): Promise<void> {
  const seen = new Map<string, string>();
  const startedAt = Date.now();
  for (;;) {
    // A CRD just established may answer 429 while its storage initializes: look again shortly.
    const events = await rest.request<{ items: MemoryErrorEvent[] }>("GET", `/apis/${group}/${version}/memoryerrorevents`).then(
      (list) => list.items,
      (e: unknown) => {
        if (!isUnreachable(e) && !(e instanceof ApiError && e.status === 429)) throw e;
        return undefined;
      },
    );
    if (events === undefined) {
      await new Promise((r) => setTimeout(r, 500));
      continue;
    }
    for (const e of events) {
      const key = JSON.stringify([
        e.status?.phase,
        e.status?.pods?.map((p) => p.state),
        e.status?.quarantine?.map((q) => q.state),
        e.status?.nodeAction?.state,
      ]);
      const previous = seen.get(e.metadata.name);
      if (previous === key) continue;
      seen.set(e.metadata.name, key);
      const s = e.spec;
      if (previous === undefined)
        say(
          `● ${s.nodeName}: memory error at pfn ${s.pfn} (${s.severity}, ${s.pageType ?? "?"} → ${s.result ?? "?"}) reported as ${e.metadata.name}; mappers: ${(s.mappers ?? []).map((m) => `${m.podNamespace ?? ""}/${m.podName ?? m.command} pid ${m.pid}`).join(", ") || "none"}`,
        );
      const st = e.status;
      if (!st?.decidedAt) continue;
      if (previous === undefined || (JSON.parse(previous) as unknown[])[0] === null)
        say(`  kernel [${st.prediction?.kernelProfile ?? ""}]: ${st.prediction?.reason ?? ""}`);
      for (const p of st.pods ?? [])
        say(
          `  ${p.action} ${p.namespace}/${p.name}: ${p.state}${p.blockedBy ? ` (blocked by ${p.blockedBy})` : ""} — ${p.reason ?? ""}${p.message ? `; ${p.message}` : ""}`,
        );
      for (const q of st.quarantine ?? []) say(`  quarantine ${formatBytes(q.bytes)} of hugepages-${q.size}: ${q.state ?? ""}`);
      const node = st.nodeAction;
      if (node)
        say(
          `  node ${node.action}${node.state ? ` ${node.state}` : ""}${node.heldBy ? ` (${node.heldBy})` : ""}: ${node.reason ?? ""}${node.message ? `; ${node.message}` : ""}`,
        );
      say(`  phase ${st.phase ?? ""}${st.dryRun ? " (DryRun)" : ""}`);
    }
    const final = events.length > 0 && events.every((e) => e.status?.phase && e.status.phase !== "Pending");
    if (values["exit-when-done"] && ((final && Date.now() - startedAt > 8000) || (!expectEvents && Date.now() - startedAt > 8000))) return;
    if (process.exitCode === 130) return;
    await new Promise((r) => setTimeout(r, 500));
  }
}

main()
  .then(() => {
    say("done: every event reached a final phase");
    teardown();
  })
  .catch((e: unknown) => {
    process.stderr.write(`demo failed: ${e instanceof Error ? e.message : String(e)}\n`);
    teardown();
    process.exitCode = 1;
  });
