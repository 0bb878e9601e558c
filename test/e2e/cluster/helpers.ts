// Helpers for e2e tests: clients for the cluster the global setup provided,
// KWOK nodes with hugepage capacity, hugepage pods, PDBs, namespaces, bound
// service-account tokens, kubectl, and waiting (waitFor) or holding (consistently) with a clear failure message.
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { ApiException, CoreV1Api, KubeConfig, PolicyV1Api, type V1Node, type V1Pod, type V1PodDisruptionBudget } from "@kubernetes/client-node";
import { inject } from "vitest";
import { kwokNodeAnnotation } from "./control-plane.ts";

export interface Clients {
  kubeConfig: KubeConfig;
  core: CoreV1Api;
  policy: PolicyV1Api;
}

export function clients(): Clients {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(inject("kubeconfig"));
  return { kubeConfig, core: kubeConfig.makeApiClient(CoreV1Api), policy: kubeConfig.makeApiClient(PolicyV1Api) };
}

/** A DNS-1123 name unique to this run, so tests never collide on a shared cluster. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${randomBytes(3).toString("hex")}`;
}

export interface WaitOptions {
  timeoutMs?: number;
  intervalMs?: number;
}

/**
 * Polls `check` until it returns a value other than undefined or false, and
 * returns that value. On timeout the error names what was awaited and the last
 * thing seen (`describe` of the last result, or the last error thrown).
 */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined | false>,
  { timeoutMs = 30_000, intervalMs = 200 }: WaitOptions = {},
  describe: (last: T | undefined | false) => string = (last) => JSON.stringify(last),
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastSeen: string;
  for (;;) {
    try {
      const result = await check();
      if (result !== undefined && result !== false) return result;
      lastSeen = describe(result);
    } catch (error) {
      lastSeen = `error: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs / 1000}s waiting for ${what}; last seen: ${lastSeen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface ConsistentlyOptions {
  /** How long the condition must hold. */
  durationMs?: number;
  intervalMs?: number;
}

/**
 * The negative counterpart of waitFor: checks `check` again and again for `durationMs` and fails the
 * moment it returns false or throws, naming what stopped holding and what was seen. For "this does not
 * happen" where no later positive signal (a barrier: an event ordered after, a counter, a status field)
 * can prove the system has already processed its input; where one can, wait for it with waitFor and
 * assert the negative once instead. The duration only bounds the polling: nothing is asserted about time.
 */
export async function consistently(
  what: string,
  check: () => Promise<boolean> | boolean,
  { durationMs = 3000, intervalMs = 200 }: ConsistentlyOptions = {},
  describe: () => Promise<string> | string = () => "",
): Promise<void> {
  const until = Date.now() + durationMs;
  for (;;) {
    let holds: boolean;
    let why = "";
    try {
      holds = await check();
    } catch (error) {
      holds = false;
      why = `error: ${error instanceof Error ? error.message : String(error)}`;
    }
    if (!holds) {
      if (why === "") why = await describe();
      throw new Error(`expected ${what} to hold for ${durationMs / 1000}s; it stopped holding${why === "" ? "" : `: ${why}`}`);
    }
    if (Date.now() >= until) return;
    await new Promise((resolve) => setTimeout(resolve, Math.min(intervalMs, Math.max(0, until - Date.now()))));
  }
}

/** The HTTP status of a failed API call, or undefined if it was not one. */
export function apiStatus(error: unknown): number | undefined {
  return error instanceof ApiException ? error.code : undefined;
}

/** Creates a namespace and waits for its default ServiceAccount, which pod admission requires. */
export async function createNamespace({ core }: Clients, prefix = "e2e"): Promise<string> {
  const name = uniqueName(prefix);
  await core.createNamespace({ body: { metadata: { name, labels: { "mce-operator.io/e2e": "true" } } } });
  await waitFor(`ServiceAccount ${name}/default`, async () => {
    try {
      return await core.readNamespacedServiceAccount({ namespace: name, name: "default" });
    } catch (error) {
      if (apiStatus(error) === 404) return undefined;
      throw error;
    }
  });
  return name;
}

export async function deleteNamespace({ core }: Clients, name: string): Promise<void> {
  try {
    await core.deleteNamespace({ name });
  } catch (error) {
    if (apiStatus(error) !== 404) throw error;
  }
}

export type HugepageSize = "hugepages-2Mi" | "hugepages-1Gi";

export interface HugepageNodeSpec {
  name?: string;
  /** Hugepage capacity per size, as quantities ("64Mi", "2Gi"). */
  hugepages: Partial<Record<HugepageSize, string>>;
  cpu?: string;
  memory?: string;
  pods?: string;
  labels?: Record<string, string>;
}

/**
 * Creates a node kwok plays the kubelet for, with hugepage capacity, and waits
 * until kwok has made it Ready. Capacity and allocatable go in with the create,
 * as a kubelet registers its node: a later status write would race kwok's
 * node-initialize stage, which keeps whatever capacity the node already has.
 */
export async function createHugepageNode({ core }: Clients, spec: HugepageNodeSpec): Promise<V1Node> {
  const name = spec.name ?? uniqueName("kwok-node");
  const resources = {
    cpu: spec.cpu ?? "16",
    memory: spec.memory ?? "64Gi",
    pods: spec.pods ?? "110",
    ...spec.hugepages,
  };
  await core.createNode({
    body: {
      metadata: {
        name,
        annotations: { [kwokNodeAnnotation.key]: kwokNodeAnnotation.value },
        labels: { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", type: "kwok", ...spec.labels },
      },
      status: { capacity: resources, allocatable: resources },
    },
  });
  return waitFor(
    `node ${name} Ready with ${JSON.stringify(spec.hugepages)}`,
    async () => {
      const node = await core.readNode({ name });
      const ready = node.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
      const allocatable = node.status?.allocatable ?? {};
      const kept = Object.entries(spec.hugepages).every(([size, quantity]) => allocatable[size] === quantity);
      return ready && kept && node;
    },
    {},
  );
}

export async function deleteNode({ core }: Clients, name: string): Promise<void> {
  try {
    await core.deleteNode({ name });
  } catch (error) {
    if (apiStatus(error) !== 404) throw error;
  }
}

export interface HugepagePodSpec {
  namespace: string;
  name?: string;
  hugepages: Partial<Record<HugepageSize, string>>;
  cpu?: string;
  memory?: string;
  labels?: Record<string, string>;
  /** Bind directly to this node instead of going through the scheduler. */
  nodeName?: string;
  /** Leave the pod to kube-scheduler, allowed only onto this node. */
  onlyOnto?: string;
  serviceAccountName?: string;
}

/**
 * Creates a pod requesting hugepages. Hugepage requests must equal their
 * limits and come with a cpu or memory request, so cpu and memory are set too.
 */
export async function createHugepagePod({ core }: Clients, spec: HugepagePodSpec): Promise<V1Pod> {
  const resources = { cpu: spec.cpu ?? "100m", memory: spec.memory ?? "64Mi", ...spec.hugepages };
  return core.createNamespacedPod({
    namespace: spec.namespace,
    body: {
      metadata: { name: spec.name ?? uniqueName("hugepage-pod"), labels: spec.labels },
      spec: {
        ...(spec.nodeName !== undefined && { nodeName: spec.nodeName }),
        ...(spec.onlyOnto !== undefined && { nodeSelector: { "kubernetes.io/hostname": spec.onlyOnto } }),
        ...(spec.serviceAccountName !== undefined && { serviceAccountName: spec.serviceAccountName }),
        // kwok runs no containers, but the image must still be valid.
        containers: [{ name: "app", image: "registry.k8s.io/pause:3.10", resources: { requests: resources, limits: resources } }],
        terminationGracePeriodSeconds: 0,
      },
    },
  });
}

export async function waitForPodRunning({ core }: Clients, namespace: string, name: string, options?: WaitOptions): Promise<V1Pod> {
  return waitFor(
    `pod ${namespace}/${name} Running`,
    async () => {
      const pod = await core.readNamespacedPod({ namespace, name });
      return pod.status?.phase === "Running" && pod;
    },
    options,
  );
}

/** Whether the pod is there and not being deleted. */
export async function podExists({ core }: Clients, namespace: string, name: string): Promise<boolean> {
  try {
    const pod = await core.readNamespacedPod({ namespace, name });
    return pod.metadata?.deletionTimestamp === undefined;
  } catch (error) {
    if (apiStatus(error) === 404) return false;
    throw error;
  }
}

/** Waits until the pod is gone or being deleted. */
export async function waitForPodGone(c: Clients, namespace: string, name: string, options?: WaitOptions): Promise<void> {
  await waitFor(`pod ${namespace}/${name} deleted`, async () => !(await podExists(c, namespace, name)), options);
}

export interface PdbSpec {
  namespace: string;
  name?: string;
  matchLabels: Record<string, string>;
  minAvailable?: number | string;
  maxUnavailable?: number | string;
}

/** Creates a PDB and waits until the disruption controller has computed its status. */
export async function createPdb({ policy }: Clients, spec: PdbSpec): Promise<V1PodDisruptionBudget> {
  const name = spec.name ?? uniqueName("pdb");
  await policy.createNamespacedPodDisruptionBudget({
    namespace: spec.namespace,
    body: {
      metadata: { name },
      spec: {
        selector: { matchLabels: spec.matchLabels },
        ...(spec.minAvailable !== undefined && { minAvailable: spec.minAvailable }),
        ...(spec.maxUnavailable !== undefined && { maxUnavailable: spec.maxUnavailable }),
      },
    },
  });
  return waitFor(`PDB ${spec.namespace}/${name} status`, async () => {
    const pdb = await policy.readNamespacedPodDisruptionBudget({ namespace: spec.namespace, name });
    const observed = pdb.status?.observedGeneration;
    return observed !== undefined && observed === pdb.metadata?.generation && pdb;
  });
}

/** Evicts a pod through the Eviction subresource; resolves to the HTTP status (201, 429, ...). */
export async function evictPod({ core }: Clients, namespace: string, name: string): Promise<number> {
  try {
    await core.createNamespacedPodEviction({
      namespace,
      name,
      body: { apiVersion: "policy/v1", kind: "Eviction", metadata: { namespace, name } },
    });
    return 201;
  } catch (error) {
    const status = apiStatus(error);
    if (status === undefined) throw error;
    return status;
  }
}

/**
 * A token for the pod's ServiceAccount bound to the pod (TokenRequest with a
 * boundObjectRef), so it carries the pod and, once the pod is scheduled, its node.
 */
export async function podBoundToken(
  { core }: Clients,
  pod: V1Pod,
  { audiences = [], expirationSeconds = 600 }: { audiences?: string[]; expirationSeconds?: number } = {},
): Promise<string> {
  const namespace = pod.metadata?.namespace;
  const name = pod.metadata?.name;
  if (namespace === undefined || name === undefined) throw new Error("pod has no namespace or name");
  const request = await core.createNamespacedServiceAccountToken({
    namespace,
    name: pod.spec?.serviceAccountName ?? "default",
    body: {
      spec: {
        audiences,
        expirationSeconds,
        boundObjectRef: { apiVersion: "v1", kind: "Pod", name, uid: pod.metadata?.uid },
      },
    },
  });
  const token = request.status?.token;
  if (token === undefined) throw new Error(`TokenRequest for pod ${namespace}/${name} returned no token`);
  return token;
}

/** The claims of a JWT, unverified: for asserting what the apiserver put in a token. */
export function jwtClaims(token: string): Record<string, unknown> {
  const payload = token.split(".")[1];
  if (payload === undefined) throw new Error("not a JWT");
  return JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
}

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the pinned kubectl against the test cluster; never throws on a non-zero exit. */
export async function kubectl(args: string[], { input }: { input?: string } = {}): Promise<KubectlResult> {
  const child = spawn(inject("kubectl"), args, {
    env: { ...process.env, KUBECONFIG: inject("kubeconfig") },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
  child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
  child.stdin.end(input);
  const code = await new Promise<number>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (exitCode) => {
      resolve(exitCode ?? 1);
    });
  });
  return { code, stdout, stderr };
}
