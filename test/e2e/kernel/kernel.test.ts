// Kernel in the loop: a real Debian kernel (6.1, 6.12, or the one named) under QEMU (TCG) takes hwpoison and real machine checks on
// hugepages that hwp workloads map, in cgroups named as the kubelet names the containers of pods that
// exist on the local control plane. The real agent runs in the guest and reports to the host's
// apiserver; the real operator runs on the host. Per scenario: the agent's MemoryErrorEvent against
// the kernel's own words, the model's predicted kernel outcome against what the kernel did, and the
// operator's actions. Every row of the observed-outcomes table in kernel-facts.md is here.
import type { V1Pod } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, inject as provided, it } from "vitest";
import type { MemoryErrorEvent, NodeMemoryHealth } from "../../../crds/generated.ts";
import { lostRangesAnnotation, memoryErrorEventName } from "../../../crds/naming.ts";
import { parseResource } from "../../../crds/validate.ts";
import { parseKernelLine } from "../../../kernel/lines.ts";
import { formatPfn, type HugepageSize } from "../../../kernel/pfn.ts";
import { severityOf } from "../../../kernel/assemble.ts";
import { kernelMajorMinor, selectProfile } from "../../../kernel/profiles.ts";
import { predictKernelOutcome, predictUnpoison } from "../../../operator/model/prediction.ts";
import { decidePrevention, type Prevention } from "../../../operator/model/risk.ts";
import type { MemoryError, NodeState } from "../../../operator/model/types.ts";
import { quarantinePodName } from "../../../operator/reconcile/context.ts";
import { ClusterState } from "../../../operator/state.ts";
import {
  apiStatus,
  clients,
  consistently,
  createHugepageNode,
  createHugepagePod,
  createNamespace,
  deleteNamespace,
  deleteNode,
  kubectl,
  podExists,
  uniqueName,
  waitFor,
  waitForPodGone,
  waitForPodRunning,
} from "../cluster/helpers.ts";
import { applyCrds, applyPolicy, getEvent, getNodeHealth, startOperatorProcess, type OperatorProcess } from "../operator-harness.ts";
import { agree, predictedOutcome, renderTable, writeResults, type Outcome, type Row } from "./conformance.ts";
import {
  AGENT_METRICS_PORT,
  agentLog,
  freeHugepages,
  guestKubeconfig,
  inject,
  kernelLog,
  newContainerID,
  readMemory,
  recordsLogged,
  startAgent,
  verdictOf,
  waitForIndex,
  Workload,
  type GuestMemory,
  type KillPolicy,
} from "./guest.ts";
import { fragmentFor1GiB } from "./fragment.ts";
import { figuresFile } from "./matrix.ts";
import { readPrepared, Vm } from "./vm.ts";

const prepared = readPrepared();
/** The kernel's major.minor: its figures file. */
const series = (kernelMajorMinor(prepared.release) ?? []).join(".");
/** The profile the operator picks for the booted kernel: every prediction is checked under it. */
const { profile } = selectProfile(prepared.release);
const c = clients();
const run = uniqueName("kt");
const groupLabel = "mce-kernel/group";
const rows: Row[] = [];
const nodes: string[] = [];
let namespace: string;
let operator: OperatorProcess;

async function readEvent(name: string): Promise<MemoryErrorEvent | undefined> {
  try {
    return await getEvent(name);
  } catch (error) {
    if (apiStatus(error) === 404) return undefined;
    throw error;
  }
}

/** The host's apiserver port, which the guest reaches through QEMU's guestfwd. */
const apiserverPort = (): number => Number(new URL(c.kubeConfig.getCurrentCluster()?.server ?? "").port);

/** One booted guest: a KWOK node of the same name on the control plane, the agent running inside. */
interface Guest {
  vm: Vm;
  node: string;
  bootID: string;
  earlyKill: boolean;
  dryRun: boolean;
  /** A pod mapping a hugepage of its own for the whole boot, that no error ever touches. */
  bystander: { pod: V1Pod; workload: Workload };
}

interface PodWorkload {
  pod: V1Pod;
  workload: Workload;
  optIn: boolean;
}

/** A pod bound to the guest's node, Running, its container given an id as containerd would. */
async function createPod(guest: Guest, size: HugepageSize, optIn: boolean): Promise<{ pod: V1Pod; containerID: string }> {
  const created = await createHugepagePod(c, { namespace, nodeName: guest.node, hugepages: { [`hugepages-${size}`]: size } });
  const name = created.metadata?.name ?? "";
  if (optIn) await kubectl(["annotate", "pod", "-n", namespace, name, "mce-operator.io/early-signal=true"]);
  const running = await waitForPodRunning(c, namespace, name);
  // KWOK runs no containers; the kubelet would report the runtime's id, which the agent matches to the cgroup.
  const containerID = newContainerID();
  const startedAt = running.status?.startTime ?? new Date();
  const status = {
    name: "app",
    image: "registry.k8s.io/pause:3.10",
    imageID: "",
    ready: true,
    started: true,
    restartCount: 0,
    state: { running: { startedAt } },
    containerID: `containerd://${containerID}`,
  };
  const patched = await kubectl([
    "patch",
    "pod",
    "-n",
    namespace,
    name,
    "--subresource=status",
    "--type=merge",
    "-p",
    JSON.stringify({ status: { containerStatuses: [status] } }),
  ]);
  if (patched.code !== 0) throw new Error(patched.stderr);
  return { pod: running, containerID };
}

async function podWorkload(
  guest: Guest,
  label: string,
  size: HugepageSize,
  options: { kill?: KillPolicy; optIn?: boolean; file?: string; pages?: number } = {},
): Promise<PodWorkload> {
  const { pod, containerID } = await createPod(guest, size, options.optIn ?? false);
  const workload = await Workload.start(guest.vm, {
    name: label,
    podUID: pod.metadata?.uid ?? "",
    containerID,
    size,
    kill: options.kill,
    file: options.file,
    pages: options.pages,
  });
  return { pod, workload, optIn: options.optIn ?? false };
}

async function bootGuest(
  label: string,
  options: { earlyKill: boolean; gigantic: boolean; dryRun: boolean; policy?: "heal" | "prevent"; reboot?: boolean; kernelArgs?: string[] },
): Promise<Guest> {
  const node = `${run}-${label}`;
  const policy = options.policy ?? (options.dryRun ? "dry" : "enforce");
  await createHugepageNode(c, {
    name: node,
    hugepages: { "hugepages-2Mi": "64Mi", ...(options.gigantic && { "hugepages-1Gi": "1Gi" }) },
    labels: { [groupLabel]: `${run}-${policy}` },
  });
  nodes.push(node);
  const port = apiserverPort();
  const vm = await Vm.boot({ prepared, gigantic: options.gigantic, apiserverPort: port, reboot: options.reboot, kernelArgs: options.kernelArgs });
  await vm.run(`sysctl -w vm.memory_failure_early_kill=${options.earlyKill ? 1 : 0}`);
  const bootID = (await vm.run("cat /proc/sys/kernel/random/boot_id")).trim();
  const guest = { vm, node, bootID, earlyKill: options.earlyKill, dryRun: options.dryRun } as Omit<Guest, "bystander">;
  const { pod, containerID } = await createPod(guest as Guest, "2Mi", false);
  const bystander = { pod, workload: await Workload.start(vm, { name: "bystander", podUID: pod.metadata?.uid ?? "", containerID, size: "2Mi" }) };
  await startAgent(vm, node, guestKubeconfig(provided("kubeconfig"), port));
  const health = await waitFor(
    `NodeMemoryHealth ${node} from the agent in the guest`,
    async () => {
      try {
        return await getNodeHealth(node);
      } catch {
        return undefined;
      }
    },
    { timeoutMs: 120_000, intervalMs: 500 },
    () => agentLog(vm).slice(-3000),
  );
  // Two facts of the kernel's profile, measured at every boot: the counters the agent reads, the soft-offline sysctl.
  expect((health.spec.memoryFailureCounters?.length ?? 0) > 0).toBe(profile.behaviour.memoryFailureCounters);
  expect((await vm.sh("test -e /proc/sys/vm/enable_soft_offline")).code === 0).toBe(profile.behaviour.softOfflineSysctl);
  await waitForIndex(vm, (known) => known >= 1);
  return { ...guest, bystander };
}

async function stopGuest(guest: Guest | undefined): Promise<void> {
  if (guest === undefined) return;
  // Nothing the errors did may reach the bystander.
  expect(guest.bystander.workload.sigbus).toEqual([]);
  expect(await podExists(c, namespace, guest.bystander.pod.metadata?.name ?? "")).toBe(true);
  await guest.vm.stop();
}

/** The node as the model sees it: the guest's kernel and early-kill setting. */
function nodeState(guest: Guest): NodeState {
  return {
    name: guest.node,
    labels: {},
    kernelRelease: prepared.release,
    earlyKill: guest.earlyKill,
    pools: [],
    allocatableBytes: {},
    tainted: false,
    cordoned: false,
    history: [],
    poisonedHugepages: [],
  };
}

/** The event once the operator has decided it (any phase but Pending). */
async function decidedEvent(name: string): Promise<MemoryErrorEvent> {
  return waitFor(`${name} decided`, async () => {
    const e = await readEvent(name);
    return e?.status?.phase !== undefined && e.status.phase !== "Pending" && e;
  });
}

/** Waits for the agent's event for `pfn`; returns it with the time from `injectedAt`. */
async function eventFor(guest: Guest, pfn: number, injectedAt: number, corrected = false): Promise<{ event: MemoryErrorEvent; latencyMs: number }> {
  const name = memoryErrorEventName(guest.node, guest.bootID, pfn, corrected);
  const event = await waitFor(
    `MemoryErrorEvent ${name}`,
    () => readEvent(name),
    { timeoutMs: 30_000, intervalMs: 25 },
    () => agentLog(guest.vm).slice(-2000),
  );
  return { event, latencyMs: Date.now() - injectedAt };
}

