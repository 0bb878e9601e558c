// The kernel's memory-failure and machine-check lines of every era (kernel-facts.md), read from
// /dev/kmsg, dmesg, syslog, the journal and tracefs. One table holds every line shape as the
// kernel's own printf format; the agent, the containment model and the simulator all read
// through it. A line that looks like ours but fits no shape is reported, never guessed at.
import { MAX_PFN, parseHex, parsePfn, physicalAddressToPfn } from "./pfn.ts";

export type KernelEra = "2.6-3.x" | "4.1-4.12" | "4.13+";

/** The kernel's result word; words a future kernel adds are kept as printed. */
export type KernelResult = "Ignored" | "Failed" | "Delayed" | "Recovered" | (string & Record<never, never>);

export type MceSeverity = "corrected" | "action-optional" | "action-required" | "fatal";

/** memory_failure()'s verdict on a page (action_result()), from printk or the ras:memory_failure_event trace event. */
export interface RecoveryRecord {
  type: "recovery";
  pfn: number;
  /** The kernel's page-type words verbatim, e.g. `huge page`, `free buddy, 2nd try`. */
  pageType: string;
  result: KernelResult;
  era?: KernelEra | undefined;
  source: "printk" | "tracefs";
}

/** A process the kernel named for a page: signalled early (BUS_MCEERR_AO), SIGKILLed because unmapping failed, or not reachable. */
export interface ProcessRecord {
  type: "signal-sent" | "forcibly-killed" | "advisory-failed";
  pfn: number;
  command: string;
  pid: number;
  era?: KernelEra | undefined;
}

export interface UnmapFailedRecord {
  type: "unmap-failed";
  pfn: number;
  mapcount: number;
  era?: KernelEra | undefined;
}

export interface PageRecord {
  type: "unhandlable" | "outside-kernel-control";
  pfn: number;
  era?: KernelEra | undefined;
}

/**
 * What the kernel says of a page on its way to the verdict: it was poisoned before (not a new loss), it
 * is still referenced, a clean page was dropped, its state is unknown, or (2.6.32) its flags and counts.
 */
export interface PageDetailRecord {
  type: "page-detail";
  pfn: number;
  detail: "already-poisoned" | "still-referenced" | "clean-dropped" | "unknown-state" | "page-flags";
  era?: KernelEra | undefined;
}

/** x86's kill_me_maybe(): a process consumed the error copying from user space; action required. */
export interface UserAccessRecord {
  type: "user-access";
  physicalAddress: number;
  pfn: number;
}

/** A process that touched a poisoned page and got BUS_MCEERR_AR (x86 page-fault path). */
export interface KilledOnAccessRecord {
  type: "killed-on-access";
  command: string;
  pid: number;
  virtualAddress: number;
}

/** Software injection: madvise(MADV_HWPOISON) or debugfs hwpoison/corrupt-pfn. */
export interface InjectedRecord {
  type: "injected";
  pfn: number;
  virtualAddress?: number | undefined;
}

export interface SoftOfflineRecord {
  type: "soft-offline";
  pfn: number;
  virtualAddress?: number | undefined;
  /** What followed the pfn, verbatim (`page already poisoned`, `hugepage migration failed 1, type ...`). */
  detail?: string | undefined;
  /** The kernel says the page was not retired: isolation or migration failed, already poisoned, disabled, a page it cannot take. */
  failed: boolean;
  /** The kernel's corrected-errors collector (CONFIG_RAS_CEC) asked for it: the page reached its threshold. */
  byCollector?: boolean | undefined;
}

export interface UnpoisonRecord {
  type: "unpoison";
  pfn?: number | undefined;
  /** Only the sentences that say a page was unpoisoned; the others say why it was not (`Memory failure is now running on`, `already unpoisoned`, `Disabled after HW memory failure`). */
  done: boolean;
  /** The sentence verbatim; its wording changed across kernels. */
  detail: string;
}

export interface MceLoggedRecord {
  type: "mce-logged";
}

/** `CPU 0: Machine Check Exception: 5 Bank 9: bd000000000000c0`; hex values as printed. */
export interface MceBankRecord {
  type: "mce-detail";
  field: "machine-check";
  cpu: number;
  mcgStatus: string;
  bank: number;
  status: string;
  /** The machine check was raised as an exception (MCG_STATUS.MCIP), not polled or signalled by CMCI. */
  exception: boolean;
  severity: MceSeverity;
}

/** `TSC 3ed904d41 ADDR 5203000 MISC 8c`; the kernel prints ADDR and MISC only when non-zero. */
export interface MceAddressRecord {
  type: "mce-detail";
  field: "tsc";
  tsc: string;
  address?: string | undefined;
  misc?: string | undefined;
  physicalAddress?: number | undefined;
  pfn?: number | undefined;
}

/** The other lines of a machine check report, kept as printed after their first word. */
export interface MceTextRecord {
  type: "mce-detail";
  field: "rip" | "processor" | "panic" | "note";
  text: string;
}

/** The mce:mce_record trace event. */
export interface MceTraceRecord {
  type: "mce-record";
  cpu: number;
  bank: number;
  status: string;
  address: string;
  misc: string;
  /** Only when MCi_STATUS.ADDRV says the address is valid. */
  physicalAddress?: number | undefined;
  pfn?: number | undefined;
  severity: MceSeverity;
}

