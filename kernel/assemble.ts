// Groups parsed kernel lines into memory errors: the lines about one pfn (machine check detail,
// injection, Sending SIGBUS) come before the recovery line that ends the kernel's handling of it.
import { parseKernelLog } from "./lines.ts";
import type { KernelLogEntry, KernelRecord, MceSeverity, ParseOptions } from "./lines.ts";
import { physicalAddressToPfn } from "./pfn.ts";

export type ErrorSeverity = "Corrected" | "ActionOptional" | "ActionRequired" | "Fatal" | "SoftOffline";
export type ErrorSource = "Kmsg" | "Tracefs" | "MachineCheck" | "Injected" | "Agent";

export interface KernelError {
  pfn: number;
  severity: ErrorSeverity;
  source: ErrorSource;
  pageType?: string | undefined;
  result?: string | undefined;
  physicalAddress?: number | undefined;
  /** Processes the kernel sent BUS_MCEERR_AO to for this error. */
  signalled: { command: string; pid: number }[];
  lines: string[];
  /** A machine check the kernel found in the banks while it booted: the error happened before this boot. */
  loggedAtBoot?: boolean | undefined;
}

/** The kernel's page-type words for a page poisoned before this error (`already poisoned page`, `huge page already hardware poisoned`): nothing new is lost. */
export function alreadyPoisoned(pageType: string | undefined): boolean {
  return /already (?:hardware )?poisoned/.test(pageType ?? "");
}

export interface AssembledLog {
  errors: KernelError[];
  /** BUS_MCEERR_AR deliveries: a process touched an already poisoned page. */
  accessKills: { command: string; pid: number; virtualAddress: number; line: number }[];
  unpoisoned: { pfn: number; line: number }[];
  unrecognized: { line: number; text: string; reason: string }[];
}

/** A machine-check record's severity (decoded from MCi_STATUS) as an error's. */
export const severityOf: Readonly<Record<MceSeverity, ErrorSeverity>> = {
  corrected: "Corrected",
  "action-optional": "ActionOptional",
  "action-required": "ActionRequired",
  fatal: "Fatal",
};

interface Pending {
  severity?: ErrorSeverity;
  source?: ErrorSource;
  physicalAddress?: number;
  signalled: { command: string; pid: number }[];
  lines: string[];
}

export function assembleKernelErrors(text: string, options: ParseOptions = {}): AssembledLog {
  return assembleKernelRecords(parseKernelLog(text, options));
}

/** The same, over lines already parsed (the agent keeps the records of the lines it holds). */
export function assembleKernelRecords(entries: readonly KernelLogEntry[]): AssembledLog {
  const out: AssembledLog = { errors: [], accessKills: [], unpoisoned: [], unrecognized: [] };
  const pending = new Map<number, Pending>();
  // A machine check's detail lines name an address, not yet a pfn the recovery line will use.
  let machineCheck: { severity: ErrorSeverity; address?: number; lines: string[] } | undefined;
  const take = (pfn: number): Pending => {
    const p = pending.get(pfn) ?? { signalled: [], lines: [] };
    pending.set(pfn, p);
    if (machineCheck?.address !== undefined && physicalAddressToPfn(machineCheck.address) === pfn) {
      Object.assign(p, { severity: machineCheck.severity, source: "MachineCheck", physicalAddress: machineCheck.address });
      p.lines.unshift(...machineCheck.lines);
      machineCheck = undefined;
    }
    return p;
  };
  const finish = (pfn: number, record: KernelRecord & { pfn: number }, severity: ErrorSeverity, extra: Partial<KernelError>): void => {
    const p = take(pfn);
    pending.delete(pfn);
    out.errors.push({
      pfn,
      severity: p.severity ?? severity,
      source: p.source ?? (record.type === "recovery" && record.source === "tracefs" ? "Tracefs" : "Kmsg"),
      physicalAddress: p.physicalAddress,
      signalled: p.signalled,
      lines: p.lines,
      ...extra,
    });
  };
  for (const { line, result } of entries) {
    if (result.kind === "ignored") continue;
    if (result.kind === "unrecognized") {
      out.unrecognized.push({ line, text: result.text, reason: result.reason });
      continue;
    }
    const { record } = result;
    switch (record.type) {
      case "mce-detail":
      case "mce-record":
      case "mce-logged": {
        machineCheck ??= { severity: "ActionOptional", lines: [] };
        machineCheck.lines.push(result.text);
        if ("severity" in record) machineCheck.severity = severityOf[record.severity];
        if ("physicalAddress" in record && record.physicalAddress !== undefined) machineCheck.address = record.physicalAddress;
        break;
      }
      case "injected": {
        const p = take(record.pfn);
        Object.assign(p, { source: "Injected", severity: "ActionOptional" });
        p.lines.push(result.text);
        break;
      }
      case "signal-sent":
      case "forcibly-killed":
      case "advisory-failed":
      case "unmap-failed": {
        const p = take(record.pfn);
        if (record.type === "signal-sent") p.signalled.push({ command: record.command, pid: record.pid });
        p.lines.push(result.text);
        break;
      }
      // Said of the page before its verdict: detail of the error, which the verdict's words describe.
      case "unhandlable":
      case "page-detail":
        take(record.pfn).lines.push(result.text);
        break;
      // A process consumed the error copying from user space: whatever the bank said, action was required.
      case "user-access": {
        const p = take(record.pfn);
        Object.assign(p, { severity: "ActionRequired", physicalAddress: p.physicalAddress ?? record.physicalAddress });
        p.lines.push(result.text);
        break;
      }
      case "recovery":
      case "outside-kernel-control": {
        take(record.pfn).lines.push(result.text);
        const words =
          record.type === "recovery" ? { pageType: record.pageType, result: record.result } : { pageType: "memory outside kernel control", result: "Ignored" };
        finish(record.pfn, record, "ActionOptional", words);
        break;
      }
      // A soft offline that did not happen retired nothing: reported as a failed attempt, never a lost page.
      case "soft-offline": {
        take(record.pfn).lines.push(result.text);
        finish(record.pfn, record, "SoftOffline", {
          severity: "SoftOffline",
          ...(record.failed && { pageType: record.detail, result: "Failed" }),
        });
        break;
      }
      case "killed-on-access":
        out.accessKills.push({ command: record.command, pid: record.pid, virtualAddress: record.virtualAddress, line });
        break;
      case "unpoison":
        if (record.pfn !== undefined && record.done) out.unpoisoned.push({ pfn: record.pfn, line });
        break;
    }
  }
  return out;
}