/** What the operator decides and does, checked against the policy of the guest's node. */
async function checkOperator(guest: Guest, eventName: string, mappers: PodWorkload[], expectQuarantine: boolean): Promise<MemoryErrorEvent> {
  const decided = await waitFor(
    `${eventName} decided and carried out`,
    async () => {
      const e = await readEvent(eventName);
      const pods = e?.status?.pods ?? [];
      const final = guest.dryRun ? e?.status?.dryRun === true : e?.status?.phase === "Contained" && pods.every((p) => p.state === "Done");
      return final && e;
    },
    { timeoutMs: 60_000, intervalMs: 200 },
    (last) => JSON.stringify(last === false ? "not yet" : last?.status),
  );
  const status = decided.status;
  const byUID = new Map((status?.pods ?? []).map((p) => [p.uid, p]));
  // Exactly the mappers' pods; never the bystander.
  expect([...byUID.keys()].sort()).toEqual([...new Set(mappers.map((m) => m.pod.metadata?.uid ?? ""))].sort());
  for (const m of mappers) {
    const decision = byUID.get(m.pod.metadata?.uid ?? "");
    const podName = m.pod.metadata?.name ?? "";
    if (guest.dryRun) {
      expect(decision).toMatchObject({ state: "DryRun" });
      expect(await podExists(c, namespace, podName)).toBe(true);
    } else if (m.optIn) {
      expect(decision).toMatchObject({ action: "EarlySignal", state: "Done" });
      expect(status?.earlySignals?.find((s) => s.uid === m.pod.metadata?.uid)).toMatchObject({
        state: "Done",
        pids: [m.workload.pid],
        lostRanges: [m.workload.range()],
      });
      await waitFor(`SIGUSR1 at ${m.workload.spec.name}`, () => Promise.resolve(m.workload.sigusr1));
      const pod = await c.core.readNamespacedPod({ namespace, name: podName });
      expect(pod.metadata?.annotations?.[lostRangesAnnotation]).toBe(m.workload.range());
    } else {
      expect(decision).toMatchObject({ action: "Evict", state: "Done" });
      await waitForPodGone(c, namespace, podName);
      // Evicted before it touched the page: it has had no BUS_MCEERR_AR yet, but the one a kernel may send
      // the caller of madvise(MADV_HWPOISON) during the call.
      expect(m.workload.sigbus.filter((s) => s.code === 4)).toHaveLength(m.workload.arInMadvise);
    }
  }
  if (guest.dryRun) {
    expect((await kubectl(["get", "pods", "-n", "mce-system", "-l", `mce-operator.io/quarantine-for=${eventName}`, "-o", "name"])).stdout).toBe("");
  } else if (expectQuarantine) {
    expect(status?.quarantine).toMatchObject([{ state: "Quarantined" }]);
    const size = status?.quarantine?.[0]?.size ?? "2Mi";
    // The placeholder holds the lost capacity on the node, as kube-scheduler accounts it.
    const holder = await waitFor("the quarantine placeholder bound to the node", async () => {
      const pod = await c.core.readNamespacedPod({ namespace: "mce-system", name: quarantinePodName(eventName, size) });
      return pod.spec?.nodeName === guest.node && pod;
    });
    expect(holder.spec?.containers[0]?.resources?.requests?.[`hugepages-${size}`]).toBeDefined();
  }
  return decided;
}

function delta(before: GuestMemory, after: GuestMemory, size: HugepageSize): Pick<Outcome, "pool" | "hardwareCorruptedBytes"> {
  return {
    pool: { size, total: after.pools[size].total - before.pools[size].total, free: after.pools[size].free - before.pools[size].free },
    hardwareCorruptedBytes: after.hardwareCorruptedBytes - before.hardwareCorruptedBytes,
  };
}

function record(row: Omit<Row, "agreed" | "kernel">): Row {
  const full = { ...row, kernel: prepared.release, agreed: agree(row.observed, row.predicted) };
  rows.push(full);
  return full;
}

type InUseMethod = "corrupt-pfn" | "machine-check" | "madvise-hwpoison" | "madvise-soft-offline";

interface InUseScenario {
  scenario: string;
  size?: HugepageSize;
  /** One pod per mapper; all map one hugepage (a hugetlbfs file when shared). */
  mappers: { kill?: KillPolicy; optIn?: boolean }[];
  shared?: boolean;
  method: InUseMethod;
  /** Hugepages per mapper, each poisoned in turn (private only). */
  pages?: number;
}

let serial = 0;

/** An error on hugepages in use: inject, follow the agent and operator, touch, exit, compare. */
async function inUse(guest: Guest, s: InUseScenario): Promise<void> {
  const size = s.size ?? "2Mi";
  const label = `w${++serial}`;
  const file = s.shared ? `/dev/hugepages/${label}` : undefined;
  const pages = s.pages ?? 1;
  const before = await readMemory(guest.vm);
  const mappers: PodWorkload[] = [];
  for (const [i, m] of s.mappers.entries()) mappers.push(await podWorkload(guest, `${label}${String.fromCharCode(97 + i)}`, size, { ...m, file, pages }));
  try {
    await poisonAndCompare(guest, s, mappers, before, file);
  } finally {
    // A failed scenario must not leave its workloads to the next one.
    await guest.vm.sh(`kill -9 ${mappers.map((m) => m.workload.pid).join(" ")} 2>/dev/null; rm -f ${file ?? ""}`);
  }
}

async function poisonAndCompare(guest: Guest, s: InUseScenario, mappers: PodWorkload[], before: GuestMemory, file: string | undefined): Promise<void> {
  const size = s.size ?? "2Mi";
  const pages = s.pages ?? 1;
  const first = mappers[0]?.workload;
  if (first === undefined) throw new Error("a scenario needs a mapper");
  // Between scenarios only the bystander's hugepage is mapped.
  await waitForIndex(guest.vm, (known) => known === 1 + (s.shared ? 1 : s.mappers.length) * pages);
  const sub = 5;
  const names = new Map(mappers.map((m) => [m.workload.pid, m.workload.spec.name]));
  const predictions: ReturnType<typeof predictKernelOutcome>[] = [];
  const latencies: number[] = [];
  const pfns: number[] = [];
  const notes: string[] = [];
  const armed = await readMemory(guest.vm);
  for (let page = 0; page < pages; page++) {
    const pfn = (first.pfns[page] ?? 0) + sub;
    pfns.push(pfn);
    const offset = page * first.bytes + sub * 4096;
    const injectedAt = Date.now();
    switch (s.method) {
      case "corrupt-pfn":
        await inject.corruptPfn(guest.vm, pfn);
        break;
      case "machine-check":
        await inject.machineCheck(guest.vm, pfn * 4096);
        break;
      case "madvise-hwpoison":
      case "madvise-soft-offline": {
        const answer = await first.madvise(s.method === "madvise-hwpoison" ? "hwpoison" : "soft-offline", offset);
        const call = s.method === "madvise-hwpoison" ? "MADV_HWPOISON" : "MADV_SOFT_OFFLINE";
        notes.push(answer === "SIGBUS" ? `madvise(${call}): the caller got BUS_MCEERR_AR during the call` : `madvise(${call}) returned ${answer}`);
        // What the caller of MADV_HWPOISON gets on a gigantic page is part of the kernel's profile.
        if (s.method === "madvise-hwpoison" && size === "1Gi") expect(answer).toBe(profile.behaviour.giganticMadviseHwpoison);
        break;
      }
    }
    const { event, latencyMs } = await eventFor(guest, pfn, injectedAt);
    latencies.push(latencyMs);
    if (page === 0) {
      const hit = delta(armed, await readMemory(guest.vm), size).pool;
      notes.push(`${size} pool right after the error, mappers alive: total ${hit.total}, free ${hit.free}`);
    }
    const dmesg = await kernelLog(guest.vm);
    const verdict = verdictOf(dmesg, pfn);
    // The event says what the kernel printed, and who maps the page: the right pods and containers.
    expect(event.spec).toMatchObject({
      nodeName: guest.node,
      bootID: guest.bootID,
      pfn: formatPfn(pfn),
      ...(verdict && { pageType: verdict.pageType, result: verdict.result }),
    });
    // Which source's lines make the event first decides whether it carries the machine check's address.
    if (s.method === "machine-check") notes.push(`event source ${event.spec.source}${event.spec.physicalAddress === undefined ? ", no physical address" : ""}`);
    if (s.method !== "madvise-soft-offline") expect(event.spec.hugepage).toMatchObject({ size, headPfn: formatPfn(first.pfns[page] ?? 0) });
    // An evicted pod is gone from the agent's pod directory: later errors name only its uid.
    const known = (m: PodWorkload): boolean => page === 0 || m.optIn || guest.dryRun;
    const expectedMappers = mappers.map((m) => ({
      pid: m.workload.pid,
      command: "hwp",
      podUID: m.pod.metadata?.uid,
      ...(known(m) && { podNamespace: namespace, podName: m.pod.metadata?.name, container: "app" }),
      mapping: s.shared ? "Shared" : "Private",
      killPolicy: { default: "Default", early: "Early", late: "Late" }[m.workload.spec.kill ?? "default"],
      virtualStart: `0x${(m.workload.base + page * m.workload.bytes).toString(16)}`,
    }));
    // A soft-offlined page moves at once; the agent's index may re-read the mapping at its new pfn before
    // the line is read, and then names nobody (nobody loses data, so no action depends on it).
    if (s.method === "madvise-soft-offline") notes.push(`event mappers: ${event.spec.mappers?.length ?? 0}`);
    else expect([...(event.spec.mappers ?? [])].sort((a, b) => a.pid - b.pid)).toMatchObject(expectedMappers.sort((a, b) => a.pid - b.pid));
    const prediction = predictKernelOutcome(ClusterState.memoryError(event), nodeState(guest));
    // The profile the operator picks for this kernel, whichever kernel the tier booted.
    expect(prediction).toMatchObject({ kernelProfile: profile.name, verified: profile.measured });
    predictions.push(prediction);
    // The operator's own prediction is the same function's.
    // Nobody loses data to a soft offline; after the first page, the mappers' pods are already evicted.
    const acted = s.method === "madvise-soft-offline" ? [] : mappers.filter((m) => page === 0 || m.optIn || guest.dryRun);
    const decided = await checkOperator(guest, event.metadata.name, acted, prediction.lostBytes > 0);
    expect(decided.status?.prediction).toMatchObject({ poolEffect: prediction.poolEffect, kernelProfile: prediction.kernelProfile });
    if (s.method === "madvise-soft-offline")
      notes.push(
        dmesg.includes(`Soft offlining pfn ${formatPfn(pfn)} at process virtual address`) ? "kernel: only the Soft offlining line" : "no Soft offlining line",
      );
  }
  // The kernel sends BUS_MCEERR_AO while it handles the error, before it prints the verdict the event
  // came from: a round trip to each mapper now finds any AO already logged.
  for (const m of mappers) await m.workload.sync();
  const ao = mappers.filter((m) => m.workload.sigbus.some((sig) => sig.code === 5)).map((m) => m.workload.spec.name);
  // BUS_MCEERR_AO names the hugepage's base or the poisoned subpage, as the profile says.
  const aoAt = (m: PodWorkload, page: number): number =>
    m.workload.base + page * m.workload.bytes + (profile.behaviour.earlyKillAddress === "Subpage" ? sub * 4096 : 0);
  for (const m of mappers)
    for (const sig of m.workload.sigbus.filter((x) => x.code === 5)) {
      expect(sig.lsb).toBe(Math.log2(m.workload.bytes));
      expect(Array.from({ length: pages }, (_, page) => aoAt(m, page))).toContain(sig.addr);
    }
  // The words the kernel prints for a process it signals early, as the profile says.
  if (ao.length > 0) expect(await kernelLog(guest.vm)).toContain(profile.behaviour.killLine === "Sending SIGBUS" ? "Sending SIGBUS to hwp:" : "Killing hwp:");
  const ar: string[] = [];
  const lsbs = new Set<number>();
  for (const m of mappers) {
    // Another subpage than the poisoned one: the whole hugepage is lost.
    const offset = 0x7000;
    const signal = await m.workload.touch(offset);
    if (signal !== undefined) {
      expect(signal).toMatchObject({ code: 4, addr: m.workload.base + offset });
      ar.push(m.workload.spec.name);
      lsbs.add(signal.lsb);
    }
    if (s.method === "madvise-soft-offline") {
      const check = await m.workload.command("check", /check bad=(\d+)/);
      notes.push(`data after the move: ${check[1] === "0" ? "intact" : `${check[1] ?? "?"} subpages wrong`}`);
    }
    if (s.shared) {
      const read = await m.workload.command(`pread ${offset.toString(16)}`, /pread off=\S+ rc=(-?\d+) errno=(\S+)/);
      notes.push(`pread() of the file: ${read[2] === "0" ? "ok" : (read[2] ?? "")}`);
    }
  }
  for (const m of mappers) await m.workload.exit();
  if (file !== undefined) await guest.vm.run(`rm ${file}`);
  const after = await readMemory(guest.vm);
  const dmesg = await kernelLog(guest.vm);
  const verdict = verdictOf(dmesg, pfns[0] ?? 0);
  const observed: Outcome = {
    pageType: verdict?.pageType,
    result: verdict?.result,
    ao: ao.sort(),
    ar: ar.sort(),
    lsb: lsbs.size === 1 ? [...lsbs][0] : undefined,
    ...delta(before, after, size),
  };
  // One page's prediction, times the pages poisoned.
  const predicted = predictedOutcome(
    predictions[0] ?? (undefined as never),
    names,
    size,
    mappers.map((m) => m.workload.spec.name),
  );
  predicted.pool = { size, total: predicted.pool.total * pages, free: predicted.pool.free * pages };
  predicted.hardwareCorruptedBytes *= pages;
  const row = record({
    scenario: s.scenario,
    node: guest.node,
    observed,
    predicted,
    injectionToEventMs: Math.max(...latencies),
    profile: `${predictions[0]?.kernelProfile ?? ""}${predictions[0]?.verified ? "" : " (unverified)"}`,
    notes: [...new Set(notes)],
  });
  expect(row.observed).toEqual(row.predicted);
}