/** mc_event_error_type(): 3.x printed Corrected, Uncorrected or Fatal; later kernels add Info and Deferred. Kept as printed. */
export type McEventErrorType = "Corrected" | "Uncorrected" | "Deferred" | "Fatal" | "Info" | (string & Record<never, never>);

/**
 * EDAC's ras:mc_event trace event: one memory-controller error as the EDAC driver located it, with the
 * DIMM label(s) and the physical address. x86 drivers decode the same machine check the mce records
 * carry: it says where an error was, it is no error of its own.
 */
export interface McEventRecord {
  type: "mc-event";
  errorType: McEventErrorType;
  /** Errors this event stands for (the driver's error_count). */
  count: number;
  /** The driver's words for the error (`memory read error`); empty when it gave none. */
  message: string;
  /**
   * The labels of the DIMMs EDAC matched, joined by " or " when it could not pin one (at most 8), `any memory`
   * when no layer was known, `unknown memory` when no populated DIMM matched.
   */
  label: string;
  /** The memory controller's index (mcN in sysfs). */
  mc: number;
  /** Top, middle and low layer (e.g. channel, slot); -1 where the driver did not know it. */
  layers: [number, number, number];
  /** The physical address as printed (`%08lx`), only when not 0: drivers that cannot tell print 0. */
  address?: string | undefined;
  physicalAddress?: number | undefined;
  pfn?: number | undefined;
  /** Bytes the address is exact to (1 << grain_bits). */
  grain?: number | undefined;
  syndrome: string;
  /** The driver's detail (`area:DRAM err_code:0001:0091 socket:0 ...`), when it gave one. */
  detail?: string | undefined;
}

export type KernelRecord =
  | RecoveryRecord
  | ProcessRecord
  | UnmapFailedRecord
  | PageRecord
  | PageDetailRecord
  | UserAccessRecord
  | KilledOnAccessRecord
  | InjectedRecord
  | SoftOfflineRecord
  | UnpoisonRecord
  | MceLoggedRecord
  | MceBankRecord
  | MceAddressRecord
  | MceTextRecord
  | MceTraceRecord
  | McEventRecord;

export type KernelLineResult =
  { kind: "ignored" } | { kind: "record"; record: KernelRecord; text: string } | { kind: "unrecognized"; text: string; reason: string };

export interface KernelLogEntry {
  /** 1-based line number in the text. */
  line: number;
  result: KernelLineResult;
}

// ---------------------------------------------------------------------------------------------
// Log prefixes

export interface KmsgHeader {
  /** facility * 8 + level. */
  priority: number;
  facility: number;
  level: number;
  sequence: number;
  timestampUsec: number;
}

export interface StrippedLine {
  /** The kernel's message without any prefix or trailing whitespace. */
  text: string;
  kmsg?: KmsgHeader;
  /** The syslog facility the line's priority names (/dev/kmsg header, `<N>`): 0 is the kernel's. */
  facility?: number;
  /** The outermost time stamp, as printed (wall clock where the prefix has one). */
  timestamp?: string;
  /** printk caller id, `C1` (CPU) or `T54990` (task). */
  callerId?: string;
}

interface Prefix {
  readonly re: RegExp;
  readonly keep?: (match: RegExpExecArray, into: StrippedLine) => void;
}

const MONTH = "(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)";
const WEEKDAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)";
// The syslog and journal tag of kernel messages, host name optional.
const HOST_KERNEL = "(?:[\\w.-]+ )?kernel: ?";

function stampFrom(group: number): (match: RegExpExecArray, into: StrippedLine) => void {
  return (match, into) => {
    into.timestamp ??= match[group];
  };
}

const PREFIXES: readonly Prefix[] = [
  {
    // /dev/kmsg: PRI,SEQ,TS_USEC,FLAGS[,KEY=value...];
    re: /^(\d+),(\d+),(\d+),([^;]*);/,
    keep: (match, into) => {
      const priority = Number(match[1]);
      into.kmsg = { priority, facility: priority >> 3, level: priority & 7, sequence: Number(match[2]), timestampUsec: Number(match[3]) };
      into.facility ??= priority >> 3;
      const caller = /(?:^|,)caller=([CT]\d+)/.exec(match[4] ?? "")?.[1];
      if (caller !== undefined) into.callerId ??= caller;
    },
  },
  // Syslog priority, as /proc/kmsg and raw forwarders write it.
  {
    re: /^<(\d{1,3})>/,
    keep: (match, into) => {
      into.facility ??= Number(match[1]) >> 3;
    },
  },
  // dmesg -x.
  { re: /^(?:kern|user|mail|daemon|auth|syslog|lpr|news|uucp|cron|authpriv|ftp|local[0-7]) *:(?:emerg|alert|crit|err|warn|notice|info|debug) *: / },
  // printk time, also journalctl -o short-monotonic.
  { re: /^\[ *(\d+\.\d+)\] ?/, keep: stampFrom(1) },
  // dmesg -T.
  { re: new RegExp(`^\\[(${WEEKDAY} ${MONTH} +\\d{1,2} \\d{2}:\\d{2}:\\d{2} \\d{4})\\] ?`), keep: stampFrom(1) },
  // printk caller id (CONFIG_PRINTK_CALLER), after the time with or without a space.
  {
    re: /^\[ *([CT]\d+)\] ?/,
    keep: (match, into) => {
      into.callerId ??= match[1];
    },
  },
  // Syslog and journalctl -o short / short-precise.
  { re: new RegExp(`^(${MONTH} +\\d{1,2} \\d{2}:\\d{2}:\\d{2}(?:\\.\\d+)?) ${HOST_KERNEL}`), keep: stampFrom(1) },
  // RFC 3339, journalctl -o short-iso / short-iso-precise / short-full, dmesg --time-format iso.
  {
    re: new RegExp(
      `^((?:${WEEKDAY} )?\\d{4}-\\d{2}-\\d{2}[T ]\\d{2}:\\d{2}:\\d{2}(?:[.,]\\d+)?(?:Z|[+-]\\d{2}:?\\d{2})?` +
        `(?: [A-Z]{2,5}(?= ${HOST_KERNEL}))?) (?:${HOST_KERNEL})?`,
    ),
    keep: stampFrom(1),
  },
  // ftrace trace_pipe: "<task>-<pid> [cpu] flags seconds: ", flags and tgid columns optional.
  { re: /^ *(\S.{0,31}?)-\d+ +(?:\( *[\d-]+\) +)?\[\d+\] +(?:[^ \]]{4,5} +)?(\d+\.\d+): /, keep: stampFrom(2) },
  // "kernel: " alone, or "host kernel: " after a short-monotonic stamp.
  { re: new RegExp(`^${HOST_KERNEL}`) },
];

