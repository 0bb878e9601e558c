// The node agent side by side with its nearest peer, Node Problem Detector (NPD), in one run.
//
// Part A, throughput: ONE kernel log of a busy node (1,000,000 lines by default): ordinary kernel lines
// of many shapes, and every thousand lines or so a real memory failure as the kernel prints it (its
// verdict, `Memory failure: 0x...: recovery action for huge page: Recovered`, after the lines that come
// with it: a machine-check record, early SIGBUS lines). It is written once as /dev/kmsg records for the
// agent and once as the kern.log rsyslog writes from the same records for NPD; both get the same lines
// in the same order, the last of them a verdict. They run one after the other, never both at once:
// - NPD (the binary `build-tools.sh node-problem-detector` builds) with its stock kernel monitor for the
//   filelog plugin (config/kernel-monitor-filelog.json, copied next to the binary), its rules kept and
//   two added for the memory failure: a temporary problem `MemoryFailure` on every verdict, and a
//   permanent condition `HugepageMemoryFailure` on a hugepage's (a poisoned hugepage stays lost until
//   the node reboots). NPD cannot be given a fake /dev/kmsg: its kmsg watcher opens the device itself,
//   from a static Go binary nothing can be loaded into, so it reads the same lines from a kern.log, as
//   its filelog plugin does on nodes that keep one. The Kubernetes exporter is off (it would only write
//   Events and a node condition; the agent's MemoryErrorEvents are counted apart); the Prometheus
//   exporter listens on 127.0.0.1.
// - The agent as its image runs it (agent/Dockerfile's node flags, dist/agent/main.js) against a fake host
//   root and the local control plane, its /dev/kmsg stood in for by agent-storm-hook.ts replaying the
//   records file: one record per read(2), each read a real read through libuv's thread pool, as on the
//   device. The hook runs inside the agent's process, so its cost is counted as the agent's.
// Each is done when its own metrics say it has handled the last line, polled every 100 ms: NPD when
// problem_counter{reason="MemoryFailure"} reaches the number of verdicts (the log ends with one, and NPD
// handles lines in order; it exports no count of lines read), the agent when mce_agent_kernel_lines_total
// reaches the number of lines (it handles each line as it reads it). CPU time and peak RSS come from
// /proc at that moment; RSS again 5 s after its work is over (for the agent, after the last of its
// MemoryErrorEvents was created).
//
// Part B, latency on the host: an agent follows an empty records file; one at a time, 100–300 ms apart, a
// memory-failure verdict (an uncorrected error on a hugepage) is appended to it, and the time from the
// moment the line is in the file, readable by the agent's next read, until a watch on memoryerrorevents
// delivers its MemoryErrorEvent is measured, and split at the agent's own log lines.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { availableParallelism, cpus, loadavg, uptime } from "node:os";
import { join, relative } from "node:path";
import { performance } from "node:perf_hooks";
import ts from "typescript";
import { writeFakeHost } from "../agent/fake-host.ts";
import { group, memoryErrorEventName, nodeLabel, version } from "../crds/naming.ts";
import { KubeClient, loadKubeconfigFile } from "../runtime/http.ts";
import { imageEntrypoint, repoRoot } from "../test/e2e/build.ts";
import { freePort, type ClusterState } from "../test/e2e/cluster/control-plane.ts";
import { nodeProblemDetectorConfigPath, readVersions, toolPath } from "../test/e2e/cluster/tools.ts";
import { hookedAgentArgs, IOMEM, writeFakeProcesses } from "./agent-storm.ts";

export interface PeerOptions {
  /** Lines of the kernel log (default 1,000,000). */
  lines?: number;
  /** Part B's samples (default 200). */
  samples?: number;
}

export interface ThroughputResult {
  name: string;
  command: string;
  lines: number;
  /** Memory-failure verdicts in the log. */
  verdicts: number;
  /** Verdicts it recognised: NPD's MemoryFailure problems, the agent's memory errors. */
  recognised: number;
  /** How it was found to be done. */
  doneWhen: string;
  /** False when it was stopped before its last line (then the figures are up to the stop). */
  finished: boolean;
  /** From starting the process to its first line read; null when it did not say. */
  startupSeconds: number | null;
  /** From starting the process to its last line handled. */
  seconds: number;
  linesPerSecond: number;
  /** Over the time from its first line to its last. */
  linesPerSecondAfterStartup: number | null;
  /** User and system CPU from its start to its last line. */
  cpuSeconds: number;
  peakRssMiB: number;
  /** 5 s after its work was over. */
  rssAfterMiB: number;
  /** What else it counted or did. */
  details: Record<string, number | string>;
  /** The machine's 1-minute load average when it started and when it was done: what else ran. */
  load: { atStart: number; atDone: number };
}

export interface LatencyResult {
  /** Lines written before the samples, not counted. */
  warmup: number;
  samples: number;
  /** Samples whose event did not come within 10 s. */
  missing: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  minMs: number;
  meanMs: number;
  /**
   * Where the time went, from the agent's log (its `time` has ms): line written → the agent's "memory error
   * seen" (its poll of /dev/kmsg, the read and the parse), → "memory error reported" (the state file
   * written and fsynced, the create answered), → the watch's ADDED.
   */
  stages: Record<"toRead" | "readToCreated" | "createdToWatch", { p50Ms: number; maxMs: number }>;
  /** The machine's 1-minute load average at the first sample and after the last. */
  load: { atStart: number; atDone: number };
  /** Every sample, in the order written. */
  latenciesMs: number[];
}

export interface PeerResult {
  date: string;
  node: string;
  cpu: string;
  cores: number;
  log: { lines: number; verdicts: number; kmsgBytes: number; kernLogBytes: number; incidents: Record<string, number> };
  npd: ThroughputResult;
  agent: ThroughputResult;
  latency: LatencyResult;
}

// ---------------------------------------------------------------------------------------------
// The kernel log

/** mulberry32: a small seeded generator, so every run writes the same log. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One kernel line: its printk level, text, the /dev/kmsg dictionary it carries, and whether it is a memory failure's verdict. */
export interface KernelLine {
  level: number;
  text: string;
  dictionary?: string[];
  verdict?: string;
}