type FreeMethod = "corrupt-pfn" | "machine-check" | "soft-offline-page";

/** An error on a free hugepage; `then` runs after it, e.g. an unpoison. Returns the raw pfn. */
async function free(guest: Guest, scenario: string, method: FreeMethod): Promise<number> {
  const size: HugepageSize = "2Mi";
  // Between scenarios only the bystander's hugepage is mapped.
  const head = (await freeHugepages(guest.vm, size, 1))[0] ?? 0;
  const pfn = head + 3;
  const before = await readMemory(guest.vm);
  const injectedAt = Date.now();
  if (method === "corrupt-pfn") await inject.corruptPfn(guest.vm, pfn);
  else if (method === "machine-check") await inject.machineCheck(guest.vm, pfn * 4096);
  else await inject.softOfflinePage(guest.vm, pfn);
  let latencyMs: number | undefined;
  let error: MemoryError;
  const notes: string[] = [];
  if (method === "soft-offline-page") {
    // The kernel logs nothing (the write to soft_offline_page returns once the kernel is done): no event
    // can come. No later signal could prove the agent has read nothing, so the absence is watched a while.
    expect((await kernelLog(guest.vm)).split("\n").filter((line) => new RegExp(`${formatPfn(pfn)}\\b`).test(line))).toEqual([]);
    await consistently(
      `no MemoryErrorEvent for the soft-offlined pfn ${formatPfn(pfn)}`,
      async () => (await readEvent(memoryErrorEventName(guest.node, guest.bootID, pfn))) === undefined,
      { durationMs: 3000, intervalMs: 250 },
      () => agentLog(guest.vm).slice(-2000),
    );
    notes.push("the kernel logs nothing, so the agent reports no event; the pool shrink reaches NodeMemoryHealth");
    error = { nodeName: guest.node, pfn, severity: "SoftOffline", hugepage: { size, headPfn: head }, mappers: [], observedAt: injectedAt };
  } else {
    const seen = await eventFor(guest, pfn, injectedAt);
    latencyMs = seen.latencyMs;
    expect(seen.event.spec).toMatchObject({
      pfn: formatPfn(pfn),
      pageType: "free huge page",
      result: "Recovered",
      hugepage: { size, headPfn: formatPfn(head) },
    });
    expect(seen.event.spec.mappers ?? []).toEqual([]);
    // Which source's lines make the event first decides whether it carries the machine check's address.
    if (method === "machine-check")
      notes.push(`event source ${seen.event.spec.source}${seen.event.spec.physicalAddress === undefined ? ", no physical address" : ""}`);
    await checkOperator(guest, seen.event.metadata.name, [], true);
    error = ClusterState.memoryError(seen.event);
  }
  const after = await readMemory(guest.vm);
  const verdict = verdictOf(await kernelLog(guest.vm), pfn);
  const prediction = predictKernelOutcome(error, nodeState(guest));
  const observed: Outcome = { pageType: verdict?.pageType, result: verdict?.result, ao: [], ar: [], ...delta(before, after, size) };
  const predicted = predictedOutcome(prediction, new Map(), size, []);
  const row = record({ scenario, node: guest.node, observed, predicted, injectionToEventMs: latencyMs, profile: prediction.kernelProfile, notes });
  expect(row.observed).toEqual(row.predicted);
  return pfn;
}

/**
 * corrupt-pfn on a page of the kernel's own data: the kernel cannot handle it, says "unhandlable page."
 * (on the kernels that print it) and then gives the pfn its verdict. One error, the verdict's words, no
 * line the agent could not read. The model predicts the memory effects; the words are the kernel's.
 */
async function kernelPage(guest: Guest, scenario: string): Promise<void> {
  const data = /^\s*([0-9a-f]+)-[0-9a-f]+ : Kernel data$/m.exec(await guest.vm.run("cat /proc/iomem"));
  if (data?.[1] === undefined) throw new Error("the guest's /proc/iomem names no Kernel data range");
  const pfn = Math.floor(parseInt(data[1], 16) / 4096) + 2;
  const before = await readMemory(guest.vm);
  const injectedAt = Date.now();
  // The kernel refuses the write (EBUSY) once it has said what it did: the exit code says nothing.
  await guest.vm.sh(`echo ${pfn} > /sys/kernel/debug/hwpoison/corrupt-pfn`);
  const { event, latencyMs } = await eventFor(guest, pfn, injectedAt);
  const log = await kernelLog(guest.vm);
  const verdict = verdictOf(log, pfn);
  expect(verdict, "the kernel's verdict for the kernel page").toBeDefined();
  expect(event.spec).toMatchObject({ pfn: formatPfn(pfn), pageType: verdict?.pageType, result: verdict?.result });
  expect(event.spec.hugepage).toBeUndefined();
  expect(event.spec.mappers ?? []).toEqual([]);
  const unhandlable = log.includes(`Memory failure: ${formatPfn(pfn)}: unhandlable page.`);
  // The tracepoint's verdict can make the event before the log's lines do: then it carries that line alone.
  if (event.spec.source !== "Tracefs") expect((event.spec.kernelLines ?? []).some((line) => line.includes("unhandlable page."))).toBe(unhandlable);
  const parseErrors = await guest.vm.sh(`wget -qO- http://127.0.0.1:${AGENT_METRICS_PORT}/metrics | grep '^mce_agent_parse_errors_total' || true`);
  expect(parseErrors.output.split("\n").filter((line) => !/ 0$/.test(line.trim()) && line.trim() !== "")).toEqual([]);
  // Not a hugepage, nobody to act on: the operator records the decision and ignores it.
  const decided = await decidedEvent(event.metadata.name);
  expect(decided.status).toMatchObject({ phase: "Ignored", prediction: { poolEffect: "NotHugepage" } });
  expect(decided.status?.pods ?? []).toEqual([]);
  const after = await readMemory(guest.vm);
  const prediction = predictKernelOutcome(ClusterState.memoryError(event), nodeState(guest));
  const observed: Outcome = { pageType: verdict?.pageType, result: verdict?.result, ao: [], ar: [], ...delta(before, after, "2Mi") };
  // The words on the predicted side are the agent's event's, checked against the kernel's verdict.
  const predicted = { ...predictedOutcome(prediction, new Map(), "2Mi", []), pageType: event.spec.pageType, result: event.spec.result };
  const notes = [
    `${unhandlable ? "the kernel said 'unhandlable page.' before its verdict" : "no 'unhandlable page.' line"}: one event (source ${event.spec.source}), the verdict's words`,
  ];
  const row = record({ scenario, node: guest.node, observed, predicted, injectionToEventMs: latencyMs, profile: prediction.kernelProfile, notes });
  expect(row.observed).toEqual(row.predicted);
}

