// A real Kubernetes control plane on loopback for the e2e suite: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler from the pinned
// builds, and kwok standing in for the kubelets. Everything a cluster writes
// lives under one state directory, and state.json there records the process
// groups, so `down` can stop a cluster that another process started.
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { createServer } from "node:net";
import { join } from "node:path";
import { stringify } from "yaml";
import { createPki, type KeyPair, type Pki } from "./pki.ts";
import { kwokStagesPath, readVersions, toolPath } from "./tools.ts";

export type ComponentName = "etcd" | "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "kwok";

export interface ComponentState {
  name: ComponentName;
  /** Also the process group id: every component leads its own group. */
  pid: number;
  log: string;
  health: string;
}

export interface ClusterState {
  dir: string;
  kubeconfig: string;
  server: string;
  kubernetesVersion: string;
  startedAt: string;
  /** Wall time from making the PKI to every component ready. */
  readyMs: number;
  components: ComponentState[];
}

export interface ComponentStatus extends ComponentState {
  running: boolean;
  healthy: boolean;
  rssBytes: number;
}

/** Nodes kwok plays the kubelet for carry this annotation. */
export const kwokNodeAnnotation = { key: "kwok.x-k8s.io/node", value: "fake" };

const serviceClusterIpRange = "10.0.0.0/24";
const podCidr = "10.0.1.0/24";
const serviceAccountIssuer = "https://kubernetes.default.svc.cluster.local";
const readyTimeoutMs = 90_000;
const stopTimeoutMs = 10_000;

const stateFile = (dir: string): string => join(dir, "state.json");

export function readState(dir: string): ClusterState | undefined {
  const path = stateFile(dir);
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as ClusterState;
}

/** A port on 127.0.0.1 nothing listens on now. */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => {
        if (address !== null && typeof address === "object") resolve(address.port);
        else reject(new Error("no port assigned"));
      });
    });
  });
}

function kubeconfig(server: string, ca: string, user: string, client: KeyPair): string {
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "mce-e2e", cluster: { server, "certificate-authority": ca } }],
    users: [{ name: user, user: { "client-certificate": client.cert, "client-key": client.key } }],
    contexts: [{ name: "mce-e2e", context: { cluster: "mce-e2e", user } }],
    "current-context": "mce-e2e",
  });
}

interface ProbeTls {
  ca: string;
  client?: KeyPair;
}

/** GETs a health endpoint; true on 200. */
async function probe(url: string, tls?: ProbeTls): Promise<boolean> {
  const options = {
    timeout: 2_000,
    ...(tls && {
      ca: readFileSync(tls.ca),
      ...(tls.client && { cert: readFileSync(tls.client.cert), key: readFileSync(tls.client.key) }),
    }),
  };
  const request = url.startsWith("https:") ? httpsRequest : httpRequest;
  return new Promise((resolve) => {
    const req = request(url, options, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => req.destroy());
    req.on("error", () => {
      resolve(false);
    });
    req.end();
  });
}

/** Alive means present and not a zombie: a child of ours stays one until reaped. */
function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false;
  }
}

function rssBytes(pid: number): number {
  try {
    const match = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return match?.[1] === undefined ? 0 : Number(match[1]) * 1024;
  } catch {
    return 0;
  }
}

function tail(path: string, lines = 25): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log)";
  }
}

interface ComponentSpec {
  name: ComponentName;
  /** Resolved up front, so a missing build fails before anything starts. */
  binary: string;
  args: string[];
  health: string;
  tls?: ProbeTls;
}

function launch(spec: ComponentSpec, logDir: string): ComponentState {
  const log = join(logDir, `${spec.name}.log`);
  const fd = openSync(log, "a");
  try {
    // Its own process group, so stopping it takes anything it forked, and a
    // Ctrl-C in the terminal reaches our handlers rather than the components.
    const child = spawn(spec.binary, spec.args, { detached: true, stdio: ["ignore", fd, fd] });
    child.unref();
    // A failed spawn has no pid and reports why in an "error" event.
    child.once("error", (error) => {
      writeFileSync(log, `spawn failed: ${error.message}\n`, { flag: "a" });
    });
    if (child.pid === undefined) throw new Error(`${spec.name} could not be started (${spec.binary})`);
    return { name: spec.name, pid: child.pid, log, health: spec.health };
  } finally {
    closeSync(fd);
  }
}

