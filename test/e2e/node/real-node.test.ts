// The whole containment on a real node: the chart, unchanged, installed with helm onto the tier's
// control plane; its agent DaemonSet pod and operator Deployment pod run in containers (images built by
// a real engine) under containerd and a real kubelet in a QEMU guest with a real kernel, beside KWOK
// nodes. A real machine check from QEMU's monitor hits a workload pod's hugepage; every step from the
// kernel to the kubelet is asserted on the real component that carries it out.
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CustomObjectsApi, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { MemoryErrorEvent } from "../../../crds/generated.ts";
import { earlySignalAnnotation, group, lostRangesAnnotation, version } from "../../../crds/naming.ts";
import { clients, createHugepageNode, createNamespace, kubectl, waitFor, waitForPodGone, waitForPodRunning } from "../cluster/helpers.ts";
import { chartDir, helm, repoRoot, valuesFile } from "../chart/harness.ts";
import { inject as injectError, kernelLog, readMemory } from "../kernel/guest.ts";
import { getNodeHealth } from "../operator-harness.ts";
import { RealNode, readNodePrepared, type NodePrepared } from "./node.ts";

const nodeName = "mce-node-1";
const release = "mce";
const system = "mce-system";
const policyName = "default";

let prepared: NodePrepared;
let node: RealNode;
let apps: string;
let installed = false;
/** Figures for bench/results/real-node.json. */
const figures: Record<string, unknown> = {};

const { core } = clients();
const objects = (): CustomObjectsApi => clients().kubeConfig.makeApiClient(CustomObjectsApi);

function image(ref: string): { repository: string; tag: string; pullPolicy: string } {
  const at = ref.lastIndexOf(":");
  return { repository: ref.slice(0, at), tag: ref.slice(at + 1), pullPolicy: "Never" };
}

async function events(): Promise<MemoryErrorEvent[]> {
  const list = (await objects().listClusterCustomObject({ group, version, plural: "memoryerrorevents" })) as { items: MemoryErrorEvent[] };
  return list.items;
}

/** The real node's event for the hugepage that holds `pfn`, once `check` holds. */
async function waitForEventOn(pfn: number, what: string, check: (e: MemoryErrorEvent) => boolean, timeoutMs = 120_000): Promise<MemoryErrorEvent> {
  let last: MemoryErrorEvent | undefined;
  return waitFor(
    `MemoryErrorEvent for pfn 0x${pfn.toString(16)}: ${what}`,
    async () => {
      last = (await events()).find((e) => e.spec.nodeName === nodeName && Number(e.spec.pfn) >> 9 === pfn >> 9);
      return last !== undefined && check(last) && last;
    },
    { timeoutMs, intervalMs: 500 },
    () => `${JSON.stringify(last?.status ?? "no event")}\n${node.diagnostics()}`,
  );
}

/** A pod of the workload image: hwp maps one 2 MiB hugepage and logs every signal to the guest's /shared. */
async function startWorkload(name: string, options: { earlySignal?: boolean } = {}): Promise<{ pod: V1Pod; log: () => string; pid: number; base: number; pfn: number }> {
  const resources = { cpu: "50m", memory: "32Mi", "hugepages-2Mi": "2Mi" };
  await core.createNamespacedPod({
    namespace: apps,
    body: {
      metadata: { name, ...(options.earlySignal === true && { annotations: { [earlySignalAnnotation]: "true" } }) },
      spec: {
        nodeSelector: { "kubernetes.io/hostname": nodeName },
        containers: [
          {
            name: "workload",
            ...image(prepared.images.workload.ref),
            command: ["/bin/sh", "-c", `mkfifo /run/hwp/ctl && exec /hwp -l /log/${name}.log -c /run/hwp/ctl -s 2M -n 1 -k default`],
            resources: { requests: resources, limits: resources },
            volumeMounts: [
              { name: "log", mountPath: "/log" },
              { name: "run", mountPath: "/run/hwp" },
            ],
          },
        ],
        volumes: [
          { name: "log", hostPath: { path: "/shared/workloads", type: "DirectoryOrCreate" } },
          { name: "run", emptyDir: {} },
        ],
        restartPolicy: "Never",
        terminationGracePeriodSeconds: 10,
      },
    },
  });
  const pod = await waitForPodRunning(clients(), apps, name, { timeoutMs: 180_000, intervalMs: 500 });
  const path = join(node.vm.shared, "workloads", `${name}.log`);
  const log = (): string => (existsSync(path) ? readFileSync(path, "utf8") : "");
  const ready = await waitFor(`workload ${name} mapped its hugepage`, () => Promise.resolve(/ready pid=\d+ base=(0x[0-9a-f]+)/.exec(log()) ?? undefined), { timeoutMs: 60_000 }, log);
  const base = Number(ready[1]);
  // Its host pid, from the pod's cgroup as the kubelet made it (cgroupfs driver), and the pfn behind its
  // hugepage from the host's /proc/PID/pagemap (the container itself may not read pfns).
  const uid = pod.metadata?.uid ?? "";
  const pids = await node.vm.run(`for f in $(find /sys/fs/cgroup/kubepods -path '*pod${uid}*' -name cgroup.procs); do cat "$f"; done`);
  let pid = 0;
  for (const candidate of pids.split(/\s+/).filter((p) => p !== "")) {
    if ((await node.vm.sh(`readlink /proc/${candidate}/exe`)).output.trim() === "/hwp") pid = Number(candidate);
  }
  expect(pid, `hwp's pid among ${pids}`).toBeGreaterThan(0);
  const entry = (await node.vm.run(`dd if=/proc/${pid}/pagemap bs=8 skip=${base / 4096} count=1 2>/dev/null | od -An -tx8`)).trim();
  const value = BigInt(`0x${entry}`);
  expect(value >> 63n, `pagemap entry ${entry} present`).toBe(1n);
  const pfn = Number(value & ((1n << 55n) - 1n));
  return { pod, log, pid, base, pfn };
}