/**
 * A fatal machine check (processor context corrupt) panics the guest, which resets; the banks keep the
 * record across the warm reset and the next boot logs it before it runs init. The agent of the new boot
 * reports it as an error from before the boot: Fatal, loggedAtBoot, no mapper; this boot's kernel
 * poisoned nothing and the model predicts nothing lost.
 */
async function resetByFatalMachineCheck(guest: Guest, scenario: string): Promise<void> {
  const head = (await freeHugepages(guest.vm, "2Mi", 1))[0] ?? 0;
  const pfn = head + 5;
  const oldBoot = guest.bootID;
  await guest.vm.monitor(`mce ${guest.vm.cpus > 1 ? "-b " : ""}0 9 0xbe00000000800400 0x5 0x${(pfn * 4096).toString(16)} 0x8c`);
  const newBoot = await waitFor(
    "the guest to panic and boot again",
    async () => {
      const answer = await guest.vm.sh("cat /proc/sys/kernel/random/boot_id", 2000).catch(() => undefined);
      const id = answer?.output.trim();
      return answer?.code === 0 && id !== undefined && id !== oldBoot && id;
    },
    { timeoutMs: 120_000, intervalMs: 500 },
    () => guest.vm.console.slice(-2000),
  );
  expect(guest.vm.console).toMatch(/Kernel panic - not syncing: Fatal machine check/);
  guest.bootID = newBoot;
  const log = await kernelLog(guest.vm);
  const bootDone = /^\[\s*(\d+\.\d+)\] Run \S+ as init process$/m.exec(log)?.[1];
  const logged = new RegExp(`^\\[\\s*(\\d+\\.\\d+)\\] mce: \\[Hardware Error\\]: TSC \\w+ ADDR ${(pfn * 4096).toString(16)} `, "m").exec(log)?.[1];
  expect(logged, "the record the banks kept, in the new boot's log").toBeDefined();
  expect(Number(logged)).toBeLessThan(Number(bootDone));
  const before = await readMemory(guest.vm);
  await startAgent(guest.vm, guest.node, guestKubeconfig(provided("kubeconfig"), apiserverPort()));
  await waitFor(
    "NodeMemoryHealth from the agent of the new boot",
    async () => (await getNodeHealth(guest.node).catch(() => undefined))?.spec.bootID === newBoot,
    { timeoutMs: 120_000, intervalMs: 500 },
    () => agentLog(guest.vm).slice(-3000),
  );
  const { event } = await eventFor(guest, pfn, Date.now());
  // The severity is the bank's: what the agent's own reading of the record's status line says (Fatal
  // for the status injected here, the unit tests hold that); the event must agree with its own lines.
  const bank = (event.spec.kernelLines ?? []).map((line) => parseKernelLine(line)).find((r) => r.kind === "record" && "severity" in r.record);
  const bankSeverity = bank?.kind === "record" && "severity" in bank.record ? bank.record.severity : undefined;
  expect(event.spec, JSON.stringify(event.spec.kernelLines)).toMatchObject({
    pfn: formatPfn(pfn),
    severity: severityOf[bankSeverity ?? "action-optional"],
    source: "MachineCheck",
    loggedAtBoot: true,
    bootID: newBoot,
  });
  expect(event.spec.mappers ?? []).toEqual([]);
  const decided = await decidedEvent(event.metadata.name);
  expect(decided.status?.pods ?? []).toEqual([]);
  await waitFor("the error in the node's history", async () => ((await getNodeHealth(guest.node)).status?.uncorrectedErrors ?? 0) >= 1);
  const after = await readMemory(guest.vm);
  expect(after.hardwareCorruptedBytes).toBe(0);
  const prediction = predictKernelOutcome(ClusterState.memoryError(event), nodeState(guest));
  const observed: Outcome = { ...verdictOf(log, pfn), ao: [], ar: [], ...delta(before, after, "2Mi") };
  const predicted = predictedOutcome(prediction, new Map(), "2Mi", []);
  const notes = [
    `severity ${event.spec.severity} from the bank's status; logged at ${logged ?? "?"} s of the new boot, init ran at ${bootDone ?? "?"} s; operator: ${decided.status?.prediction?.reason ?? ""}`,
  ];
  const row = record({ scenario, node: guest.node, observed, predicted, profile: prediction.kernelProfile, notes });
  expect(row.observed).toEqual(row.predicted);
}

/** Software unpoison of a page poisoned free: the mark goes, the dissolved hugepage does not come back. */
async function unpoison(guest: Guest, scenario: string, pfn: number): Promise<void> {
  const before = await readMemory(guest.vm);
  await inject.unpoisonPfn(guest.vm, pfn);
  const after = await readMemory(guest.vm);
  const logged = (await kernelLog(guest.vm)).includes(`Unpoison: Software-unpoisoned page ${formatPfn(pfn)}`);
  const expected = predictUnpoison();
  const observed: Outcome = { ao: [], ar: [], ...delta(before, after, "2Mi") };
  const predicted: Outcome = {
    ao: [],
    ar: [],
    pool: { size: "2Mi", total: expected.poolTotalDelta, free: expected.poolTotalDelta },
    hardwareCorruptedBytes: expected.hardwareCorruptedDelta,
  };
  const row = record({
    scenario,
    node: guest.node,
    observed,
    predicted,
    profile: profile.name,
    notes: [logged ? "kernel: Unpoison: Software-unpoisoned page" : "no Unpoison line"],
  });
  expect(row.observed).toEqual(row.predicted);
}

interface HealScenario {
  scenario: string;
  size: HugepageSize;
  /** A free hugepage, or one mapped privately or through a shared hugetlbfs file by `mappers` pods. */
  page: "free" | "private" | "shared";
  mappers?: number;
  /** Fragment memory on purpose (one 2 MiB page in use per 1 GiB range) before the kernel is asked. */
  fragment?: boolean;
}

async function replacementSettled(name: string): Promise<MemoryErrorEvent> {
  return waitFor(
    `${name}: the replacement given or refused`,
    async () => {
      const e = await readEvent(name);
      const state = e?.status?.poolReplacement?.state;
      return (state === "Given" || state === "Refused" || state === "Skipped") && e;
    },
    { timeoutMs: 90_000, intervalMs: 250 },
    (last) => JSON.stringify(last === false ? "not yet" : last?.status?.poolReplacement),
  );
}

/**
 * Self-healing pools against the real kernel: poison a hugepage, follow the operator's decision and the
 * agent's replacement, and compare the pool (against before the scenario's workloads) and the quarantine
 * with the model's prediction; a replacement the kernel gives makes the whole advertised capacity
 * schedulable again.
 */