async function waitReady(component: ComponentState, tls: ProbeTls | undefined, deadline: number): Promise<void> {
  for (;;) {
    if (!isRunning(component.pid)) {
      throw new Error(`${component.name} exited during start-up; last lines of ${component.log}:\n${tail(component.log)}`);
    }
    if (await probe(component.health, tls)) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${component.name} not ready at ${component.health} after ${readyTimeoutMs / 1000}s; ` + `last lines of ${component.log}:\n${tail(component.log)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export interface ControlPlaneOptions {
  /** The address the apiserver puts in the `kubernetes` Service's endpoints (default 127.0.0.1). The
   * real-node tier's pods reach it through kube-proxy at 10.0.2.100, QEMU's way to the host's loopback;
   * the apiserver itself never dials it. */
  advertiseAddress?: string;
  /**
   * Configured as a cluster of thousands of nodes is: the inflight limits of the 5,000-node scalability
   * tests (API priority and fairness shares them out as shipped; the watch cache is on by default), room in
   * etcd for 150,000 pods between compactions, and the controllers' client limits raised to match.
   */
  largeCluster?: boolean;
}

const largeClients = ["--kube-api-qps=100", "--kube-api-burst=100"];

function componentSpecs(dir: string, pki: Pki, ports: Record<ComponentName | "etcdPeer", number>, options: ControlPlaneOptions): ComponentSpec[] {
  const server = `https://127.0.0.1:${ports["kube-apiserver"]}`;
  const write = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text, { mode: 0o600 });
    return path;
  };
  const kcmConfig = write("controller-manager.kubeconfig", kubeconfig(server, pki.ca.cert, "system:kube-controller-manager", pki.controllerManager));
  const schedulerConfig = write("scheduler.kubeconfig", kubeconfig(server, pki.ca.cert, "system:kube-scheduler", pki.scheduler));
  const adminConfig = join(dir, "admin.kubeconfig");
  const etcdClient = `http://127.0.0.1:${ports.etcd}`;
  const etcdPeer = `http://127.0.0.1:${ports.etcdPeer}`;
  const serving = [`--tls-cert-file=${pki.serving.cert}`, `--tls-private-key-file=${pki.serving.key}`];
  const delegated = (config: string): string[] => [`--kubeconfig=${config}`, `--authentication-kubeconfig=${config}`, `--authorization-kubeconfig=${config}`];
  return [
    {
      name: "etcd",
      binary: toolPath("etcd"),
      args: [
        "--name=e2e",
        `--data-dir=${join(dir, "etcd")}`,
        `--listen-client-urls=${etcdClient}`,
        `--advertise-client-urls=${etcdClient}`,
        `--listen-peer-urls=${etcdPeer}`,
        `--initial-advertise-peer-urls=${etcdPeer}`,
        `--initial-cluster=e2e=${etcdPeer}`,
        // A throwaway cluster: durability buys nothing and fsync costs seconds.
        "--unsafe-no-fsync",
        "--log-level=warn",
        ...(options.largeCluster ? ["--quota-backend-bytes=8589934592"] : []),
      ],
      health: `${etcdClient}/health`,
    },
    {
      name: "kube-apiserver",
      binary: toolPath("kube-apiserver"),
      args: [
        `--etcd-servers=${etcdClient}`,
        "--bind-address=127.0.0.1",
        `--advertise-address=${options.advertiseAddress ?? "127.0.0.1"}`,
        `--secure-port=${ports["kube-apiserver"]}`,
        `--cert-dir=${join(dir, "apiserver")}`,
        ...serving,
        `--client-ca-file=${pki.ca.cert}`,
        "--authorization-mode=Node,RBAC",
        // In addition to the default plugins, which already include ValidatingAdmissionPolicy.
        "--enable-admission-plugins=NodeRestriction,ValidatingAdmissionPolicy",
        `--service-account-issuer=${serviceAccountIssuer}`,
        `--service-account-key-file=${pki.serviceAccount.publicKey}`,
        `--service-account-signing-key-file=${pki.serviceAccount.privateKey}`,
        `--service-cluster-ip-range=${serviceClusterIpRange}`,
        "--allow-privileged=true",
        "--profiling=false",
        ...(options.largeCluster ? ["--max-requests-inflight=3000", "--max-mutating-requests-inflight=1000"] : []),
      ],
      health: `${server}/readyz`,
      tls: { ca: pki.ca.cert, client: pki.admin },
    },
    {
      name: "kube-controller-manager",
      binary: toolPath("kube-controller-manager"),
      args: [
        ...delegated(kcmConfig),
        "--bind-address=127.0.0.1",
        `--secure-port=${ports["kube-controller-manager"]}`,
        ...serving,
        `--root-ca-file=${pki.ca.cert}`,
        `--service-account-private-key-file=${pki.serviceAccount.privateKey}`,
        "--use-service-account-credentials=true",
        `--cluster-signing-cert-file=${pki.ca.cert}`,
        `--cluster-signing-key-file=${pki.ca.key}`,
        `--service-cluster-ip-range=${serviceClusterIpRange}`,
        "--cluster-name=mce-e2e",
        // One instance: waiting for a lease would only delay start-up.
        "--leader-elect=false",
        "--profiling=false",
        ...(options.largeCluster ? largeClients : []),
      ],
      health: `https://127.0.0.1:${ports["kube-controller-manager"]}/healthz`,
      tls: { ca: pki.ca.cert },
    },
    {
      name: "kube-scheduler",
      binary: toolPath("kube-scheduler"),
      args: [
        ...delegated(schedulerConfig),
        "--bind-address=127.0.0.1",
        `--secure-port=${ports["kube-scheduler"]}`,
        ...serving,
        "--leader-elect=false",
        "--profiling=false",
        ...(options.largeCluster ? largeClients : []),
      ],
      health: `https://127.0.0.1:${ports["kube-scheduler"]}/healthz`,
      tls: { ca: pki.ca.cert },
    },
    {
      name: "kwok",
      binary: toolPath("kwok"),
      args: [
        `--kubeconfig=${adminConfig}`,
        `--config=${kwokStagesPath()}`,
        // KWOK plays 4 pods' stages at a time by default: 150,000 pods would take longer to start than to create.
        ...(options.largeCluster
          ? [
              `--config=${write(
                "kwok-large.yaml",
                // A KwokConfiguration given whole: its other options keep KWOK's defaults only when restated.
                [
                  "apiVersion: config.kwok.x-k8s.io/v1alpha1",
                  "kind: KwokConfiguration",
                  "options:",
                  "  podPlayStageParallelism: 32",
                  "  nodePlayStageParallelism: 16",
                  "  nodeLeaseParallelism: 16",
                  "  podsOnNodeSyncParallelism: 4",
                  "  nodeStatusUpdateFrequencyMilliseconds: 10000",
                  "",
                ].join("\n"),
              )}`,
            ]
          : []),
        "--manage-all-nodes=false",
        `--manage-nodes-with-annotation-selector=${kwokNodeAnnotation.key}=${kwokNodeAnnotation.value}`,
        `--server-address=127.0.0.1:${ports.kwok}`,
        `--cidr=${podCidr}`,
        "--node-lease-duration-seconds=40",
      ],
      health: `http://127.0.0.1:${ports.kwok}/healthz`,
    },
  ];
}

/**
 * Starts a control plane with its data in `dir` (empty, absent, or left by a
 * cluster that is no longer running) and resolves once every component is
 * ready. On failure whatever was started is stopped and `dir` removed before
 * the error is thrown.
 */
export async function startControlPlane(dir: string, options: ControlPlaneOptions = {}): Promise<ClusterState> {
  const existing = readState(dir);
  if (existing?.components.some((c) => isRunning(c.pid))) {
    throw new Error(`a cluster is already running from ${dir}; stop it first`);
  }
  if (existing === undefined && existsSync(dir) && readdirSync(dir).length > 0) {
    throw new Error(`${dir} is not empty and holds no cluster state; refusing to use it`);
  }
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(join(dir, "logs"), { recursive: true, mode: 0o700 });
  const started = Date.now();
  const pki = createPki(join(dir, "pki"));
  const ports = {
    etcd: await freePort(),
    etcdPeer: await freePort(),
    "kube-apiserver": await freePort(),
    "kube-controller-manager": await freePort(),
    "kube-scheduler": await freePort(),
    kwok: await freePort(),
  };
  const server = `https://127.0.0.1:${ports["kube-apiserver"]}`;
  const adminConfig = join(dir, "admin.kubeconfig");
  writeFileSync(adminConfig, kubeconfig(server, pki.ca.cert, "mce-e2e-admin", pki.admin), { mode: 0o600 });
  const state: ClusterState = {
    dir,
    kubeconfig: adminConfig,
    server,
    kubernetesVersion: readVersions().kubernetes,
    startedAt: new Date(started).toISOString(),
    readyMs: 0,
    components: [],
  };
  try {
    const specs = componentSpecs(dir, pki, ports, options);
    const deadline = Date.now() + readyTimeoutMs;
    // Two waves: etcd and the apiserver together (the apiserver retries until
    // etcd answers), then the rest, which exit rather than wait when the
    // apiserver's RBAC bootstrap has not yet granted them their roles.
    const storage = new Set<ComponentName>(["etcd", "kube-apiserver"]);
    const waves = [specs.filter((s) => storage.has(s.name)), specs.filter((s) => !storage.has(s.name))];
    for (const wave of waves) {
      const launched = wave.map((spec) => {
        const component = launch(spec, join(dir, "logs"));
        state.components.push(component);
        writeFileSync(stateFile(dir), JSON.stringify(state, null, 2));
        return { component, tls: spec.tls };
      });
      await Promise.all(launched.map(({ component, tls }) => waitReady(component, tls, deadline)));
    }
    // The controller-manager answers /healthz before it has built its controllers, and exits if the
    // apiserver goes away before it has (an outage test early in a run did that). The default
    // ServiceAccount appears only once the controllers run.
    const pkiDir = join(dir, "pki");
    const controllers = state.components.find((c) => c.name === "kube-controller-manager");
    if (controllers)
      await waitReady(
        { ...controllers, health: `${server}/api/v1/namespaces/default/serviceaccounts/default` },
        { ca: join(pkiDir, "ca.crt"), client: { cert: join(pkiDir, "admin.crt"), key: join(pkiDir, "admin.key") } },
        deadline,
      );
  } catch (error) {
    stopControlPlane(state);
    throw error;
  }
  state.readyMs = Date.now() - started;
  writeFileSync(stateFile(dir), JSON.stringify(state, null, 2));
  return state;
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // Already gone.
  }
}