/** The kernel's uptime at a line, in microseconds, where its prefix says it (/dev/kmsg, printk time). */
export function uptimeUsec(stripped: StrippedLine): number | undefined {
  if (stripped.kmsg) return stripped.kmsg.timestampUsec;
  const seconds = /^(\d+)\.(\d{1,6})$/.exec(stripped.timestamp ?? "");
  return seconds ? Number(seconds[1]) * 1e6 + Number(seconds[2]?.padEnd(6, "0")) : undefined;
}

// The kernel's last words before it runs init: free_initmem's (every era: "Freeing unused kernel memory",
// then "... image memory", "... image (initmem) memory") and run_init_process's (5.x on).
const BOOT_DONE = /^(?:Freeing unused kernel (?:image (?:\(initmem\) )?)?memory\b|Run \S+ as init process$)/;

/**
 * The uptime at which the kernel finished booting, if this line says so: a machine check it logged
 * before then was found in the banks as the CPUs came up, left there by an earlier boot.
 */
export function bootFinishedAt(line: string): number | undefined {
  if (!line.includes("Freeing unused kernel") && !line.includes(" as init process")) return undefined;
  const stripped = stripLogPrefix(line);
  return BOOT_DONE.test(stripped.text) ? uptimeUsec(stripped) : undefined;
}

/** Removes every prefix a kernel line can arrive with, outermost first, and keeps what they said. */
export function stripLogPrefix(line: string): StrippedLine {
  const stripped: StrippedLine = { text: line };
  let text = line;
  let stripping = true;
  while (stripping) {
    stripping = false;
    for (const prefix of PREFIXES) {
      const match = prefix.re.exec(text);
      if (match === null) continue;
      prefix.keep?.(match, stripped);
      text = text.slice(match[0].length);
      stripping = true;
      break;
    }
  }
  stripped.text = text.trimEnd();
  return stripped;
}

/** A /dev/kmsg continuation line (` KEY=value`): the record's dictionary, not a message. */
export function isKmsgDictionaryLine(line: string): boolean {
  return /^ [A-Z][A-Z0-9_]*=/.test(line);
}

// ---------------------------------------------------------------------------------------------
// Machine check status

/** The architectural bits of IA32_MCi_STATUS. */
export interface MciStatus {
  valid: boolean;
  overflow: boolean;
  uncorrected: boolean;
  enabled: boolean;
  miscValid: boolean;
  addrValid: boolean;
  /** Processor context corrupt: the CPU cannot continue. */
  pcc: boolean;
  /** S: signalled by a machine check exception (software-recoverable errors). */
  signaled: boolean;
  /** AR: the current instruction stream consumed the error. */
  actionRequired: boolean;
  /** MCA error code, bits 15:0. */
  errorCode: number;
}

const STATUS_HEX = /^(?:0[xX])?([0-9a-fA-F]{1,16})$/;

export function decodeMciStatus(status: bigint | string): MciStatus {
  let value: bigint;
  if (typeof status === "bigint") {
    value = status;
  } else {
    const digits = STATUS_HEX.exec(status)?.[1];
    if (digits === undefined) throw new Error(`MCi_STATUS '${status}' is not a 64-bit hex value`);
    value = BigInt(`0x${digits}`);
  }
  if (value < 0n || value >= 1n << 64n) throw new RangeError(`MCi_STATUS ${value} is not a 64-bit value`);
  const bit = (n: bigint): boolean => ((value >> n) & 1n) === 1n;
  return {
    valid: bit(63n),
    overflow: bit(62n),
    uncorrected: bit(61n),
    enabled: bit(60n),
    miscValid: bit(59n),
    addrValid: bit(58n),
    pcc: bit(57n),
    signaled: bit(56n),
    actionRequired: bit(55n),
    errorCode: Number(value & 0xffffn),
  };
}

