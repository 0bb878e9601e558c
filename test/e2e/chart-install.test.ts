// The chart on the real API server: `helm install` with the pinned helm; then the operator and two
// agents run as processes authenticated with tokens of the chart's own service accounts, bound to the
// chart's own pods on KWOK nodes, and do their whole job through a recording proxy: every request they
// make must be allowed (no 403) and every permission the chart grants them must be used. An agent's
// token is refused, with the admission policy's message, for another node's objects. A real Prometheus
// scrapes them with the chart's rules and the new-error alert fires.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ApiException, CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { group, lostRangesAnnotation, memoryErrorEventName, nodeLabel, version } from "../../crds/naming.ts";
import { writeFakeHost, writeFakeProcess } from "../../agent/fake-host.ts";
import {
  clients,
  createHugepageNode,
  createHugepagePod,
  createPdb,
  deleteNode,
  kubectl,
  podBoundToken,
  uniqueName,
  waitFor,
  waitForPodGone,
  waitForPodRunning,
} from "./cluster/helpers.ts";
import { getEvent, getNodeHealth } from "./operator-harness.ts";
import {
  chartDir,
  covers,
  grantName,
  grantsOf,
  helm,
  metricsPort,
  recordingProxy,
  requestAttributes,
  startProcess,
  startPrometheus,
  template,
  tokenKubeconfig,
  valuesFile,
  type Grant,
  type PolicyRule,
  type Process,
  type PrometheusServer,
  type RecordedRequest,
  type RecordingProxy,
} from "./chart/harness.ts";

const c = clients();
const run = uniqueName("chart");
const release = run;
const namespace = run;
const selectorLabel = "mce-operator.io/e2e-chart";
const bootA = "a1b2c3d4-0000-4000-8000-00000000000a";
const bootB = "b1b2c3d4-0000-4000-8000-00000000000b";
const base = 0x7f2a00000000;
const pfn = { evicted: 0x10005, guarded: 0x10205, signalled: 0x10405, free: 0x20005 };
const values = {
  operator: { nodeSelector: { [selectorLabel]: run } },
  agent: { nodeSelector: { [selectorLabel]: run } },
  // A DryRun default policy that selects none of this test's nodes: rendered and accepted, inert.
  defaultPolicy: { enabled: true, name: `${run}-default`, nodeSelector: { matchLabels: { [selectorLabel]: `${run}-none` } } },
  metrics: { dashboard: { enabled: true } },
};

const dir = mkdtempSync(join(tmpdir(), "mce-chart-e2e-"));
const children: ChildProcess[] = [];
const processes: Process[] = [];
const proxies: RecordingProxy[] = [];
let nodeA = "";
let nodeB = "";
let installed = false;
let objects: Awaited<ReturnType<typeof template>> = [];
const chartKubeconfig: Record<string, string> = {};

const cgroupOf = (pod: V1Pod): string =>
  `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${(pod.metadata?.uid ?? "").replaceAll("-", "_")}.slice/cri-containerd-${"cd".repeat(32)}.scope\n`;

/** The chart's pods of one component, Running, on the given node (or any). */
async function chartPod(component: "operator" | "agent", node?: string): Promise<V1Pod> {
  return waitFor(
    `the chart's ${component} pod${node === undefined ? "" : ` on ${node}`} Running`,
    async () => {
      const list = await c.core.listNamespacedPod({
        namespace,
        labelSelector: `app.kubernetes.io/instance=${release},app.kubernetes.io/component=${component}`,
      });
      return list.items.find((p) => p.status?.phase === "Running" && (node === undefined || p.spec?.nodeName === node));
    },
    { timeoutMs: 60_000 },
  );
}

/** A kubeconfig with a token bound to the pod, through a fresh recording proxy (or straight to the API server). */
async function kubeconfigFor(pod: V1Pod, name: string, proxied: boolean): Promise<{ kubeconfig: string; proxy?: RecordingProxy }> {
  const token = await podBoundToken(c, pod, { expirationSeconds: 3600 });
  if (!proxied) return { kubeconfig: tokenKubeconfig(inject("kubeconfig"), token, name) };
  const proxy = await recordingProxy(inject("kubeconfig"));
  proxies.push(proxy);
  return { kubeconfig: tokenKubeconfig(inject("kubeconfig"), token, name, proxy.url), proxy };
}

function rulesOf(kind: string, name: RegExp): PolicyRule[] {
  const found = objects.find((o) => o.kind === kind && name.test(o.metadata.name)) as unknown as { rules: PolicyRule[] } | undefined;
  if (!found) throw new Error(`no ${kind} ${String(name)} in the rendered chart`);
  return found.rules;
}

beforeAll(async () => {
  nodeA = (await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "64Mi" }, labels: { [selectorLabel]: run } })).metadata?.name ?? "";
  nodeB = (await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "64Mi" }, labels: { [selectorLabel]: run } })).metadata?.name ?? "";
  const file = valuesFile(values);
  const install = await helm(
    ["install", release, chartDir, "--namespace", namespace, "--create-namespace", "-f", file, "--wait=hookOnly"],
    inject("kubeconfig"),
  );
  installed = install.code === 0;
  if (!installed) throw new Error(`helm install failed: ${install.stderr}`);
  objects = await template(values, release, namespace);
}, 300_000);