type Random = () => number;
const int = (r: Random, low: number, high: number): number => low + Math.floor(r() * (high - low + 1));
const pick = <T>(r: Random, items: readonly T[]): T => items[Math.floor(r() * items.length)] as T;
const hex = (r: Random, digits: number): string => Array.from({ length: digits }, () => "0123456789abcdef"[int(r, 0, 15)]).join("");
const ip = (r: Random): string => `10.${pick(r, [0, 96, 244])}.${int(r, 0, 255)}.${int(r, 1, 254)}`;
const COMMANDS = ["java", "python3", "node", "postgres", "envoy", "nginx", "redis-server", "dpdk-testpmd", "qemu-kvm", "containerd-shim", "runc", "kubelet"];

/** Ordinary lines of a busy Kubernetes node's kernel, by weight: none is a memory failure. */
const ORDINARY: readonly [number, (r: Random) => KernelLine][] = [
  [
    12,
    (r) => ({
      level: 4,
      text: `[UFW BLOCK] IN=eth0 OUT= MAC=${hex(r, 2)}:${hex(r, 2)}:${hex(r, 2)}:${hex(r, 2)}:${hex(r, 2)}:${hex(r, 2)}:08:00 SRC=${ip(r)} DST=${ip(r)} LEN=${int(r, 40, 1500)} TOS=0x00 PREC=0x00 TTL=${int(r, 50, 64)} ID=${int(r, 0, 65535)} DF PROTO=TCP SPT=${int(r, 1024, 65535)} DPT=${pick(r, [22, 443, 6443, 10250])} WINDOW=${int(r, 1024, 65535)} RES=0x00 SYN URGP=0`,
    }),
  ],
  [
    10,
    (r) => ({
      level: 5,
      text: `audit: type=1400 audit(${int(r, 1_760_000_000, 1_770_000_000)}.${int(r, 100, 999)}:${int(r, 1000, 99999)}): apparmor="DENIED" operation="${pick(r, ["open", "mount", "ptrace"])}" class="file" profile="cri-containerd.apparmor.d" name="/proc/${int(r, 2, 99999)}/mountinfo" pid=${int(r, 2, 99999)} comm="${pick(r, COMMANDS)}" requested_mask="r" denied_mask="r" fsuid=0 ouid=0`,
    }),
  ],
  [
    12,
    (r) => {
      const veth = `veth${hex(r, 8)}`;
      const port = int(r, 1, 60);
      return {
        level: 6,
        text: pick(r, [
          `cni0: port ${port}(${veth}) entered blocking state`,
          `cni0: port ${port}(${veth}) entered disabled state`,
          `cni0: port ${port}(${veth}) entered forwarding state`,
          `device ${veth} entered promiscuous mode`,
          `device ${veth} left promiscuous mode`,
          `IPv6: ADDRCONF(NETDEV_CHANGE): ${veth}: link becomes ready`,
          `eth0: renamed from tmp${hex(r, 5)}`,
        ]),
      };
    },
  ],
  [6, (r) => ({ level: 4, text: `IPv4: martian source ${ip(r)} from ${ip(r)}, on dev eth0` })],
  [4, () => ({ level: 4, text: "nf_conntrack: nf_conntrack: table full, dropping packet" })],
  [4, (r) => ({ level: 4, text: `net_ratelimit: ${int(r, 2, 900)} callbacks suppressed` })],
  [
    4,
    (r) => ({
      level: 6,
      text: `TCP: request_sock_TCP: Possible SYN flooding on port ${pick(r, [80, 443, 8080, 6443])}. Sending cookies.  Check SNMP counters.`,
    }),
  ],
  [5, (r) => ({ level: 4, text: `kauditd_printk_skb: ${int(r, 2, 200)} callbacks suppressed` })],
  [
    4,
    (r) => ({
      level: 4,
      text: `overlayfs: ${pick(r, ["upperdir", "workdir"])} is in-use as upperdir/workdir of another mount, accessing files from both mounts will result in undefined behavior.`,
    }),
  ],
  [
    0.02,
    (r) => ({
      level: 4,
      text: `${pick(r, COMMANDS)} invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=${pick(r, [-997, 0, 937, 999, 1000])}`,
    }),
  ],
  [
    0.02,
    (r) => ({
      level: 3,
      text: `Memory cgroup out of memory: Killed process ${int(r, 2, 4_000_000)} (${pick(r, COMMANDS)}) total-vm:${int(r, 10_000, 90_000_000)}kB, anon-rss:${int(r, 1000, 8_000_000)}kB, file-rss:${int(r, 0, 90_000)}kB, shmem-rss:0kB, UID:${pick(r, [0, 1000, 65534])} pgtables:${int(r, 100, 20_000)}kB oom_score_adj:${pick(r, [937, 999, 1000])}`,
    }),
  ],
  [
    0.02,
    (r) => ({ level: 6, text: `oom_reaper: reaped process ${int(r, 2, 4_000_000)} (${pick(r, COMMANDS)}), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB` }),
  ],
  [
    3,
    (r) => {
      const took = int(r, 2501, 9000);
      return {
        level: 6,
        text: `perf: interrupt took too long (${took} > ${took - int(r, 1, 400)}), lowering kernel.perf_event_max_sample_rate to ${int(r, 20, 79) * 1000}`,
      };
    },
  ],
  [1, (r) => ({ level: 4, text: `hrtimer: interrupt took ${int(r, 10_000, 900_000)} ns` })],
  [
    2,
    (r) => {
      const n = int(r, 2, 9);
      return { level: 6, text: `usb 1-${n}: new high-speed USB device number ${n} using xhci_hcd`, dictionary: ["SUBSYSTEM=usb", `DEVICE=c189:${n}`] };
    },
  ],
  [
    2,
    (r) => ({
      level: 6,
      text: `mlx5_core 0000:3b:00.${int(r, 0, 1)} ens1f${int(r, 0, 1)}np0: Link ${pick(r, ["up", "down"])}`,
      dictionary: ["SUBSYSTEM=pci", "DEVICE=+pci:0000:3b:00.0"],
    }),
  ],
  [
    2,
    (r) => ({ level: 3, text: `blk_update_request: I/O error, dev sdb, sector ${int(r, 0, 1_000_000_000)} op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0` }),
  ],
  [
    1,
    (r) => ({
      level: 4,
      text: `nvme nvme0: I/O ${int(r, 0, 1023)} QID ${int(r, 1, 8)} timeout, completion polled`,
      dictionary: ["SUBSYSTEM=nvme", "DEVICE=c241:0"],
    }),
  ],
  [
    1,
    (r) => ({
      level: 6,
      text: `EXT4-fs (nvme0n1p${int(r, 1, 4)}): mounted filesystem ${hex(r, 8)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 4)}-${hex(r, 12)} r/w with ordered data mode. Quota mode: none.`,
    }),
  ],
  [2, (r) => ({ level: 5, text: `nfs: server ${ip(r)} ${pick(r, ["not responding, still trying", "OK"])}` })],
  [
    2,
    (r) => ({
      level: 6,
      text: `cgroup: fork rejected by pids controller in /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${hex(r, 8)}_${hex(r, 4)}_${hex(r, 4)}.slice/cri-containerd-${hex(r, 64)}.scope`,
    }),
  ],
  [2, (r) => ({ level: 6, text: `IPVS: rr: TCP 10.96.0.${int(r, 1, 254)}:${pick(r, [80, 443])} - no destination available` })],
  // x86's thermal throttling lines: "mce: " lines that are no machine check (the agent's parser reads them).
  [
    2,
    (r) => {
      const cpu = int(r, 0, 63);
      return {
        level: 4,
        text: pick(r, [
          `mce: CPU${cpu}: Core temperature above threshold, cpu clock throttled (total events = ${int(r, 1, 90_000)})`,
          `mce: CPU${cpu}: Package temperature above threshold, cpu clock throttled (total events = ${int(r, 1, 90_000)})`,
          `mce: CPU${cpu}: Core temperature/speed normal`,
          `mce: CPU${cpu}: Package temperature/speed normal`,
        ]),
      };
    },
  ],
  [
    0.005,
    (r) => ({
      level: 3,
      text: `INFO: task ${pick(r, ["kworker/u96:2", "jbd2/nvme0n1p1-8", "containerd", "java"])}:${int(r, 2, 4_000_000)} blocked for more than 122 seconds.`,
    }),
  ],
];
const ORDINARY_WEIGHT = ORDINARY.reduce((sum, [weight]) => sum + weight, 0);