export function mceSeverity(status: MciStatus): MceSeverity {
  if (!status.uncorrected) return "corrected";
  if (status.pcc) return "fatal";
  // Without S the error was found in passing (UCNA, scrub): nothing consumed it yet, like SRAO.
  return status.signaled && status.actionRequired ? "action-required" : "action-optional";
}

// ---------------------------------------------------------------------------------------------
// The grammar: families of lines that share a leader, each with the kernel's formats after it.

type Captures = Readonly<Partial<Record<string, string>>>;

interface Context {
  /** The era the leader and the sentence together pin down, if they do. */
  readonly era: KernelEra | undefined;
  /** The message after the family's leader. */
  readonly rest: string;
}

interface Row {
  /** The kernel's printf format after the leader. */
  readonly format: string;
  /** Names of the format's conversions, in order. */
  readonly args: readonly string[];
  /** The eras whose kernels printed this sentence; all when absent. */
  readonly eras?: readonly KernelEra[];
  readonly build: (captures: Captures, context: Context) => KernelRecord;
}

interface Family {
  /** The leader as printed, for reasons. */
  readonly printed: string;
  /** Regex source of the leader, matched at the start of the message. */
  readonly leader: string;
  /** Only the memory-failure code prints this leader, so an unknown message after it is reported. */
  readonly exclusive: boolean;
  readonly eras?: readonly KernelEra[];
  readonly rows: readonly Row[];
}

function need(value: string | undefined, what: string): string {
  if (value === undefined) throw new Error(`${what} missing`);
  return value;
}

function decimal(text: string, what: string): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(value)) throw new Error(`${what} '${text}' is not a decimal integer`);
  return value;
}

function optionalHex(text: string | undefined, what: string): number | undefined {
  return text === undefined ? undefined : parseHex(text, what);
}

function hexText(text: string, what: string): string {
  if (!/^(?:0x)?[0-9a-fA-F]+$/.test(text)) throw new Error(`${what} '${text}' is not hexadecimal`);
  return text;
}

const pfnOf = (captures: Captures): number => parsePfn(need(captures.pfn, "pfn"));
const pidOf = (captures: Captures): number => decimal(need(captures.pid, "pid"), "pid");

function located(address: string): { physicalAddress: number; pfn: number } {
  const physicalAddress = parseHex(address, "ADDR");
  return { physicalAddress, pfn: physicalAddressToPfn(physicalAddress) };
}

/** `KEY value KEY value ...` or `KEY: value, KEY/KEY: value/value, ...` into a map; unpaired pieces are skipped. */
function keyedValues(pieces: readonly (readonly [string, string])[]): Map<string, string> {
  const values = new Map<string, string>();
  for (const [key, value] of pieces) {
    const keys = key.split("/");
    const parts = value.split("/");
    if (keys.length === parts.length) keys.forEach((k, i) => values.set(k, parts[i] ?? ""));
    else values.set(key, value);
  }
  return values;
}

const recovery =
  (source: RecoveryRecord["source"]) =>
  (captures: Captures, { era }: Context): RecoveryRecord => ({
    type: "recovery",
    pfn: pfnOf(captures),
    pageType: need(captures.pageType, "page type"),
    result: need(captures.result, "result"),
    era,
    source,
  });

const named =
  (type: ProcessRecord["type"]) =>
  (captures: Captures, { era }: Context): ProcessRecord => ({
    type,
    pfn: pfnOf(captures),
    command: need(captures.command, "command"),
    pid: pidOf(captures),
    era,
  });

const page =
  (type: PageRecord["type"]) =>
  (captures: Captures, { era }: Context): PageRecord => ({ type, pfn: pfnOf(captures), era });

const unmapFailed = (captures: Captures, { era }: Context): UnmapFailedRecord => ({
  type: "unmap-failed",
  pfn: pfnOf(captures),
  mapcount: decimal(need(captures.mapcount, "mapcount"), "mapcount"),
  era,
});

const injected = (captures: Captures): InjectedRecord => ({
  type: "injected",
  pfn: pfnOf(captures),
  virtualAddress: optionalHex(captures.virtualAddress, "virtual address"),
});

const softOffline = (captures: Captures): SoftOfflineRecord => ({
  type: "soft-offline",
  pfn: pfnOf(captures),
  virtualAddress: optionalHex(captures.virtualAddress, "virtual address"),
  detail: captures.detail,
  failed: /failed|already poisoned|disabled|unknown (?:zero refcount )?page type/.test(captures.detail ?? ""),
});

const collectorSoftOffline = (captures: Captures): SoftOfflineRecord => ({ ...softOffline(captures), byCollector: true });

// Unpoison sentences name the pfn as %#lx (always 0x) at the end, or first (`0x..: software-unpoisoned
// page`), or before `by <who>`; most of them say why a page was not unpoisoned.
const unpoison = (_captures: Captures, { rest }: Context): UnpoisonRecord => ({
  type: "unpoison",
  pfn: optionalHex(/(?:^| )(0x[^\s:]*)(?::|$| )/.exec(rest)?.[1], "pfn"),
  done: /[Ss]oftware-unpoisoned|^Unpoisoned page/.test(rest),
  detail: rest,
});

const pageDetail =
  (detail: PageDetailRecord["detail"]) =>
  (captures: Captures, { era }: Context): PageDetailRecord => ({ type: "page-detail", pfn: pfnOf(captures), detail, era });

