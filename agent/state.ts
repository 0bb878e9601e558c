// The agent's durable state in --state-dir: the cursor (boot id and sequence per source) and the queue
// of events not yet delivered, in one file replaced atomically (write a temp file, fsync, rename), so
// an event is queued and the cursor moved past its lines together or not at all: a kill -9 at any
// moment neither loses an event nor reports one twice (a re-sent one meets 409 AlreadyExists).
import { closeSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from "node:fs";
import { join } from "node:path";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import type { Logger } from "../runtime/log.ts";
import type { CorrectedLedgerData } from "./corrected.ts";
import type { SourceName } from "./source.ts";

export interface QueuedEvent {
  event: MemoryErrorEvent;
  /** When the kernel line was read, for the report latency. */
  readAt: number;
}

/** A pool write about to be made for one error's replacement hugepage (see PoolReplacer). */
export interface PoolWrite {
  uid: string | undefined;
  before: number;
  requested: number;
}

interface Persisted {
  version: 1;
  bootID: string;
  cursors: Partial<Record<SourceName, number>>;
  queue: QueuedEvent[];
  /** By event name, until status shows the outcome; pools belong to one boot. */
  poolWrites?: Record<string, PoolWrite>;
  /** Corrected errors counted this boot (see CorrectedErrorLedger). */
  corrected?: CorrectedLedgerData;
}

export interface StateOptions {
  dir: string;
  bootID: string;
  log: Logger;
  /** Most events queued; past it the oldest corrected-error events go, never an uncorrected one. */
  capacity?: number;
}

const FILE = "agent-state.json";

export class AgentState {
  readonly #path: string;
  readonly #capacity: number;
  readonly #data: Persisted;
  #dirty = false;
  #correctedData: (() => CorrectedLedgerData) | undefined;

  constructor({ dir, bootID, log, capacity = 1000 }: StateOptions) {
    mkdirSync(dir, { recursive: true });
    this.#path = join(dir, FILE);
    this.#capacity = capacity;
    const saved = load(this.#path, log);
    // kmsg sequences restart with every boot; events of the old boot still wait to be delivered.
    const sameBoot = saved?.bootID === bootID;
    if (saved !== undefined && !sameBoot)
      log.info("new boot since the last run: kernel cursors start over", { previousBootID: saved.bootID, bootID, queued: saved.queue.length });
    this.#data = {
      version: 1,
      bootID,
      cursors: sameBoot ? saved.cursors : {},
      queue: saved?.queue ?? [],
      poolWrites: sameBoot ? (saved.poolWrites ?? {}) : {},
      ...(sameBoot && saved.corrected !== undefined && { corrected: saved.corrected }),
    };
  }

  cursor(source: SourceName): number | undefined {
    return this.#data.cursors[source];
  }

  get queue(): readonly QueuedEvent[] {
    return this.#data.queue;
  }

  /** Queues events and moves the cursor in one atomic write; returns the events dropped to stay in bounds. */
  enqueue(events: QueuedEvent[], cursor?: { source: SourceName; sequence: number }): MemoryErrorEvent[] {
    const dropped: MemoryErrorEvent[] = [];
    for (const item of events) {
      if (this.#data.queue.some((queued) => queued.event.metadata.name === item.event.metadata.name)) continue;
      this.#data.queue.push(item);
      if (this.#data.queue.length <= this.#capacity) continue;
      const corrected = this.#data.queue.findIndex((queued) => queued.event.spec.severity === "Corrected");
      if (corrected >= 0) dropped.push(...this.#data.queue.splice(corrected, 1).map((queued) => queued.event));
    }
    if (cursor !== undefined) this.#data.cursors[cursor.source] = cursor.sequence;
    this.#write();
    return dropped;
  }

  /** Moves a cursor past lines that made no event; written by the next write or flush. */
  advance(source: SourceName, sequence: number): void {
    if (this.#data.cursors[source] === sequence) return;
    this.#data.cursors[source] = sequence;
    this.#dirty = true;
  }

  /** Takes a delivered (or rejected) event off the queue. */
  remove(name: string): void {
    this.#data.queue = this.#data.queue.filter((queued) => queued.event.metadata.name !== name);
    this.#write();
  }

  poolWrite(eventName: string): PoolWrite | undefined {
    return this.#data.poolWrites?.[eventName];
  }

  /** Recorded durably before the write, so a restart can tell a write that went through from one never made. */
  recordPoolWrite(eventName: string, write: PoolWrite): void {
    this.#data.poolWrites = { ...this.#data.poolWrites, [eventName]: write };
    this.#write();
  }

  clearPoolWrite(eventName: string): void {
    if (this.#data.poolWrites?.[eventName] === undefined) return;
    this.#data.poolWrites = Object.fromEntries(Object.entries(this.#data.poolWrites).filter(([name]) => name !== eventName));
    this.#write();
  }

  get corrected(): CorrectedLedgerData | undefined {
    return this.#data.corrected;
  }

  /**
   * The corrected-error counts changed: `data` gives them when the file is next written (by the next
   * write or flush; a count lost to a crash is one error), not at every error of a storm.
   */
  saveCorrected(data: () => CorrectedLedgerData): void {
    this.#correctedData = data;
    this.#dirty = true;
  }

  flush(): void {
    if (this.#dirty) this.#write();
  }

  #write(): void {
    if (this.#correctedData !== undefined) this.#data.corrected = this.#correctedData();
    const temp = `${this.#path}.tmp`;
    const fd = openSync(temp, "w", 0o600);
    try {
      writeSync(fd, JSON.stringify(this.#data));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.#path);
    this.#dirty = false;
  }
}

function load(path: string, log: Logger): Persisted | undefined {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
  try {
    const data = JSON.parse(text) as { version?: unknown; queue?: unknown };
    if (data.version !== 1 || !Array.isArray(data.queue)) throw new Error(`unknown state version ${String(data.version)}`);
    return data as Persisted;
  } catch (error) {
    // Only a bug or a disk fault gets here (writes are atomic); keep the file for a human.
    renameSync(path, `${path}.corrupt`);
    log.error("state file unreadable; kept aside, starting with an empty cursor and queue", { file: path, error });
    return undefined;
  }
}
