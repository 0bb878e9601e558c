// The index of hugetlb mappings: which process (and so which pod and container) maps which hugepage.
// Without early kill the kernel names nobody until a mapper touches the poisoned page, and by then
// pagemap shows the page as gone, so this must be known before the error. Refreshed incrementally:
// /proc/PID/maps is cheap and changes whenever the VMAs do, so smaps is read again only for new
// processes and ones whose maps changed, at most `maxSmapsPerRefresh` per refresh; pfns come from
// pagemap, one 8-byte read per hugepage, every refresh (hugepages fault in lazily).
import { createHash } from "node:crypto";
import { closeSync, openSync, readdirSync, readFileSync, readSync } from "node:fs";
import { join } from "node:path";
import { hugepageBytes, hugepageHeadPfn, HUGEPAGE_SIZES, PAGE_SIZE_BYTES, sizeFromKernelPageSizeKb, type HugepageSize } from "../kernel/pfn.ts";
import { podOfProcCgroup, type PodCgroup } from "./cgroup.ts";
import type { Clock } from "../runtime/clock.ts";

export interface HugetlbVma {
  start: number;
  end: number;
  size: HugepageSize;
  /** `rw-s`: a hugetlbfs file (or shared anonymous hugetlb) mapped MAP_SHARED; lost to every mapper. */
  shared: boolean;
  /** The backing file as smaps prints it (`/anon_hugepage (deleted)` for anonymous hugetlb). */
  path?: string | undefined;
}

const VMA_HEADER = /^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+ *(.*)$/;
const KERNEL_PAGE_SIZE = /^KernelPageSize:\s+(\d+) kB$/;

/** The hugetlb VMAs of an smaps file: those whose KernelPageSize is a hugepage size we manage. */
export function parseHugetlbVmas(smaps: string): HugetlbVma[] {
  const vmas: HugetlbVma[] = [];
  let current: Omit<HugetlbVma, "size"> | undefined;
  for (const line of smaps.split("\n")) {
    const header = VMA_HEADER.exec(line);
    if (header !== null) {
      const path = header[4] === "" ? undefined : header[4];
      current = { start: parseInt(header[1] ?? "", 16), end: parseInt(header[2] ?? "", 16), shared: header[3]?.[3] === "s", path };
      continue;
    }
    const kernelPageSize = KERNEL_PAGE_SIZE.exec(line);
    if (kernelPageSize === null || current === undefined) continue;
    const size = sizeFromKernelPageSizeKb(Number(kernelPageSize[1]));
    if (size !== undefined) vmas.push({ ...current, size });
    current = undefined;
  }
  return vmas;
}

const PRESENT = 1n << 63n;
const PFN_MASK = (1n << 55n) - 1n;

export type PagemapEntry = { present: false } | { present: true; pfn: number };

/** One pagemap entry: bit 63 present, bits 0-54 the pfn (zero when the reader lacks CAP_SYS_ADMIN). */
export function decodePagemapEntry(value: bigint): PagemapEntry {
  return (value & PRESENT) === 0n ? { present: false } : { present: true, pfn: Number(value & PFN_MASK) };
}

export interface Mapper {
  pid: number;
  command: string;
  pod?: PodCgroup | undefined;
  size: HugepageSize;
  headPfn: number;
  virtualStart: number;
  virtualEnd: number;
  shared: boolean;
  /** The hugetlbfs file of a shared mapping; absent for anonymous hugetlb. */
  file?: string | undefined;
}

export interface ProcessInfo {
  pid: number;
  command: string;
  pod?: PodCgroup | undefined;
}

interface Tracked extends ProcessInfo {
  mapsDigest: string;
  vmas: HugetlbVma[];
  /** Its smaps must be read again (new, or maps changed) but the per-refresh budget ran out. */
  stale: boolean;
  mappers: Mapper[];
}

export interface RefreshReport {
  processes: number;
  smapsRead: number;
  /** Processes whose smaps still wait for a later refresh. */
  smapsDeferred: number;
  hugepages: number;
  durationMs: number;
  /** pagemap gave present pages with pfn 0: the agent lacks CAP_SYS_ADMIN and can map nothing. */
  pfnsHidden: boolean;
}

