// Carries out the pool replacements the operator requests for this node: after the kernel has taken a
// poisoned hugepage out of its pool, raise that size's pool on that NUMA node by one, and report in
// status.poolReplacementResult what the kernel gave. Waits, when asked to, until every process that
// mapped the poisoned hugepage has let go of it; never writes more than the operator's maxTotal, nor
// takes memory below its free-memory floor. Idempotent: a result already recorded is never redone,
// after a restart either.
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { MemoryErrorEvent, MemoryErrorEventStatusPoolReplacement, MemoryErrorEventStatusPoolReplacementResult } from "../crds/generated.ts";
import { hugepageBytes, hugepagePoolDir, type HugepageSize } from "../kernel/pfn.ts";
import type { Clock } from "../runtime/clock.ts";
import { ValueQueue } from "../runtime/queue.ts";
import type { PoolWrite } from "./state.ts";
import type { HostFiles } from "./host.ts";
import type { Logger } from "../runtime/log.ts";
import type { AgentMetrics } from "./metrics.ts";
import { errnoCode } from "./source.ts";

export type PoolReplacementResult = MemoryErrorEventStatusPoolReplacementResult;

/** The API write the pool replacement needs; the real one is in kube.ts. */
export interface PoolReplacementApi {
  /** Server-side applies status.poolReplacementResult with field manager mce-agent. */
  applyPoolReplacementResult(eventName: string, result: PoolReplacementResult): Promise<void>;
}

/** The host files the pool replacement reads and writes; `hostPoolFiles` is the real one. */
export interface PoolFiles {
  /** The pool's nr_hugepages file, as the result names it. */
  poolFile(size: HugepageSize, numaNode: number): string;
  /** The pool's nr_hugepages; rejects (with the errno) when it cannot be read. */
  readTotal(size: HugepageSize, numaNode: number): Promise<number>;
  /** Writes the pool's nr_hugepages; rejects (with the errno) when the file system or the kernel refuses. */
  writeTotal(size: HugepageSize, numaNode: number, total: number): Promise<void>;
  /** MemFree of the NUMA node in bytes; undefined when it cannot be read. */
  readFreeBytes(numaNode: number): Promise<number | undefined>;
  /**
   * Whether process `pid` still holds the hugepage: it exists and a mapping in its maps covers
   * `address` (a pid reused by another process is unlikely to map that very address). Without an
   * address: whether the process exists.
   */
  processMapsCovers(pid: number, address: bigint | undefined): Promise<boolean>;
}

/** Whether a /proc/PID/maps text has a mapping `start-end` with start <= address < end. */
export function mapsCover(maps: string, address: bigint): boolean {
  for (const line of maps.split("\n")) {
    const range = /^([0-9a-f]+)-([0-9a-f]+)\s/i.exec(line);
    if (range === null) continue;
    if (BigInt(`0x${range[1] ?? ""}`) <= address && address < BigInt(`0x${range[2] ?? ""}`)) return true;
  }
  return false;
}

/** The pool files under the host root: /sys/devices/system/node/nodeN/hugepages and /proc/PID/maps. */
export function hostPoolFiles(host: HostFiles): PoolFiles {
  const poolFile = (size: HugepageSize, numaNode: number): string =>
    host.path(`sys/devices/system/node/node${numaNode}/hugepages/${hugepagePoolDir(size)}/nr_hugepages`);
  return {
    poolFile,
    readTotal: async (size, numaNode) => {
      const file = poolFile(size, numaNode);
      const text = (await readFile(file, "utf8")).trim();
      if (!/^\d+$/.test(text)) throw new Error(`not a number: '${text.slice(0, 40)}'`);
      return Number(text);
    },
    writeTotal: async (size, numaNode, total) => {
      // One write(2) of the whole number: sysfs takes a store per write.
      await writeFile(poolFile(size, numaNode), `${total}\n`);
    },
    readFreeBytes: (numaNode) => Promise.resolve(host.numaFreeBytes(numaNode)),
    processMapsCovers: async (pid, address) => {
      const dir = host.path("proc", String(pid));
      let maps: string;
      try {
        maps = await readFile(join(dir, "maps"), "utf8");
      } catch (error) {
        const code = errnoCode(error);
        if (code === "ENOENT" || code === "ESRCH") return false;
        // Alive but unreadable: it may hold the page, so it counts as holding it.
        return existsSync(dir);
      }
      // A zombie's maps is empty: it holds no memory any more.
      return address === undefined ? true : mapsCover(maps, address);
    },
  };
}