function ordinaryLine(r: Random): KernelLine {
  let x = r() * ORDINARY_WEIGHT;
  for (const [weight, line] of ORDINARY) {
    x -= weight;
    if (x < 0) return line(r);
  }
  return (ORDINARY[0] as (typeof ORDINARY)[number])[1](r);
}

export type IncidentKind = "hugepage" | "early-kill" | "free-hugepage" | "machine-check" | "base-page";
const INCIDENTS: readonly [number, IncidentKind][] = [
  [40, "hugepage"],
  [20, "early-kill"],
  [15, "free-hugepage"],
  [20, "machine-check"],
  [5, "base-page"],
];

/**
 * The lines of one memory failure on `pfn` as the kernel prints them (kernel-facts.md, observed on 6.1):
 * its verdict last, then, for a hugepage some process touched, that access's kill when `touched`.
 */
export function incidentLines(kind: IncidentKind, pfn: number, r: Random, touched: boolean): KernelLine[] {
  const page = `0x${pfn.toString(16)}`;
  const process = (): string => `${pick(r, COMMANDS)}:${int(r, 2, 4_000_000)}`;
  const sigbus = (): KernelLine => ({ level: 3, text: `Memory failure: ${page}: Sending SIGBUS to ${process()} due to hardware memory corruption` });
  const verdict = (pageType: string): KernelLine => ({ level: 3, text: `Memory failure: ${page}: recovery action for ${pageType}: Recovered`, verdict: page });
  const access: KernelLine[] = touched
    ? [{ level: 3, text: `MCE: Killing ${process()} due to hardware memory corruption fault at 7f${hex(r, 4)}${int(r, 0, 15).toString(16)}00000` }]
    : [];
  switch (kind) {
    case "hugepage":
      return [verdict("huge page"), ...access];
    case "early-kill":
      return [...Array.from({ length: int(r, 1, 2) }, sigbus), verdict("huge page"), ...access];
    case "free-hugepage":
      return [verdict("free huge page")];
    case "base-page":
      return [verdict(pick(r, ["dirty LRU page", "clean LRU page", "free buddy page", "clean unevictable LRU page"]))];
    case "machine-check": {
      // An uncorrected, software-recoverable memory error (SRAO) as QEMU's `mce` raises it, printed whole.
      const hw = "mce: [Hardware Error]: ";
      const cpu = int(r, 0, 63);
      const address = (pfn * 4096 + int(r, 0, 63) * 64).toString(16);
      return [
        { level: 6, text: `${hw}Machine check events logged` },
        { level: 0, text: `${hw}CPU ${cpu}: Machine Check Exception: 5 Bank 9: bd000000000000c0` },
        { level: 0, text: `${hw}RIP !INEXACT! 10:<ffffffff${hex(r, 8)}> {native_safe_halt+0xb/0x10}` },
        { level: 0, text: `${hw}TSC ${hex(r, 11)} ADDR ${address} MISC 8c` },
        { level: 0, text: `${hw}PROCESSOR 0:606a6 TIME ${int(r, 1_760_000_000, 1_770_000_000)} SOCKET ${int(r, 0, 1)} APIC ${cpu * 2} microcode d0003a5` },
        { level: 0, text: `${hw}Run the above through 'mcelog --ascii'` },
        ...(r() < 0.5 ? [sigbus()] : []),
        verdict("huge page"),
        ...access,
      ];
    }
  }
}

/** Physical memory from 4 GiB on (System RAM in IOMEM); incidents take pfns 97 apart, each its own. */
const INCIDENT_PFN_BASE = 0x100000;
const INCIDENT_PFN_SPAN = 0x380000;
export const incidentPfn = (i: number): number => INCIDENT_PFN_BASE + ((i * 97) % INCIDENT_PFN_SPAN);

/**
 * A busy node's kernel log of `lines` lines: ordinary lines, and one memory failure about every thousand
 * lines, evenly spread, the last line of the log the last failure's verdict.
 */
