import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent, MemoryErrorEventStatusEarlySignal, MemoryErrorEventStatusPod } from "../crds/generated.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { EarlySignaller, type EarlySignalApi, type EarlySignalName, type PodRef } from "./early-signal.ts";
import type { PodInfo } from "./event.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import type { ProcessInfo } from "./mappings.ts";
import { AgentMetrics } from "./metrics.ts";

const uid = "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60";
const other = "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a";

function event(status: MemoryErrorEvent["status"]): MemoryErrorEvent {
  return {
    apiVersion: "mce-operator.io/v1alpha1",
    kind: "MemoryErrorEvent",
    metadata: { name: "edge-1-0f6c1b1e-3e11" },
    spec: {
      nodeName: "edge-1",
      bootID: "b",
      observedAt: "2026-01-01T00:00:00Z",
      source: "Kmsg",
      pfn: "0x3e11",
      severity: "ActionOptional",
      hugepage: { size: "2Mi", headPfn: "0x3e00" },
      mappers: [
        { pid: 601, command: "postgres", podUID: uid, mapping: "Shared", virtualStart: "0x7f0000000000", virtualEnd: "0x7f0000200000", killPolicy: "Default" },
        { pid: 603, command: "postgres", podUID: uid, mapping: "Shared", virtualStart: "0x7f1000000000", virtualEnd: "0x7f1000200000", killPolicy: "Default" },
        { pid: 602, command: "sidecar", podUID: other, mapping: "Shared", virtualStart: "0x7f2000000000", virtualEnd: "0x7f2000200000", killPolicy: "Default" },
      ],
    },
    status,
  };
}

const signalPod: MemoryErrorEventStatusPod = { uid, namespace: "db", name: "pg-0", action: "EarlySignal", state: "Planned", signal: "SIGUSR1" };
const evictPod: MemoryErrorEventStatusPod = { uid: other, namespace: "db", name: "side-0", action: "Evict", state: "InProgress" };
const planned = { pods: [signalPod, evictPod] };

function setup(live: Record<number, string> = { 601: uid, 603: uid, 602: other }) {
  const calls: string[] = [];
  const applied: MemoryErrorEventStatusEarlySignal[][] = [];
  const signalled: [number, EarlySignalName][] = [];
  const api: EarlySignalApi & { failApply: boolean } = {
    failApply: false,
    annotatePod: (pod: PodRef, annotations: Record<string, string>) => {
      calls.push(`annotate ${pod.namespace}/${pod.name} ${JSON.stringify(annotations)}`);
      return Promise.resolve();
    },
    applyEarlySignals: (_name: string, entries: MemoryErrorEventStatusEarlySignal[]) => {
      if (api.failApply) return Promise.reject(new Error("apiserver down"));
      applied.push(entries);
      return Promise.resolve();
    },
  };
  const pod: PodInfo = { uid, namespace: "db", name: "pg-0", containers: new Map(), annotations: { "mce-operator.io/lost-ranges": "0x10-0x20" } };
  const signaller = {
    kill: (pid: number, signal: EarlySignalName) => {
      if (pid === 603) throw new Error("ESRCH");
      signalled.push([pid, signal]);
    },
  };
  const process = (pid: number): ProcessInfo | undefined =>
    live[pid] === undefined ? undefined : { pid, command: "x", pod: { podUID: live[pid], qos: "Burstable" } };
  const clock = new FakeClock();
  const signaller_ = new EarlySignaller({
    api,
    signaller,
    pods: { pod: (u) => (u === uid ? pod : undefined) },
    process,
    clock,
    log: memoryLogger(),
    metrics: new AgentMetrics(),
    retryMs: 1000,
  });
  return { api, calls, applied, signalled, signaller: signaller_, clock };
}

describe("EarlySignaller", () => {
  it("publishes the lost ranges, signals the pod's mapping processes and records the outcome", async () => {
    const { calls, applied, signalled, signaller } = setup();
    await signaller.reconcile(event(planned));
    expect(signalled).toEqual([[601, "SIGUSR1"]]);
    expect(calls[0]).toBe(`annotate db/pg-0 {"mce-operator.io/lost-ranges":"0x10-0x20,0x7f0000000000-0x7f0000200000,0x7f1000000000-0x7f1000200000"}`);
    // The agent posts no Event: it holds no permission to (the operator tells people from this status).
    expect(calls).toHaveLength(1);
    expect(applied).toEqual([
      [
        {
          uid,
          state: "Done",
          signal: "SIGUSR1",
          pids: [601, 603],
          lostRanges: ["0x7f0000000000-0x7f0000200000", "0x7f1000000000-0x7f1000200000"],
          at: "2026-01-01T00:00:00.000Z",
          message: "pid 603: ESRCH",
        },
      ],
    ]);
  });

  it("never redoes an entry already recorded", async () => {
    const { applied, signalled, signaller, calls } = setup();
    await signaller.reconcile(event({ ...planned, earlySignals: [{ uid, state: "Done" }] }));
    expect([signalled, applied, calls]).toEqual([[], [], []]);
  });

  it("does not signal again when recording the outcome failed; it records it on the next pass", async () => {
    const { api, applied, signalled, signaller } = setup();
    api.failApply = true;
    await expect(signaller.reconcile(event(planned))).rejects.toThrow("apiserver down");
    api.failApply = false;
    await signaller.reconcile(event(planned));
    expect(signalled).toHaveLength(1);
    expect(applied[0]?.map((e) => e.uid)).toEqual([uid]);
  });

  it("does not signal again when a watch event older than its own write arrives", async () => {
    const { applied, signalled, signaller } = setup();
    await signaller.reconcile(event(planned));
    // The operator's write, made before the agent's, reaches the watch after it.
    await signaller.reconcile(event(planned));
    expect(signalled).toHaveLength(1);
    expect(applied.map((entries) => entries.map((e) => e.state))).toEqual([["Done"], ["Done"]]);
    // Once the status shows the outcome, nothing more is written.
    await signaller.reconcile(event({ ...planned, earlySignals: applied[0] ?? [] }));
    expect(applied).toHaveLength(2);
  });

  it("fails, signalling nobody, when the pod's processes are gone or the pids now belong to someone else", async () => {
    const { applied, signalled, signaller } = setup({ 601: other });
    await signaller.reconcile(event(planned));
    expect(signalled).toEqual([]);
    expect(applied[0]).toMatchObject([{ uid, state: "Failed", message: expect.stringContaining("no process") as unknown }]);
  });

  it("keeps entries it recorded earlier for other pods when it adds one", async () => {
    const { applied, signaller } = setup();
    const earlier = { uid: other, state: "Done" as const };
    await signaller.reconcile(event({ ...planned, earlySignals: [earlier] }));
    expect(applied[0]?.map((e) => e.uid)).toEqual([other, uid]);
  });

  it("ignores other actions and finished states", async () => {
    const { applied, signaller } = setup();
    await signaller.reconcile(event({ pods: [{ ...signalPod, state: "Done" }, evictPod] }));
    expect(applied).toEqual([]);
  });

  it("retries a failed pass in the background with the latest version of the event", async () => {
    const { api, applied, signalled, signaller, clock } = setup();
    api.failApply = true;
    signaller.offer(event(planned));
    await settle();
    expect(signalled).toHaveLength(1);
    api.failApply = false;
    await clock.advance(1000);
    expect(applied).toHaveLength(1);
    expect(signalled).toHaveLength(1);
    signaller.stop();
  });
});
