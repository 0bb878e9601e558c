// The whole containment on a real node: the chart, unchanged, installed with helm onto the tier's
// control plane; its agent DaemonSet pod and operator Deployment pod run in containers (images built by
// a real engine) under containerd and a real kubelet in a QEMU guest with a real kernel, beside KWOK
// nodes. A real machine check from QEMU's monitor hits a workload pod's hugepage; every step from the
// kernel to the kubelet is asserted on the real component that carries it out.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CustomObjectsApi, KubeConfig, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { MemoryErrorEvent } from "../../../crds/generated.ts";
import { earlySignalAnnotation, group, lostRangesAnnotation, version } from "../../../crds/naming.ts";
import { apiStatus, clients, createHugepageNode, createHugepagePod, createNamespace, kubectl, waitFor, waitForPodRunning } from "../cluster/helpers.ts";
import { chartDir, helm, repoRoot, valuesFile } from "../chart/harness.ts";
import { inject as injectError } from "../kernel/guest.ts";
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
/** Figures for .test-results/figures/real-node.json. */
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
async function startWorkload(
  name: string,
  options: { earlySignal?: boolean } = {},
): Promise<{ pod: V1Pod; log: () => string; pid: number; base: number; pfn: number }> {
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
            image: prepared.images.workload.ref,
            imagePullPolicy: "Never",
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
  const ready = await waitFor(
    `workload ${name} mapped its hugepage`,
    () => Promise.resolve(/ready pid=\d+ base=(0x[0-9a-f]+)/.exec(log()) ?? undefined),
    { timeoutMs: 60_000 },
    log,
  );
  const base = Number(ready[1]);
  // Its host pid, from the pod's cgroup as the kubelet made it (cgroupfs driver), and the pfn behind its
  // hugepage from the host's /proc/PID/pagemap (the container itself may not read pfns).
  const uid = pod.metadata?.uid ?? "";
  const pids = await podPids(uid);
  let pid = 0;
  for (const candidate of pids) {
    if ((await node.vm.sh(`readlink /proc/${candidate}/exe`)).output.trim() === "/hwp") pid = candidate;
  }
  expect(pid, `hwp's pid among ${pids.join(" ")}`).toBeGreaterThan(0);
  const entry = (await node.vm.run(`dd if=/proc/${pid}/pagemap bs=8 skip=${base / 4096} count=1 2>/dev/null | od -An -tx8`)).trim();
  const value = BigInt(`0x${entry}`);
  expect(value >> 63n, `pagemap entry ${entry} present`).toBe(1n);
  const pfn = Number(value & ((1n << 55n) - 1n));
  return { pod, log, pid, base, pfn };
}

/** The host pids of a pod's processes, from its cgroups as the kubelet made them. */
async function podPids(uid: string): Promise<number[]> {
  const out = await node.vm.run(`for f in $(find /sys/fs/cgroup/kubepods -path '*pod${uid}*' -name cgroup.procs); do cat "$f"; done`);
  return out
    .split(/\s+/)
    .filter((p) => p !== "")
    .map(Number);
}

async function agentPod(): Promise<V1Pod> {
  const pods = (
    await core.listNamespacedPod({ namespace: system, labelSelector: "app.kubernetes.io/component=agent", fieldSelector: `spec.nodeName=${nodeName}` })
  ).items;
  const pod = pods[0];
  if (pod === undefined) throw new Error(`no agent pod on ${nodeName}`);
  return pod;
}

/** The agent's /metrics, fetched inside its pod's network namespace (nothing outside the guest reaches it). */
async function agentMetrics(): Promise<string> {
  const pod = await agentPod();
  const pid = (await podPids(pod.metadata?.uid ?? "")).at(-1);
  const get = 'exec 3<>/dev/tcp/127.0.0.1/9464 && printf "GET /metrics HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3';
  return node.vm.run(`nsenter -t ${pid ?? 0} -n bash -c '${get}'`);
}

/** The end of the operator's log, read in the guest. */
async function operatorLog(): Promise<string> {
  const pods = (await core.listNamespacedPod({ namespace: system, labelSelector: "app.kubernetes.io/component=operator" })).items;
  const log = await node.containerLog(system, pods[0]?.metadata?.name ?? "", "operator");
  return log.split("\n").slice(-30).join("\n");
}