/** The pool writes under way, kept durably (the agent's state file): a kill -9 between the write and the status report must not make a given hugepage look skipped, or raise the pool twice. */
export interface PoolWriteLog {
  poolWrite(eventName: string): PoolWrite | undefined;
  recordPoolWrite(eventName: string, write: PoolWrite): void;
  clearPoolWrite(eventName: string): void;
}

export interface PoolReplacerOptions {
  nodeName: string;
  api: PoolReplacementApi;
  files: PoolFiles;
  writes: PoolWriteLog;
  /** Asks for NodeMemoryHealth to be published now, so the operator sees the new pool size at once. */
  refreshHealth: () => void;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
  /** How often to look again whether the mappers let go of the hugepage (default 5 s). */
  recheckMs?: number;
  /** The first pause before a failed pass is tried again (default 5 s)… */
  retryMs?: number;
  /** …doubling up to this (default 60 s). */
  maxRetryMs?: number;
}

type Outcome = "done" | "waiting";

interface Carried {
  uid: string | undefined;
  result: PoolReplacementResult;
}

/** Why a request cannot be carried out as it stands; undefined when it can. */
function incomplete(plan: MemoryErrorEventStatusPoolReplacement): string | undefined {
  const missing = [plan.size === undefined && "size", plan.numaNode === undefined && "numaNode", plan.maxTotal === undefined && "maxTotal"].filter(
    (m) => m !== false,
  );
  return missing.length === 0 ? undefined : `the request names no ${missing.join(", ")}`;
}

const MiB = 1024 * 1024;

function mib(bytes: number): string {
  return `${Number((bytes / MiB).toFixed(1))} MiB`;
}

/** An errno error's words without the path Node appends (the message names the file itself). */
function reasonOf(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.replace(/, \w+ '[^']*'$/, "");
}

export class PoolReplacer {
  readonly #options: PoolReplacerOptions;
  /** Results this process wrote, kept until status shows them: a watch event older than the write must not look like work to do. */
  readonly #carriedOut = new Map<string, Carried>();
  /** The latest replacement under way per pool (size/NUMA node). */
  readonly #pools = new Map<string, Promise<void>>();
  /** Events (name → uid) whose final result status has shown, until they are deleted. */
  readonly #finished = new Map<string, string | undefined>();
  readonly #queue: ValueQueue<MemoryErrorEvent>;