afterAll(async () => {
  for (const p of processes) await p.stop();
  for (const child of children) child.kill("SIGKILL");
  for (const proxy of proxies) await proxy.close();
  if (installed) await helm(["uninstall", release, "--namespace", namespace, "--wait"], inject("kubeconfig"));
  await kubectl(["delete", "namespace", namespace, "--wait=false"]);
  await kubectl(["delete", "namespace", `${run}-work`, "--wait=false"]);
  await kubectl(["delete", "mee", "-l", `${selectorLabel}=${run}`, "--wait=false"]);
  for (const n of [nodeA, nodeB]) {
    if (n === "") continue;
    await kubectl(["delete", "mee", "-l", `${nodeLabel}=${n}`, "--wait=false"]);
    await kubectl(["delete", "nmh", n, "--wait=false"]);
    await deleteNode(c, n);
  }
  await kubectl(["delete", "cpol", `${run}-enforce`, "--wait=false"]);
}, 120_000);

describe("helm install", () => {
  it("every object of the chart is accepted by the API server and the workloads come up on the nodes", async () => {
    const listed = await helm(["get", "manifest", release, "--namespace", namespace], inject("kubeconfig"));
    expect(listed.code, listed.stderr).toBe(0);
    // Each rendered object exists on the server.
    for (const o of objects) {
      const args = [
        "get",
        `${o.kind.toLowerCase()}.${o.apiVersion.includes("/") ? (o.apiVersion.split("/")[0] ?? "") : ""}`.replace(/\.$/, ""),
        o.metadata.name,
        "-o",
        "name",
      ];
      const got = await kubectl(o.metadata.namespace === undefined ? args : [...args, "-n", o.metadata.namespace]);
      expect(got.code, `${o.kind} ${o.metadata.name}: ${got.stderr}`).toBe(0);
    }
    expect(objects.map((o) => o.kind).sort()).toEqual(
      [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "ConfigMap",
        "ContainmentPolicy",
        "DaemonSet",
        "Deployment",
        "PodDisruptionBudget",
        "PriorityClass",
        "PriorityClass",
        "PriorityClass",
        "Role",
        "RoleBinding",
        "Service",
        "Service",
        "ServiceAccount",
        "ServiceAccount",
        ...Array<string>(6).fill("ValidatingAdmissionPolicy"),
        ...Array<string>(6).fill("ValidatingAdmissionPolicyBinding"),
      ].sort(),
    );
    // The DaemonSet put an agent on each of this test's nodes; both operator replicas run.
    await chartPod("agent", nodeA);
    await chartPod("agent", nodeB);
    await waitFor(
      "two operator replicas Running",
      async () => {
        const list = await c.core.listNamespacedPod({ namespace, labelSelector: `app.kubernetes.io/instance=${release},app.kubernetes.io/component=operator` });
        return list.items.filter((p) => p.status?.phase === "Running").length === 2;
      },
      { timeoutMs: 60_000 },
    );
    // Every expression type-checks against the kinds its policy matches, but for the one gap of the API
    // server's type checker: it knows no map of quantities (a node's capacity and allocatable), which the
    // probes below show are compared at admission all the same.
    for (const o of objects.filter((x) => x.kind === "ValidatingAdmissionPolicy")) {
      const checked = await waitFor(`${o.metadata.name} type-checked`, async () => {
        const got = await kubectl(["get", "validatingadmissionpolicy", o.metadata.name, "-o", "json"]);
        const status = (
          JSON.parse(got.stdout || "{}") as { status?: { observedGeneration?: number; typeChecking?: { expressionWarnings?: { warning: string }[] } } }
        ).status;
        return status?.observedGeneration === 1 && (status.typeChecking?.expressionWarnings ?? []);
      });
      const errors = checked.flatMap((w) =>
        w.warning.split("\n").filter((line) => line.includes("ERROR") && !/undefined field '(capacity|allocatable)'/.test(line)),
      );
      expect(errors, o.metadata.name).toEqual([]);
    }
  });
});