export interface IndexOptions {
  /** The host's /proc (`<host-root>/proc`). */
  procDir: string;
  clock: Pick<Clock, "now">;
  maxSmapsPerRefresh?: number;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    // The process exited, or we may not read it: either way it maps nothing we can know.
    return undefined;
  }
}

/** A process's command and pod as /proc says now; undefined once it has exited. */
export function readProcess(procDir: string, pid: number): ProcessInfo | undefined {
  const dir = join(procDir, String(pid));
  const command = readText(join(dir, "comm"))?.trimEnd();
  if (command === undefined) return undefined;
  return { pid, command, pod: podOfProcCgroup(readText(join(dir, "cgroup")) ?? "") };
}

export type KillPolicy = "Default" | "Early" | "Late";

// task->flags, field 9 of /proc/PID/stat: prctl(PR_MCE_KILL_SET) sets PF_MCE_PROCESS, and PF_MCE_EARLY
// for early kill (include/linux/sched.h; both values seen on 6.1 in the kernel tier). PR_MCE_KILL_GET
// works only on the caller, so this is the one way to know another process's policy.
const PF_MCE_PROCESS = 0x80;
const PF_MCE_EARLY = 0x08000000;

/** A process's memory-failure kill policy from its /proc/PID/stat; undefined when unreadable. */
export function parseKillPolicy(stat: string): KillPolicy | undefined {
  // comm may hold spaces and parentheses: fields are counted after the last ')'; state is field 3.
  const flags = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[6]);
  if (!Number.isInteger(flags)) return undefined;
  if ((flags & PF_MCE_PROCESS) === 0) return "Default";
  return (flags & PF_MCE_EARLY) === 0 ? "Late" : "Early";
}

export function readKillPolicy(procDir: string, pid: number): KillPolicy | undefined {
  const stat = readText(join(procDir, String(pid), "stat"));
  return stat === undefined ? undefined : parseKillPolicy(stat);
}

const ANONYMOUS = "/anon_hugepage (deleted)";

export class HugetlbIndex {
  readonly #procDir: string;
  readonly #clock: Pick<Clock, "now">;
  readonly #maxSmaps: number;
  readonly #processes = new Map<number, Tracked>();
  #byHugepage = new Map<string, Mapper[]>();
  /** The map before the last refresh: soft offline moves a page at once, so by the time its line is read the index may already show it at its new pfn. */
  #previousByHugepage = new Map<string, Mapper[]>();

  constructor({ procDir, clock, maxSmapsPerRefresh = 100 }: IndexOptions) {
    this.#procDir = procDir;
    this.#clock = clock;
    this.#maxSmaps = maxSmapsPerRefresh;
  }

  get processes(): number {
    return this.#processes.size;
  }

  get hugepages(): number {
    return this.#byHugepage.size;
  }

