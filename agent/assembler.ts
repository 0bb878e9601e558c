// Streams kernel lines into memory errors. kernel/assemble.ts knows how the lines of one error belong
// together; this keeps the lines of errors still in flight and hands them to it each time a line
// ends an error (the recovery verdict, soft offline). A machine check the kernel never follows with a
// verdict (a corrected error, or no memory_failure() call) becomes an error of its own once it is old.
import { assembleKernelErrors, type ErrorSeverity, type KernelError } from "../kernel/assemble.ts";
import { parseKernelLine, type KernelRecord } from "../kernel/lines.ts";
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
  | { kind: "unpoison"; line: KernelLine; pfn?: number | undefined }
  | { kind: "expired"; lines: KernelLine[] };

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

const ENDS_ERROR = new Set<KernelRecord["type"]>(["recovery", "unhandlable", "outside-kernel-control", "soft-offline"]);

const SEVERITY = { corrected: "Corrected", "action-optional": "ActionOptional", "action-required": "ActionRequired", fatal: "Fatal" } as const satisfies Record<
  string,
  ErrorSeverity
>;

export class ErrorAssembler {
  readonly #maxAgeMs: number;
  readonly #maxHeld: number;
  #held: Held[] = [];

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
      out.notices.push({ kind: "unpoison", line, pfn: record.pfn });
      return out;
    }
    this.#held.push({ line, text, record });
    if (ENDS_ERROR.has(record.type)) this.#assemble(line, out);
    if (this.#held.length > this.#maxHeld) this.#expire(this.#held.slice(0, this.#held.length - this.#maxHeld), out);
    return out;
  }

  /** Lets lines older than the age limit go: a machine check among them becomes an error, the rest are reported. */
  expire(now: number): Assembled {
    const out: Assembled = { errors: [], notices: [] };
    const old = this.#held.filter((held) => now - held.line.at >= this.#maxAgeMs);
    if (old.length > 0) this.#expire(old, out);
    return out;
  }

  #assemble(last: KernelLine, out: Assembled): void {
    const { errors } = assembleKernelErrors(this.#held.map((held) => held.text).join("\n"));
    for (const error of errors) {
      for (const text of error.lines) {
        const i = this.#held.findIndex((held) => held.text === text);
        if (i >= 0) this.#held.splice(i, 1);
      }
      out.errors.push({ error, line: last });
    }
  }

  #expire(lines: Held[], out: Assembled): void {
    this.#held = this.#held.filter((held) => !lines.includes(held));
    const machineCheck = lines.filter((held) => held.record.type.startsWith("mce-"));
    const located = machineCheck.find((held) => "physicalAddress" in held.record && held.record.physicalAddress !== undefined);
    const rest = located === undefined ? lines : lines.filter((held) => !machineCheck.includes(held));
    if (located !== undefined && "physicalAddress" in located.record && located.record.physicalAddress !== undefined) {
      const severities = machineCheck.flatMap((held) => ("severity" in held.record ? [held.record.severity] : []));
      const severity = severities.at(-1) ?? "action-optional";
      const physicalAddress = located.record.physicalAddress;
      const lastLine = machineCheck.at(-1)?.line ?? located.line;
      out.errors.push({
        error: {
          pfn: physicalAddressToPfn(physicalAddress),
          severity: SEVERITY[severity],
          source: "MachineCheck",
          physicalAddress,
          signalled: [],
          lines: machineCheck.map((held) => held.text),
        },
        line: lastLine,
      });
    }
    if (rest.length > 0) out.notices.push({ kind: "expired", lines: rest.map((held) => held.line) });
  }
}