// Clients first, then the apiserver, then etcd: an apiserver whose etcd is gone
// hangs in shutdown, and etcd waits for its clients to leave.
const stopOrder: ComponentName[][] = [["kwok", "kube-scheduler", "kube-controller-manager"], ["kube-apiserver"], ["etcd"]];

function stopGroups(pids: number[]): void {
  for (const pid of pids) signalGroup(pid, "SIGTERM");
  const deadline = Date.now() + stopTimeoutMs;
  while (pids.some(isRunning) && Date.now() < deadline) sleepSync(20);
  const stuck = pids.filter(isRunning);
  for (const pid of stuck) signalGroup(pid, "SIGKILL");
  while (stuck.some(isRunning)) sleepSync(20);
}

/**
 * Stops every component (SIGTERM to each process group, SIGKILL after a grace
 * period), waits until none is left, then removes the state directory.
 * Synchronous, so it also works from signal and exit handlers.
 */
export function stopControlPlane(state: ClusterState): void {
  for (const names of stopOrder) {
    stopGroups(state.components.filter((c) => names.includes(c.name)).map((c) => c.pid));
  }
  rmSync(state.dir, { recursive: true, force: true });
}

export async function controlPlaneStatus(state: ClusterState): Promise<ComponentStatus[]> {
  const pki = join(state.dir, "pki");
  const ca = join(pki, "ca.crt");
  const admin = { cert: join(pki, "admin.crt"), key: join(pki, "admin.key") };
  return Promise.all(
    state.components.map(async (c) => {
      const running = isRunning(c.pid);
      const tls = c.health.startsWith("https:") ? { ca, client: admin } : undefined;
      return { ...c, running, healthy: running && (await probe(c.health, tls)), rssBytes: running ? rssBytes(c.pid) : 0 };
    }),
  );
}

