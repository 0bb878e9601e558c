// What the kernel tier does inside a guest: hwp workloads in cgroups named as the kubelet names a pod's
// container, the guest's hugepage pools and corrupted memory, injections, the kernel's log, and the
// real agent (Node and the repository from the host's root over 9p, chrooted).
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { KubeConfig } from "@kubernetes/client-node";
import type { HugepageSize } from "../../../kernel/pfn.ts";
import { waitFor } from "../cluster/helpers.ts";
import { GUEST_APISERVER_IP, type Vm } from "./vm.ts";

export type KillPolicy = "default" | "early" | "late";

export interface WorkloadSpec {
  name: string;
  /** The pod and container whose cgroup it runs in; a host process without them. */
  podUID?: string;
  containerID?: string;
  size: HugepageSize;
  pages?: number;
  /** A hugetlbfs file to map shared; private anonymous hugetlb without it. */
  file?: string;
  kill?: KillPolicy;
}

export interface SignalSeen {
  at: number;
  code: number;
  addr: number;
  lsb: number;
}

/** The cgroup v2 path the kubelet (systemd driver) and containerd give a burstable pod's container. */
export function containerCgroup(podUID: string, containerID: string): string {
  const pod = `kubepods-burstable-pod${podUID.replaceAll("-", "_")}.slice`;
  return `/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/${pod}/cri-containerd-${containerID}.scope`;
}

export function newContainerID(): string {
  return randomBytes(32).toString("hex");
}

export const pageBytes = (size: HugepageSize): number => (size === "1Gi" ? 2 ** 30 : 2 ** 21);

/** One hwp process in the guest: it logs to the shared directory and obeys commands from a FIFO. */
export class Workload {
  readonly spec: WorkloadSpec;
  readonly pid: number;
  readonly base: number;
  readonly pfns: number[];
  readonly #vm: Vm;

  private constructor(vm: Vm, spec: WorkloadSpec, pid: number, base: number, pfns: number[]) {
    this.#vm = vm;
    this.spec = spec;
    this.pid = pid;
    this.base = base;
    this.pfns = pfns;
  }

  static async start(vm: Vm, spec: WorkloadSpec): Promise<Workload> {
    const cgroup = spec.podUID === undefined ? "/sys/fs/cgroup" : containerCgroup(spec.podUID, spec.containerID ?? newContainerID());
    const args = [
      "-l",
      `/shared/${spec.name}.log`,
      "-c",
      `/run/${spec.name}.ctl`,
      "-s",
      spec.size === "1Gi" ? "1G" : "2M",
      "-n",
      String(spec.pages ?? 1),
      "-k",
      spec.kill ?? "default",
    ];
    if (spec.file !== undefined) args.push("-f", spec.file);
    // Into its cgroup before exec, so the agent never sees it anywhere else.
    await vm.run(
      `mkdir -p ${cgroup} && mkfifo /run/${spec.name}.ctl && setsid sh -c 'echo $$ > ${cgroup}/cgroup.procs && exec hwp ${args.join(" ")}' >/dev/null 2>&1 &`,
    );
    const log = join(vm.shared, `${spec.name}.log`);
    const mapped = await waitFor(
      `workload ${spec.name} mapped`,
      () => Promise.resolve((existsSync(log) && /mapped pfns=(\S+)/.exec(readFileSync(log, "utf8"))) || undefined),
      { timeoutMs: 30_000 },
      () => (existsSync(log) ? readFileSync(log, "utf8") : "no log"),
    );
    const text = readFileSync(log, "utf8");
    const ready = /ready pid=(\d+) base=(0x[0-9a-f]+)/.exec(text);
    if (ready === null) throw new Error(`workload ${spec.name}: ${text}`);
    return new Workload(vm, spec, Number(ready[1]), Number(ready[2]), (mapped[1] ?? "").split(",").map(Number));
  }

  get bytes(): number {
    return pageBytes(this.spec.size);
  }