async function heal(guest: Guest, s: HealScenario): Promise<void> {
  const label = `h${++serial}`;
  const file = s.page === "shared" ? `/dev/hugepages/${label}` : undefined;
  const before = await readMemory(guest.vm);
  const mappers: PodWorkload[] = [];
  for (let i = 0; i < (s.page === "free" ? 0 : (s.mappers ?? 1)); i++)
    mappers.push(await podWorkload(guest, `${label}${String.fromCharCode(97 + i)}`, s.size, { file }));
  const notes: string[] = [];
  let fragmented: Awaited<ReturnType<typeof fragmentFor1GiB>> | undefined;
  try {
    let pfn: number;
    let injectedAt: number;
    if (s.page === "free") {
      pfn = ((await freeHugepages(guest.vm, s.size, 1))[0] ?? 0) + 3;
      injectedAt = Date.now();
      await inject.corruptPfn(guest.vm, pfn);
    } else {
      const first = mappers[0]?.workload;
      if (first === undefined) throw new Error("a mapped page needs a mapper");
      await waitForIndex(guest.vm, (known) => known === 1 + (s.page === "shared" ? 1 : mappers.length));
      pfn = (first.pfns[0] ?? 0) + 5;
      injectedAt = Date.now();
      if (s.size === "1Gi") notes.push(`madvise(MADV_HWPOISON): ${await first.madvise("hwpoison", 0x5000)}`);
      else await inject.corruptPfn(guest.vm, pfn);
    }
    const { event, latencyMs } = await eventFor(guest, pfn, injectedAt);
    const name = event.metadata.name;
    await checkOperator(guest, name, mappers, false);
    const prediction = predictKernelOutcome(ClusterState.memoryError(event), nodeState(guest));
    const asked = (await readEvent(name))?.status?.poolReplacement;
    expect(asked).toMatchObject({ action: "Replace", size: s.size, afterMappersExit: s.page === "private" });
    notes.push(`asked: raise to at most ${asked?.maxTotal ?? "?"}, ${(asked?.expected ?? "").toLowerCase()}`);
    if (s.page === "private") {
      // The pod is evicted, but its process (KWOK runs none; hwp stands in) still maps the page: the agent waits.
      const pid = mappers[0]?.workload.pid ?? 0;
      const waiting = await waitFor(
        `${name}: the agent waiting for pid ${pid}`,
        async () => {
          const e = await readEvent(name);
          return e?.status?.poolReplacementResult?.state === "Waiting" && e;
        },
        { timeoutMs: 30_000 },
      );
      expect(waiting.status?.poolReplacementResult?.message).toBe(`waiting for 1 mapper(s) to exit: pid ${pid}`);
      // That the agent keeps waiting while the mapper lives is a claim over time: watched for a while.
      const waitingPool = (await readMemory(guest.vm)).pools[s.size].total;
      await consistently(
        `${name}: the pool not raised while pid ${pid} maps the page`,
        async () => (await readMemory(guest.vm)).pools[s.size].total === waitingPool && (await readEvent(name))?.status?.poolReplacement?.state === "Requested",
        { durationMs: 3000, intervalMs: 500 },
        async () => JSON.stringify({ pool: (await readMemory(guest.vm)).pools[s.size], status: (await readEvent(name))?.status?.poolReplacement }),
      );
      notes.push(`mapper alive: ${s.size} pool total ${waitingPool - before.pools[s.size].total} against before, nothing raised`);
    }
    if (s.fragment === true) {
      fragmented = await fragmentFor1GiB(guest.vm);
      notes.push(
        `memory fragmented on purpose: one 2 MiB page in use in each 1 GiB range (${fragmented.kept.join(", ")}), ${Math.round(fragmented.memFreeBytes / 2 ** 20)} MiB free`,
      );
    }
    // The mappers touch the page (AR), then exit: for a private page that lets the agent act.
    const ar: string[] = [];
    const lsbs = new Set<number>();
    for (const m of mappers) {
      const signal = await m.workload.touch(0x7000);
      if (signal?.code === 4) {
        ar.push(m.workload.spec.name);
        lsbs.add(signal.lsb);
      }
      if (file !== undefined) notes.push(`pread() of the file: ${(await m.workload.command("pread 7000", /pread off=\S+ rc=(-?\d+) errno=(\S+)/))[2] ?? ""}`);
      await m.workload.exit();
    }
    if (file !== undefined) await guest.vm.run(`rm ${file}`);
    const settled = await replacementSettled(name);
    const result = settled.status?.poolReplacementResult;
    const outcome = settled.status?.poolReplacement?.state ?? "";
    notes.push(`agent: ${result?.message ?? outcome}`);
    // Both stamped by the node's clock: from the kernel's line to the agent's answer.
    if (result?.at !== undefined && s.page !== "private")
      notes.push(`answered ${((Date.parse(result.at) - Date.parse(event.spec.observedAt)) / 1000).toFixed(2)} s after the error`);
    if (outcome === "Given") {
      let seen: unknown;
      const released = await waitFor(
        `${name}: quarantine released`,
        async () => {
          const e = await readEvent(name);
          const health = await getNodeHealth(guest.node);
          seen = { quarantine: e?.status?.quarantine, health: health.spec.hugepagePools, observedAt: health.spec.observedAt };
          return e?.status?.quarantine?.[0]?.state === "Released" && e;
        },
        { timeoutMs: 30_000 },
        () => JSON.stringify(seen),
      );
      expect(released.status?.quarantine).toMatchObject([{ size: s.size, state: "Released" }]);
      // Every hugepage the kubelet advertises, less the bystander's, is schedulable again.
      const whole = await createHugepagePod(c, { namespace, onlyOnto: guest.node, hugepages: { [`hugepages-${s.size}`]: s.size === "2Mi" ? "62Mi" : "1Gi" } });
      const placed = await waitForPodRunning(c, namespace, whole.metadata?.name ?? "");
      expect(placed.spec?.nodeName).toBe(guest.node);
      await c.core.deleteNamespacedPod({ namespace, name: whole.metadata?.name ?? "" });
      await waitForPodGone(c, namespace, whole.metadata?.name ?? "");
      notes.push("quarantine released; a pod needing all the advertised hugepages scheduled");
    } else {
      // Nothing came back: the quarantine stays, and the event says why. The operator's reason is the
      // barrier: written once it has handled the agent's answer.
      const kept = await waitFor(
        `${name}: the operator's reason for keeping the quarantine`,
        async () => {
          const e = await readEvent(name);
          return /the quarantine of .* stays/.test(e?.status?.poolReplacement?.message ?? "") && e;
        },
        { timeoutMs: 30_000 },
        (last) => JSON.stringify(last === false ? "not yet" : last?.status?.poolReplacement),
      );
      expect(kept.status?.quarantine).toMatchObject([{ size: s.size, state: "Quarantined" }]);
      expect(kept.status?.poolReplacement?.message).toMatch(/the quarantine of .* stays/);
      notes.push(`operator: ${(kept.status?.poolReplacement?.message ?? "").split("; ").pop() ?? ""}`);
    }
    const after = await readMemory(guest.vm);
    const verdict = verdictOf(await kernelLog(guest.vm), pfn);
    const observed: Outcome = {
      pageType: verdict?.pageType,
      result: verdict?.result,
      ao: mappers.filter((m) => m.workload.sigbus.some((x) => x.code === 5)).map((m) => m.workload.spec.name),
      ar: ar.sort(),
      lsb: lsbs.size === 1 ? [...lsbs][0] : undefined,
      ...delta(before, after, s.size),
      replacement: outcome,
    };
    const names = new Map(mappers.map((m) => [m.workload.pid, m.workload.spec.name]));
    const predicted = predictedOutcome(
      prediction,
      names,
      s.size,
      mappers.map((m) => m.workload.spec.name),
    );
    // The model's conditional prediction: a replacement the kernel gives adds one hugepage back to the pool.
    predicted.replacement = asked?.expected === "Likely" ? "Given" : "Given|Refused";
    if (outcome === "Given" && predicted.replacement.includes("Given"))
      predicted.pool = { ...predicted.pool, total: predicted.pool.total + 1, free: predicted.pool.free + 1 };
    const row = record({
      scenario: s.scenario,
      node: guest.node,
      observed,
      predicted,
      injectionToEventMs: latencyMs,
      profile: prediction.kernelProfile,
      notes,
    });
    expect({ ...row.observed, replacement: undefined }).toEqual({ ...row.predicted, replacement: undefined });
    expect(row.agreed, `replacement ${observed.replacement ?? ""}, predicted ${predicted.replacement}`).toBe(true);
  } finally {
    await fragmented?.restore();
    await guest.vm.sh(`kill -9 ${mappers.map((m) => m.workload.pid).join(" ")} 2>/dev/null; rm -f ${file ?? ""}`);
  }
}

// Thresholds out of reach: this tier is about containment; escalation has its own e2e tests.
const common = { podActions: { eviction: { backoff: "1s" } }, escalation: { taintAfter: 1000, cordonAfter: 2000 } };
/** Corrected errors on a page at which the prevention policy acts: low, so a row injects only a few. */
const PAGE_THRESHOLD = 3;
/** The prevention policy's spec, with the page threshold a row needs. */
const preventionPolicy = (pageThreshold: number): Record<string, unknown> => ({
  mode: "Enforce",
  nodeSelector: { matchLabels: { [groupLabel]: `${run}-prevent` } },
  ...common,
  prevention: { pageThreshold },
});

/** Injects corrected errors on `pfn`, each once the kernel has printed the one before it; returns when each went in (host clock). */
async function injectCorrected(guest: Guest, pfn: number, count: number): Promise<number[]> {
  const address = pfn * 4096;
  const at: number[] = [];
  for (let i = 0; i < count; i++) {
    const logged = await recordsLogged(guest.vm, address);
    at.push(Date.now());
    await inject.correctedError(guest.vm, address);
    let now = logged;
    await waitFor(
      `corrected error ${i + 1} of ${count} on ${formatPfn(pfn)}: its record in the kernel's log`,
      async () => (now = await recordsLogged(guest.vm, address)) > logged,
      { timeoutMs: 15_000, intervalMs: 200 },
      () => `${now} records for 0x${address.toString(16)}`,
    );
  }
  return at;
}

/**
 * The agent counted each of the `injected` errors once. A corrected record ends no error of its own: the
 * agent holds its lines up to 5 s for a verdict that never comes, so the count is read after that.
 */
async function expectCountedOnce(guest: Guest, pfn: number, injected: number, lastInjectedAt: number): Promise<void> {
  const count = async (): Promise<number> => (await getNodeHealth(guest.node)).spec.correctedErrorPages?.find((p) => p.pfn === formatPfn(pfn))?.count ?? 0;
  await waitFor(`the agent's count for ${formatPfn(pfn)} to reach ${injected}`, async () => (await count()) >= injected, {
    timeoutMs: 30_000,
    intervalMs: 250,
  });
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, lastInjectedAt + 8000 - Date.now())));
  expect.soft(await count(), `the agent's count of the ${injected} corrected errors injected on ${formatPfn(pfn)}`).toBe(injected);
}

/** The first corrected error on `pfn`: its event (the page's, `-ce-`) and the operator watching the page. */
async function firstCorrected(
  guest: Guest,
  pfn: number,
): Promise<{ event: MemoryErrorEvent; latencyMs: number; watching: MemoryErrorEvent; injectedAt: number }> {
  const injectedAt = Date.now();
  await inject.correctedError(guest.vm, pfn * 4096);
  const { event, latencyMs } = await eventFor(guest, pfn, injectedAt, true);
  expect(event.spec).toMatchObject({ nodeName: guest.node, bootID: guest.bootID, pfn: formatPfn(pfn), severity: "Corrected" });
  const watching = await waitFor(
    `${event.metadata.name}: the page watched`,
    async () => {
      const e = await readEvent(event.metadata.name);
      return e?.status?.prevention?.state === "Watching" && e;
    },
    { timeoutMs: 30_000, intervalMs: 100 },
    (last) => JSON.stringify(last === false ? "not yet" : last?.status),
  );
  expect(watching.status?.prevention).toMatchObject({ action: "None", correctedErrors: 1 });
  return { event, latencyMs, watching, injectedAt };
}

/** The event once the operator's prevention has settled (Done, Failed or Skipped). */
async function preventionSettled(name: string): Promise<MemoryErrorEvent> {
  return waitFor(
    `${name}: prevention carried out`,
    async () => {
      const e = await readEvent(name);
      const state = e?.status?.prevention?.state;
      return (state === "Done" || state === "Failed" || state === "Skipped") && e;
    },
    { timeoutMs: 60_000, intervalMs: 50 },
    (last) => JSON.stringify(last === false ? "not yet" : { prevention: last?.status?.prevention, result: last?.status?.softOfflineResult }),
  );
}

/**
 * The risk model's decision as an outcome. Its reason says what the kernel will do to the pool: a copy in
 * a free hugepage of the pool (which loses one) or in one taken from free memory (the pool keeps its
 * size); a soft offline retires one 4 KiB page. A page it does not soft-offline loses nothing.
 */
function preventionOutcome(decision: Prevention, size: HugepageSize): Outcome {
  const retired = decision.action === "SoftOffline";
  const loses = retired && /the pool loses one hugepage/.test(decision.reason);
  return { ao: [], ar: [], pool: { size, total: loses ? -1 : 0, free: loses ? -1 : 0 }, hardwareCorruptedBytes: retired ? 4096 : 0 };
}

/** The node's pools as its agent reports them, once they are what the kernel has now. */
async function healthWithPools(guest: Guest, memory: GuestMemory): Promise<NodeMemoryHealth> {
  let seen: unknown;
  return waitFor(
    `NodeMemoryHealth ${guest.node}: the pools as the kernel has them`,
    async () => {
      const health = await getNodeHealth(guest.node);
      seen = health.spec.hugepagePools;
      const pools = health.spec.hugepagePools ?? [];
      const same = (["2Mi", "1Gi"] as const).every((size) => {
        const pool = pools.find((p) => p.size === size);
        return pool === undefined ? memory.pools[size].total === 0 : pool.total === memory.pools[size].total && pool.free === memory.pools[size].free;
      });
      return same && health;
    },
    { timeoutMs: 30_000, intervalMs: 250 },
    () => JSON.stringify({ agent: seen, kernel: memory.pools }),
  );
}