/**
 * Stops one component (SIGTERM to its process group, SIGKILL after the grace
 * period), for outage tests; returns its command line (binary and arguments),
 * read from /proc, so startComponent can bring the same component back.
 */
export function stopComponent(state: ClusterState, name: ComponentName): string[] {
  const component = state.components.find((c) => c.name === name);
  if (component === undefined) throw new Error(`no ${name} in the cluster at ${state.dir}`);
  const argv = readFileSync(`/proc/${component.pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  stopGroups([component.pid]);
  return argv;
}

/** Stops a component and starts it again with the same command line: fresh informers, no backoff left over. */
export async function restartComponent(state: ClusterState, name: ComponentName): Promise<void> {
  await startComponent(state, name, stopComponent(state, name));
}

/** Starts a component stopped by stopComponent with the same command line, records its new pid in state.json and waits until it is ready. */
export async function startComponent(state: ClusterState, name: ComponentName, [binary = name, ...args]: string[]): Promise<void> {
  const at = state.components.findIndex((c) => c.name === name);
  const old = state.components[at];
  if (old === undefined) throw new Error(`no ${name} in the cluster at ${state.dir}`);
  const pki = join(state.dir, "pki");
  const tls = old.health.startsWith("https:") ? { ca: join(pki, "ca.crt"), client: { cert: join(pki, "admin.crt"), key: join(pki, "admin.key") } } : undefined;
  const component = launch({ name, binary, args, health: old.health, ...(tls && { tls }) }, join(state.dir, "logs"));
  state.components[at] = component;
  writeFileSync(stateFile(state.dir), JSON.stringify(state, null, 2));
  await waitReady(component, tls, Date.now() + readyTimeoutMs);
}