/** Waits until the agent's hugetlb index has seen exactly `count` mapped hugepages twice in a row. */
async function waitForIndexed(count: number): Promise<void> {
  let streak = 0;
  let last = "";
  await waitFor(
    `the agent's index to know ${count} mapped hugepage(s)`,
    async () => {
      last = /^mce_agent_index_hugepages .*/m.exec(await agentMetrics())?.[0] ?? "no mce_agent_index_hugepages";
      streak = last === `mce_agent_index_hugepages ${count}` ? streak + 1 : 0;
      return streak >= 2;
    },
    { timeoutMs: 90_000, intervalMs: 1000 },
    () => last,
  );
}

async function hugepagePool(): Promise<number> {
  const health = await getNodeHealth(nodeName);
  return (health.spec.hugepagePools ?? []).filter((p) => p.size === "2Mi").reduce((sum, p) => sum + p.total, 0);
}

/**
 * .test-results/figures/real-node.json (not tracked): what this run measured, with the commit and the CPU it ran
 * on. `npm run record -- node` copies it to bench/results/ on purpose.
 */
function saveFigures(): void {
  const commit = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8" }).trim();
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "unknown";
  const imageMiB = Object.fromEntries(Object.entries(prepared.images).map(([name, i]) => [name, Math.round((i.bytes / 2 ** 20) * 10) / 10]));
  const result = { commit, cpu, measuredAt: new Date().toISOString(), machine: "QEMU q35, TCG, 2 vCPU, 4 GiB", kernel: prepared.release, imageMiB, ...figures };
  mkdirSync(join(repoRoot, ".test-results", "figures"), { recursive: true });
  writeFileSync(join(repoRoot, ".test-results", "figures", "real-node.json"), `${JSON.stringify(result, null, 2)}\n`);
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
        pods.some(
          (p) =>
            p.metadata?.labels?.["app.kubernetes.io/component"] === component && p.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True"),
        );
      return ready("agent") && ready("operator");
    },
    { timeoutMs: 600_000, intervalMs: 2000 },
    () => node.diagnostics(),
  );
  figures.chartReadySeconds = (Date.now() - installedAt) / 1000;
}, 1_200_000);

afterAll(async () => {
  if (installed) await helm(["uninstall", release, "--namespace", system, "--wait", "--timeout", "120s"], inject("kubeconfig"));
  // Unset when the boot failed.
  await (node as RealNode | undefined)?.stop();
  if (Object.keys(figures).length > 0) saveFigures();
}, 300_000);

