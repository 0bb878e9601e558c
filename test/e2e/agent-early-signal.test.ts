// The agent carries out an early signal the operator planned: it signals the pod's process that
// mapped the poisoned hugepage, publishes the lost range on the pod and in an Event, and records
// the outcome in status.earlySignals with server-side apply, leaving the operator's fields alone.
import { spawn, type ChildProcess } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CustomObjectsApi, PatchStrategy, setHeaderOptions } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import type { MemoryErrorEvent } from "../../crds/generated.ts";
import { group, lostRangesAnnotation, memoryErrorEventName, version } from "../../crds/naming.ts";
import { writeFakeHost, writeFakeProcess } from "../../agent/fake-host.ts";
import { getEvent } from "./operator-harness.ts";
import {
  clients,
  createHugepageNode,
  createHugepagePod,
  createNamespace,
  deleteNamespace,
  deleteNode,
  kubectl,
  waitFor,
  waitForPodRunning,
} from "./cluster/helpers.ts";

const bootID = "2b7c9d1e-3f4a-4b5c-8d6e-7f8091a2b3c4";
const agentMain = new URL("../../agent/main.ts", import.meta.url).pathname;
const base = 0x7f3a00000000;

let namespace: string;
let node: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  const result = await kubectl(["apply", "--server-side", "-f", "crds/memoryerrorevents.yaml", "-f", "crds/nodememoryhealths.yaml"]);
  expect(result.code, result.stderr).toBe(0);
  await kubectl(["wait", "--for=condition=Established", "crd/memoryerrorevents.mce-operator.io"]);
  namespace = await createNamespace(clients(), "agent-signal");
  node = (await createHugepageNode(clients(), { hugepages: { "hugepages-2Mi": "64Mi" } })).metadata?.name ?? "";
});

afterAll(async () => {
  for (const child of children) child.kill("SIGKILL");
  await deleteNamespace(clients(), namespace);
  await deleteNode(clients(), node);
});