export function* kernelLog(lines: number, seed = 1): Generator<KernelLine & { incident?: IncidentKind }> {
  if (!Number.isInteger(lines) || lines < 100) throw new Error(`a kernel log of ${lines} lines: at least 100`);
  const r = seededRandom(seed);
  const wanted = Math.max(1, Math.round(lines / 1000));
  // The failures first, so that the ordinary lines fill what they leave.
  const incidents: { kind: IncidentKind; lines: KernelLine[] }[] = [];
  let incidentLineCount = 0;
  for (let i = 0; i < wanted; i++) {
    const last = i === wanted - 1;
    let x = r() * 100;
    let kind: IncidentKind = "hugepage";
    for (const [weight, k] of INCIDENTS) {
      x -= weight;
      if (x < 0) {
        kind = k;
        break;
      }
    }
    // The log ends with a verdict: nothing after the last one.
    const incident = incidentLines(kind, incidentPfn(i), r, !last && r() < 0.2);
    incidents.push({ kind, lines: incident });
    incidentLineCount += incident.length;
  }
  const ordinary = lines - incidentLineCount;
  if (ordinary < 0) throw new Error(`${lines} lines cannot hold ${wanted} memory failures`);
  for (const [i, { kind, lines: incident }] of incidents.entries()) {
    const before = Math.floor(((i + 1) * ordinary) / incidents.length) - Math.floor((i * ordinary) / incidents.length);
    for (let k = 0; k < before; k++) yield ordinaryLine(r);
    for (const line of incident) yield { ...line, incident: kind };
  }
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
/** rsyslog's traditional stamp (`Dec  2 12:49:01`), in UTC: NPD runs with TZ=UTC. */
export function syslogStamp(ms: number): string {
  const d = new Date(ms);
  const two = (n: number): string => String(n).padStart(2, "0");
  return `${MONTHS[d.getUTCMonth()] ?? ""} ${String(d.getUTCDate()).padStart(2)} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())}`;
}
/** printk's time, `[%5lu.%06lu]` of the uptime. */
export function printkStamp(usec: number): string {
  return `[${String(Math.floor(usec / 1e6)).padStart(5)}.${String(usec % 1e6).padStart(6, "0")}]`;
}
/** A /dev/kmsg record: `PRI,SEQ,TS_USEC,FLAGS;text`, then its dictionary lines (facility 0, the kernel's). */
export function kmsgRecord(line: KernelLine, sequence: number, usec: number): string {
  return [`${line.level},${sequence},${usec},-;${line.text}`, ...(line.dictionary ?? []).map((entry) => ` ${entry}`)].join("\n");
}

const HOST = "node-7";
const FIRST_SEQUENCE = 1000;

/** Writes the log twice: kmsg records for the agent, kern.log lines for NPD. Its lines end now, spread over the last ten minutes of uptime. */
function writeLogs(kmsgFile: string, kernLogFile: string, lines: number): PeerResult["log"] {
  const nowMs = Date.now();
  const upUsec = Math.floor(uptime() * 1e6);
  const bootMs = nowMs - upUsec / 1000;
  // Within NPD's look-back (1h) and after the boot its filelog watcher reads from: ten minutes, less on a machine just booted.
  const spanUsec = Math.max(1e6, Math.min(600e6, upUsec - 10e6));
  const firstUsec = upUsec - spanUsec;
  const kmsg = openSync(kmsgFile, "w");
  const kern = openSync(kernLogFile, "w");
  const log: PeerResult["log"] = { lines: 0, verdicts: 0, kmsgBytes: 0, kernLogBytes: 0, incidents: {} };
  let kmsgChunk: string[] = [];
  let kernChunk: string[] = [];
  const flush = (): void => {
    const a = `${kmsgChunk.join("\n")}\n`;
    const b = `${kernChunk.join("\n")}\n`;
    log.kmsgBytes += writeSync(kmsg, a);
    log.kernLogBytes += writeSync(kern, b);
    kmsgChunk = [];
    kernChunk = [];
  };
  try {
    for (const line of kernelLog(lines)) {
      const usec = firstUsec + Math.floor((log.lines * spanUsec) / lines);
      kmsgChunk.push(kmsgRecord(line, FIRST_SEQUENCE + log.lines, usec));
      kernChunk.push(`${syslogStamp(bootMs + usec / 1000)} ${HOST} kernel: ${printkStamp(usec)} ${line.text}`);
      log.lines++;
      if (line.verdict !== undefined) {
        log.verdicts++;
        if (line.incident !== undefined) log.incidents[line.incident] = (log.incidents[line.incident] ?? 0) + 1;
      }
      if (kmsgChunk.length === 10_000) flush();
    }
    if (kmsgChunk.length > 0) flush();
  } finally {
    closeSync(kmsg);
    closeSync(kern);
  }
  return log;
}

// ---------------------------------------------------------------------------------------------
// Processes

/** The sum of every series of `name` in Prometheus text whose labels include `labels`; undefined when there is none. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  let sum: number | undefined;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name) || (line[name.length] !== "{" && line[name.length] !== " ")) continue;
    const seriesLabels = new Map([...line.slice(name.length, line.lastIndexOf(" ")).matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1], m[2]]));
    if (Object.entries(labels).some(([key, value]) => seriesLabels.get(key) !== value)) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** Every series of `name`, by the value of its label `label`. */
function metricBy(text: string, name: string, label: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`)) continue;
    const key = new RegExp(`${label}="([^"]*)"`).exec(line)?.[1] ?? "";
    out[key] = (out[key] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return out;
}

async function scrape(port: number): Promise<string | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(5000) });
    return response.ok ? await response.text() : undefined;
  } catch {
    return undefined;
  }
}

const load = (): number => Number((loadavg()[0] ?? 0).toFixed(2));
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const MiB = 2 ** 20;

/** utime + stime of a process and its threads, from /proc/PID/stat (clock ticks of 10 ms). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}
function statusMiB(pid: number, field: "VmRSS" | "VmHWM"): number {
  const kb = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb ?? 0) / 1024;
}

/** The processes runPeer started: each stopped in the end, whatever happened; SIGKILLed if the bench itself exits first. */
class Children {
  readonly #running = new Map<ChildProcess, Promise<void>>();
  readonly #onExit = (): void => {
    for (const child of this.#running.keys()) child.kill("SIGKILL");
  };