beforeAll(async () => {
  prepared = readNodePrepared();
  const kubeconfig = new KubeConfig();
  kubeconfig.loadFromFile(inject("kubeconfig"));
  const server = new URL(kubeconfig.getCurrentCluster()?.server ?? "");
  const booted = Date.now();
  node = await RealNode.boot(prepared, { name: nodeName, clusterDir: inject("clusterDir"), apiserverPort: Number(server.port) });
  figures.nodeReadySeconds = (Date.now() - booted) / 1000;
  // KWOK nodes beside the real one: the chart's DaemonSet lands there too, as on a mixed cluster.
  for (const kwok of ["kwok-a", "kwok-b"]) await createHugepageNode(clients(), { name: kwok, hugepages: { "hugepages-2Mi": "64Mi" } });
  apps = await createNamespace(clients(), "apps");

  // The values a user sets: where the images are, that they are already on the node, where the operator
  // runs, the self-healing mount, and an enforcing default policy.
  const values = {
    operator: { image: image(prepared.images.operator.ref), replicas: 1, nodeSelector: { "kubernetes.io/hostname": nodeName } },
    agent: { image: image(prepared.images.agent.ref), poolReplacement: { enabled: true } },
    defaultPolicy: { enabled: true, name: policyName, mode: "Enforce" },
  };
  const installedAt = Date.now();
  const install = await helm(["install", release, chartDir, "--namespace", system, "--create-namespace", "-f", valuesFile(values)], inject("kubeconfig"));
  installed = install.code === 0;
  if (!installed) throw new Error(`helm install failed: ${install.stderr}`);
  await waitFor(
    "the agent and operator pods Running and Ready on the real node",
    async () => {
      const pods = (await core.listNamespacedPod({ namespace: system, fieldSelector: `spec.nodeName=${nodeName}` })).items;
      const ready = (component: string): boolean =>
        pods.some((p) => p.metadata?.labels?.["app.kubernetes.io/component"] === component && p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"));
      return ready("agent") && ready("operator");
    },
    { timeoutMs: 600_000, intervalMs: 2000 },
    () => node.diagnostics(),
  );
  figures.chartReadySeconds = (Date.now() - installedAt) / 1000;
}, 1_200_000);

afterAll(async () => {
  if (installed) await helm(["uninstall", release, "--namespace", system, "--wait", "--timeout", "120s"], inject("kubeconfig"));
  await node?.stop();
  if (Object.keys(figures).length > 0) {
    writeFileSync(join(repoRoot, ".test-results", "real-node-figures.json"), `${JSON.stringify(figures, null, 2)}\n`);
  }
}, 300_000);

describe("the chart on a real node", () => {
  it("registers the guest's kubelet with the kernel's real hugepage pool", async () => {
    const n = await core.readNode({ name: nodeName });
    expect(n.status?.capacity?.["hugepages-2Mi"]).toBe("64Mi");
    expect(n.status?.nodeInfo?.containerRuntimeVersion).toMatch(/^containerd:\/\//);
    expect(n.status?.nodeInfo?.kernelVersion).toBe(prepared.release);
  });

  it("runs the agent under the chart's security context and mounts, and it reports the node's pools", async () => {
    const health = await waitFor("NodeMemoryHealth of the real node", async () => await getNodeHealth(nodeName).catch(() => undefined), { timeoutMs: 120_000, intervalMs: 1000 });
    const pools = health.spec.hugepagePools?.filter((p) => p.size === "2Mi") ?? [];
    expect(pools.reduce((sum, p) => sum + p.total, 0)).toBe(32);
    expect(health.spec.capabilities?.poolResize).toBe(true);
  });
});
