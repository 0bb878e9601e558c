// A recorded kernel log played back with its timing, for the demo and for tests. Two line forms:
// `<offset-seconds> <kernel line>` (offset from the start of the replay), or /dev/kmsg records
// `PRI,SEQ,TS_USEC,FLAGS;text` (timed by TS_USEC from the first record). Blank and `#` lines are skipped.
import { readFileSync } from "node:fs";
import type { Clock } from "../runtime/clock.ts";
import { isKmsgDictionaryLine, unpaste } from "../kernel/lines.ts";
import { parseKmsgRecord } from "./kmsg.ts";
import type { KernelLine, LineSource } from "./source.ts";

export interface ReplayLine {
  /** Seconds after the replay starts. */
  offset: number;
  /** The kmsg sequence, or the line number in the file. */
  sequence: number;
  text: string;
}

const TIMED = /^(\d+(?:\.\d+)?)\s(.*)$/;

/** Parses a replay file; throws naming the file and line of the first line in neither form. */
export function parseReplay(text: string, file: string): ReplayLine[] {
  const lines: ReplayLine[] = [];
  let firstUsec: number | undefined;
  text.split(/\r?\n/).forEach((pasted, i) => {
    // A /dev/kmsg record's dictionary line; then a log quoted from mail or an issue: its quote markers
    // and indentation go, an elision is skipped.
    if (isKmsgDictionaryLine(pasted)) return;
    const raw = unpaste(pasted);
    if (raw === undefined || raw.trim() === "" || raw.startsWith("#")) return;
    const record = parseKmsgRecord(raw);
    if (record !== undefined) {
      const usec = Number(raw.split(",", 3)[2]);
      firstUsec ??= usec;
      lines.push({ offset: Math.max(0, usec - firstUsec) / 1e6, sequence: record.sequence, text: raw });
      return;
    }
    const timed = TIMED.exec(raw);
    if (timed === null) throw new Error(`${file}:${i + 1}: expected '<offset-seconds> <kernel line>' or a /dev/kmsg record 'PRI,SEQ,TS_USEC,FLAGS;text'`);
    lines.push({ offset: Number(timed[1]), sequence: i + 1, text: timed[2] ?? "" });
  });
  return lines;
}

export interface ReplaySourceOptions {
  file: string;
  clock: Clock;
  /** Sequence already handled (the durable cursor); lines up to it are skipped. */
  after?: number | undefined;
}

export class ReplaySource implements LineSource {
  readonly name = "replay";
  readonly #options: ReplaySourceOptions;
  readonly #lines: ReplayLine[];

  /** Reads and checks the whole file now, so a bad file fails at start-up, not minutes in. */
  constructor(options: ReplaySourceOptions) {
    this.#options = options;
    this.#lines = parseReplay(readFileSync(options.file, "utf8"), options.file);
  }

  async *lines(signal: AbortSignal): AsyncGenerator<KernelLine> {
    const { clock, after } = this.#options;
    const start = clock.now();
    for (const line of this.#lines) {
      if (after !== undefined && line.sequence <= after) continue;
      const wait = start + line.offset * 1000 - clock.now();
      if (wait > 0) await clock.sleep(wait, signal);
      if (signal.aborted) return;
      yield { source: "replay", sequence: line.sequence, text: line.text, at: clock.now() };
    }
  }
}