interface PreventionScenario {
  scenario: string;
  size: HugepageSize;
  /** Who holds the hugepage: pods mapping it privately (one) or through a shared hugetlbfs file, or nobody. */
  page: "private" | "shared" | "free";
  mappers?: number;
  /** A process outside any pod maps every other free hugepage of the size first: the pool has none free. */
  fillPool?: boolean;
}

/**
 * Corrected errors on a 4 KiB page until the policy's page threshold: the agent counts them, the operator
 * decides with the risk model (soft offline, or the mappers moved where it cannot be done), the agent
 * soft-offlines; then what the kernel did (data, signals, pool, HardwareCorrupted) against what the
 * model's decision said it would do. Where the model moved the mappers instead, the row asks the kernel
 * itself, to see it refuse.
 */
async function prevention(guest: Guest, s: PreventionScenario): Promise<void> {
  const label = `c${++serial}`;
  const file = s.page === "shared" ? `/dev/hugepages/${label}` : undefined;
  const before = await readMemory(guest.vm);
  const mappers: PodWorkload[] = [];
  let filler: Workload | undefined;
  const notes: string[] = [];
  try {
    let head: number;
    if (s.page === "free") head = (await freeHugepages(guest.vm, s.size, 1))[0] ?? 0;
    else {
      for (let i = 0; i < (s.mappers ?? 1); i++) mappers.push(await podWorkload(guest, `${label}${String.fromCharCode(97 + i)}`, s.size, { file }));
      head = mappers[0]?.workload.pfns[0] ?? 0;
    }
    if (s.fillPool === true) {
      const free = (await readMemory(guest.vm)).pools[s.size].free;
      filler = await Workload.start(guest.vm, { name: `${label}-fill`, size: s.size, pages: free });
      notes.push(`the ${free} other free ${s.size} hugepages mapped by a process outside any pod`);
    }
    await waitForIndex(guest.vm, (known) => known === 1 + (s.page === "free" ? 0 : 1) + (filler?.pfns.length ?? 0));
    // The model decides on the agent's report: it must show the pools as they are.
    const armed = await healthWithPools(guest, await readMemory(guest.vm));
    const pfn = head + 5;
    const address = pfn * 4096;
    const { event, latencyMs, injectedAt } = await firstCorrected(guest, pfn);
    const name = event.metadata.name;
    if (s.page === "free")
      notes.push(
        event.spec.hugepage === undefined ? "the event names no hugepage (no mapper, no verdict)" : `event hugepage ${JSON.stringify(event.spec.hugepage)}`,
      );
    else {
      expect(event.spec.hugepage).toMatchObject({ size: s.size, headPfn: formatPfn(head) });
      expect([...new Set((event.spec.mappers ?? []).map((m) => m.podUID))].sort()).toEqual(mappers.map((m) => m.pod.metadata?.uid ?? "").sort());
    }
    const times = [injectedAt, ...(await injectCorrected(guest, pfn, PAGE_THRESHOLD - 1))];
    const threshold = times.at(-1) ?? injectedAt;
    const settled = await preventionSettled(name);
    const doneMs = Date.now() - threshold;
    const plan = settled.status?.prevention;
    const decidedMs = plan?.decidedAt === undefined ? undefined : Date.parse(plan.decidedAt) - threshold;
    notes.push(`${times.length} corrected errors over ${((threshold - injectedAt) / 1000).toFixed(1)} s, each once the kernel had logged the one before`);
    const health = await getNodeHealth(guest.node);
    const page = ClusterState.correctedPages(health).find((p) => p.pfn === pfn);
    expect(page, "the page in NodeMemoryHealth spec.correctedErrorPages").toBeDefined();
    // The operator's decision is the risk model's on the agent's report as it stood: the count it decided at,
    // the page not yet retired, the pools before the errors.
    const error = ClusterState.memoryError(settled);
    const decidedAt = Date.parse(plan?.decidedAt ?? "");
    const decision = decidePrevention({
      page: page && { ...page, softOfflined: false, hourly: [{ hour: Math.floor(decidedAt / 3_600_000) * 3_600_000, count: plan?.correctedErrors ?? 0 }] },
      pfn,
      hugepage: error.hugepage,
      dimms: ClusterState.dimmCounts(armed),
      node: {
        pools: (armed.spec.hugepagePools ?? []).map((p) => ({ size: p.size, numaNode: p.numaNode, total: p.total, free: p.free })),
        numaMemory: armed.spec.numaMemory,
      },
      support: { available: armed.spec.capabilities?.softOffline, enableSoftOffline: armed.spec.capabilities?.enableSoftOffline },
      mapperPods: mappers.length,
      policy: parseResource("ContainmentPolicy", { metadata: { name: `${run}-prevent` }, spec: preventionPolicy(PAGE_THRESHOLD) }, "the prevention policy")
        .spec,
      now: decidedAt,
    });
    expect(plan).toMatchObject({ action: decision.action, reason: decision.reason });
    notes.push(`operator at ${plan?.correctedErrors ?? "?"} counted: ${decision.reason.split(": ").slice(1).join(": ")}`);
    const ao: string[] = [];
    const ar: string[] = [];
    const lsbs = new Set<number>();
    /** The pfn's other event (`<node>-<boot>-<pfn>`): only a soft offline's, never an uncorrected error's. */
    const otherName = memoryErrorEventName(guest.node, guest.bootID, pfn);
    let softOfflineEvent: MemoryErrorEvent | undefined;
    let settledStatus: MemoryErrorEvent["status"];
    if (decision.action === "SoftOffline") {
      expect(plan?.state).toBe("Done");
      expect(settled.status?.softOfflineResult).toMatchObject({ state: "Done" });
      settledStatus = settled.status;
      notes.push(`agent: ${settled.status?.softOfflineResult?.message ?? ""}`);
      // The agent publishes the retired page once it has recorded the result.
      await waitFor(
        "the page retired in NodeMemoryHealth",
        async () => (await getNodeHealth(guest.node)).spec.correctedErrorPages?.find((p) => p.pfn === formatPfn(pfn) && p.softOfflined === true),
        { timeoutMs: 30_000, intervalMs: 200 },
      );
      // Nobody was moved: the pods are still there.
      expect((settled.status?.pods ?? []).filter((p) => p.action === "Evict")).toEqual([]);
      for (const m of mappers) expect(await podExists(c, namespace, m.pod.metadata?.name ?? "")).toBe(true);
      // The kernel logs nothing for it: the agent reports its own soft offline, so the capacity is accounted.
      softOfflineEvent = await waitFor(`${otherName}: the agent's soft offline`, () => readEvent(otherName), { timeoutMs: 30_000, intervalMs: 100 });
      expect.soft(softOfflineEvent.spec, `${otherName}: the agent's own soft offline`).toMatchObject({ severity: "SoftOffline", source: "Agent" });
    } else {
      expect(decision.action).toBe("Evict");
      expect(plan?.state).toBe("Done");
      // The agent was never asked.
      expect(settled.status?.softOfflineResult).toBeUndefined();
      expect.soft((await readEvent(otherName))?.spec, `${otherName}: no error of its own before the kernel is asked`).toBeUndefined();
      for (const m of mappers) {
        expect((settled.status?.pods ?? []).find((p) => p.uid === m.pod.metadata?.uid)).toMatchObject({ action: "Evict", state: "Done" });
        await waitForPodGone(c, namespace, m.pod.metadata?.name ?? "");
      }
      // KWOK runs no containers: the evicted pod's process (hwp) still maps the page. The kernel is asked now.
      const asked = await guest.vm.sh(`echo 0x${address.toString(16)} > /sys/devices/system/memory/soft_offline_page`);
      expect(asked.code, "the kernel refuses the soft offline").not.toBe(0);
      const line = (await kernelLog(guest.vm)).split("\n").find((l) => l.toLowerCase().includes(`soft offline: ${formatPfn(pfn)}:`));
      notes.push(`asked anyway, the kernel refused: ${asked.output.trim().replace(/^sh: /, "")}; ${line?.replace(/^\[[\s\d.]+\] /, "") ?? "no line"}`);
      // The agent reads the refusal as a soft offline that did not happen.
      const refused = await eventFor(guest, pfn, Date.now());
      expect(refused.event.spec).toMatchObject({ severity: "SoftOffline", result: "Failed" });
      const decided = await decidedEvent(refused.event.metadata.name);
      notes.push(`the refusal's own event: ${decided.status?.phase ?? "?"} (${decided.status?.prediction?.reason ?? ""})`);
    }
    for (const m of mappers) {
      await m.workload.sync();
      const check = await m.workload.command("check", /check bad=(\d+)/);
      const moved = (await m.workload.command("pfns", /now pfns=(\S+)/))[1];
      notes.push(
        `${m.workload.spec.name}: ${check[1] === "0" ? "pattern intact" : `${check[1] ?? "?"} subpages wrong`}, hugepage ${formatPfn(head)} → ${moved ?? "?"}`,
      );
      expect(check[1]).toBe("0");
      if (decision.action === "SoftOffline") expect(moved).not.toBe(formatPfn(head));
      else expect(moved).toBe(formatPfn(head));
      // The subpage that took the errors, read again.
      const signal = await m.workload.touch(0x5000);
      if (signal !== undefined) {
        ar.push(m.workload.spec.name);
        lsbs.add(signal.lsb);
      }
      if (m.workload.sigbus.some((x) => x.code === 5)) ao.push(m.workload.spec.name);
    }
    for (const m of mappers) await m.workload.exit();
    await filler?.exit();
    if (file !== undefined) await guest.vm.run(`rm ${file}`);
    const after = await readMemory(guest.vm);
    // The agent reports the pool the kernel left.
    await healthWithPools(guest, after);
    const verdict = verdictOf(await kernelLog(guest.vm), pfn);
    const observed: Outcome = {
      pageType: verdict?.pageType,
      result: verdict?.result,
      ao: ao.sort(),
      ar: ar.sort(),
      lsb: lsbs.size === 1 ? [...lsbs][0] : undefined,
      ...delta(before, after, s.size),
    };
    await expectCountedOnce(guest, pfn, times.length, threshold);
    if (softOfflineEvent !== undefined) {
      // The same model's prediction for the soft offline as an error (what the operator quarantines by).
      const decided = await decidedEvent(otherName);
      // As the operator decides it: with the pool's change the agent recorded on the corrected-error event.
      const result = settledStatus?.softOfflineResult;
      const poolTotalDelta = result?.poolAfter !== undefined && result.poolBefore !== undefined ? result.poolAfter - result.poolBefore : undefined;
      const asError = predictedOutcome(
        predictKernelOutcome({ ...ClusterState.memoryError(softOfflineEvent), poolTotalDelta }, nodeState(guest)),
        new Map(),
        s.size,
        [],
      );
      notes.push(
        `the agent's soft offline as an error: ${decided.status?.prediction?.poolEffect ?? "?"}, ${s.size} total ${asError.pool.total} free ${asError.pool.free} predicted, quarantine ${JSON.stringify(decided.status?.quarantine?.map((q) => `${q.size} ${q.state}`) ?? [])}`,
      );
      expect.soft(asError.pool, "the soft offline's own prediction of the pool").toEqual(observed.pool);
    }
    const row = record({
      scenario: s.scenario,
      node: guest.node,
      observed,
      predicted: preventionOutcome(decision, s.size),
      injectionToEventMs: latencyMs,
      prevention: { decidedMs, doneMs },
      profile: profile.name,
      notes,
    });
    expect(row.observed).toEqual(row.predicted);
  } finally {
    const pids = [...mappers.map((m) => m.workload.pid), ...(filler === undefined ? [] : [filler.pid])];
    if (pids.length > 0) await guest.vm.sh(`kill -9 ${pids.join(" ")} 2>/dev/null; rm -f ${file ?? ""}`);
  }
}