const userAccess = (captures: Captures): UserAccessRecord => ({ type: "user-access", ...located(need(captures.address, "address")) });

const killedOnAccess = (captures: Captures): KilledOnAccessRecord => ({
  type: "killed-on-access",
  command: need(captures.command, "command"),
  pid: pidOf(captures),
  virtualAddress: parseHex(need(captures.virtualAddress, "virtual address"), "virtual address"),
});

const machineCheck =
  (exception: boolean) =>
  (captures: Captures): MceBankRecord => {
    const status = need(captures.status, "status");
    return {
      type: "mce-detail",
      field: "machine-check",
      cpu: decimal(need(captures.cpu, "CPU"), "CPU"),
      mcgStatus: hexText(need(captures.mcgStatus, "MCG status"), "MCG status"),
      bank: decimal(need(captures.bank, "bank"), "bank"),
      status,
      exception,
      severity: mceSeverity(decodeMciStatus(status)),
    };
  };

const mceAddress = (_captures: Captures, { rest }: Context): MceAddressRecord => {
  const words = rest.split(" ");
  const pairs: (readonly [string, string])[] = [];
  for (let i = 0; i < words.length; i += 2) {
    const [key, value] = words.slice(i, i + 2);
    if (key === undefined || value === undefined) throw new Error(`'${rest}' is not KEY value pairs`);
    pairs.push([key, hexText(value, key)]);
  }
  const values = keyedValues(pairs);
  const address = values.get("ADDR");
  return {
    type: "mce-detail",
    field: "tsc",
    tsc: need(values.get("TSC"), "TSC"),
    address,
    misc: values.get("MISC"),
    ...(address === undefined ? {} : located(address)),
  };
};

const mceText =
  (field: MceTextRecord["field"]) =>
  (captures: Captures, { rest }: Context): MceTextRecord => ({ type: "mce-detail", field, text: captures.text ?? rest });

const mceRecord = (captures: Captures): MceTraceRecord => {
  const pieces = need(captures.fields, "fields")
    .split(", ")
    .flatMap((piece) => {
      const colon = piece.indexOf(": ");
      return colon < 0 ? [] : [[piece.slice(0, colon), piece.slice(colon + 2)] as const];
    });
  const values = keyedValues(pieces);
  const bankKey = [...values.keys()].find((key) => /^MC\d+$/.test(key));
  if (bankKey === undefined) throw new Error("MC<bank> status missing");
  const status = need(values.get(bankKey), bankKey);
  const decoded = decodeMciStatus(status);
  const address = hexText(need(values.get("ADDR"), "ADDR"), "ADDR");
  return {
    type: "mce-record",
    cpu: decimal(need(values.get("CPU"), "CPU"), "CPU"),
    bank: Number(bankKey.slice(2)),
    status,
    address,
    misc: hexText(need(values.get("MISC"), "MISC"), "MISC"),
    ...(decoded.addrValid ? located(address) : {}),
    severity: mceSeverity(decoded),
  };
};

// include/ras/ras_event.h TRACE_EVENT(mc_event), the same from 3.6 to 6.18 but for the error-type words:
//   "%d %s error%s:%s%s on %s (mc:%d location:%d:%d:%d address:0x%08lx grain:%d syndrome:0x%08lx%s%s)"
// count, type, "s" when count > 1, " " and the message when there is one, the label(s), controller, layers,
// address, 1 << grain_bits, syndrome, " " and the driver's detail when there is one. The message and the
// detail may be empty, which %s conversions of the table cannot say: the line is read here. A message
// that began with "on " would read as a label; no driver prints one.
const MC_EVENT =
  /^(\d+) (\S+) errors?:(?: on | (.*?) on )(.*?) \(mc:(\d+) location:(-?\d+):(-?\d+):(-?\d+) address:0x([0-9a-fA-F]+) grain:(-?\d+) syndrome:0x([0-9a-fA-F]+)(?: (.*))?\)$/s;

function layer(text: string | undefined): number {
  const value = Number(need(text, "layer"));
  if (!Number.isSafeInteger(value)) throw new Error(`layer '${text}' is not an integer`);
  // An s8: anything negative is "unknown", as EDAC means it.
  return value < 0 ? -1 : value;
}

const mcEvent = (captures: Captures): McEventRecord => {
  const fields = need(captures.fields, "fields");
  const m = MC_EVENT.exec(fields);
  if (m === null) throw new Error("not TP_printk's '%d %s error%s:%s%s on %s (mc:%d location:%d:%d:%d address:0x%08lx grain:%d syndrome:0x%08lx%s%s)'");
  const address = need(m[9], "address");
  const physicalAddress = parseHex(address, "address");
  const pfn = physicalAddressToPfn(physicalAddress);
  if (pfn > MAX_PFN) throw new Error(`address '0x${address}' is beyond the 52-bit physical address space`);
  const grain = Number(m[10]);
  const detail = m[12]?.trim();
  return {
    type: "mc-event",
    errorType: need(m[2], "error type"),
    count: decimal(need(m[1], "count"), "count"),
    message: m[3] ?? "",
    label: need(m[4], "label"),
    mc: decimal(need(m[5], "mc"), "mc"),
    layers: [layer(m[6]), layer(m[7]), layer(m[8])],
    ...(physicalAddress !== 0 && { address, physicalAddress, pfn }),
    ...(Number.isSafeInteger(grain) && grain > 0 && { grain }),
    syndrome: need(m[11], "syndrome"),
    ...(detail !== undefined && detail !== "" && { detail }),
  };
};