describe("least privilege: the operator and two agents with the chart's own service accounts", () => {
  let operator: Process;
  let agentA: Process;
  let agentB: Process;
  let prometheus: PrometheusServer | undefined;
  let operatorProxy: RecordingProxy | undefined;
  const agentProxies: RecordingProxy[] = [];
  const work = `${run}-work`;
  const pods: Record<"evicted" | "guarded" | "signalled", V1Pod> = {} as Record<"evicted" | "guarded" | "signalled", V1Pod>;
  let workloadExit: Promise<NodeJS.Signals | number | null>;
  let errorsAt = 0;

  beforeAll(async () => {
    await kubectl(["create", "namespace", work]);
    await waitFor(`ServiceAccount ${work}/default`, async () => (await kubectl(["get", "sa", "default", "-n", work])).code === 0);
    // The policy the operator enforces on this test's nodes: evict, fall back to delete behind a PDB,
    // early signal for the opted-in pod, quarantine, taint after two errors and cordon after three.
    const policy = {
      apiVersion: `${group}/${version}`,
      kind: "ContainmentPolicy",
      metadata: { name: `${run}-enforce` },
      spec: {
        mode: "Enforce",
        nodeSelector: { matchLabels: { [selectorLabel]: run } },
        podActions: { eviction: { backoff: "1s", fallbackToDelete: true, deleteAfter: "3s" }, earlySignal: { timeout: "2m" } },
        escalation: { taintAfter: 2, cordonAfter: 3, window: "1h" },
        safety: { maxUnavailableNodesPercent: 100, circuitBreaker: { maxNodeActions: 1000, window: "1h" }, cooldown: "1s" },
      },
    };
    const applied = await kubectl(["apply", "--server-side", "--field-manager=e2e", "-f", "-"], { input: JSON.stringify(policy) });
    expect(applied.code, applied.stderr).toBe(0);

    for (const [key, labels] of [
      ["evicted", { app: "evicted" }],
      ["guarded", { app: "guarded" }],
      ["signalled", { app: "signalled" }],
    ] as const) {
      const created = await createHugepagePod(c, { namespace: work, nodeName: nodeA, hugepages: { "hugepages-2Mi": "2Mi" }, labels });
      pods[key] = await waitForPodRunning(c, work, created.metadata?.name ?? "");
    }
    await kubectl(["annotate", "pod", "-n", work, pods.signalled.metadata?.name ?? "", "mce-operator.io/early-signal=true"]);
    await createPdb(c, { namespace: work, matchLabels: { app: "guarded" }, minAvailable: 1 });

    // Node A's host: three processes map hugepages; the opted-in one is a real process to signal.
    const workload = spawn(process.execPath, ["-e", "process.on('SIGUSR1', () => process.exit(0)); setInterval(() => {}, 1000);"], { stdio: "ignore" });
    children.push(workload);
    workloadExit = new Promise((resolve) =>
      workload.once("exit", (code, signal) => {
        resolve(signal ?? code);
      }),
    );
    const rootA = join(dir, "host-a");
    const rootB = join(dir, "host-b");
    writeFakeHost(rootA, { bootID: bootA, pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 29 }], earlyKill: false, recovery: true });
    // Node B's kernel pool is one page short of what its kubelet advertises (64Mi): the free hugepage the
    // error dissolves, so the quarantine holds.
    writeFakeHost(rootB, { bootID: bootB, pools: [{ size: "2Mi", numaNode: 0, total: 31, free: 31 }], earlyKill: false, recovery: true });
    writeFakeProcess(join(rootA, "proc"), {
      pid: 31001,
      comm: "dpdk-app",
      cgroup: cgroupOf(pods.evicted),
      vmas: [{ start: base, size: "2Mi", pfns: [0x10000] }],
    });
    writeFakeProcess(join(rootA, "proc"), {
      pid: 31002,
      comm: "guarded-app",
      cgroup: cgroupOf(pods.guarded),
      vmas: [{ start: base, size: "2Mi", pfns: [0x10200] }],
    });
    writeFakeProcess(join(rootA, "proc"), {
      pid: workload.pid ?? 0,
      comm: "cache",
      cgroup: cgroupOf(pods.signalled),
      vmas: [{ start: base, size: "2Mi", shared: true, path: "/dev/hugepages/cache", pfns: [0x10400] }],
    });
    // The errors come 12 s after the agents start (time for their watches and for Prometheus), 1.5 s
    // apart on node A (longer than the policy's cooldown): the early signal first, with no node action
    // beside it, then the second error taints and the third cordons. Node B's single error only
    // quarantines.
    const delay = 12;
    const replayA = join(dir, "replay-a.txt");
    writeFileSync(
      replayA,
      [pfn.signalled, pfn.evicted, pfn.guarded]
        .map((p, i) => `${delay + i * 1.5} Memory failure: 0x${p.toString(16)}: recovery action for huge page: Recovered\n`)
        .join(""),
    );
    const replayB = join(dir, "replay-b.txt");
    writeFileSync(replayB, `${delay} Memory failure: 0x${pfn.free.toString(16)}: recovery action for free huge page: Recovered\n`);

    // Tokens of the chart's service accounts, bound to the chart's own pods on the KWOK nodes.
    const [podA, podB, operatorPod] = await Promise.all([chartPod("agent", nodeA), chartPod("agent", nodeB), chartPod("operator")]);
    const a = await kubeconfigFor(podA, "agent-a", true);
    const b = await kubeconfigFor(podB, "agent-b", true);
    const op = await kubeconfigFor(operatorPod, "operator", true);
    chartKubeconfig.a = (await kubeconfigFor(podA, "agent-a-direct", false)).kubeconfig;
    chartKubeconfig.b = (await kubeconfigFor(podB, "agent-b-direct", false)).kubeconfig;
    chartKubeconfig.operator = (await kubeconfigFor(operatorPod, "operator-direct", false)).kubeconfig;
    if (a.proxy) agentProxies.push(a.proxy);
    if (b.proxy) agentProxies.push(b.proxy);
    operatorProxy = op.proxy;

    const agentArgs = (node: string, kubeconfig: string, root: string, replay: string): string[] => {
      const state = join(dir, `state-${node}`);
      mkdirSync(state, { recursive: true });
      return [
        "agent/main.ts",
        "--node-name",
        node,
        "--kubeconfig",
        kubeconfig,
        "--host-root",
        root,
        "--state-dir",
        state,
        "--replay",
        replay,
        "--metrics-port",
        "0",
        "--health-interval",
        "1",
        "--index-interval",
        "1",
        "--log-level",
        "debug",
      ];
    };
    errorsAt = Date.now() + delay * 1000;
    agentA = startProcess("agent-a", agentArgs(nodeA, a.kubeconfig, rootA, replayA), dir);
    agentB = startProcess("agent-b", agentArgs(nodeB, b.kubeconfig, rootB, replayB), dir);
    const quarantineClass = `${release}-mce-operator-quarantine`;
    operator = startProcess(
      "operator",
      [
        "operator/cli.ts",
        "run",
        `--kubeconfig=${op.kubeconfig}`,
        `--namespace=${namespace}`,
        "--identity=e2e-operator",
        "--metrics-address=127.0.0.1",
        "--metrics-port=0",
        "--lease-duration=4s",
        "--renew-deadline=3s",
        "--retry-period=500ms",
        "--resync=5s",
        "--log-level=debug",
        `--quarantine-priority-class=${quarantineClass}`,
      ],
      dir,
    );
    processes.push(agentA, agentB, operator);

    const [portA, portB, portOperator] = await Promise.all([
      metricsPort(agentA, "serving /metrics and /healthz", "port"),
      metricsPort(agentB, "serving /metrics and /healthz", "port"),
      metricsPort(operator, "operator started", "metrics"),
    ]);
    prometheus = await startPrometheus(
      [
        { port: portOperator, labels: { component: "operator" } },
        { port: portA, labels: { component: "agent", node: nodeA } },
        { port: portB, labels: { component: "agent", node: nodeB } },
      ],
      join(chartDir, "files", "alerts.yaml"),
      mkdtempSync(join(tmpdir(), "mce-prometheus-")),
    );
  }, 180_000);

  afterAll(async () => {
    await prometheus?.stop();
  });

  it("agents report, the operator decides and acts: evict, delete behind a PDB, early signal, quarantine, taint, cordon", async () => {
    const names = {
      evicted: memoryErrorEventName(nodeA, bootA, pfn.evicted),
      guarded: memoryErrorEventName(nodeA, bootA, pfn.guarded),
      signalled: memoryErrorEventName(nodeA, bootA, pfn.signalled),
      free: memoryErrorEventName(nodeB, bootB, pfn.free),
    };
    // Reported by the agents, with the pods they found mapping the page.
    const evicted = await waitFor(`MemoryErrorEvent ${names.evicted}`, () => getEvent(names.evicted), { timeoutMs: 40_000 });
    expect(evicted.spec.mappers?.[0]).toMatchObject({ podName: pods.evicted.metadata?.name, podNamespace: work });
    expect(evicted.metadata.labels?.[nodeLabel]).toBe(nodeA);
    await waitFor(`MemoryErrorEvent ${names.free}`, () => getEvent(names.free), { timeoutMs: 20_000 });

    // Decided and carried out by the operator.
    // The mapper evicted; the pod behind the PDB deleted after eviction stayed refused.
    await waitForPodGone(c, work, pods.evicted.metadata?.name ?? "", { timeoutMs: 30_000 });
    await waitForPodGone(c, work, pods.guarded.metadata?.name ?? "", { timeoutMs: 60_000 });
    expect(await workloadExit).toBe(0);
    const signalledPod = await c.core.readNamespacedPod({ namespace: work, name: pods.signalled.metadata?.name ?? "" });
    expect(signalledPod.metadata?.annotations?.[lostRangesAnnotation]).toBeDefined();
    // The agent recorded the outcome in status (server-side apply on the status subresource) and the
    // operator followed it. (Only that it was recorded is asserted here: the outcome's final state is
    // the early-signal tests' business.)
    const signalled = await waitFor(
      "the early signal recorded in status",
      async () => {
        const e = await getEvent(names.signalled);
        return e.status?.earlySignals?.[0]?.uid === pods.signalled.metadata?.uid && e.status?.pods?.[0]?.action === "EarlySignal" && e;
      },
      { timeoutMs: 30_000 },
    );
    expect(signalled.status?.earlySignals?.[0]?.signal).toBe("SIGUSR1");
    // The pod's notice comes from the operator, from the agent's outcome: the agent may post no Event.
    const notice = await waitFor("the operator's EarlySignal Event on the signalled pod", async () => {
      const list = await c.core.listNamespacedEvent({
        namespace: work,
        fieldSelector: `involvedObject.uid=${pods.signalled.metadata?.uid ?? ""},reason=EarlySignal`,
      });
      return list.items[0];
    });
    expect(notice.message).toMatch(/is lost; lost virtual ranges 0x[0-9a-f]+-0x[0-9a-f]+ .*SIGUSR1 sent to pid \d+/);
    const freeEvent = await waitFor(
      "quarantine on node B",
      async () => {
        const e = await getEvent(names.free);
        return e.status?.quarantine?.[0]?.state === "Quarantined" && e;
      },
      { timeoutMs: 30_000 },
    );
    expect(freeEvent.status?.quarantine?.[0]).toMatchObject({ size: "2Mi", bytes: 2 * 2 ** 20 });
    const placeholders = await c.core.listNamespacedPod({ namespace, labelSelector: `mce-operator.io/quarantine-for=${names.free}` });
    expect(placeholders.items[0]?.spec?.priorityClassName).toBe(`${release}-mce-operator-quarantine`);
    const node = await waitFor(
      "node A tainted and cordoned",
      async () => {
        const n = await c.core.readNode({ name: nodeA });
        return n.spec?.unschedulable === true && (n.spec.taints ?? []).some((t) => t.key === "mce-operator.io/memory-failing") && n;
      },
      { timeoutMs: 30_000 },
    );
    await waitFor(
      "node A's HugepageMemoryDegraded condition",
      async () => {
        const n = await c.core.readNode({ name: nodeA });
        return n.status?.conditions?.some((x) => x.type === "HugepageMemoryDegraded" && x.status === "True") === true;
      },
      { timeoutMs: 30_000 },
    );
    expect(node.metadata?.name).toBe(nodeA);
    const health = await getNodeHealth(nodeA);
    expect(health.status?.health).toBeDefined();
  }, 240_000);

  it("no request was refused, and every permission the chart grants was used", async () => {
    const components = [
      {
        name: "operator",
        proxies: operatorProxy ? [operatorProxy] : [],
        grants: [...grantsOf(rulesOf("ClusterRole", /-operator$/)), ...grantsOf(rulesOf("Role", /-operator$/), namespace)] as Grant[],
      },
      { name: "agent", proxies: agentProxies, grants: grantsOf(rulesOf("ClusterRole", /-agent$/)) },
    ];
    // A server-side apply that creates its object (201) is authorized as create as well as patch.
    const attributesOf = (requests: RecordedRequest[]): { r: RecordedRequest; a: ReturnType<typeof requestAttributes> }[] =>
      requests.flatMap((r) => {
        const a = requestAttributes(r.method, r.url);
        return a?.verb === "patch" && r.status === 201
          ? [
              { r, a },
              { r, a: { ...a, verb: "create" } },
            ]
          : [{ r, a }];
      });
    for (const component of components) {
      const unusedNow = (): string[] => {
        const attributes = attributesOf(component.proxies.flatMap((p) => p.requests));
        return component.grants.filter((g) => !attributes.some(({ a }) => a !== undefined && covers(g, a))).map(grantName);
      };
      // The barrier: every permission used at least once (the operator's lease update among them) means
      // the component has done its whole job, so the requests recorded by then are the ones to judge.
      await waitFor(
        `${component.name} to use every permission the chart grants`,
        () => Promise.resolve(unusedNow().length === 0),
        { timeoutMs: 60_000, intervalMs: 500 },
        () => `never used: ${unusedNow().join(", ")}`,
      );
      const requests = component.proxies.flatMap((p) => p.requests);
      expect(requests.length, component.name).toBeGreaterThan(10);
      const refused = requests.filter((r) => r.status === 401 || r.status === 403);
      expect(refused, `${component.name}: requests the API server refused`).toEqual([]);
      const uncovered = attributesOf(requests)
        .filter(({ a }) => a === undefined || !component.grants.some((g) => covers(g, a)))
        .map(({ r }) => `${r.method} ${r.url}`);
      expect(uncovered, `${component.name}: requests no rule of the chart covers`).toEqual([]);
    }
    // Their own logs agree: nothing forbidden.
    for (const p of processes) expect(JSON.stringify(p.logs())).not.toMatch(/\b403\b|forbidden/i);
  }, 150_000);

  it("Prometheus scrapes them with the chart's rules and the new-error alert fires after the injected error", async () => {
    if (!prometheus) throw new Error("Prometheus did not start");
    const url = prometheus.url;
    const targets = (await (await fetch(`${url}/api/v1/targets`)).json()) as { data: { activeTargets: { health: string; labels: Record<string, string> }[] } };
    expect(targets.data.activeTargets.map((t) => t.health)).toEqual(["up", "up", "up"]);
    interface Alert {
      labels: Record<string, string>;
      state: string;
      activeAt: string;
    }
    const alerts = async (): Promise<Alert[]> => ((await (await fetch(`${url}/api/v1/alerts`)).json()) as { data: { alerts: Alert[] } }).data.alerts;
    const firing = await waitFor(
      "MCEUncorrectedMemoryError firing for node A",
      async () => {
        const found = (await alerts()).find((a) => a.labels.alertname === "MCEUncorrectedMemoryError" && a.labels.node === nodeA && a.state === "firing");
        return found;
      },
      { timeoutMs: 60_000, intervalMs: 1000 },
    );
    expect(firing.labels).toMatchObject({ severity: "warning", kernel_severity: "ActionOptional" });
    // It became active only after the errors were injected, not before.
    expect(Date.parse(firing.activeAt)).toBeGreaterThanOrEqual(errorsAt - 1000);
    // Node B's free hugepage is quarantined: the capacity alert is pending or firing for it.
    const capacity = await waitFor(
      "MCEHugepageCapacityQuarantined for node B",
      async () => (await alerts()).find((a) => a.labels.alertname === "MCEHugepageCapacityQuarantined" && a.labels.node === nodeB),
      { timeoutMs: 30_000, intervalMs: 1000 },
    );
    expect(capacity.labels.size).toBe("2Mi");
    expect((await alerts()).filter((a) => a.labels.alertname === "MCEAgentMissing")).toEqual([]);
  }, 120_000);
});