  constructor(options: PoolReplacerOptions) {
    this.#options = options;
    const { clock, log, recheckMs = 5000, retryMs = 5000, maxRetryMs = 60_000 } = options;
    this.#queue = new ValueQueue(async (_name, event) => ((await this.reconcile(event)) === "waiting" ? { requeueAfterMs: recheckMs } : undefined), {
      clock,
      baseDelayMs: retryMs,
      maxDelayMs: maxRetryMs,
    });
    this.#queue.onError = (name, error, retryInMs) => {
      log.warn("pool replacement not finished; will retry", { memoryErrorEvent: name, error, retryInMs });
    };
  }

  /**
   * Reconciles `event` in the background, one pass at a time per event: a change seen during a pass is
   * reconciled after it; a pass that waits for mappers is repeated every `recheckMs`, or at once when
   * the event is offered again; a failed pass is retried with the latest version after `retryMs`,
   * doubling up to `maxRetryMs`.
   */
  offer(event: MemoryErrorEvent): void {
    this.#queue.offer(event.metadata.name, event);
  }

  /** Starts nothing more; a pass under way finishes. */
  stop(): void {
    this.#queue.stop();
  }

  /** The event is gone: stop waiting on it and drop what was kept of it. */
  forget(eventName: string): void {
    this.#queue.forget(eventName);
    this.#carriedOut.delete(eventName);
    this.#finished.delete(eventName);
  }

  /**
   * Carries out the replacement `event` requests unless its result is already recorded: "waiting" while
   * a mapper still holds the hugepage, "done" otherwise. Rejects when the status write failed (retry later).
   */
  async reconcile(event: MemoryErrorEvent): Promise<Outcome> {
    const { api, nodeName } = this.#options;
    const name = event.metadata.name;
    const plan = event.status?.poolReplacement;
    if (event.spec.nodeName !== nodeName || plan?.action !== "Replace" || plan.state !== "Requested") {
      this.#carriedOut.delete(name);
      return "done";
    }
    const uid = event.metadata.uid;
    // Finished once: a watch event older than the status that showed it must not start it again.
    if (this.#finished.has(name) && this.#finished.get(name) === uid) return "done";
    const recorded = event.status?.poolReplacementResult;
    let carried = this.#carriedOut.get(name);
    if (carried !== undefined && (carried.uid !== uid || (recorded?.state === carried.result.state && recorded.at === carried.result.at))) {
      this.#carriedOut.delete(name);
      carried = undefined;
    }
    // Never redone: the pool was written (or deliberately not) once for this event.
    if (recorded !== undefined && recorded.state !== "Waiting") {
      this.#carriedOut.delete(name);
      this.#options.writes.clearPoolWrite(name);
      this.#finished.set(name, uid);
      return "done";
    }
    if (carried !== undefined && carried.result.state !== "Waiting") {
      // Written by this process, not yet in status: say it again, never do it again.
      await api.applyPoolReplacementResult(name, carried.result);
      return "done";
    }
    if (plan.afterMappersExit === true) {
      const holders = await this.#holders(event);
      if (holders.length > 0) {
        await this.#wait(event, holders, carried?.result ?? recorded);
        return "waiting";
      }
    }
    const result = await this.#onePoolAtATime(`${plan.size ?? ""}/${String(plan.numaNode)}`, () => this.#replace(event, plan));
    this.#carriedOut.set(name, { uid: event.metadata.uid, result });
    try {
      await api.applyPoolReplacementResult(name, result);
    } finally {
      // The pool (or the free memory) may have changed: the operator should see it now.
      this.#options.refreshHealth();
    }
    return "done";
  }

  /**
   * Runs `work` after every earlier read-write-read of the same pool: two errors' replacements carried
   * out at once would both read N, both write N+1, and both report a hugepage the kernel gave only once.
   */
  #onePoolAtATime<T>(pool: string, work: () => Promise<T>): Promise<T> {
    const next = (this.#pools.get(pool) ?? Promise.resolve()).then(work);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.#pools.set(pool, settled);
    void settled.then(() => {
      if (this.#pools.get(pool) === settled) this.#pools.delete(pool);
    });
    return next;
  }

  /** The pids of the event's mappers that still map the poisoned hugepage. */
  async #holders(event: MemoryErrorEvent): Promise<number[]> {
    const holders = new Set<number>();
    for (const mapper of event.spec.mappers ?? []) {
      if (holders.has(mapper.pid)) continue;
      let address: bigint | undefined;
      try {
        address = mapper.virtualStart === undefined ? undefined : BigInt(mapper.virtualStart);
      } catch {
        address = undefined;
      }
      if (await this.#options.files.processMapsCovers(mapper.pid, address)) holders.add(mapper.pid);
    }
    return [...holders];
  }

  /** Records Waiting, once per set of holders: the same Waiting is not written again. */
  async #wait(event: MemoryErrorEvent, holders: number[], last: PoolReplacementResult | undefined): Promise<void> {
    const { api, clock, log } = this.#options;
    const name = event.metadata.name;
    const message = `waiting for ${holders.length} mapper(s) to exit: pid ${holders.join(", ")}`;
    if (last?.state === "Waiting" && last.message === message) return;
    const result: PoolReplacementResult = { state: "Waiting", at: new Date(clock.now()).toISOString(), message };
    await api.applyPoolReplacementResult(name, result);
    // Kept only once written: nothing was done to the pool, so a failed write is simply tried again.
    this.#carriedOut.set(name, { uid: event.metadata.uid, result });
    log.info("pool replacement waits for the processes that mapped the poisoned hugepage", { memoryErrorEvent: name, pids: holders });
  }

  /** Checks the limits, writes the pool size and reads back what the kernel gave: the result to record. */
  async #replace(event: MemoryErrorEvent, plan: MemoryErrorEventStatusPoolReplacement): Promise<PoolReplacementResult> {
    const { files, clock } = this.#options;
    const at = new Date(clock.now()).toISOString();
    const why = incomplete(plan);
    const { size, numaNode, maxTotal } = plan;
    if (why !== undefined || size === undefined || numaNode === undefined || maxTotal === undefined)
      return this.#outcome(event, plan, { state: "Skipped", at, message: why ?? "" });
    const file = files.poolFile(size, numaNode);
    const pool = `hugepages-${size} on NUMA node ${numaNode}`;
    let before: number;
    try {
      before = await files.readTotal(size, numaNode);
    } catch (error) {
      return this.#outcome(event, plan, { state: "Skipped", file, at, message: `cannot read ${file}: ${reasonOf(error)}` });
    }
    if (before >= maxTotal)
      return this.#outcome(event, plan, {
        state: "Skipped",
        before,
        file,
        at,
        message: `the pool of ${pool} already holds ${before}, the most allowed (maxTotal ${maxTotal})`,
      });
    const minFreeBytes = plan.minFreeBytes ?? 0;
    const freeBytes = await files.readFreeBytes(numaNode);
    const free = freeBytes === undefined ? {} : { freeBytes };
    if (freeBytes === undefined && minFreeBytes > 0) {
      return this.#outcome(event, plan, {
        state: "Skipped",
        before,
        file,
        at,
        message: `cannot read the free memory of NUMA node ${numaNode} (MemFree of its meminfo), and ${mib(minFreeBytes)} must stay free (minFreeBytes ${minFreeBytes})`,
      });
    }
    if (freeBytes !== undefined && freeBytes - hugepageBytes(size) < minFreeBytes) {
      return this.#outcome(event, plan, {
        state: "Skipped",
        before,
        ...free,
        file,
        at,
        message: `NUMA node ${numaNode} has ${mib(freeBytes)} free (${freeBytes} bytes); a ${size} hugepage would leave ${mib(freeBytes - hugepageBytes(size))}, below the ${mib(minFreeBytes)} that must stay free (minFreeBytes ${minFreeBytes})`,
      });
    }
    const earlier = this.#options.writes.poolWrite(event.metadata.name);
    if (earlier !== undefined && earlier.uid === event.metadata.uid && before >= earlier.requested) {
      // Written by this agent before a restart, not yet reported: the kernel's answer is in the pool now.
      return this.#outcome(event, plan, {
        state: "Given",
        before: earlier.before,
        requested: earlier.requested,
        after: before,
        file,
        at,
        message: `the kernel gave 1 of 1 hugepages-${size} on NUMA node ${numaNode}: nr_hugepages ${earlier.before} → ${before} (written before the agent restarted)`,
      });
    }
    const requested = before + 1;
    this.#options.writes.recordPoolWrite(event.metadata.name, { uid: event.metadata.uid, before, requested });
    try {
      await files.writeTotal(size, numaNode, requested);
    } catch (error) {
      return this.#outcome(event, plan, {
        state: "Skipped",
        before,
        requested,
        ...free,
        file,
        at,
        message: `could not write ${requested} to ${file}: ${reasonOf(error)}`,
      });
    }
    let after: number;
    try {
      after = await files.readTotal(size, numaNode);
    } catch (error) {
      return this.#outcome(event, plan, {
        state: "Skipped",
        before,
        requested,
        ...free,
        file,
        at,
        message: `wrote ${requested} to ${file} but cannot read it back: ${reasonOf(error)}`,
      });
    }
    if (after >= requested)
      return this.#outcome(event, plan, {
        state: "Given",
        before,
        requested,
        after,
        ...free,
        file,
        at,
        message: `the kernel gave 1 of 1 hugepages-${size} on NUMA node ${numaNode}: nr_hugepages ${before} → ${after}`,
      });
    return this.#outcome(event, plan, {
      state: "Refused",
      before,
      requested,
      after,
      ...free,
      file,
      at,
      message: `the kernel gave 0 of 1 hugepages-${size} on NUMA node ${numaNode}: it found no free contiguous range (memory fragmented, or a poisoned page in the way); nr_hugepages stays ${after}`,
    });
  }

  /** Counts and logs one outcome (one line each). */
  #outcome(event: MemoryErrorEvent, plan: MemoryErrorEventStatusPoolReplacement, result: PoolReplacementResult): PoolReplacementResult {
    const { log, metrics } = this.#options;
    metrics.poolReplacements.inc({ size: plan.size ?? "unknown", outcome: result.state });
    const fields = {
      memoryErrorEvent: event.metadata.name,
      size: plan.size,
      numaNode: plan.numaNode,
      file: result.file,
      before: result.before,
      after: result.after,
      freeBytes: result.freeBytes,
      message: result.message,
    };
    if (result.state === "Given") log.info("pool replacement: the kernel gave a hugepage", fields);
    else if (result.state === "Refused") log.warn("pool replacement: the kernel refused the hugepage", fields);
    else log.warn("pool replacement skipped", fields);
    return result;
  }
}