const RECOVERY = ["pfn", "pageType", "result"];
const PROCESS = ["pfn", "command", "pid"];

// Sentences that follow a pfn, under the "Memory failure: " prefix (4.13+), the "MCE " prefix
// (before 4.13) or no prefix (some arm64 paths).
const PFN_ROWS: readonly Row[] = [
  { format: "%#lx: recovery action for %s: %s", args: RECOVERY, eras: ["4.1-4.12", "4.13+"], build: recovery("printk") },
  { format: "%#lx: %s page recovery: %s", args: RECOVERY, eras: ["2.6-3.x"], build: recovery("printk") },
  { format: "%#lx: Sending SIGBUS to %s:%d due to hardware memory corruption", args: PROCESS, eras: ["4.13+"], build: named("signal-sent") },
  { format: "%#lx: Killing %s:%d early due to hardware memory corruption", args: PROCESS, eras: ["2.6-3.x"], build: named("signal-sent") },
  { format: "%#lx: Killing %s:%d due to hardware memory corruption", args: PROCESS, build: named("signal-sent") },
  { format: "%#lx: forcibly killing %s:%d because of failure to unmap corrupted page", args: PROCESS, build: named("forcibly-killed") },
  { format: "%#lx: Cannot send advisory machine check signal to %s:%d", args: PROCESS, build: named("advisory-failed") },
  { format: "%#lx: failed to unmap page (folio mapcount=%d)", args: ["pfn", "mapcount"], eras: ["4.13+"], build: unmapFailed },
  { format: "%#lx: failed to unmap page (mapcount=%d)", args: ["pfn", "mapcount"], build: unmapFailed },
  { format: "%#lx: unhandlable page.", args: ["pfn"], eras: ["4.13+"], build: page("unhandlable") },
  { format: "%#lx: already hardware poisoned", args: ["pfn"], build: pageDetail("already-poisoned") },
  // N is printed with %d and may be -1: kept as printed.
  { format: "%#lx: %s still referenced by %s users", args: ["pfn", "pageType", "users"], build: pageDetail("still-referenced") },
  { format: "%#lx: corrupted page was clean: dropped without side effects", args: ["pfn"], build: pageDetail("clean-dropped") },
  { format: "%#lx: Unknown page state", args: ["pfn"], build: pageDetail("unknown-state") },
  { format: "%#lx: page flags %s", args: ["pfn", "flags"], eras: ["2.6-3.x"], build: pageDetail("page-flags") },
  { format: "%#lx: memory outside kernel control", args: ["pfn"], eras: ["4.13+"], build: page("outside-kernel-control") },
];

// arch/x86/kernel/cpu/mce/core.c __print_mce() and friends, after HW_ERR.
const HARDWARE_ERROR_ROWS: readonly Row[] = [
  { format: "Machine check events logged", args: [], build: (): MceLoggedRecord => ({ type: "mce-logged" }) },
  { format: "CPU %d: Machine Check Exception: %Lx Bank %d: %016Lx", args: ["cpu", "mcgStatus", "bank", "status"], build: machineCheck(true) },
  { format: "CPU %d: Machine Check: %Lx Bank %d: %016Lx", args: ["cpu", "mcgStatus", "bank", "status"], build: machineCheck(false) },
  { format: "TSC %s", args: ["values"], build: mceAddress },
  { format: "RIP %s", args: ["text"], build: mceText("rip") },
  { format: "PROCESSOR %s", args: ["text"], build: mceText("processor") },
  { format: "Machine check: %s", args: ["text"], build: mceText("panic") },
  { format: "Run the above through 'mcelog --ascii'", args: [], build: mceText("note") },
];

