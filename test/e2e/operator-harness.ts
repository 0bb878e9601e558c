// Runs the real operator as a child process against the test cluster, and reads and writes the
// mce-operator.io objects the way the agent and a person would.
import { spawn } from "node:child_process";
import type { ChildProcess } from "node:child_process";
import { CustomObjectsApi } from "@kubernetes/client-node";
import { inject } from "vitest";
import type { MemoryErrorEvent, NodeMemoryHealth } from "../../crds/generated.ts";
import { group, memoryErrorEventName, nodeLabel, version } from "../../crds/naming.ts";
import { clients, kubectl, waitFor } from "./cluster/helpers.ts";
import type { WaitOptions } from "./cluster/helpers.ts";

export interface OperatorProcess {
  child: ChildProcess;
  identity: string;
  port: number;
  logs: Record<string, unknown>[];
  /** SIGTERM and wait for exit. */
  stop(): Promise<number | null>;
  /** SIGKILL: no chance to clean up. */
  kill(): Promise<void>;
  metrics(): Promise<string>;
}

export async function startOperatorProcess(identity: string, extraArgs: string[] = []): Promise<OperatorProcess> {
  const child = spawn(
    "node_modules/.bin/node",
    [
      "operator/cli.ts",
      "run",
      `--kubeconfig=${inject("kubeconfig")}`,
      "--namespace=mce-system",
      "--metrics-address=127.0.0.1",
      "--metrics-port=0",
      `--identity=${identity}`,
      "--lease-duration=4s",
      "--renew-deadline=3s",
      "--retry-period=500ms",
      "--resync=10s",
      "--log-level=debug",
      ...extraArgs,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  const logs: Record<string, unknown>[] = [];
  let stderr = "";
  let buffered = "";
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  const started = new Promise<number>((resolve, reject) => {
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split("\n");
      buffered = lines.pop() ?? "";
      for (const line of lines) {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === "operator started") resolve(Number(String(entry.metrics).split(":").pop()));
      }
    });
    child.once("exit", (code) => {
      reject(new Error(`operator ${identity} exited with ${String(code)} before starting: ${stderr}`));
    });
  });
  const port = await started;
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return {
    child,
    identity,
    port,
    logs,
    stop: async () => {
      child.kill("SIGTERM");
      return exited;
    },
    kill: async () => {
      child.kill("SIGKILL");
      await exited;
    },
    metrics: async () => (await fetch(`http://127.0.0.1:${port}/metrics`)).text(),
  };
}

export async function applyObject(obj: unknown): Promise<void> {
  const result = await kubectl(["apply", "--server-side", "--field-manager=e2e", "--force-conflicts", "-f", "-"], { input: JSON.stringify(obj) });
  if (result.code !== 0) throw new Error(`kubectl apply failed: ${result.stderr}`);
}

export async function applyCrds(): Promise<void> {
  const result = await kubectl(["apply", "--server-side", "--field-manager=e2e", "-f", "crds/"]);
  if (result.code !== 0) throw new Error(result.stderr);
  for (const crd of ["memoryerrorevents", "nodememoryhealths", "containmentpolicies"]) {
    await kubectl(["wait", "--for=condition=Established", "--timeout=30s", `crd/${crd}.${group}`]);
    // Established comes before the storage serves lists (429 "storage is (re)initializing").
    await waitFor(`${crd} served`, async () => (await kubectl(["get", `${crd}.${group}`, "-o", "name"])).code === 0);
  }
  await kubectl(["create", "namespace", "mce-system"]);
}

const objects = (): CustomObjectsApi => clients().kubeConfig.makeApiClient(CustomObjectsApi);

export async function getEvent(name: string): Promise<MemoryErrorEvent> {
  return (await objects().getClusterCustomObject({ group, version, plural: "memoryerrorevents", name })) as MemoryErrorEvent;
}

export async function getNodeHealth(name: string): Promise<NodeMemoryHealth> {
  return (await objects().getClusterCustomObject({ group, version, plural: "nodememoryhealths", name })) as NodeMemoryHealth;
}

export async function waitForEvent(
  name: string,
  what: string,
  check: (e: MemoryErrorEvent) => boolean,
  options: WaitOptions = { timeoutMs: 30_000 },
): Promise<MemoryErrorEvent> {
  return waitFor(
    `MemoryErrorEvent ${name}: ${what}`,
    async () => {
      const e = await getEvent(name);
      return check(e) && e;
    },
    options,
    (last) => JSON.stringify(last === false ? "not yet" : last),
  );
}

export interface EventSpec {
  node: string;
  pfn: number;
  pageType?: string;
  size?: "2Mi" | "1Gi";
  severity?: string;
  mappers?: { podUID: string; namespace: string; name: string; shared?: boolean; pid?: number }[];
}

/** Creates the MemoryErrorEvent the node's agent would, named as the agent names it. */
export async function createMemoryErrorEvent(spec: EventSpec): Promise<string> {
  const name = memoryErrorEventName(spec.node, "e2e-boot", spec.pfn);
  const size = spec.size ?? "2Mi";
  const perPage = size === "2Mi" ? 512 : 262144;
  await applyObject({
    apiVersion: `${group}/${version}`,
    kind: "MemoryErrorEvent",
    metadata: { name, labels: { [nodeLabel]: spec.node, "mce-operator.io/e2e": "true" } },
    spec: {
      nodeName: spec.node,
      bootID: "e2e-boot",
      observedAt: new Date().toISOString(),
      source: "Injected",
      pfn: `0x${spec.pfn.toString(16)}`,
      severity: spec.severity ?? "ActionOptional",
      pageType: spec.pageType ?? ((spec.mappers ?? []).length > 0 ? "huge page" : "free huge page"),
      result: "Recovered",
      hugepage: { size, headPfn: `0x${(Math.floor(spec.pfn / perPage) * perPage).toString(16)}`, numaNode: 0 },
      mappers: (spec.mappers ?? []).map((m, i) => ({
        pid: m.pid ?? 1000 + i,
        command: "app",
        podUID: m.podUID,
        podNamespace: m.namespace,
        podName: m.name,
        container: "app",
        mapping: m.shared ? "Shared" : "Private",
        killPolicy: "Default",
        virtualStart: "0x7f0000200000",
        virtualEnd: "0x7f0000400000",
      })),
    },
  });
  return name;
}

/** The NodeMemoryHealth the node's agent would keep. */
export async function applyNodeHealth(node: string, pools: { size: "2Mi" | "1Gi"; total: number; free: number }[], observedAt = new Date()): Promise<void> {
  await applyObject({
    apiVersion: `${group}/${version}`,
    kind: "NodeMemoryHealth",
    metadata: { name: node, labels: { "mce-operator.io/e2e": "true" } },
    spec: {
      nodeName: node,
      bootID: "e2e-boot",
      kernelVersion: "6.1.0-56-amd64",
      observedAt: observedAt.toISOString(),
      hugepagePools: pools.map((p) => ({ ...p, numaNode: 0 })),
      capabilities: { earlyKill: false, recovery: true },
    },
  });
}

export async function applyPolicy(name: string, spec: Record<string, unknown>): Promise<void> {
  await applyObject({ apiVersion: `${group}/${version}`, kind: "ContainmentPolicy", metadata: { name, labels: { "mce-operator.io/e2e": "true" } }, spec });
}