  /** Every process mapping the hugepage that holds raw `pfn`, under each hugepage size it could be. */
  mappersOf(pfn: number): Mapper[] {
    const lookup = (map: Map<string, Mapper[]>): Mapper[] => HUGEPAGE_SIZES.flatMap((size) => map.get(key(size, hugepageHeadPfn(pfn, size))) ?? []);
    const now = lookup(this.#byHugepage);
    return now.length > 0 ? now : lookup(this.#previousByHugepage);
  }

  /** What the index knows of a pid, or what /proc says of it now. */
  process(pid: number): ProcessInfo | undefined {
    const tracked = this.#processes.get(pid);
    if (tracked !== undefined) return { pid, command: tracked.command, pod: tracked.pod };
    return this.#describe(pid);
  }

  refresh(): RefreshReport {
    const started = this.#clock.now();
    const pids = new Set(
      readdirSync(this.#procDir)
        .filter((name) => /^\d+$/.test(name))
        .map(Number),
    );
    for (const pid of this.#processes.keys()) if (!pids.has(pid)) this.#processes.delete(pid);
    let budget = this.#maxSmaps;
    let smapsRead = 0;
    let deferred = 0;
    let pfnsHidden = false;
    for (const pid of pids) {
      const maps = readText(join(this.#procDir, String(pid), "maps"));
      if (maps === undefined) {
        this.#processes.delete(pid);
        continue;
      }
      const digest = createHash("sha1").update(maps).digest("base64");
      let tracked = this.#processes.get(pid);
      if (tracked === undefined || digest !== tracked.mapsDigest) {
        // New, or its maps changed: an exec changes them, and its command with them (a container's first
        // process is runc's init until it execs the image's entrypoint; seen on the real node).
        const info = this.#describe(pid);
        if (info === undefined) {
          this.#processes.delete(pid);
          continue;
        }
        tracked = { vmas: [], mappers: [], ...tracked, ...info, mapsDigest: digest, stale: true };
        this.#processes.set(pid, tracked);
      }
      if (tracked.stale) {
        if (budget === 0) {
          deferred++;
        } else {
          budget--;
          smapsRead++;
          tracked.vmas = parseHugetlbVmas(readText(join(this.#procDir, String(pid), "smaps")) ?? "");
          tracked.stale = false;
        }
      }
      if (tracked.vmas.length > 0 && this.#readPfns(tracked)) pfnsHidden = true;
      else if (tracked.vmas.length === 0) tracked.mappers = [];
    }
    this.#previousByHugepage = this.#byHugepage;
    this.#byHugepage = new Map();
    for (const tracked of this.#processes.values()) {
      for (const mapper of tracked.mappers) {
        const k = key(mapper.size, mapper.headPfn);
        const list = this.#byHugepage.get(k);
        if (list === undefined) this.#byHugepage.set(k, [mapper]);
        else list.push(mapper);
      }
    }
    return {
      processes: this.#processes.size,
      smapsRead,
      smapsDeferred: deferred,
      hugepages: this.#byHugepage.size,
      durationMs: this.#clock.now() - started,
      pfnsHidden,
    };
  }

  #describe(pid: number): ProcessInfo | undefined {
    return readProcess(this.#procDir, pid);
  }

  /** Reads the pfn of each hugepage of the process's hugetlb VMAs; true when pfns read as zero. */
  #readPfns(tracked: Tracked): boolean {
    let fd: number;
    try {
      fd = openSync(join(this.#procDir, String(tracked.pid), "pagemap"), "r");
    } catch {
      tracked.mappers = [];
      return false;
    }
    const entry = Buffer.alloc(8);
    const mappers: Mapper[] = [];
    const before = new Map(tracked.mappers.map((mapper) => [`${mapper.size}:${mapper.virtualStart}`, mapper]));
    let hidden = false;
    try {
      for (const vma of tracked.vmas) {
        const bytes = hugepageBytes(vma.size);
        for (let start = vma.start; start + bytes <= vma.end; start += bytes) {
          if (readSync(fd, entry, 0, 8, (start / PAGE_SIZE_BYTES) * 8) !== 8) continue;
          const decoded = decodePagemapEntry(entry.readBigUInt64LE(0));
          if (!decoded.present) {
            // A poisoned hugepage reads as not present while its VMA stays, and the error's lines may be
            // read after this refresh: the process still maps it (and gets BUS_MCEERR_AR on access).
            const kept = before.get(`${vma.size}:${start}`);
            if (kept !== undefined) mappers.push(kept);
            continue;
          }
          if (decoded.pfn === 0) {
            hidden = true;
            continue;
          }
          mappers.push({
            pid: tracked.pid,
            command: tracked.command,
            pod: tracked.pod,
            size: vma.size,
            headPfn: hugepageHeadPfn(decoded.pfn, vma.size),
            virtualStart: start,
            virtualEnd: start + bytes,
            shared: vma.shared,
            file: vma.shared && vma.path !== ANONYMOUS ? vma.path : undefined,
          });
        }
      }
    } catch {
      // Exited while we read it.
    } finally {
      closeSync(fd);
    }
    tracked.mappers = mappers;
    return hidden;
  }
}

function key(size: HugepageSize, headPfn: number): string {
  return `${size}:${headPfn}`;
}