const FAMILIES: readonly Family[] = [
  {
    printed: "memory_failure_event: ",
    leader: "memory_failure_event: ",
    exclusive: true,
    eras: ["4.13+"],
    rows: [{ format: "pfn %#lx: recovery action for %s: %s", args: RECOVERY, build: recovery("tracefs") }],
  },
  { printed: "mce_record: ", leader: "mce_record: ", exclusive: true, rows: [{ format: "%s", args: ["fields"], build: mceRecord }] },
  // EDAC's ras:mc_event (3.6+): where a memory-controller error was, by DIMM label and address.
  { printed: "mc_event: ", leader: "mc_event: ", exclusive: true, rows: [{ format: "%s", args: ["fields"], build: mcEvent }] },
  { printed: "mce: [Hardware Error]: ", leader: "mce: \\[Hardware Error\\]: ", exclusive: true, rows: HARDWARE_ERROR_ROWS },
  // x86's own "mce: " lines that are not a hardware-error report; only the known ones count.
  {
    printed: "mce: ",
    leader: "mce: ",
    exclusive: false,
    rows: [{ format: "Uncorrected hardware memory error in user-access at %llx", args: ["address"], build: userAccess }],
  },
  // Kernels before the "mce: " prefix; APEI and EDAC decoders print this leader too, so only known lines count.
  { printed: "[Hardware Error]: ", leader: "\\[Hardware Error\\]: ", exclusive: false, rows: HARDWARE_ERROR_ROWS },
  {
    printed: "Injecting memory failure ",
    leader: "Injecting memory failure ",
    exclusive: true,
    rows: [
      { format: "for pfn %#lx at process virtual address %#lx", args: ["pfn", "virtualAddress"], build: injected },
      { format: "for page %lx at %lx", args: ["pfn", "virtualAddress"], build: injected },
      { format: "at pfn %#lx", args: ["pfn"], build: injected },
    ],
  },
  {
    printed: "Soft offlining ",
    leader: "Soft offlining ",
    exclusive: true,
    rows: [
      { format: "pfn %#lx at process virtual address %#lx", args: ["pfn", "virtualAddress"], build: softOffline },
      { format: "page %lx at %lx", args: ["pfn", "virtualAddress"], build: softOffline },
    ],
  },
  {
    // "soft offline: ", "soft_offline: ", "soft_offline_page: ", and "Soft offline: " since its own pr_fmt.
    printed: "soft offline: ",
    leader: "(?:Memory failure: )?[Ss]oft[ _]offline(?:_page)?: ",
    exclusive: true,
    rows: [
      { format: "%#lx: %s", args: ["pfn", "detail"], build: softOffline },
      { format: "%#lx %s", args: ["pfn", "detail"], build: softOffline },
      { format: "%#lx", args: ["pfn"], build: softOffline },
    ],
  },
  {
    // get_any_page() refusing a page soft offline asked for (4.x and 5.x, with or without the leading underscores).
    printed: "get_any_page: ",
    leader: "(?:__)?get_any_page: ",
    exclusive: true,
    rows: [{ format: "%#lx: %s", args: ["pfn", "detail"], build: softOffline }],
  },
  {
    // drivers/ras/cec.c, before it calls memory_failure_queue(pfn, MF_SOFT_OFFLINE); success prints nothing more.
    printed: "RAS: ",
    leader: "RAS: ",
    exclusive: false,
    eras: ["4.13+"],
    rows: [{ format: "Soft-offlining pfn: %#lx", args: ["pfn"], build: collectorSoftOffline }],
  },
  { printed: "Unpoison: ", leader: "(?:Memory failure: )?Unpoison: ", exclusive: true, rows: [{ format: "%s", args: ["detail"], build: unpoison }] },
  {
    // The x86 fault path, and unpoison before it had its own prefix; EDAC prints "MCE: " too.
    printed: "MCE: ",
    leader: "MCE: ",
    exclusive: false,
    rows: [
      { format: "Killing %s:%d due to hardware memory corruption fault at %lx", args: ["command", "pid", "virtualAddress"], build: killedOnAccess },
      { format: "Software-unpoisoned %s", args: ["detail"], build: unpoison },
      { format: "Page was already unpoisoned %s", args: ["detail"], build: unpoison },
      { format: "Memory failure is now running on %s", args: ["detail"], build: unpoison },
    ],
  },
  // "Memory Failure: %#lx: thp split failed" is capitalised.
  { printed: "Memory failure: ", leader: "[Mm]emory [Ff]ailure: ", exclusive: true, eras: ["4.13+"], rows: PFN_ROWS },
  { printed: "MCE ", leader: "MCE (?=\\S+: )", exclusive: true, eras: ["2.6-3.x", "4.1-4.12"], rows: PFN_ROWS },
  { printed: "", leader: "", exclusive: false, eras: ["4.13+"], rows: PFN_ROWS },
];

// ---------------------------------------------------------------------------------------------
// Compiling the table