const CEC = "/sys/kernel/debug/ras/cec";

/**
 * The kernel's own corrected-errors collector (CONFIG_RAS_CEC) reaches its threshold before the policy's:
 * it soft-offlines the pfn itself (`RAS: Soft-offlining pfn: 0x…`); the agent marks the page retired, the
 * operator skips it ("already retired") and asks the agent nothing; the pool loses the hugepage as the
 * model predicts for a soft offline, and the agent's report follows the pool.
 */
async function collectorFirst(guest: Guest, scenario: string, collectorThreshold: number, pageThreshold: number, atBoot: string): Promise<void> {
  const label = `c${++serial}`;
  const before = await readMemory(guest.vm);
  const notes: string[] = [];
  const metric = async (): Promise<string> =>
    (await guest.vm.run(`wget -qO- http://127.0.0.1:${AGENT_METRICS_PORT}/metrics | grep '^mce_agent_soft_offlines_total' || true`)).trim();
  const offlinesBefore = await metric();
  await applyPolicy(`${run}-prevent`, preventionPolicy(pageThreshold));
  await guest.vm.run(`echo ${collectorThreshold} > ${CEC}/action_threshold`);
  const mapper = await podWorkload(guest, `${label}a`, "2Mi");
  try {
    await waitForIndex(guest.vm, (known) => known === 2);
    // The pools as the operator has them when the collector's soft offline arrives: before it.
    const armed = await readMemory(guest.vm);
    await healthWithPools(guest, armed);
    const head = mapper.workload.pfns[0] ?? 0;
    const pfn = head + 5;
    const { event, latencyMs, watching } = await firstCorrected(guest, pfn);
    // Below both thresholds; the policy in force is the one that waits for more than the collector does.
    expect(watching.status?.prevention?.reason).toContain(`(page threshold ${pageThreshold})`);
    const times = await injectCorrected(guest, pfn, collectorThreshold - 1);
    const threshold = times.at(-1) ?? 0;
    const log = await kernelLog(guest.vm);
    expect(log).toContain(`RAS: Soft-offlining pfn: ${formatPfn(pfn)}`);
    // The collector's soft offline is an error of its own (named without -ce-), from the kernel's line.
    const retired = await eventFor(guest, pfn, threshold);
    expect.soft(retired.event.spec, "the collector's soft offline, from the kernel's line").toMatchObject({ severity: "SoftOffline", pfn: formatPfn(pfn) });
    expect.soft(retired.event.spec.result).toBeUndefined();
    const settled = await preventionSettled(event.metadata.name);
    const decidedMs = Date.parse(settled.status?.prevention?.decidedAt ?? "") - threshold;
    expect(settled.status?.prevention).toMatchObject({ action: "None", state: "Skipped" });
    expect(settled.status?.prevention?.reason).toMatch(/already retired/);
    // Never asked of the agent, and the agent did none.
    expect(settled.status?.softOfflineResult).toBeUndefined();
    expect(await metric()).toBe(offlinesBefore);
    const page = (await getNodeHealth(guest.node)).spec.correctedErrorPages?.find((p) => p.pfn === formatPfn(pfn));
    expect(page).toMatchObject({ softOfflined: true });
    notes.push(
      `collector threshold ${collectorThreshold} (${atBoot} at boot), policy page threshold ${pageThreshold}: the kernel soft-offlined at error ${collectorThreshold}; operator: ${settled.status?.prevention?.reason ?? ""}`,
    );
    const decided = await decidedEvent(retired.event.metadata.name);
    notes.push(`the collector's soft offline: ${decided.status?.phase ?? "?"}, ${decided.status?.prediction?.poolEffect ?? "?"}`);
    await mapper.workload.sync();
    const check = await mapper.workload.command("check", /check bad=(\d+)/);
    const moved = (await mapper.workload.command("pfns", /now pfns=(\S+)/))[1];
    expect(check[1]).toBe("0");
    expect(moved).not.toBe(formatPfn(head));
    notes.push(`${mapper.workload.spec.name}: pattern intact, hugepage ${formatPfn(head)} → ${moved ?? "?"}`);
    const signal = await mapper.workload.touch(0x5000);
    const ao = mapper.workload.sigbus.some((x) => x.code === 5) ? [mapper.workload.spec.name] : [];
    expect(await podExists(c, namespace, mapper.pod.metadata?.name ?? "")).toBe(true);
    await mapper.workload.exit();
    await expectCountedOnce(guest, pfn, collectorThreshold, threshold);
    const after = await readMemory(guest.vm);
    // The pool the kernel left is in the agent's report.
    await healthWithPools(guest, after);
    const prediction = predictKernelOutcome(ClusterState.memoryError(retired.event), {
      ...nodeState(guest),
      pools: [{ size: "2Mi", numaNode: retired.event.spec.hugepage?.numaNode ?? 0, ...armed.pools["2Mi"] }],
    });
    const observed: Outcome = {
      ao,
      ar: signal === undefined ? [] : [mapper.workload.spec.name],
      lsb: signal?.lsb,
      ...delta(before, after, "2Mi"),
    };
    const predicted = predictedOutcome(prediction, new Map([[mapper.workload.pid, mapper.workload.spec.name]]), "2Mi", [mapper.workload.spec.name]);
    const row = record({
      scenario,
      node: guest.node,
      observed,
      predicted,
      injectionToEventMs: latencyMs,
      prevention: { decidedMs, doneMs: retired.latencyMs },
      profile: prediction.kernelProfile,
      notes,
    });
    expect(row.observed).toEqual(row.predicted);
  } finally {
    await guest.vm.sh(`kill -9 ${mapper.workload.pid} 2>/dev/null`);
    await guest.vm.run(`echo ${COLLECTOR_OUT_OF_REACH} > ${CEC}/action_threshold`);
    await applyPolicy(`${run}-prevent`, preventionPolicy(PAGE_THRESHOLD));
  }
}

/** The collector's threshold while the agent's count is to decide (the kernel caps it at 1023). */
const COLLECTOR_OUT_OF_REACH = 1023;

beforeAll(async () => {
  await applyCrds();
  namespace = await createNamespace(c, "kernel");
  await applyPolicy(`${run}-enforce`, { mode: "Enforce", nodeSelector: { matchLabels: { [groupLabel]: `${run}-enforce` } }, ...common });
  await applyPolicy(`${run}-dry`, { mode: "DryRun", nodeSelector: { matchLabels: { [groupLabel]: `${run}-dry` } }, ...common });
  const poolReplacement = {
    enabled: true,
    sizes: [
      { size: "2Mi", maxPerWindow: 10 },
      { size: "1Gi", maxPerWindow: 2 },
    ],
    minFreeMemory: "64Mi",
  };
  await applyPolicy(`${run}-heal`, { mode: "Enforce", nodeSelector: { matchLabels: { [groupLabel]: `${run}-heal` } }, ...common, poolReplacement });
  await applyPolicy(`${run}-prevent`, preventionPolicy(PAGE_THRESHOLD));
  operator = await startOperatorProcess(`${run}-operator`);
});

afterAll(async () => {
  await operator.stop();
  const table = renderTable(rows);
  console.log(`\nKernel in the loop: ${prepared.package} ${prepared.version} (${prepared.release}), QEMU TCG\n\n${table}\n`);
  // Under .test-results/figures/ (not tracked): `npm run record -- kernel` copies it to bench/results/ on purpose.
  writeResults(
    `.test-results/figures/${figuresFile(series)}`,
    {
      kernel: { package: prepared.package, version: prepared.version, release: prepared.release },
      machine: "QEMU q35, TCG, 1 vCPU, 4 GiB",
      measuredAt: new Date().toISOString(),
    },
    rows,
  );
  await deleteNamespace(c, namespace);
  for (const node of nodes) await deleteNode(c, node);
  await kubectl(["delete", "mee,nmh,cpol", "-l", "mce-operator.io/e2e=true", "--wait=false"]);
  for (const node of nodes) await kubectl(["delete", "mee", "-l", `mce-operator.io/node=${node}`, "--wait=false"]);
  await kubectl(["delete", "nmh", ...nodes, "--ignore-not-found", "--wait=false"]);
});