describe("agent early signal", () => {
  it("signals the mapping process, publishes the lost range and records the outcome once", async () => {
    const c = clients();
    const pod = await createHugepagePod(c, { namespace, nodeName: node, hugepages: { "hugepages-2Mi": "4Mi" } });
    const running = await waitForPodRunning(c, namespace, pod.metadata?.name ?? "");
    const uid = running.metadata?.uid ?? "";
    const name = running.metadata?.name ?? "";

    // A stand-in for the pod's database process: exits 0 on SIGUSR1.
    const workload = spawn(process.execPath, ["-e", "process.on('SIGUSR1', () => process.exit(0)); setInterval(() => {}, 1000);"], { stdio: "ignore" });
    children.push(workload);
    const workloadExit = new Promise<NodeJS.Signals | number | null>((resolve) =>
      workload.once("exit", (code, signal) => {
        resolve(signal ?? code);
      }),
    );
    const pid = workload.pid ?? 0;
    const root = mkdtempSync(join(tmpdir(), "agent-root-"));
    writeFakeHost(root, { bootID, pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 30 }], earlyKill: false });
    writeFakeProcess(join(root, "proc"), {
      pid,
      comm: "postgres",
      cgroup: `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll("-", "_")}.slice/cri-containerd-${"ab".repeat(32)}.scope\n`,
      vmas: [{ start: base, size: "2Mi", shared: true, path: "/dev/hugepages/pg-buffers", pfns: [0x7000, 0x7200] }],
    });
    const stateDir = mkdtempSync(join(tmpdir(), "agent-state-"));
    const replay = join(stateDir, "replay.txt");
    writeFileSync(replay, "0.5 Memory failure: 0x7205: recovery action for huge page: Recovered\n");
    const agent = spawn(
      process.execPath,
      [
        agentMain,
        "--node-name",
        node,
        "--kubeconfig",
        inject("kubeconfig"),
        "--host-root",
        root,
        "--state-dir",
        stateDir,
        "--replay",
        replay,
        "--metrics-port",
        "0",
      ],
      { stdio: "ignore" },
    );
    children.push(agent);

    const custom = c.kubeConfig.makeApiClient(CustomObjectsApi);
    const eventName = memoryErrorEventName(node, bootID, 0x7205);
    const read = (): Promise<MemoryErrorEvent> => getEvent(eventName);
    const event = await waitFor(`MemoryErrorEvent ${eventName}`, read, { timeoutMs: 20_000 });
    expect(event.spec.mappers).toMatchObject([
      {
        pid,
        command: "postgres",
        podUID: uid,
        podNamespace: namespace,
        podName: name,
        mapping: "Shared",
        hugetlbfsFile: "/dev/hugepages/pg-buffers",
        virtualStart: `0x${(base + 0x200000).toString(16)}`,
        virtualEnd: `0x${(base + 0x400000).toString(16)}`,
      },
    ]);

    // What the operator writes: an early signal planned for the pod.
    await custom.patchClusterCustomObjectStatus(
      {
        group,
        version,
        plural: "memoryerrorevents",
        name: eventName,
        body: {
          apiVersion: `${group}/${version}`,
          kind: "MemoryErrorEvent",
          metadata: { name: eventName },
          status: { phase: "Pending", pods: [{ uid, namespace, name, action: "EarlySignal", state: "Planned", signal: "SIGUSR1" }] },
        },
        fieldManager: "mce-operator",
        force: true,
      },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );

    expect(await workloadExit).toBe(0);
    const range = `0x${(base + 0x200000).toString(16)}-0x${(base + 0x400000).toString(16)}`;
    const done = await waitFor("status.earlySignals", async () => {
      const current = await read();
      return current.status?.earlySignals?.[0]?.state === "Done" && current;
    });
    expect(done.status?.earlySignals).toMatchObject([{ uid, state: "Done", signal: "SIGUSR1", pids: [pid], lostRanges: [range] }]);
    // The operator's fields are still there and still the operator's.
    expect(done.status?.pods).toMatchObject([{ uid, action: "EarlySignal", state: "Planned" }]);
    const managers = (done.metadata as { managedFields?: { manager: string; subresource?: string; fieldsV1?: unknown }[] }).managedFields ?? [];
    const agentFields = JSON.stringify(managers.filter((m) => m.manager === "mce-agent" && m.subresource === "status"));
    expect(agentFields).toContain("earlySignals");
    expect(agentFields).not.toContain("f:pods");

    const annotated = await c.core.readNamespacedPod({ namespace, name });
    expect(annotated.metadata?.annotations?.[lostRangesAnnotation]).toBe(range);

    // A later status change by the operator must not make the agent signal again. The same change plans
    // an early signal for a second pod, one with no process on the node: the agent answers that one
    // (Failed), which proves it has handled this version of the event, and only then is the first pod's
    // entry checked to be the one it recorded before.
    const other = { uid: randomUUID(), namespace, name: `${name}-gone` };
    await custom.patchClusterCustomObjectStatus(
      {
        group,
        version,
        plural: "memoryerrorevents",
        name: eventName,
        body: {
          apiVersion: `${group}/${version}`,
          kind: "MemoryErrorEvent",
          metadata: { name: eventName },
          status: {
            phase: "Contained",
            pods: [
              { uid, namespace, name, action: "EarlySignal", state: "InProgress", signal: "SIGUSR1" },
              { ...other, action: "EarlySignal", state: "Planned", signal: "SIGUSR1" },
            ],
          },
        },
        fieldManager: "mce-operator",
        force: true,
      },
      setHeaderOptions("Content-Type", PatchStrategy.ServerSideApply),
    );
    const answered = await waitFor("the agent's answer for the second pod", async () => {
      const current = await read();
      return current.status?.earlySignals?.some((s) => s.uid === other.uid) === true && current;
    });
    expect(answered.status?.earlySignals).toEqual([done.status?.earlySignals?.[0], expect.objectContaining({ uid: other.uid, state: "Failed" })]);
    agent.kill("SIGTERM");
  }, 90_000);
});