const ALL_ERAS: readonly KernelEra[] = ["2.6-3.x", "4.1-4.12", "4.13+"];
const CONVERSION = /%[#0-9]*(?:ll|l|L)?([sdux])/g;

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

interface Shape {
  readonly row: Row;
  readonly re: RegExp;
  /** The format's literal words, to tell a damaged instance of the shape from an unknown line. */
  readonly words: readonly string[];
  readonly era: KernelEra | undefined;
}

interface CompiledFamily {
  readonly family: Family;
  readonly leader: RegExp;
  readonly shapes: readonly Shape[];
}

function compileRow(row: Row, familyEras: readonly KernelEra[]): Shape | undefined {
  const eras = familyEras.filter((era) => row.eras?.includes(era) ?? true);
  if (eras.length === 0) return undefined;
  const literals = row.format.split(CONVERSION).filter((_, i) => i % 2 === 0);
  const conversions = [...row.format.matchAll(CONVERSION)].map((match) => match[1]);
  if (conversions.length !== row.args.length) throw new Error(`'${row.format}' has ${conversions.length} conversions for ${row.args.length} names`);
  // %s takes as much as it can, so a command splits at its last colon and a page type at its last ": ".
  const source = literals.map((literal, i) => escapeRegExp(literal) + (i < conversions.length ? (conversions[i] === "s" ? "(.+)" : "(\\S+?)") : "")).join("");
  return {
    row,
    // dotAll: a kernel string is whatever the kernel printed, line separators included.
    re: new RegExp(`^${source}$`, "s"),
    words: literals.filter((literal) => /[A-Za-z]/.test(literal)),
    era: eras.length === 1 ? eras[0] : undefined,
  };
}

const GRAMMAR: readonly CompiledFamily[] = FAMILIES.map((family) => ({
  family,
  leader: new RegExp(`^(?:${family.leader})`),
  shapes: family.rows.flatMap((row) => compileRow(row, family.eras ?? ALL_ERAS) ?? []),
}));

// Cheap first test: every line we read contains one of these; all other subsystems stop here.
const RELEVANT =
  /[Mm]emory [Ff]ailure|MCE|mce[:_]|mc_event|Hardware Error|hwpoison|[Ss]oft[ _]offlin|Soft-offlining pfn|[Uu]npoison|memory_failure_event|get_any_page|recovery action for|hardware memory corruption|forcibly killing|advisory machine check|failed to unmap page|unhandlable page|outside kernel control/;

// A leader only the memory-failure code prints, behind a prefix we could not strip.
const EMBEDDED = new RegExp(
  FAMILIES.filter((family) => family.exclusive)
    .map((family) => family.leader)
    .join("|"),
);

// printk lines are at most 1024 bytes; longer input is not a kernel line and is not worth regex time.
const MAX_LINE = 4096;

const IGNORED: KernelLineResult = Object.freeze({ kind: "ignored" });

function unrecognized(text: string, reason: string): KernelLineResult {
  return { kind: "unrecognized", text, reason };
}

/** The record a shape's match builds; a value it cannot read makes the line unrecognized, named by `blame` if an earlier family already claimed it. */
function read(compiled: CompiledFamily, shape: Shape, match: RegExpExecArray, rest: string, text: string, blame: string | undefined): KernelLineResult {
  const captures: Partial<Record<string, string>> = {};
  shape.row.args.forEach((name, i) => {
    captures[name] = match[i + 1];
  });
  try {
    return { kind: "record", record: shape.row.build(captures, { era: shape.era, rest }), text };
  } catch (error) {
    const why = error instanceof Error ? error.message : "unreadable value";
    return unrecognized(text, blame ?? `${why} in '${compiled.family.printed}${shape.row.format}'`);
  }
}

/** The shape a line was most likely meant to be: the one sharing most literal words with it. */
function nearest(shapes: readonly Shape[], rest: string): Shape | undefined {
  let best: Shape | undefined;
  let bestScore = 0;
  for (const shape of shapes) {
    const score = shape.words.filter((word) => rest.includes(word)).length;
    if (score > bestScore) [best, bestScore] = [shape, score];
  }
  return best;
}

// Control characters but the tab.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u0008\u000a-\u001f\u007f]/;
// eslint-disable-next-line no-control-regex
const CONTROL_ALL = /[\u0000-\u001f\u007f]/g;

/** Reads one line of any era and any prefix style. */
export function parseKernelLine(line: string): KernelLineResult {
  if (!RELEVANT.test(line) || isKmsgDictionaryLine(line)) return IGNORED;
  if (line.length > MAX_LINE) return unrecognized(line, `longer than ${MAX_LINE} characters, which no kernel line is`);
  const { text, facility } = stripLogPrefix(line);
  // Any process may write to /dev/kmsg, under its own facility: only the kernel's records are evidence.
  if (facility !== undefined && facility !== 0) return unrecognized(text, `written by user space (syslog facility ${facility}), not the kernel`);
  // The kernel prints no control character in these lines (/dev/kmsg and dmesg escape one as \xNN): one
  // there is damage, never a page-type word.
  if (CONTROL.test(text)) return unrecognized(text.replace(CONTROL_ALL, "?"), "control characters in the line, which the kernel never prints there");
  let nearMiss: string | undefined;
  for (const compiled of GRAMMAR) {
    const lead = compiled.leader.exec(text);
    if (lead === null) continue;
    const rest = text.slice(lead[0].length);
    for (const shape of compiled.shapes) {
      const match = shape.re.exec(rest);
      if (match !== null) return read(compiled, shape, match, rest, text, nearMiss);
    }
    const near = nearest(compiled.shapes, rest);
    const reason = near === undefined ? undefined : `does not match '${compiled.family.printed}${near.row.format}'`;
    if (compiled.family.exclusive) return unrecognized(text, reason ?? `unknown message after '${compiled.family.printed}'`);
    nearMiss ??= reason;
  }
  if (EMBEDDED.test(text)) return unrecognized(text, "memory-failure message behind a log prefix this parser does not know");
  return nearMiss === undefined ? IGNORED : unrecognized(text, nearMiss);
}

/**
 * A line as people paste logs into mail and issues: indentation and `>`, `>>`, `> >` quote markers
 * removed (syslog's wall broadcast ` kernel:` then reads as the kernel tag it is); undefined for an
 * elision (`[...]`, `...`), which stands for lines left out.
 */
export function unpaste(line: string): string | undefined {
  const text = line.replace(/^\s*(?:>\s*)*/, "");
  return /^(?:\[\s*(?:\.\.\.|…)\s*\]|\.\.\.|…)$/.test(text.trim()) ? undefined : text;
}

export interface ParseOptions {
  /** Text pasted by a person (simulate's scenarios, replay files): see unpaste(). */
  pasted?: boolean;
}

/** Reads a multi-line log; empty lines and /dev/kmsg dictionary lines are skipped. */
export function parseKernelLog(text: string, options: ParseOptions = {}): KernelLogEntry[] {
  const entries: KernelLogEntry[] = [];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = options.pasted === true ? unpaste(raw) : raw;
    if (line !== undefined && line.trim() !== "" && !isKmsgDictionaryLine(line)) entries.push({ line: i + 1, result: parseKernelLine(line) });
  });
  return entries;
}