describe("the chart on a real node", () => {
  it("registers the guest's kubelet with the kernel's real hugepage pool", async () => {
    const n = await core.readNode({ name: nodeName });
    expect(n.status?.capacity?.["hugepages-2Mi"]).toBe("64Mi");
    expect(n.status?.nodeInfo?.containerRuntimeVersion).toMatch(/^containerd:\/\//);
    expect(n.status?.nodeInfo?.kernelVersion).toBe(prepared.release);
  });

  it("runs the agent under the chart's security context and mounts, and it reports the node's pools", async () => {
    const health = await waitFor("NodeMemoryHealth of the real node", async () => await getNodeHealth(nodeName).catch(() => undefined), {
      timeoutMs: 120_000,
      intervalMs: 1000,
    });
    const pools = health.spec.hugepagePools?.filter((p) => p.size === "2Mi") ?? [];
    expect(pools.reduce((sum, p) => sum + p.total, 0)).toBe(32);
    expect(health.spec.capabilities?.poolResize).toBe(true);
  });
});

describe("a real machine check on a real node", () => {
  let bystander: Awaited<ReturnType<typeof startWorkload>>;

  it("the agent names the pod and container from the real containerd cgroup, the operator evicts it, and the kubelet stops it before it touches the page", async () => {
    bystander = await startWorkload("bystander");
    const victim = await startWorkload("victim");
    await waitForIndexed(2);
    // The cgroup path as the node shows it, and as the agent reads it from inside its own cgroup namespace.
    const agentPid = (await podPids((await agentPod()).metadata?.uid ?? "")).at(-1) ?? 0;
    figures.cgroupPath = {
      node: (await node.vm.run(`cat /proc/${victim.pid}/cgroup`)).trim(),
      agent: (await node.vm.run(`nsenter -t ${agentPid} -C cat /proc/${victim.pid}/cgroup`)).trim(),
    };
    const raw = victim.pfn + 3;
    const injectedAt = Date.now();
    await injectError.machineCheck(node.vm, raw * 4096);
    const event = await waitForEventOn(
      victim.pfn,
      "the victim's eviction decided",
      (e) => e.status?.pods?.some((p) => p.name === "victim" && p.action === "Evict") === true,
    );
    const decidedAt = Date.now();
    expect(Number(event.spec.pfn)).toBe(raw);
    expect(event.spec.pageType).toBe("huge page");
    expect(event.spec.result).toBe("Recovered");
    const mapper = event.spec.mappers?.find((m) => m.pid === victim.pid);
    const status = (await core.readNamespacedPod({ namespace: apps, name: "victim" })).status?.containerStatuses?.[0]?.containerID ?? "";
    expect(mapper).toMatchObject({ podName: "victim", podNamespace: apps, podUID: victim.pod.metadata?.uid, container: "workload", command: "hwp" });
    expect(`containerd://${mapper?.containerID ?? ""}`).toBe(status);
    expect(event.spec.mappers?.some((m) => m.podName === "bystander")).toBe(false);

    // Gone from the API: the kubelet has stopped its containers and confirmed it.
    await waitFor(
      "the victim pod gone from the API",
      async () => {
        try {
          await core.readNamespacedPod({ namespace: apps, name: "victim" });
          return false;
        } catch (error) {
          return apiStatus(error) === 404;
        }
      },
      { timeoutMs: 120_000, intervalMs: 250 },
    );
    const goneAt = Date.now();
    // The kubelet's SIGTERM reached it, and it never touched the poisoned hugepage: no SIGBUS at all.
    expect(victim.log()).toMatch(/ sigterm$/m);
    expect(victim.log()).not.toMatch(/sigbus/);
    const decided = await waitForEventOn(
      victim.pfn,
      "the eviction done",
      (e) => e.status?.pods?.some((p) => p.name === "victim" && p.state === "Done") === true,
    );
    expect(decided.status?.phase).toBe("Contained");
    figures.machineCheckToDecisionSeconds = (decidedAt - injectedAt) / 1000;
    figures.machineCheckToPodGoneSeconds = (goneAt - injectedAt) / 1000;
  });

  it("quarantines the capacity the kernel removed: the real kubelet admits the placeholder and the real scheduler refuses a pod that fits only by stale capacity", async () => {
    // The kernel takes the private hugepage out of the pool when its last mapper exits; the kubelet
    // still advertises the pool it read at start.
    await waitFor("the agent to report the 2Mi pool one page short", async () => (await hugepagePool()) === 31, { timeoutMs: 120_000, intervalMs: 1000 });
    expect((await core.readNode({ name: nodeName })).status?.allocatable?.["hugepages-2Mi"]).toBe("64Mi");
    const placeholder = await waitFor(
      "the quarantine placeholder Running on the real node",
      async () => {
        const pods = (await core.listNamespacedPod({ namespace: system, labelSelector: "app.kubernetes.io/managed-by=mce-operator" })).items;
        return pods.find((p) => p.spec?.nodeName === nodeName && p.status?.phase === "Running");
      },
      { timeoutMs: 300_000, intervalMs: 1000 },
    ).catch(async (error: unknown) => {
      const pods = (await core.listNamespacedPod({ namespace: system })).items.map((p) => ({
        name: p.metadata?.name,
        node: p.spec?.nodeName,
        phase: p.status?.phase,
        conditions: p.status?.conditions,
        containers: p.status?.containerStatuses?.map((c) => c.state),
      }));
      throw new Error(`${String(error)}\n${JSON.stringify(pods)}\n${await operatorLog()}\n${node.diagnostics()}`, { cause: error });
    });
    expect(placeholder.spec?.containers[0]?.resources?.requests?.["hugepages-2Mi"]).toBe("2Mi");
    // 64Mi advertised − 2Mi bystander = 62Mi by stale capacity; the kernel has 60Mi free.
    await createHugepagePod(clients(), { namespace: apps, name: "stale-fit", hugepages: { "hugepages-2Mi": "62Mi" }, onlyOnto: nodeName });
    const refused = await waitFor(
      "the scheduler to refuse stale-fit",
      async () =>
        (await core.readNamespacedPod({ namespace: apps, name: "stale-fit" })).status?.conditions?.find(
          (c) => c.type === "PodScheduled" && c.reason === "Unschedulable",
        ),
      { timeoutMs: 60_000, intervalMs: 500 },
    );
    expect(refused.message).toContain("Insufficient hugepages-2Mi");
    await core.deleteNamespacedPod({ namespace: apps, name: "stale-fit", gracePeriodSeconds: 0 });
  });

  it("an opted-in pod receives the early signal inside its container; once it drops the range, the agent raises nr_hugepages through its read-write mount and the quarantine is released", async () => {
    const patch = { spec: { poolReplacement: { enabled: true, sizes: [{ size: "2Mi", maxPerWindow: 4 }], minFreeMemory: "256Mi" } } };
    const patched = await kubectl(["patch", "containmentpolicy", policyName, "--type", "merge", "-p", JSON.stringify(patch)]);
    expect(patched.stderr).toBe("");
    const opted = await startWorkload("opted-in", { earlySignal: true });
    await waitForIndexed(2);
    const before = await hugepagePool();
    await injectError.machineCheck(node.vm, (opted.pfn + 5) * 4096);
    const event = await waitForEventOn(
      opted.pfn,
      "the early signal decided",
      (e) => e.status?.pods?.some((p) => p.name === "opted-in" && p.action === "EarlySignal") === true,
    );
    expect(event.status?.poolReplacement).toMatchObject({ action: "Replace", size: "2Mi", afterMappersExit: true });
    await waitFor(
      "SIGUSR1 in the opted-in container",
      () => Promise.resolve(/ sigusr1$/m.test(opted.log())),
      { timeoutMs: 60_000, intervalMs: 500 },
      () => opted.log(),
    );
    const pod = await core.readNamespacedPod({ namespace: apps, name: "opted-in" });
    expect(pod.metadata?.annotations?.[lostRangesAnnotation]).toContain(`0x${opted.base.toString(16)}`);
    expect(pod.status?.phase).toBe("Running");
    expect(opted.log()).not.toMatch(/sigbus|sigterm/);

    // The application drops the lost range (its own FIFO, reached through the container's root).
    await node.vm.run(`echo munmap > /proc/${opted.pid}/root/run/hwp/ctl`);
    const given = await waitForEventOn(opted.pfn, "a replacement hugepage given", (e) => e.status?.poolReplacement?.state === "Given", 180_000);
    expect(given.status?.poolReplacementResult).toMatchObject({ state: "Given" });
    await waitFor("the pool back to where it was", async () => (await hugepagePool()) === before, { timeoutMs: 120_000, intervalMs: 1000 });
    await waitForEventOn(opted.pfn, "its quarantine released", (e) => e.status?.quarantine?.every((q) => q.state === "Released") === true, 120_000);
    const read = await node.vm.run("cat /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages");
    expect(Number(read.trim())).toBe(before);
  });

  it("leaves the bystander on the same node untouched", async () => {
    const pod = await core.readNamespacedPod({ namespace: apps, name: "bystander" });
    expect(pod.metadata?.uid).toBe(bystander.pod.metadata?.uid);
    expect(pod.status?.phase).toBe("Running");
    expect(pod.status?.containerStatuses?.[0]?.restartCount).toBe(0);
    expect(bystander.log()).not.toMatch(/sigbus|sigusr1|sigterm/);
    for (const e of await events()) expect(e.status?.pods?.map((p) => p.name) ?? []).not.toContain("bystander");
  });

  it("records the agent container's memory as the kubelet accounts it, and the sources it found", async () => {
    const pod = await agentPod();
    const id = (pod.status?.containerStatuses?.[0]?.containerID ?? "").replace("containerd://", "");
    const bytes = Number((await node.vm.run(`cat $(find /sys/fs/cgroup/kubepods -type d -name '${id}')/memory.current`)).trim());
    figures.agentMemoryCurrentMiB = Math.round((bytes / 2 ** 20) * 10) / 10;
    expect(bytes).toBeGreaterThan(0);
    // What the agent found it could read, under the chart's security context (its start-up line).
    const log = await node.containerLog(system, pod.metadata?.name ?? "", "agent");
    const starting = /\{.*"msg":"mce-agent starting".*\}/.exec(log)?.[0];
    expect(starting, log.slice(0, 2000)).toBeDefined();
    const { available, unavailable } = JSON.parse(starting ?? "{}") as { available: string[]; unavailable: Record<string, string> };
    figures.agentSources = { available, unavailable };
    expect(available.some((source) => source.startsWith("tracefs"))).toBe(true);
  });
});
