// Streams kernel lines into memory errors. kernel/assemble.ts knows how the lines of one error belong
// together; this keeps the lines of errors still in flight and hands them to it each time a line
// ends an error (the recovery verdict, soft offline). A machine check the kernel never follows with a
// verdict (a corrected error, or no memory_failure() call) becomes an error of its own once it is old.
import { assembleKernelRecords, severityOf, type KernelError } from "../kernel/assemble.ts";
import { bootFinishedAt, parseKernelLine, stripLogPrefix, uptimeUsec, type KernelRecord, type McEventErrorType } from "../kernel/lines.ts";
import { physicalAddressToPfn } from "../kernel/pfn.ts";
import type { KernelLine } from "./source.ts";

export interface AssembledError {
  error: KernelError;
  /** The line that completed it. */
  line: KernelLine;
}

export type Notice =
  | { kind: "unrecognized"; line: KernelLine; reason: string }
  | { kind: "killed-on-access"; line: KernelLine; pid: number; command: string; virtualAddress: number }
  | { kind: "unpoison"; line: KernelLine; pfn?: number | undefined; done: boolean }
  | { kind: "expired"; lines: KernelLine[] }
  /** A process the kernel signalled for a pfn with no verdict after it: an access to a page poisoned before. */
  | { kind: "late-signal"; line: KernelLine; pfn: number; pid: number; command: string }
  /**
   * EDAC's ras:mc_event located an error at a physical address: the page is on the DIMM(s) `label` names
   * (several joined by " or " when EDAC could not pin one), at `layers` of memory controller `mc`. It says
   * where an error was, not that one more happened: the machine-check record of the same error is that.
   */
  | {
      kind: "dimm-of-page";
      line: KernelLine;
      pfn: number;
      label: string;
      mc: number;
      layers: [number, number, number];
      errorType: McEventErrorType;
      count: number;
    };

export interface Assembled {
  errors: AssembledError[];
  notices: Notice[];
}

interface Held {
  line: KernelLine;
  text: string;
  record: KernelRecord;
}

export interface AssemblerOptions {
  /** How long lines wait for the line that ends their error. */
  maxAgeMs?: number;
  /** Most lines held; the oldest expire first. */
  maxHeld?: number;
}

const ENDS_ERROR = new Set<KernelRecord["type"]>(["recovery", "outside-kernel-control", "soft-offline"]);

export class ErrorAssembler {
  readonly #maxAgeMs: number;
  readonly #maxHeld: number;
  #held: Held[] = [];
  /** The kernel's uptime when it finished booting, once the log said so. */
  #bootFinishedUsec: number | undefined;

  constructor({ maxAgeMs = 5_000, maxHeld = 256 }: AssemblerOptions = {}) {
    this.#maxAgeMs = maxAgeMs;
    this.#maxHeld = maxHeld;
  }

  /** The lowest sequence still held: a durable cursor must not pass it, or a restart would lose its error. */
  get holdBack(): number | undefined {
    let lowest: number | undefined;
    for (const { line } of this.#held) if (line.sequence !== undefined && (lowest === undefined || line.sequence < lowest)) lowest = line.sequence;
    return lowest;
  }

  push(line: KernelLine): Assembled {
    const out: Assembled = { errors: [], notices: [] };
    this.#bootFinishedUsec ??= bootFinishedAt(line.text);
    const result = parseKernelLine(line.text);
    if (result.kind === "ignored") return out;
    if (result.kind === "unrecognized") {
      out.notices.push({ kind: "unrecognized", line, reason: result.reason });
      return out;
    }
    const { record, text } = result;
    if (record.type === "killed-on-access") {
      out.notices.push({ kind: "killed-on-access", line, pid: record.pid, command: record.command, virtualAddress: record.virtualAddress });
      return out;
    }
    if (record.type === "unpoison") {
      out.notices.push({ kind: "unpoison", line, pfn: record.pfn, done: record.done });
      return out;
    }
    // Never held: no other line joins it, and it ends no error. Without an address it names no page.
    if (record.type === "mc-event") {
      if (record.pfn !== undefined) {
        const { pfn, label, mc, layers, errorType, count } = record;
        out.notices.push({ kind: "dimm-of-page", line, pfn, label, mc, layers, errorType, count });
      }
      return out;
    }
    this.#held.push({ line, text, record });
    if (ENDS_ERROR.has(record.type)) this.#assemble(line, record, out);
    if (this.#held.length > this.#maxHeld) this.#expire(this.#withRecordTails(this.#held.slice(0, this.#held.length - this.#maxHeld)), out);
    return out;
  }

  /** Lets lines older than the age limit go: a machine check among them becomes an error, the rest are reported. */
  expire(now: number): Assembled {
    const out: Assembled = { errors: [], notices: [] };
    // Lines are held in the order read, so the old ones come first.
    const old = this.#withRecordTails(this.#held.filter((held) => now - held.line.at >= this.#maxAgeMs));
    if (old.length > 0) this.#expire(old, out);
    return out;
  }

  /**
   * The first lines held, extended to the end of the machine-check record the last of them is in: a bank
   * line read just before the age limit (or the hold limit) and its ADDR line just after must go together,
   * or the ADDR line alone would be a record of unknown severity.
   */
  #withRecordTails(first: Held[]): Held[] {
    const lines = [...first];
    for (const next of this.#held.slice(first.length)) {
      if (lines.length === 0 || next.record.type !== "mce-detail" || next.record.field === "machine-check") break;
      lines.push(next);
    }
    return lines;
  }

  #assemble(last: KernelLine, record: KernelRecord, out: Assembled): void {
    // Only lines of the same pfn and machine-check lines can join the error this line ends: reading the
    // others again for every verdict made a log full of unfinished pfns cost hundreds of parses a line.
    // A soft offline is never a machine check's verdict (the corrected-errors collector's line comes before
    // the record that reached its threshold): its records stay corrected errors of their own.
    const pfn = "pfn" in record ? record.pfn : undefined;
    const machineChecks = record.type !== "soft-offline";
    const related = this.#held.filter((held) => (held.record.type.startsWith("mce") ? machineChecks : "pfn" in held.record && held.record.pfn === pfn));
    const { errors } = assembleKernelRecords(related.map((held, i) => ({ line: i + 1, result: { kind: "record", record: held.record, text: held.text } })));
    for (const error of errors) {
      for (const text of error.lines) {
        const i = this.#held.findIndex((held) => held.text === text);
        if (i >= 0) this.#held.splice(i, 1);
      }
      out.errors.push({ error, line: last });
    }
  }