  constructor() {
    process.on("exit", this.#onExit);
  }

  spawn(command: string, args: string[], options: { env: NodeJS.ProcessEnv; log: string; cwd?: string }): ChildProcess {
    const fd = openSync(options.log, "a");
    try {
      const child = spawn(command, args, { stdio: ["ignore", fd, fd], env: options.env, cwd: options.cwd });
      const exited = new Promise<void>((resolve) => {
        child.once("exit", () => {
          resolve();
        });
        child.once("error", () => {
          resolve();
        });
      });
      this.#running.set(child, exited);
      void exited.then(() => this.#running.delete(child));
      if (child.pid === undefined) throw new Error(`${command} could not be started`);
      return child;
    } finally {
      closeSync(fd);
    }
  }

  running(child: ChildProcess): boolean {
    return this.#running.has(child);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it is gone. */
  async stop(child: ChildProcess, graceMs = 15_000): Promise<void> {
    const exited = this.#running.get(child);
    if (exited === undefined) return;
    child.kill("SIGTERM");
    const kill = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(kill);
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.#running.keys()].map((child) => this.stop(child)));
    process.off("exit", this.#onExit);
  }
}

/** Calls `check` every `intervalMs` until it says yes; the time it did (performance.now()), or undefined when `child` exited or time ran out. */
async function until(children: Children, child: ChildProcess, check: () => Promise<boolean>, timeoutMs: number, intervalMs = 100): Promise<number | undefined> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline && children.running(child)) {
    if (await check()) return performance.now();
    await sleep(intervalMs);
  }
  return undefined;
}

function kubectl(cluster: ClusterState, args: string[]): string {
  const result = spawnSync(toolPath("kubectl"), ["--kubeconfig", cluster.kubeconfig, ...args], { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`kubectl ${args.join(" ")}: ${result.stderr}`);
  return result.stdout;
}

const EVENTS_PATH = `/apis/${group}/${version}/memoryerrorevents`;

// ---------------------------------------------------------------------------------------------
// Part A: NPD

/** NPD's rules for the memory failure, added to its stock kernel monitor's. */
const NPD_RULES = [
  { type: "temporary", reason: "MemoryFailure", pattern: "Memory failure: 0x[0-9a-f]+: recovery action for .*" },
  {
    type: "permanent",
    condition: "HugepageMemoryFailure",
    reason: "HugepagePoisoned",
    pattern: "Memory failure: 0x[0-9a-f]+: recovery action for (free )?huge page: .*",
  },
];
const NPD_CONDITION = { type: "HugepageMemoryFailure", reason: "NoHugepageMemoryFailure", message: "no hugepage lost to a memory failure" };
const TIMEOUT_MS = 15 * 60_000;

async function runNpd(children: Children, dir: string, kernLog: string, log: PeerResult["log"]): Promise<ThroughputResult> {
  const binary = toolPath("node-problem-detector");
  const stock = JSON.parse(readFileSync(nodeProblemDetectorConfigPath(), "utf8")) as { conditions?: unknown[]; rules?: unknown[] } & Record<string, unknown>;
  // Its defaults kept (the plugin's time stamp and message expressions, bufferSize 10); the look-back from
  // 5 min to 1 h so that no line of the log, which spans up to ten minutes before now, is thrown away unread.
  const config = {
    ...stock,
    logPath: kernLog,
    lookback: "1h",
    conditions: [...(stock.conditions ?? []), NPD_CONDITION],
    rules: [...(stock.rules ?? []), ...NPD_RULES],
  };
  const configFile = join(dir, "kernel-monitor.json");
  writeFileSync(configFile, JSON.stringify(config, null, 2));
  const port = await freePort();
  const args = [
    `--config.system-log-monitor=${configFile}`,
    "--enable-k8s-exporter=false",
    "--prometheus-address=127.0.0.1",
    `--prometheus-port=${port}`,
    // Its own /healthz and /conditions server, not needed here.
    "--port=0",
    "--hostname-override=peer-npd",
  ];
  const logFile = join(dir, "npd.log");
  const loadAtStart = load();
  const spawnedAt = Date.now();
  const start = performance.now();
  const npd = children.spawn(binary, args, { env: { ...process.env, TZ: "UTC" }, log: logFile });
  const pid = npd.pid ?? 0;
  let text: string | undefined;
  const done = await until(
    children,
    npd,
    async () => {
      text = (await scrape(port)) ?? text;
      return (metricValue(text ?? "", "problem_counter", { reason: "MemoryFailure" }) ?? 0) >= log.verdicts;
    },
    TIMEOUT_MS,
  );
  const end = done ?? performance.now();
  const loadAtDone = load();
  const cpu = children.running(npd) ? cpuSeconds(pid) : Number.NaN;
  await sleep(5000);
  const rssAfterMiB = children.running(npd) ? statusMiB(pid, "VmRSS") : Number.NaN;
  const peakRssMiB = children.running(npd) ? statusMiB(pid, "VmHWM") : Number.NaN;
  text = (await scrape(port)) ?? text ?? "";
  await children.stop(npd);
  // klog's first line of the watcher, `I1202 12:49:01.123456 ... Start watching filelog`, in UTC.
  const started = /^I(\d\d)(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{6}) .*Start watching filelog/m.exec(readFileSync(logFile, "utf8"));
  const firstLineAt =
    started === null
      ? undefined
      : Date.UTC(new Date(spawnedAt).getUTCFullYear(), Number(started[1]) - 1, Number(started[2]), Number(started[3]), Number(started[4]), Number(started[5])) +
        Number(started[6]) / 1000;
  const problems = metricBy(text, "problem_counter", "reason");
  const gauges = metricBy(text, "problem_gauge", "reason");
  return throughput({
    name: `node-problem-detector ${readVersions().nodeProblemDetector}`,
    command: [binary, ...args].join(" "),
    log,
    recognised: problems.MemoryFailure ?? 0,
    doneWhen: `problem_counter{reason="MemoryFailure"} = ${log.verdicts.toLocaleString("en")} (the log's last line is a verdict)`,
    finished: done !== undefined,
    seconds: (end - start) / 1000,
    startupSeconds: firstLineAt === undefined ? null : (firstLineAt - spawnedAt) / 1000,
    cpuSeconds: cpu,
    peakRssMiB,
    rssAfterMiB,
    load: { atStart: loadAtStart, atDone: loadAtDone },
    details: {
      ...Object.fromEntries(Object.entries(problems).map(([reason, n]) => [`problem_counter ${reason}`, n])),
      ...Object.fromEntries(Object.entries(gauges).map(([reason, n]) => [`problem_gauge ${reason}`, n])),
    },
  });
}

function throughput(
  r: Omit<ThroughputResult, "lines" | "verdicts" | "linesPerSecond" | "linesPerSecondAfterStartup"> & { log: PeerResult["log"] },
): ThroughputResult {
  const { log, ...rest } = r;
  const round = (n: number, digits = 2): number => Number(n.toFixed(digits));
  const afterStartup = r.startupSeconds === null ? null : r.seconds - r.startupSeconds;
  return {
    ...rest,
    lines: log.lines,
    verdicts: log.verdicts,
    seconds: round(r.seconds),
    startupSeconds: r.startupSeconds === null ? null : round(r.startupSeconds),
    linesPerSecond: Math.round(log.lines / r.seconds),
    linesPerSecondAfterStartup: afterStartup === null || afterStartup <= 0 ? null : Math.round(log.lines / afterStartup),
    cpuSeconds: round(r.cpuSeconds),
    peakRssMiB: round(r.peakRssMiB, 1),
    rssAfterMiB: round(r.rssAfterMiB, 1),
  };
}

// ---------------------------------------------------------------------------------------------
// The agent

/** agent/Dockerfile's ENTRYPOINT: node's flags, and the compiled entry point. */
function agentCommand(): { flags: string[]; entry: string } {
  const entrypoint = imageEntrypoint(join(repoRoot, "agent", "Dockerfile"));
  const entry = join(repoRoot, entrypoint.at(-1) ?? "");
  if (!existsSync(entry)) throw new Error(`${entry} is not built: run \`npm run build\``);
  return { flags: entrypoint.slice(1, -1), entry };
}

/** agent-storm-hook.ts as JavaScript: the image's --lite-mode has no WebAssembly, which node's own type stripping needs. */
function compileHook(dir: string): string {
  const source = readFileSync(join(repoRoot, "bench", "agent-storm-hook.ts"), "utf8");
  const { outputText } = ts.transpileModule(source, { compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2024 } });
  const file = join(dir, "agent-storm-hook.mjs");
  writeFileSync(file, outputText);
  return file;
}

interface AgentRun {
  child: ChildProcess;
  pid: number;
  port: number;
  spawnedAt: number;
  start: number;
  command: string;
  logFile: string;
  resultFile: string;
}

/** An agent as its image runs it on a fake host, its /dev/kmsg the hook's replay of `records`. */
async function startAgent(
  children: Children,
  dir: string,
  cluster: ClusterState,
  hook: string,
  nodeName: string,
  bootID: string,
  records: string,
): Promise<AgentRun> {
  const root = join(dir, "root");
  writeFakeHost(root, { bootID, pools: [{ size: "2Mi", numaNode: 0, total: 512, free: 256 }], earlyKill: false, recovery: true, iomem: IOMEM });
  // One process maps 16 hugepages where the memory failures begin.
  writeFakeProcesses(root, INCIDENT_PFN_BASE);
  const { flags, entry } = agentCommand();
  const port = await freePort();
  const stateDir = join(dir, "state");
  const resultFile = join(dir, "hook.json");
  const args = hookedAgentArgs([...flags, entry], hook, { nodeName, kubeconfig: cluster.kubeconfig, root, stateDir, metricsPort: port });
  const logFile = join(dir, "agent.log");
  const spawnedAt = Date.now();
  const start = performance.now();
  const child = children.spawn(process.execPath, args, {
    cwd: repoRoot,
    log: logFile,
    env: {
      ...process.env,
      NODE_ENV: "production",
      STORM_KMSG: join(root, "dev", "kmsg"),
      STORM_STATE_FILE: join(stateDir, "agent-state.json"),
      STORM_RESULT: resultFile,
      STORM_REPLAY: records,
    },
  });
  const command = `node ${[...flags, relative(repoRoot, entry)].join(" ")} (and --import agent-storm-hook)`;
  return { child, pid: child.pid ?? 0, port, spawnedAt, start, command, logFile, resultFile };
}

/** What agent-storm-hook.ts wrote when the agent exited, in replay mode. */
interface HookReplayResult {
  recordsRead: number;
  firstReadAt?: number;
  lastReadAt?: number;
  reads: number;
  stateWrites: { count: number; fsyncs: number; bytes: number; ms: number };
}

async function runAgentThroughput(
  children: Children,
  dir: string,
  cluster: ClusterState,
  hook: string,
  records: string,
  log: PeerResult["log"],
): Promise<ThroughputResult> {
  const nodeName = "peer-throughput";
  const loadAtStart = load();
  const agent = await startAgent(children, dir, cluster, hook, nodeName, "5ee1a0a1-6d2a-4c55-9d8e-2b1f0c9e7a11", records);
  let text: string | undefined;
  const done = await until(
    children,
    agent.child,
    async () => {
      text = (await scrape(agent.port)) ?? text;
      return (metricValue(text ?? "", "mce_agent_kernel_lines_total", { source: "kmsg" }) ?? 0) >= log.lines;
    },
    TIMEOUT_MS,
  );
  const end = done ?? performance.now();
  const loadAtDone = load();
  const cpu = children.running(agent.child) ? cpuSeconds(agent.pid) : Number.NaN;
  const atDone = text ?? "";
  const recognised = metricValue(atDone, "mce_agent_memory_errors_total") ?? 0;
  // Then its events reach the API (they were being created all along).
  const delivered = await until(
    children,
    agent.child,
    async () => {
      text = (await scrape(agent.port)) ?? text;
      return (metricValue(text ?? "", "mce_agent_events_delivered_total") ?? 0) >= recognised;
    },
    5 * 60_000,
    250,
  );
  await sleep(5000);
  const rssAfterMiB = children.running(agent.child) ? statusMiB(agent.pid, "VmRSS") : Number.NaN;
  const peakRssMiB = children.running(agent.child) ? statusMiB(agent.pid, "VmHWM") : Number.NaN;
  text = (await scrape(agent.port)) ?? text ?? "";
  await children.stop(agent.child);
  const hookResult = existsSync(agent.resultFile) ? (JSON.parse(readFileSync(agent.resultFile, "utf8")) as HookReplayResult) : undefined;
  const client = new KubeClient(loadKubeconfigFile(cluster.kubeconfig), { userAgent: "mce-peer-bench" });
  let inApi: number;
  try {
    inApi = (await client.request<{ items: unknown[] }>("GET", EVENTS_PATH, { query: { labelSelector: `${nodeLabel}=${nodeName}` } })).items.length;
  } finally {
    await client.close();
  }
  const logText = readFileSync(agent.logFile, "utf8");
  const severities = metricBy(atDone, "mce_agent_memory_errors_total", "severity");
  return throughput({
    name: "mce-agent",
    command: agent.command,
    log,
    recognised,
    doneWhen: `mce_agent_kernel_lines_total = ${log.lines.toLocaleString("en")}`,
    finished: done !== undefined,
    seconds: (end - agent.start) / 1000,
    startupSeconds: hookResult?.firstReadAt === undefined ? null : (hookResult.firstReadAt - agent.spawnedAt) / 1000,
    cpuSeconds: cpu,
    peakRssMiB,
    rssAfterMiB,
    load: { atStart: loadAtStart, atDone: loadAtDone },
    details: {
      ...Object.fromEntries(Object.entries(severities).map(([severity, n]) => [`errors ${severity}`, n])),
      "parse errors": metricValue(text, "mce_agent_parse_errors_total") ?? 0,
      "orphan lines": metricValue(text, "mce_agent_orphan_lines_total") ?? 0,
      "events created": metricValue(text, "mce_agent_events_delivered_total", { outcome: "created" }) ?? 0,
      "MemoryErrorEvents in the API": inApi,
      "last event created, s after start": delivered === undefined ? "not all" : Number(((delivered - agent.start) / 1000).toFixed(2)),
      "state-file writes": hookResult?.stateWrites.count ?? -1,
      "log lines": logText.split("\n").length - 1,
      "log warnings": logText.split("\n").filter((line) => line.includes('"level":"warn"')).length,
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Part B: latency

const LATENCY_PFN_BASE = 0x200000;

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? Number.NaN;
}

/** Each sample's time split at the agent's "memory error seen" and "memory error reported" log lines. */
export function stages(agentLog: string, timed: readonly { name: string; written: number; arrived: number }[]): LatencyResult["stages"] {
  const seen = new Map<string, number>();
  const reported = new Map<string, number>();
  for (const text of agentLog.split("\n")) {
    if (!text.startsWith("{")) continue;
    const entry = JSON.parse(text) as { time?: string; msg?: string; memoryErrorEvent?: string };
    if (entry.time === undefined || entry.memoryErrorEvent === undefined) continue;
    if (entry.msg === "memory error seen") seen.set(entry.memoryErrorEvent, Date.parse(entry.time));
    if (entry.msg === "memory error reported") reported.set(entry.memoryErrorEvent, Date.parse(entry.time));
  }
  const stage = (
    from: (t: (typeof timed)[number]) => number | undefined,
    to: (t: (typeof timed)[number]) => number | undefined,
  ): { p50Ms: number; maxMs: number } => {
    const spans = timed
      .flatMap((t) => {
        const [a, b] = [from(t), to(t)];
        return a === undefined || b === undefined ? [] : [b - a];
      })
      .sort((a, b) => a - b);
    return { p50Ms: Number(percentile(spans, 0.5).toFixed(1)), maxMs: Number((spans.at(-1) ?? Number.NaN).toFixed(1)) };
  };
  return {
    toRead: stage(
      (t) => t.written,
      (t) => seen.get(t.name),
    ),
    readToCreated: stage(
      (t) => seen.get(t.name),
      (t) => reported.get(t.name),
    ),
    createdToWatch: stage(
      (t) => reported.get(t.name),
      (t) => t.arrived,
    ),
  };
}

async function runLatency(children: Children, dir: string, cluster: ClusterState, hook: string, samples: number): Promise<LatencyResult> {
  const nodeName = "peer-latency";
  const bootID = "1a7e0c1a-6d2a-4c55-9d8e-2b1f0c9e7a11";
  const records = join(dir, "kmsg.records");
  writeFileSync(records, "");
  const client = new KubeClient(loadKubeconfigFile(cluster.kubeconfig), { userAgent: "mce-peer-bench" });
  const stopWatch = new AbortController();
  const arrived = new Map<string, number>();
  const waiting = new Map<string, (at: number) => void>();
  let watchFailed: Error | undefined;
  const fd = openSync(records, "a");
  try {
    const labelSelector = `${nodeLabel}=${nodeName}`;
    const listed = await client.request<{ metadata: { resourceVersion: string } }>("GET", EVENTS_PATH, { query: { labelSelector } });
    void client
      .watch(
        EVENTS_PATH,
        { labelSelector, resourceVersion: listed.metadata.resourceVersion },
        (event) => {
          const at = performance.now();
          if (event.type !== "ADDED") return;
          const name = (event.object as { metadata?: { name?: string } }).metadata?.name ?? "";
          arrived.set(name, at);
          waiting.get(name)?.(at);
        },
        stopWatch.signal,
      )
      .catch((error: unknown) => {
        watchFailed = error instanceof Error ? error : new Error(String(error));
      });
    const agent = await startAgent(children, dir, cluster, hook, nodeName, bootID, records);
    // Ready once it serves /metrics and has opened its fake /dev/kmsg (the kmsg source starts with the agent).
    const ready = await until(children, agent.child, async () => (await scrape(agent.port)) !== undefined, 60_000);
    if (ready === undefined) throw new Error(`the latency agent did not start; see ${agent.logFile}`);
    await sleep(2000);
    const r = seededRandom(7);
    const warmup = 3;
    const latencies: number[] = [];
    /** Each counted sample's event, when its line was written and when the watch gave it (ms since the epoch). */
    const timed: { name: string; written: number; arrived: number }[] = [];
    let missing = 0;
    const loadAtStart = load();
    for (let i = 0; i < warmup + samples; i++) {
      if (watchFailed !== undefined) throw new Error(`the watch on memoryerrorevents failed: ${watchFailed.message}`);
      const pfn = LATENCY_PFN_BASE + i * 512 + int(r, 0, 511);
      const name = memoryErrorEventName(nodeName, bootID, pfn);
      const seen = new Promise<number | undefined>((resolve) => {
        const timer = setTimeout(() => {
          resolve(undefined);
        }, 10_000);
        waiting.set(name, (at) => {
          clearTimeout(timer);
          resolve(at);
        });
      });
      const line: KernelLine = { level: 3, text: `Memory failure: 0x${pfn.toString(16)}: recovery action for huge page: Recovered` };
      writeSync(fd, `${kmsgRecord(line, FIRST_SEQUENCE + i, Math.floor(uptime() * 1e6))}\n`);
      // The line is in the file: the agent's next read gives it.
      const written = performance.now();
      const at = arrived.get(name) ?? (await seen);
      waiting.delete(name);
      if (i >= warmup) {
        if (at === undefined) missing++;
        else {
          latencies.push(Number((at - written).toFixed(2)));
          timed.push({ name, written: performance.timeOrigin + written, arrived: performance.timeOrigin + at });
        }
      }
      // The agent reads /dev/kmsg again 200 ms after it found it empty: a pause drawn from a whole 200 ms
      // wide range puts the next line at a uniformly random point of that cycle (100–200 ms had put it
      // mostly just before the next read, and made the wait look half what it is).
      await sleep(100 + r() * 200);
    }
    const loadAtDone = load();
    await children.stop(agent.child);
    const sorted = [...latencies].sort((a, b) => a - b);
    const round = (n: number): number => Number(n.toFixed(1));
    return {
      warmup,
      samples,
      missing,
      p50Ms: round(percentile(sorted, 0.5)),
      p99Ms: round(percentile(sorted, 0.99)),
      maxMs: round(sorted.at(-1) ?? Number.NaN),
      minMs: round(sorted[0] ?? Number.NaN),
      meanMs: round(sorted.reduce((sum, x) => sum + x, 0) / Math.max(1, sorted.length)),
      stages: stages(readFileSync(agent.logFile, "utf8"), timed),
      load: { atStart: loadAtStart, atDone: loadAtDone },
      latenciesMs: latencies,
    };
  } finally {
    closeSync(fd);
    stopWatch.abort();
    await client.close();
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Runs both parts on `cluster` (a local control plane, see test/e2e/cluster/control-plane.ts; the CRDs
 * are applied here), with its files in `workDir`, which is removed afterwards (after a failure only the
 * two kernel logs are, the processes' logs stay). Every process it starts is stopped before it returns
 * or throws, and killed if the bench exits first.
 */
export async function runPeer(cluster: ClusterState, workDir: string, options: PeerOptions = {}): Promise<PeerResult> {
  const lines = options.lines ?? 1_000_000;
  const samples = options.samples ?? 200;
  const children = new Children();
  mkdirSync(workDir, { recursive: true });
  const kmsgFile = join(workDir, "kmsg.records");
  const kernLog = join(workDir, "kern.log");
  let succeeded = false;
  try {
    kubectl(cluster, [
      "apply",
      "--server-side",
      "-f",
      join(repoRoot, "crds", "memoryerrorevents.yaml"),
      "-f",
      join(repoRoot, "crds", "nodememoryhealths.yaml"),
    ]);
    const hook = compileHook(workDir);
    const log = writeLogs(kmsgFile, kernLog, lines);
    const npdDir = join(workDir, "npd");
    const agentDir = join(workDir, "agent");
    const latencyDir = join(workDir, "latency");
    for (const dir of [npdDir, agentDir, latencyDir]) mkdirSync(dir, { recursive: true });
    const npd = await runNpd(children, npdDir, kernLog, log);
    const agent = await runAgentThroughput(children, agentDir, cluster, hook, kmsgFile, log);
    const latency = await runLatency(children, latencyDir, cluster, hook, samples);
    succeeded = true;
    return {
      date: new Date().toISOString(),
      node: process.version,
      cpu: cpus()[0]?.model ?? "unknown",
      cores: availableParallelism(),
      log,
      npd,
      agent,
      latency,
    };
  } finally {
    await children.stopAll();
    // The logs of a failed run stay for a look (npd/npd.log, agent/agent.log, latency/agent.log); the two copies of the kernel log do not.
    if (succeeded) rmSync(workDir, { recursive: true, force: true });
    else for (const file of [kmsgFile, kernLog]) rmSync(file, { force: true });
  }
}

/** The figures as a plain-text table. */
export function peerTable(r: PeerResult): string {
  const n = (x: number | null): string => (x === null || Number.isNaN(x) ? "-" : x.toLocaleString("en"));
  const table = (header: string[], body: string[][]): string => {
    const widths = header.map((_, i) => Math.max(...[header, ...body].map((row) => (row[i] ?? "").length)));
    const line = (row: string[]): string => `| ${row.map((cell, i) => cell.padEnd(widths[i] ?? 0)).join(" | ")} |`;
    return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...body.map(line)].join("\n");
  };
  const both: [string, (t: ThroughputResult) => string][] = [
    ["lines/s, start to last line", (t) => n(t.linesPerSecond)],
    ["lines/s, first line to last", (t) => n(t.linesPerSecondAfterStartup)],
    ["start to last line (s)", (t) => `${n(t.seconds)}${t.finished ? "" : " (stopped: not done)"}`],
    ["start-up, to its first line (s)", (t) => n(t.startupSeconds)],
    ["CPU s, start to last line", (t) => n(t.cpuSeconds)],
    ["peak RSS (MiB)", (t) => n(t.peakRssMiB)],
    ["RSS 5 s after its work (MiB)", (t) => n(t.rssAfterMiB)],
    ["memory-failure verdicts recognised", (t) => `${n(t.recognised)} of ${n(t.verdicts)}`],
    ["done when", (t) => t.doneWhen],
    ["load average (1 min) at start / done", (t) => `${t.load.atStart} / ${t.load.atDone}`],
  ];
  const partA = table(
    ["", r.npd.name, r.agent.name],
    both.map(([label, cell]) => [label, cell(r.npd), cell(r.agent)]),
  );
  const details = (t: ThroughputResult): string =>
    `${t.name}: ${Object.entries(t.details)
      .map(([k, v]) => `${k} ${typeof v === "number" ? v.toLocaleString("en") : v}`)
      .join(", ")}`;
  const l = r.latency;
  const stage = (x: { p50Ms: number; maxMs: number }): string => `${n(x.p50Ms)} / ${n(x.maxMs)}`;
  const partB = table(
    ["samples (after warm-up)", "missing", "p50 ms", "p99 ms", "max ms", "min ms", "mean ms"],
    [[`${l.samples} (${l.warmup})`, String(l.missing), n(l.p50Ms), n(l.p99Ms), n(l.maxMs), n(l.minMs), n(l.meanMs)]],
  );
  return [
    `Part A: one kernel log of ${n(r.log.lines)} lines with ${n(r.log.verdicts)} memory-failure verdicts (${Object.entries(r.log.incidents)
      .map(([kind, count]) => `${kind} ${count}`)
      .join(
        ", ",
      )}), ${(r.log.kmsgBytes / MiB).toFixed(1)} MiB as kmsg records, ${(r.log.kernLogBytes / MiB).toFixed(1)} MiB as kern.log; one after the other on ${r.cores} cores (${r.cpu})`,
    partA,
    details(r.npd),
    details(r.agent),
    "",
    "Part B: a memory-failure verdict (uncorrected, on a hugepage) appended to the agent's kmsg → its MemoryErrorEvent delivered by a watch",
    partB,
    `where the time went (p50 / max ms; the agent's log has ms, and says "reported" after the create's answer, which the watch can beat): line written → read and parsed ${stage(l.stages.toRead)}; → created in the API ${stage(
      l.stages.readToCreated,
    )}; → watch ${stage(l.stages.createdToWatch)}; load average (1 min) ${l.load.atStart} → ${l.load.atDone}`,
  ].join("\n");
}