type Who = "a" | "b" | "operator";

/** kubectl with the chart's own token of the agent on node A or B, or of the operator. */
const asChart = (who: Who, args: string[], input?: string): ReturnType<typeof kubectl> =>
  kubectl(["--kubeconfig", chartKubeconfig[who] ?? "", ...args], input === undefined ? {} : { input });

/** A request made through client-node with a chart token, as the component sends it (no read first): the status and the API server's message. */
async function callAs(who: Who, call: (core: CoreV1Api) => Promise<unknown>): Promise<{ code: number; message: string }> {
  const kc = new KubeConfig();
  kc.loadFromFile(chartKubeconfig[who] ?? "");
  try {
    await call(kc.makeApiClient(CoreV1Api));
    return { code: 200, message: "" };
  } catch (e) {
    if (!(e instanceof ApiException)) throw e;
    const text = typeof e.body === "string" ? e.body : JSON.stringify(e.body);
    return { code: e.code, message: (JSON.parse(text) as { message?: string }).message ?? text };
  }
}

const mergePatchPod = (pod: V1Pod, body: object) => (core: CoreV1Api) =>
  core.patchNamespacedPod(
    { namespace: pod.metadata?.namespace ?? "", name: pod.metadata?.name ?? "", body },
    setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
  );

/** A MemoryErrorEvent of `node` (labelled for `labelNode`), named as its agent would name it unless told otherwise. */
const meeJson = (
  node: string,
  labelNode: string,
  pfn: number,
  bootID: string,
  name = memoryErrorEventName(node, bootID, pfn),
  severity: "ActionOptional" | "Corrected" = "ActionOptional",
): string =>
  JSON.stringify({
    apiVersion: `${group}/${version}`,
    kind: "MemoryErrorEvent",
    metadata: { name, labels: { [nodeLabel]: labelNode, [selectorLabel]: run } },
    spec: { nodeName: node, bootID, observedAt: new Date().toISOString(), source: "Injected", pfn: `0x${pfn.toString(16)}`, severity },
  });