  /**
   * Lets lines go. Machine-check lines come as records, each opened by its bank line (or one
   * mce_record trace event) and followed by its TSC/ADDR, RIP and PROCESSOR lines: every record with an
   * address is one error with its own severity, however many expire together; the rest are reported.
   */
  #expire(lines: Held[], out: Assembled): void {
    this.#held = this.#held.filter((held) => !lines.includes(held));
    const records: Held[][] = [];
    const rest: Held[] = [];
    // "Machine check events logged" belongs to the records it announces.
    const logged = lines.filter((held) => held.record.type === "mce-logged");
    for (const held of lines) {
      const { record } = held;
      if (record.type === "mce-logged") continue;
      const opens = record.type === "mce-record" || (record.type === "mce-detail" && record.field === "machine-check");
      const open = records.at(-1);
      if (opens || (record.type === "mce-detail" && open === undefined)) records.push([held]);
      else if (record.type === "mce-detail" && open !== undefined) open.push(held);
      else rest.push(held);
    }
    let announced = logged.length === 0;
    for (const record of records) {
      const address = record.flatMap((held) =>
        "physicalAddress" in held.record && held.record.physicalAddress !== undefined ? [held.record.physicalAddress] : [],
      )[0];
      const last = record.at(-1);
      if (address === undefined || last === undefined) {
        rest.push(...record);
        continue;
      }
      const severity = record.flatMap((held) => ("severity" in held.record ? [held.record.severity] : []))[0];
      // Without its bank line (the kmsg ring overwrote it) a record's severity is unknown: its lines are
      // reported as dropped, never guessed into an error. An uncorrected error still has its verdict lines.
      if (severity === undefined) {
        rest.push(...record);
        continue;
      }
      // Logged before the kernel ran init: the boot-time poll found it in the banks (see bootFinishedAt).
      const uptime = uptimeUsec(stripLogPrefix(record[0]?.line.text ?? ""));
      const loggedAtBoot = this.#bootFinishedUsec !== undefined && uptime !== undefined && uptime < this.#bootFinishedUsec;
      out.errors.push({
        error: {
          pfn: physicalAddressToPfn(address),
          severity: severityOf[severity],
          source: "MachineCheck",
          physicalAddress: address,
          signalled: [],
          lines: [...(announced ? [] : logged), ...record].map((held) => held.text),
          ...(loggedAtBoot && { loggedAtBoot }),
        },
        line: last.line,
      });
      announced = true;
    }
    if (!announced) rest.push(...logged);
    // A kill line no verdict followed (5.x to 6.10 print it for an access to an already-poisoned page,
    // after "already hardware poisoned") still names a process the kernel signalled: it is kept.
    const orphans = rest.filter((held) => {
      if (held.record.type !== "signal-sent") return true;
      out.notices.push({ kind: "late-signal", line: held.line, pfn: held.record.pfn, pid: held.record.pid, command: held.record.command });
      return false;
    });
    if (orphans.length > 0) out.notices.push({ kind: "expired", lines: orphans.map((held) => held.line) });
  }
}