  get log(): string {
    return readFileSync(join(this.#vm.shared, `${this.spec.name}.log`), "utf8");
  }

  /** Every SIGBUS it got, in order. */
  get sigbus(): SignalSeen[] {
    return [...this.log.matchAll(/t=(\d+) sigbus code=(\d+) addr=(0x[0-9a-f]+) lsb=(\d+)/g)].map((m) => ({
      at: Number(m[1]),
      code: Number(m[2]),
      addr: Number(m[3]),
      lsb: Number(m[4]),
    }));
  }

  get sigusr1(): boolean {
    return / sigusr1$/m.test(this.log);
  }

  /** The virtual range of its hugepage `index`, as the agent and operator write it. */
  range(index = 0): string {
    const start = this.base + index * this.bytes;
    return `0x${start.toString(16)}-0x${(start + this.bytes).toString(16)}`;
  }

  /** Sends a command and waits for the log line that answers it. */
  async command(command: string, answer: RegExp): Promise<RegExpExecArray> {
    const before = this.log.length;
    // timeout: a FIFO nobody reads any more would block the guest's shell for ever.
    await this.#vm.run(`timeout 5 sh -c 'echo "${command}" > /run/${this.spec.name}.ctl'`);
    return waitFor(
      `workload ${this.spec.name}: ${command}`,
      () => Promise.resolve(answer.exec(this.log.slice(before)) ?? undefined),
      { timeoutMs: 15_000 },
      () => this.log.slice(before),
    );
  }

  /**
   * A barrier: a command that changes nothing, answered after every signal the kernel had queued for the
   * process by the time it was sent (a pending signal's handler runs, and logs, before the process
   * reads its next command).
   */
  async sync(): Promise<void> {
    await this.command("pfns", /now pfns=/);
  }

  /** Reads one byte at `offset` into its mapping: BUS_MCEERR_AR, if the page is poisoned. */
  async touch(offset: number): Promise<SignalSeen | undefined> {
    const seen = this.sigbus.length;
    const done = await this.command(`touch ${offset.toString(16)}`, /touch off=\S+ (ok|faulted)/);
    return done[1] === "faulted" ? this.sigbus[seen] : undefined;
  }

  /**
   * madvise(MADV_HWPOISON or MADV_SOFT_OFFLINE) on the subpage at `offset`: what the call returned (0 or
   * the errno's name), or "SIGBUS" where the kernel signalled the caller BUS_MCEERR_AR during the call.
   */
  async madvise(advice: "hwpoison" | "soft-offline", offset: number): Promise<string> {
    const done = await this.command(`madvise ${advice} ${offset.toString(16)}`, /madvise \S+ off=\S+ (?:rc=-?\d+ errno=(\S+)|(sigbus))/);
    if (done[2] === undefined) return done[1] ?? "";
    this.arInMadvise++;
    return "SIGBUS";
  }

  /** BUS_MCEERR_AR signals the kernel sent during madvise(MADV_HWPOISON) calls, not on an access. */
  arInMadvise = 0;

  async exit(): Promise<void> {
    await this.command("exit", /^t=\d+ exit$/m);
    await waitFor(`workload ${this.spec.name} gone`, async () => (await this.#vm.sh(`test -d /proc/${this.pid}`)).code !== 0);
  }
}

export interface GuestMemory {
  pools: Record<HugepageSize, { total: number; free: number }>;
  hardwareCorruptedBytes: number;
}

/** The guest's hugepage pools (nr_hugepages, free_hugepages) and /proc/meminfo HardwareCorrupted. */
export async function readMemory(vm: Vm): Promise<GuestMemory> {
  const out = await vm.run(
    "for s in 2048 1048576; do d=/sys/kernel/mm/hugepages/hugepages-${s}kB; [ -d $d ] && echo $s $(cat $d/nr_hugepages) $(cat $d/free_hugepages) || echo $s 0 0; done; grep HardwareCorrupted: /proc/meminfo",
  );
  const pool = (kb: string): { total: number; free: number } => {
    const m = new RegExp(`^${kb} (\\d+) (\\d+)$`, "m").exec(out);
    return { total: Number(m?.[1]), free: Number(m?.[2]) };
  };
  return { pools: { "2Mi": pool("2048"), "1Gi": pool("1048576") }, hardwareCorruptedBytes: Number(/HardwareCorrupted:\s+(\d+) kB/.exec(out)?.[1]) * 1024 };
}

/** The kernel's lines since boot, as dmesg prints them. */
export async function kernelLog(vm: Vm): Promise<string> {
  return vm.run("dmesg");
}

/** The page-type and result words of the kernel's verdict on `pfn`, as it printed them. */
export function verdictOf(dmesg: string, pfn: number): { pageType: string; result: string } | undefined {
  const m = new RegExp(`Memory failure: 0x${pfn.toString(16)}: recovery action for (.+): (\\w+)$`, "m").exec(dmesg);
  return m === null ? undefined : { pageType: m[1] ?? "", result: m[2] ?? "" };
}

export const inject = {
  corruptPfn: (vm: Vm, pfn: number): Promise<string> => vm.run(`echo ${pfn} > /sys/kernel/debug/hwpoison/corrupt-pfn`),
  unpoisonPfn: (vm: Vm, pfn: number): Promise<string> => vm.run(`echo ${pfn} > /sys/kernel/debug/hwpoison/unpoison-pfn`),
  softOfflinePage: (vm: Vm, pfn: number): Promise<string> => vm.run(`echo 0x${(pfn * 4096).toString(16)} > /sys/devices/system/memory/soft_offline_page`),
  /**
   * A real machine check through QEMU's monitor: bank 9, status VAL|UC|EN|MISCV|ADDRV|S with MCA code
   * 0xC0 (SRAO memory scrub), MCG_STATUS MCIP|RIPV, MISC: physical address mode, LSB 12. On a guest
   * of several vCPUs it is broadcast (-b), as hardware raises it: the kernel's handler waits for every
   * CPU to enter it and panics on a machine check only one CPU saw.
   */
  machineCheck: (vm: Vm, physicalAddress: number): Promise<string> =>
    vm.monitor(`mce ${vm.cpus > 1 ? "-b " : ""}0 9 0xbd000000000000c0 0x5 0x${physicalAddress.toString(16)} 0x8c`),
  /**
   * A corrected memory error through QEMU's monitor: bank 9, status VAL|EN|MISCV|ADDRV with UC clear and
   * MCA code 0xC0, MCG_STATUS 0. No machine check is raised: the kernel finds the record when it polls the
   * bank (a guest booted with mce=no_cmci, the poll interval lowered with pollEverySecond). One record at a
   * time: a second injected before the kernel read the first would overwrite it (OVER).
   */
  correctedError: (vm: Vm, physicalAddress: number): Promise<string> => vm.monitor(`mce 0 9 0x9c000000000000c0 0 0x${physicalAddress.toString(16)} 0x8c`),
  /** The machine-check poll every second (check_interval is in seconds; the timer halves it while it finds errors). */
  pollEverySecond: (vm: Vm): Promise<string> => vm.run("echo 1 > /sys/devices/system/machinecheck/machinecheck0/check_interval"),
};

/** How many machine-check records for `physicalAddress` the kernel has printed (mce=print_all prints corrected ones too). */
export async function recordsLogged(vm: Vm, physicalAddress: number): Promise<number> {
  return Number((await vm.run(`dmesg | grep -c ' ADDR ${physicalAddress.toString(16)} ' || true`)).trim());
}

/**
 * Pfns of the free hugepages of a size, found by mapping all of them once from a host process; they
 * stay free until the next allocation. Returns once the agent's index is back to the `mapped` hugepages
 * it knew before, so an error on one of them is not blamed on the probe.
 */
export async function freeHugepages(vm: Vm, size: HugepageSize, mapped: number): Promise<number[]> {
  const free = (await readMemory(vm)).pools[size].free;
  const probe = await Workload.start(vm, { name: `probe-${randomBytes(3).toString("hex")}`, size, pages: free });
  await probe.exit();
  await waitForIndex(vm, (known) => known === mapped);
  return probe.pfns;
}

/** A kubeconfig the guest can use: the test cluster's admin, inlined, at the apiserver's guest address. */
export function guestKubeconfig(hostKubeconfig: string, port: number): string {
  const kc = new KubeConfig();
  kc.loadFromFile(hostKubeconfig);
  const cluster = kc.getCurrentCluster();
  const user = kc.getCurrentUser();
  const data = (inline: string | undefined, file: string | undefined): string => inline ?? readFileSync(file ?? "", "base64");
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [
      { name: "host", cluster: { server: `https://${GUEST_APISERVER_IP}:${port}`, "certificate-authority-data": data(cluster?.caData, cluster?.caFile) } },
    ],
    users: [
      { name: "admin", user: { "client-certificate-data": data(user?.certData, user?.certFile), "client-key-data": data(user?.keyData, user?.keyFile) } },
    ],
    contexts: [{ name: "host", context: { cluster: "host", user: "admin" } }],
    "current-context": "host",
  });
}

export const AGENT_METRICS_PORT = 9464;

/** Starts the agent in the guest, chrooted in the host's root, with its kubeconfig and state in /mnt. */
export async function startAgent(vm: Vm, nodeName: string, kubeconfig: string): Promise<void> {
  writeFileSync(join(vm.shared, "kubeconfig"), kubeconfig, { mode: 0o600 });
  const repo = process.cwd();
  const command = [
    `cd ${repo} && exec node_modules/.bin/node agent/main.ts`,
    `--node-name ${nodeName} --kubeconfig /mnt/kubeconfig --state-dir /mnt/agent-state --metrics-port ${AGENT_METRICS_PORT}`,
    // The index must know a workload's mapping before its page is poisoned: refresh it often.
    "--index-interval 0.5 --health-interval 1 --log-level info",
  ].join(" ");
  await vm.run(`setsid chroot /host /bin/sh -c '${command}' >/shared/agent.log 2>&1 &`);
}

export function agentLog(vm: Vm): string {
  const file = join(vm.shared, "agent.log");
  return existsSync(file) ? readFileSync(file, "utf8") : "";
}

/** How many mapped hugepages the agent's hugetlb index knows (its metric); -1 before it serves. */
async function indexedHugepages(vm: Vm): Promise<number> {
  const metrics = await vm.sh(`wget -qO- http://127.0.0.1:${AGENT_METRICS_PORT}/metrics`);
  return Number(/^mce_agent_index_hugepages (\d+)/m.exec(metrics.output)?.[1] ?? -1);
}

/** Waits until the agent's index has caught up with the workloads (two refreshes after the change). */
export async function waitForIndex(vm: Vm, settled: (known: number) => boolean): Promise<void> {
  let streak = 0;
  await waitFor(
    "the agent's hugetlb index to catch up",
    async () => {
      streak = settled(await indexedHugepages(vm)) ? streak + 1 : 0;
      return streak >= 2;
    },
    { timeoutMs: 90_000, intervalMs: 500 },
    () => agentLog(vm).slice(-2000),
  );
}
