// /dev/kmsg: one record per read(), `PRI,SEQ,TS_USEC,FLAGS;text` then ` KEY=value` dictionary lines.
// The device keeps no state for us: we skip what the durable cursor says we already handled, notice
// records the ring buffer overwrote (EPIPE, then a jump in sequence), and join continuation pieces.
import type { Clock } from "../runtime/clock.ts";
import type { Logger } from "../runtime/log.ts";
import { errnoCode, type Device, type KernelLine, type LineSource } from "./source.ts";

export interface KmsgRecord {
  sequence: number;
  /** `-` whole line, `c` start of a continued line, `+` a continuation piece (kernels before 4.9). */
  flag: string;
  /** The header and message, dictionary lines dropped. */
  line: string;
  message: string;
}

const HEADER = /^(\d+),(\d+),(\d+),([^;,]*)[^;]*;/;

/** One read()'s worth of /dev/kmsg; undefined when it is not a record. */
export function parseKmsgRecord(raw: string): KmsgRecord | undefined {
  const line = raw.split("\n", 1)[0] ?? "";
  const header = HEADER.exec(line);
  if (header === null) return undefined;
  return { sequence: Number(header[2]), flag: header[4] ?? "-", line, message: line.slice(header[0].length) };
}

export interface KmsgSourceOptions {
  open: () => Promise<Device>;
  clock: Clock;
  log: Logger;
  /** Sequence already handled (the durable cursor); records up to it are skipped. */
  after?: number | undefined;
  /**
   * How long to wait after the device says it has nothing (EAGAIN) before reading again: an error's first
   * line waits up to this long. 50 ms keeps kernel line → MemoryErrorEvent under 100 ms (bench:operator's
   * peer case); the 20 empty reads a second cost little (bench:agent's idle case).
   */
  pollMs?: number;
  /** Records the kernel overwrote before we read them. */
  onLost?: (count: number) => void;
}

// printk records are at most 1 KiB of text plus a dictionary; 8 KiB holds any of them.
const RECORD_BYTES = 8192;

export class KmsgSource implements LineSource {
  readonly name = "kmsg";
  readonly #options: KmsgSourceOptions;

  constructor(options: KmsgSourceOptions) {
    this.#options = options;
  }

  async *lines(signal: AbortSignal): AsyncGenerator<KernelLine> {
    const { clock, log, after, pollMs = 50, onLost } = this.#options;
    const device = await this.#options.open();
    const buffer = Buffer.alloc(RECORD_BYTES);
    let last = after;
    // A continued line in pieces: its header line, joined text so far and the last piece's sequence.
    let pending: { line: string; sequence: number } | undefined;
    let lastOverwriteLog = -Infinity;
    let overwrites = 0;
    const flush = (): KernelLine | undefined => {
      if (pending === undefined) return undefined;
      const line: KernelLine = { source: "kmsg", sequence: pending.sequence, text: pending.line, at: clock.now() };
      pending = undefined;
      return line;
    };
    try {
      while (!signal.aborted) {
        let bytes: number;
        try {
          bytes = await device.read(buffer);
        } catch (error) {
          const code = errnoCode(error);
          if (code === "EPIPE") {
            // The next read returns the oldest record still there; its sequence says how many went (the
            // lost-records metric counts them). In a storm this comes at every read: said once a minute.
            if (clock.now() - lastOverwriteLog >= 60_000) {
              log.warn("kmsg records were overwritten before the agent read them", { source: "kmsg", afterSequence: last, overwrittenSince: overwrites });
              lastOverwriteLog = clock.now();
              overwrites = 0;
            } else overwrites += 1;
            continue;
          }
          if (code !== "EAGAIN") throw error;
          // Nothing more for now: a continued line is as complete as it will get soon.
          const line = flush();
          if (line !== undefined) yield line;
          await clock.sleep(pollMs, signal);
          continue;
        }
        if (bytes === 0) break;
        const record = parseKmsgRecord(buffer.toString("utf8", 0, bytes));
        if (record === undefined) continue;
        if (last !== undefined && record.sequence <= last) continue;
        if (last !== undefined && record.sequence > last + 1) onLost?.(record.sequence - last - 1);
        last = record.sequence;
        if (record.flag === "+" && pending !== undefined) {
          pending = { line: pending.line + record.message, sequence: record.sequence };
          continue;
        }
        const previous = flush();
        if (previous !== undefined) yield previous;
        if (record.flag === "c") pending = { line: record.line, sequence: record.sequence };
        else yield { source: "kmsg", sequence: record.sequence, text: record.line, at: clock.now() };
      }
      const line = flush();
      if (line !== undefined) yield line;
    } finally {
      await device.close();
    }
  }
}