describe("early kill off (vm.memory_failure_early_kill=0), 2 MiB and 1 GiB pools, Enforce", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("ek0", { earlyKill: false, gigantic: true, dryRun: false });
  });
  afterAll(async () => {
    await stopGuest(guest);
  });
  const g = (): Guest => guest ?? (undefined as never);

  it("private hugepage in use, one subpage poisoned: no signal, AR on access; the mapper is evicted first", async () => {
    await inUse(g(), { scenario: "private 2 MiB in use, early_kill=0, corrupt-pfn on a subpage", mappers: [{}], method: "corrupt-pfn" });
  });
  // While the 1 GiB pool still has its page: the agent tells the free page's size by the pool that shrank.
  it("free 2 MiB hugepage on a node with 2 MiB and 1 GiB pools", async () => {
    await free(g(), "free 2 MiB hugepage, node with 2 MiB and 1 GiB pools (the pool that shrank names the size)", "corrupt-pfn");
  });
  it("shared hugetlbfs page, two pods, default prctl: nobody warned, AR for both, EIO for read", async () => {
    await inUse(g(), { scenario: "shared hugetlbfs, two pods, early_kill=0", mappers: [{}, {}], shared: true, method: "corrupt-pfn" });
  });
  it("shared page, one mapper PR_MCE_KILL_EARLY: only it gets AO; it opted in and gets the early signal", async () => {
    await inUse(g(), {
      scenario: "shared, early_kill=0, one mapper PR_MCE_KILL_EARLY",
      mappers: [{ kill: "early", optIn: true }, {}],
      shared: true,
      method: "corrupt-pfn",
    });
  });
  it("two poisoned hugepages on one node, one private mapper", async () => {
    await inUse(g(), { scenario: "two poisoned 2 MiB hugepages on one node", mappers: [{}], pages: 2, method: "corrupt-pfn" });
  });
  it("a real SRAO machine check (QEMU mce) on a mapped hugepage: no signal, AR on access", async () => {
    await inUse(g(), { scenario: "real SRAO machine check, mapped, early_kill=0", mappers: [{}], method: "machine-check" });
  });
  it("1 GiB hugepage in use, MADV_HWPOISON: the kernel's verdict, what the caller gets, AR with lsb 30", async () => {
    await inUse(g(), { scenario: "1 GiB in use, MADV_HWPOISON", size: "1Gi", mappers: [{}], method: "madvise-hwpoison" });
  });
});

describe("early kill on (vm.memory_failure_early_kill=1), 2 MiB pool, Enforce", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("ek1", { earlyKill: true, gigantic: false, dryRun: false });
  });
  afterAll(async () => {
    await stopGuest(guest);
  });
  const g = (): Guest => guest ?? (undefined as never);

  it("private hugepage in use: AO at the error (si_addr as the profile says, lsb 21), then AR", async () => {
    await inUse(g(), { scenario: "private 2 MiB in use, early_kill=1", mappers: [{}], method: "corrupt-pfn" });
  });
  it("shared hugetlbfs page, two pods: both get AO, one opted in to the early signal", async () => {
    await inUse(g(), { scenario: "shared hugetlbfs, two pods, early_kill=1", mappers: [{ optIn: true }, {}], shared: true, method: "corrupt-pfn" });
  });
  it("shared page, one mapper PR_MCE_KILL_LATE: only the other gets AO", async () => {
    await inUse(g(), { scenario: "shared, early_kill=1, one mapper PR_MCE_KILL_LATE", mappers: [{ kill: "late" }, {}], shared: true, method: "corrupt-pfn" });
  });
  // Before any real machine check: after one, 6.1 refuses unpoison-pfn (EOPNOTSUPP).
  it("free hugepage, corrupt-pfn on a tail pfn, then unpoison-pfn", async () => {
    const pfn = await free(g(), "free 2 MiB hugepage, corrupt-pfn on a tail pfn", "corrupt-pfn");
    await unpoison(g(), "unpoison-pfn on that page", pfn);
  });
  it("a real SRAO machine check on a free hugepage: dissolved", async () => {
    await free(g(), "real SRAO machine check, free hugepage", "machine-check");
  });
  it("soft_offline_page on a free hugepage: nothing logged", async () => {
    await free(g(), "soft_offline_page on a free hugepage", "soft-offline-page");
  });
  it("MADV_SOFT_OFFLINE on a hugepage in use: data moved, nobody signalled", async () => {
    await inUse(g(), { scenario: "MADV_SOFT_OFFLINE on an in-use hugepage", mappers: [{}], method: "madvise-soft-offline" });
  });
  it("a real SRAO machine check on a mapped hugepage: AO to the holder", async () => {
    await inUse(g(), { scenario: "real SRAO machine check, mapped, early_kill=1", mappers: [{}], method: "machine-check" });
  });
  it("corrupt-pfn on a kernel data page: unhandlable page., then one error with the verdict's words", async () => {
    await kernelPage(g(), "corrupt-pfn on a kernel data page (unhandlable)");
  });
});

describe("corrected errors (mce=no_cmci, the bank polled every second), 2 MiB and 1 GiB pools, prevention at 3 per page", () => {
  let guest: Guest | undefined;
  /** The kernel has its own corrected-errors collector (CONFIG_RAS_CEC), as the agent reports it; its threshold at boot. */
  let collector = false;
  let collectorAtBoot = "";
  beforeAll(async () => {
    guest = await bootGuest("ce", { earlyKill: false, gigantic: true, dryRun: false, policy: "prevent", kernelArgs: ["mce=no_cmci"] });
    await inject.pollEverySecond(guest.vm);
    collector = (await getNodeHealth(guest.node)).spec.capabilities?.correctedErrorCollector === true;
    expect(collector).toBe((await guest.vm.sh(`test -d ${CEC}`)).code === 0);
    // The collector would soft-offline at its own threshold (2 at boot on Debian's 6.12): out of reach, so the policy's count decides.
    if (collector) {
      collectorAtBoot = (await guest.vm.run(`cat ${CEC}/action_threshold`)).trim();
      await guest.vm.run(`echo ${COLLECTOR_OUT_OF_REACH} > ${CEC}/action_threshold`);
    }
  });
  afterAll(async () => {
    await stopGuest(guest);
  });
  const g = (): Guest => guest ?? (undefined as never);

  it("a private 2 MiB hugepage in use: soft-offlined into a free hugepage of the pool, data intact, nobody signalled", async () => {
    await prevention(g(), { scenario: "corrected errors past the page threshold, private 2 MiB in use: soft offline", size: "2Mi", page: "private" });
  });
  it("a shared hugetlbfs page, two pods: soft-offlined, both keep running on the copy", async () => {
    await prevention(g(), {
      scenario: "corrected errors past the page threshold, shared hugetlbfs 2 MiB, two pods: soft offline",
      size: "2Mi",
      page: "shared",
      mappers: 2,
    });
  });
  it("a free 2 MiB hugepage: soft-offlined (dissolved)", async () => {
    await prevention(g(), { scenario: "corrected errors past the page threshold, free 2 MiB hugepage: soft offline", size: "2Mi", page: "free" });
  });
  it("no free 2 MiB hugepage: soft-offlined into a hugepage taken from free memory, the pool keeps its size", async () => {
    await prevention(g(), {
      scenario: "corrected errors past the page threshold, private 2 MiB in use, no free hugepage: soft offline",
      size: "2Mi",
      page: "private",
      fillPool: true,
    });
  });
  it("a 1 GiB hugepage in use and none free: the model moves the mapper without asking; the kernel, asked anyway, refuses", async () => {
    await prevention(g(), {
      scenario: "corrected errors past the page threshold, 1 GiB in use, none free: mapper evicted, kernel refuses",
      size: "1Gi",
      page: "private",
    });
  });
  it("the kernel's collector (CONFIG_RAS_CEC) soft-offlines first: the operator skips the retired page", async (context) => {
    if (!collector)
      context.skip(
        `${prepared.release} has no corrected-errors collector (CONFIG_RAS_CEC): no debugfs ras/cec, NodeMemoryHealth capabilities.correctedErrorCollector false`,
      );
    await collectorFirst(g(), "the kernel's collector soft-offlines a private 2 MiB page first (its threshold 3, the policy's 10)", 3, 10, collectorAtBoot);
  });
});

describe("a node reset by a fatal machine check", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("reset", { earlyKill: false, gigantic: false, dryRun: false, reboot: true });
  });
  afterAll(async () => {
    // The bystander's process went with the boot that panicked; its pod stays.
    await guest?.vm.stop();
  });

  it("the next boot logs the record the banks kept: an error from before the boot, nothing lost in this one", async () => {
    await resetByFatalMachineCheck(guest ?? (undefined as never), "fatal machine check, node reset, record logged at the next boot");
  });
});

describe("a node whose policy is DryRun", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("dry", { earlyKill: false, gigantic: false, dryRun: true });
  });
  afterAll(async () => {
    await stopGuest(guest);
  });

  it("records the whole decision and evicts, signals and quarantines nothing", async () => {
    await inUse(guest ?? (undefined as never), { scenario: "private 2 MiB in use on a DryRun node", mappers: [{}], method: "corrupt-pfn" });
  });
});

describe("self-healing pools (poolReplacement on, 2 MiB named), 2 MiB pool, Enforce", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("heal", { earlyKill: false, gigantic: false, dryRun: false, policy: "heal" });
  });
  afterAll(async () => {
    await stopGuest(guest);
  });
  const g = (): Guest => guest ?? (undefined as never);

  it("a free 2 MiB hugepage poisoned and replaced: pool and capacity back, quarantine released, a hugepage pod scheduled again", async () => {
    await heal(g(), { scenario: "replacement: free 2 MiB hugepage dissolved, replaced at once", size: "2Mi", page: "free" });
  });
  it("a private 2 MiB hugepage replaced only after its mapper exits", async () => {
    await heal(g(), { scenario: "replacement: private 2 MiB in use, replaced after the mapper exits", size: "2Mi", page: "private" });
  });
  it("a shared hugetlbfs page replaced at once while the poisoned one stays held", async () => {
    await heal(g(), {
      scenario: "replacement: shared hugetlbfs 2 MiB, two pods, replaced while the poisoned page stays held",
      size: "2Mi",
      page: "shared",
      mappers: 2,
    });
  });
});

describe("self-healing pools, a 1 GiB page the kernel cannot give", () => {
  let guest: Guest | undefined;
  beforeAll(async () => {
    guest = await bootGuest("heal1g", { earlyKill: false, gigantic: true, dryRun: false, policy: "heal" });
  });
  afterAll(async () => {
    await stopGuest(guest);
  });

  it("memory fragmented on purpose: the kernel refuses, the quarantine stays with the reason", async () => {
    await heal(guest ?? (undefined as never), {
      scenario: "replacement: 1 GiB in use, MADV_HWPOISON, memory fragmented, refused",
      size: "1Gi",
      page: "private",
      fragment: true,
    });
  });
});