describe("the admission policy binds each agent to its own node", () => {
  const event = (node: string, labelNode: string, pfn = 0x1005): string => meeJson(node, labelNode, pfn, "vap-test");

  it("lets agent A write its own node's event, and refuses A's token for node B with the policy's message", async () => {
    expect(chartKubeconfig.a, "the least-privilege tests set up the agents' tokens").toBeDefined();
    const own = await asChart("a", ["create", "-f", "-"], event(nodeA, nodeA));
    expect(own.code, own.stderr).toBe(0);

    const other = await asChart("a", ["create", "-f", "-"], event(nodeB, nodeB));
    expect(other.code).not.toBe(0);
    expect(other.stderr).toMatch(
      new RegExp(`mce-agent of node ${nodeA} may only write objects of its own node: memoryerrorevents \\S+ is for node "${nodeB}"`),
    );
    expect(other.stderr).toMatch(/ValidatingAdmissionPolicy/);

    // Its own node in spec, another in the label the operator and agents select by: refused too.
    const mixed = await asChart("a", ["create", "-f", "-"], event(nodeA, nodeB, 0x1205));
    expect(mixed.code).not.toBe(0);
    expect(mixed.stderr).toMatch(new RegExp(`is for node "${nodeB}"`));
  });

  it("refuses A's token changing node B's event status, NodeMemoryHealth and pods", async () => {
    const bEvent = memoryErrorEventName(nodeB, bootB, pfn.free);
    const status = await asChart(
      "a",
      ["apply", "--server-side", "--field-manager=mce-agent", "--subresource=status", "-f", "-"],
      JSON.stringify({ apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", metadata: { name: bEvent }, status: { earlySignals: [] } }),
    );
    expect(status.code).not.toBe(0);
    expect(status.stderr).toMatch(new RegExp(`may only write objects of its own node: memoryerrorevents ${bEvent} is for node "${nodeB}"`));

    const health = await asChart(
      "a",
      ["apply", "--server-side", "--field-manager=mce-agent", "--force-conflicts", "-f", "-"],
      JSON.stringify({
        apiVersion: `${group}/${version}`,
        kind: "NodeMemoryHealth",
        metadata: { name: nodeB },
        spec: { nodeName: nodeB, bootID: "forged", observedAt: new Date().toISOString() },
      }),
    );
    expect(health.code).not.toBe(0);
    expect(health.stderr).toMatch(new RegExp(`may only write objects of its own node: nodememoryhealths ${nodeB} is for node "${nodeB}"`));

    const podOnB = await chartPod("agent", nodeB);
    // A bare merge patch, as the agent sends: kubectl would read the pod first, which the agent may not.
    const patchPod = (who: "a" | "b", annotations: Record<string, string>) => callAs(who, mergePatchPod(podOnB, { metadata: { annotations } }));
    const forged = await patchPod("a", { [lostRangesAnnotation]: "forged" });
    expect(forged.code).toBe(403);
    expect(forged.message).toMatch(new RegExp(`may only write objects of its own node: pods \\S+ is for node "${nodeB}"`));
    // B's own token may, the lost-ranges annotation only.
    const own = await patchPod("b", { [lostRangesAnnotation]: "0x7f0000000000-0x7f0000200000" });
    expect(own, own.message).toEqual({ code: 200, message: "" });
  });

  it("refuses the agent's service account with a token that names no node", async () => {
    const request = await c.core.createNamespacedServiceAccountToken({
      namespace,
      name: `${release}-mce-operator-agent`,
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const kubeconfig = tokenKubeconfig(inject("kubeconfig"), request.status?.token ?? "", "agent-unbound");
    const result = await kubectl(["--kubeconfig", kubeconfig, "create", "-f", "-"], { input: event(nodeA, nodeA) });
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/must use a token bound to a pod on a node/);
  });
});

describe("the admission policies refuse what the probes found (issue 17), with the chart's own tokens", () => {
  const tried: { who: Who; what: string; refused: boolean }[] = [];
  /** An attempt that must be refused, with the words that say why. */
  const refused = async (who: Who, what: string, args: string[], input: string | undefined, because: RegExp): Promise<void> => {
    const result = await asChart(who, args, input);
    tried.push({ who, what, refused: result.code !== 0 });
    expect(result.code, `${who}: ${what} was accepted`).not.toBe(0);
    expect(result.stderr, what).toMatch(because);
  };
  const allowed = async (who: Who, what: string, args: string[], input?: string): Promise<void> => {
    const result = await asChart(who, args, input);
    expect(result.code, `${who}: ${what}: ${result.stderr}`).toBe(0);
  };
  const mee = (node: string, name: string, pfn: number): string => meeJson(node, node, pfn, "probe", name);
  /** A status server-side applied as the agent applies its own fields. */
  const applyStatus = ["apply", "--server-side", "--field-manager=mce-agent", "--force-conflicts", "--subresource=status", "-f", "-"];
  const eventStatus = (name: string, status: object): string =>
    JSON.stringify({ apiVersion: `${group}/${version}`, kind: "MemoryErrorEvent", metadata: { name }, status });

  afterAll(() => {
    const lines = tried.map((t) => `${t.refused ? "refused " : "ACCEPTED"}  ${t.who.padEnd(8)} ${t.what}`);
    console.log(`\nforged and escalating writes: ${tried.length} tried, ${tried.filter((t) => t.refused).length} refused\n${lines.join("\n")}\n`);
  });

  it("an agent can neither squat another node's event name nor rewrite the operator's decision", async () => {
    expect(chartKubeconfig.operator, "the least-privilege tests set up the tokens").toBeDefined();
    // The name node B's agent will use for its next error, created by A as an event of A's own.
    const squat = memoryErrorEventName(nodeB, "probe", 0x3005);
    await refused("a", "create node B's next event name as node A's event", ["create", "-f", "-"], mee(nodeA, squat, 0x3005), /is not the name of its error/);
    const own = memoryErrorEventName(nodeA, "probe", 0x3005);
    await allowed("a", "create its own event", ["create", "-f", "-"], mee(nodeA, own, 0x3005));
    await refused(
      "a",
      "set its own event's phase to Ignored and empty its pods",
      applyStatus,
      eventStatus(own, { phase: "Ignored", pods: [] }),
      /may change only its own fields/,
    );
    await allowed("a", "record an early signal's outcome", applyStatus, eventStatus(own, { earlySignals: [] }));
  });

  it("a page's first corrected error has a name of its own: no error takes the other kind's name; the agent records a soft offline, never decides one", async () => {
    const corrected = memoryErrorEventName(nodeA, "probe", 0x3105, true);
    const plain = memoryErrorEventName(nodeA, "probe", 0x3105);
    await refused(
      "a",
      "create an uncorrected error under the page's corrected-error name",
      ["create", "-f", "-"],
      meeJson(nodeA, nodeA, 0x3105, "probe", corrected),
      /is not the name of its error \(<node>-<boot id prefix>-<pfn>/,
    );
    await refused(
      "a",
      "create a corrected error under the name a later uncorrected error of the page will use",
      ["create", "-f", "-"],
      meeJson(nodeA, nodeA, 0x3105, "probe", plain, "Corrected"),
      /is not the name of its error \(<node>-<boot id prefix>-ce-<pfn>/,
    );
    await allowed("a", "create its page's first corrected error", ["create", "-f", "-"], meeJson(nodeA, nodeA, 0x3105, "probe", corrected, "Corrected"));
    await refused(
      "a",
      "decide a soft offline of its own page",
      applyStatus,
      eventStatus(corrected, { prevention: { action: "SoftOffline", state: "Requested" } }),
      /may change only its own fields/,
    );
    await allowed("a", "record a soft offline's outcome", applyStatus, eventStatus(corrected, { softOfflineResult: { state: "Done", message: "probe" } }));
  });

  it("an agent changes nothing of a pod on its node but the lost-ranges annotation, and posts no Event", async () => {
    const pod = await chartPod("agent", nodeA);
    for (const [what, body] of [
      ["rewrite a label of a pod on its node", { metadata: { labels: { app: "forged" } } }],
      ["set activeDeadlineSeconds of a pod on its node", { spec: { activeDeadlineSeconds: 1 } }],
      ["change a container image of a pod on its node", { spec: { containers: [{ name: pod.spec?.containers[0]?.name ?? "agent", image: "forged:1" }] } }],
    ] as const) {
      const result = await callAs("a", mergePatchPod(pod, body));
      tried.push({ who: "a", what, refused: result.code !== 200 });
      expect(result.code, what).not.toBe(200);
      if (result.code === 403) expect(result.message, what).toMatch(/may change only the mce-operator.io\/lost-ranges annotation|Forbidden/);
    }
    expect(await callAs("a", mergePatchPod(pod, { metadata: { annotations: { [lostRangesAnnotation]: "0x7f0000000000-0x7f0000200000" } } }))).toEqual({
      code: 200,
      message: "",
    });
    const event = {
      apiVersion: "v1",
      kind: "Event",
      metadata: { name: uniqueName("forged"), namespace },
      involvedObject: { kind: "Node", name: nodeB },
      reason: "TaintedForMemoryErrors",
      message: "forged",
      type: "Warning",
    };
    await refused("a", "post a core Event about node B as the operator", ["create", "-f", "-"], JSON.stringify(event), /forbidden/i);
  });

  it("the operator creates only quarantine placeholders, changes only its own taints, cordon and condition, and only its own lease", async () => {
    const pod = (name: string, spec: object): string =>
      JSON.stringify({
        apiVersion: "v1",
        kind: "Pod",
        metadata: { name, namespace, labels: { "app.kubernetes.io/managed-by": "mce-operator", "mce-operator.io/quarantine-for": "x" } },
        spec,
      });
    const hostile = {
      nodeName: nodeB,
      hostPID: true,
      serviceAccountName: `${release}-mce-operator-agent`,
      containers: [
        { name: "x", image: "registry.k8s.io/pause:3.10", securityContext: { privileged: true }, volumeMounts: [{ name: "root", mountPath: "/host" }] },
      ],
      volumes: [{ name: "root", hostPath: { path: "/" } }],
    };
    const because = /may create only quarantine placeholder pods/;
    await refused("operator", "create a privileged hostPath hostPID pod on node B", ["create", "-f", "-"], pod(uniqueName("root"), hostile), because);
    await refused(
      "operator",
      "create an ordinary pod",
      ["create", "-f", "-"],
      pod(uniqueName("plain"), { containers: [{ name: "x", image: "busybox:1" }] }),
      because,
    );

    await kubectl(["taint", "nodes", nodeB, "someone-else=keep:NoSchedule", "--overwrite"]);
    const nodeBecause = /may change only its own NoSchedule taints/;
    await refused(
      "operator",
      "label node B node-role",
      ["patch", "node", nodeB, "--type=merge", "-p", '{"metadata":{"labels":{"node-role.kubernetes.io/forged":""}}}'],
      undefined,
      nodeBecause,
    );
    await refused(
      "operator",
      "remove every taint of node B, others' too",
      ["patch", "node", nodeB, "--type=json", "-p", '[{"op":"replace","path":"/spec/taints","value":[]}]'],
      undefined,
      nodeBecause,
    );
    const ownTaint = '[{"op":"add","path":"/spec/taints/-","value":{"key":"mce-operator.io/probe","value":"HugepageMemoryFailing","effect":"NoSchedule"}}]';
    await allowed("operator", "add its own taint", ["patch", "node", nodeB, "--type=json", "-p", ownTaint]);
    await kubectl(["taint", "nodes", nodeB, "someone-else-", "mce-operator.io/probe-"]);

    // A bare strategic patch of the status, as the operator sends it (kubectl would read nodes/status first, which it may not).
    const patchStatus = async (what: string, body: object): Promise<{ code: number; message: string }> => {
      const result = await callAs("operator", (core) =>
        core.patchNodeStatus({ name: nodeB, body: { status: body } }, setHeaderOptions("Content-Type", PatchStrategy.StrategicMergePatch)),
      );
      if (result.code !== 200) tried.push({ who: "operator", what, refused: true });
      return result;
    };
    const statusBecause = /may change only the HugepageMemoryDegraded condition/;
    expect((await patchStatus("raise node B's allocatable", { allocatable: { cpu: "1000" } })).message).toMatch(statusBecause);
    const notReady = { conditions: [{ type: "Ready", status: "False", reason: "Forged", message: "forged" }] };
    expect((await patchStatus("set node B Ready=False", notReady)).message).toMatch(statusBecause);
    const own = { conditions: [{ type: "HugepageMemoryDegraded", status: "False", reason: "Healthy", message: "probe" }] };
    expect(await patchStatus("set its own condition", own)).toEqual({ code: 200, message: "" });

    const lease = JSON.stringify({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", metadata: { name: "someone-elses-lease", namespace }, spec: {} });
    await refused("operator", "create a lease of another name", ["create", "-f", "-"], lease, /may create only its own lease/);
  });
});
