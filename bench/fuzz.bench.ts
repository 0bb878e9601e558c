// One million generated kernel-like lines through the agent's whole line path: parse, assemble, build
// the MemoryErrorEvent and fit it to the CRD's schema. Mutations of every known line shape (random and
// huge pfns, truncation, very long lines, binary, unicode, random prefixes) and shuffled multi-line
// sequences. Counted: crashes (a throw anywhere in the path), events invented from lines that are no
// verdict, events the schema refuses, peak memory and lines per second. Seeded, so a run can be repeated.
// Not in npm test; saves bench/results/fuzz.json.
//
//   npm run bench:fuzz            BENCH_FUZZ_LINES=100000 BENCH_FUZZ_SEED=7 npm run bench:fuzz
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { performance } from "node:perf_hooks";
import { ErrorAssembler } from "../agent/assembler.ts";
import { buildMemoryErrorEvent, fitToSchema, type EventContext } from "../agent/event.ts";
import type { KernelLine } from "../agent/source.ts";
import { parseKernelLine } from "../kernel/lines.ts";

const LINES = Number(process.env.BENCH_FUZZ_LINES ?? 1_000_000);
const SEED = Number(process.env.BENCH_FUZZ_SEED ?? 20261201);
const MiB = 2 ** 20;

// xorshift32: the same lines for the same seed.
let state = SEED >>> 0 || 1;
function random(): number {
  state ^= state << 13;
  state ^= state >>> 17;
  state ^= state << 5;
  return (state >>> 0) / 2 ** 32;
}
const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)] as T;
const int = (max: number): number => Math.floor(random() * max);

// Every line shape the grammar knows, {pfn} {pid} {addr} {comm} {type} {result} filled in per line; the
// kind says whether the shape ends an error (a verdict, a soft offline, memory outside kernel control).
type Kind = "verdict" | "mce" | "other";
const SHAPES: readonly [string, Kind][] = [
  ["Memory failure: {pfn}: recovery action for {type}: {result}", "verdict"],
  ["MCE {pfn}: recovery action for {type}: {result}", "verdict"],
  ["MCE {pfn}: {type} page recovery: {result}", "verdict"],
  ["memory_failure_event: pfn {pfn}: recovery action for {type}: {result}", "verdict"],
  ["Memory failure: {pfn}: memory outside kernel control", "verdict"],
  ["Soft offlining pfn {pfn} at process virtual address {addr}", "verdict"],
  ["soft offline: {pfn}: migration failed 1, type 57ffffc000800e", "verdict"],
  ["Soft offline: {pfn}: page already poisoned", "verdict"],
  ["Memory failure: {pfn}: Sending SIGBUS to {comm}:{pid} due to hardware memory corruption", "other"],
  ["MCE {pfn}: Killing {comm}:{pid} early due to hardware memory corruption", "other"],
  ["Memory failure: {pfn}: forcibly killing {comm}:{pid} because of failure to unmap corrupted page", "other"],
  ["Memory failure: {pfn}: Cannot send advisory machine check signal to {comm}:{pid}", "other"],
  ["Memory failure: {pfn}: failed to unmap page (folio mapcount=2)", "other"],
  ["Memory failure: {pfn}: unhandlable page.", "other"],
  ["Memory failure: {pfn}: already hardware poisoned", "other"],
  ["Memory failure: {pfn}: huge page still referenced by -1 users", "other"],
  ["MCE: Killing {comm}:{pid} due to hardware memory corruption fault at {addrbare}", "other"],
  ["Injecting memory failure for pfn {pfn} at process virtual address {addr}", "other"],
  ["Unpoison: Software-unpoisoned page {pfn}", "other"],
  ["mce: Uncorrected hardware memory error in user-access at {phys}", "other"],
  ["mce: [Hardware Error]: Machine check events logged", "mce"],
  ["mce: [Hardware Error]: CPU {cpu}: Machine Check Exception: 5 Bank 9: bd000000000000c0", "mce"],
  ["mce: [Hardware Error]: CPU {cpu}: Machine Check: 0 Bank 7: 9c000000000000c0", "mce"],
  ["mce: [Hardware Error]: TSC 3ed904d41 ADDR {phys} MISC 8c", "mce"],
  ["mce: [Hardware Error]: RIP !INEXACT! 10:<ffffffffac4592eb> {native_safe_halt+0xb/0x10}", "mce"],
  ["mce: [Hardware Error]: PROCESSOR 0:60fb1 TIME 1795644070 SOCKET 0 APIC 0 microcode 1", "mce"],
  [
    "mce_record: CPU: 0, MCGc/s: 100010a/5, MC9: bd000000000000c0, IPID: 0000000000000000, ADDR/MISC/SYND: {physpad}/000000000000008c/0000000000000000, RIP: 10:<ffffffffac4592eb>",
    "mce",
  ],
  ["e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx", "other"],
  ["EDAC MC0: 1 CE memory read error on CPU_SrcID#0_Ha#0_Chan#1_DIMM#0 (channel:1 slot:0 page:0x5203 offset:0x0 grain:32)", "other"],
  ["mce: CPU0: Thermal monitoring enabled (TM1)", "other"],
];
const PAGE_TYPES = ["huge page", "free huge page", "get hwpoison page", "dirty LRU page", "free buddy, 2nd try", "already poisoned page", "ünïcode page", ""];
const RESULTS = ["Recovered", "Ignored", "Failed", "Delayed", "Reco", ""];
const COMMANDS = ["hwp", "dpdk:worker", "java", "a b", "x".repeat(80), "名前", ""];
const PREFIXES = [
  () => "",
  () => `${int(8)},${int(1e6)},${int(1e10)},-;`,
  () => `[${(random() * 1e5).toFixed(6).padStart(12)}] `,
  () => "<3>",
  // User space writing to /dev/kmsg (its own facility) or a syslog line of another facility: no evidence.
  () => `${8 + int(184)},${int(1e6)},${int(1e10)},-;`,
  () => `<${8 + int(184)}>`,
  () => "Dec  1 12:00:00 worker-7 kernel: ",
  () => "2026-12-01T12:00:00.123456+00:00 worker-7 kernel: ",
  () => "[Tue Dec  1 12:00:00 2026] ",
  () => "[    C1] ",
  () => "kernel: ",
  () => "rasdaemon: ",
];

function pfn(): string {
  const r = random();
  if (r < 0.7) return `0x${(0x1000 + int(0x400000)).toString(16)}`;
  if (r < 0.8) return `0x${BigInt.asUintN(64, BigInt(int(2 ** 31)) << 33n).toString(16)}`; // beyond 52 bits
  if (r < 0.9) return String(int(1e9)); // no 0x
  return pick(["0x", "-0x1", "0xZZ", "0x" + "f".repeat(40)]);
}

function fill(template: string): string {
  return template
    .replaceAll("{pfn}", pfn())
    .replaceAll("{pid}", random() < 0.95 ? String(int(4_000_000)) : pick(["-1", "abc", "99999999999999999999"]))
    .replaceAll("{comm}", pick(COMMANDS))
    .replaceAll("{type}", pick(PAGE_TYPES))
    .replaceAll("{result}", pick(RESULTS))
    .replaceAll("{cpu}", String(int(256)))
    .replaceAll("{addr}", `0x7f${int(2 ** 31).toString(16)}000`)
    .replaceAll("{addrbare}", `7f${int(2 ** 31).toString(16)}000`)
    .replaceAll("{phys}", (int(2 ** 31) * 4096).toString(16))
    .replaceAll("{physpad}", (int(2 ** 31) * 4096).toString(16).padStart(16, "0"));
}

/** One generated line: a filled shape, then perhaps one mutation, behind a random prefix. */
function generate(): { text: string; kind: Kind; intact: boolean; userSpace: boolean } {
  const [template, kind] = pick(SHAPES);
  let text = fill(template);
  let intact = true;
  const m = random();
  if (m < 0.1) {
    text = text.slice(0, int(text.length)); // truncated
    intact = false;
  } else if (m < 0.13) {
    text = text + " " + "y".repeat(5000); // far longer than printk writes
    intact = false;
  } else if (m < 0.16) {
    text = Buffer.from(Array.from({ length: 1 + int(200) }, () => int(256))).toString("latin1"); // binary
    intact = false;
  } else if (m < 0.19) {
    const at = int(text.length);
    text = text.slice(0, at) + pick(["\u0000", "\u202e", "💥", "\ufffd", "\t", "\r"]) + text.slice(at); // a character inserted
    intact = false;
  } else if (m < 0.22) {
    const at = int(text.length);
    text = text.slice(0, at) + text.slice(at + 1 + int(8)); // characters lost
    intact = false;
  }
  const prefix = pick(PREFIXES)();
  const priority = /^(\d+),|^<(\d+)>/.exec(prefix);
  return { text: prefix + text, kind, intact, userSpace: priority !== null && Number(priority[1] ?? priority[2]) >= 8 };
}

const context: EventContext = {
  nodeName: "worker-7",
  bootID: "0f6c1b1e-6d2a-4c55-9d8e-2b1f0c9e7a11",
  pods: { pod: () => undefined },
  earlyKill: false,
  poolSizes: ["2Mi"],
  numaNodeOfPfn: () => 0,
};

const kinds = new Uint8Array(LINES);
const intactLines = new Uint8Array(LINES);
const userSpaceLines = new Uint8Array(LINES);
const KIND: Record<Kind, number> = { verdict: 1, mce: 2, other: 3 };
const assembler = new ErrorAssembler({ maxAgeMs: 5_000 });
let crashes = 0;
const crashSamples: string[] = [];
let events = 0;
let invented = 0;
const inventedSamples: string[] = [];
let fromDamaged = 0;
let fromUserSpace = 0;
let controlCharacters = 0;
let refusedBySchema = 0;
const schemaSamples: string[] = [];
let unrecognized = 0;
let peakRss = process.memoryUsage().rss;
let parseOnlyMs = 0;

function crash(where: string, text: string, error: unknown): void {
  crashes++;
  if (crashSamples.length < 5)
    crashSamples.push(`${where}: ${error instanceof Error ? error.message : String(error)} on ${JSON.stringify(text.slice(0, 200))}`);
}

function deliver(out: ReturnType<ErrorAssembler["push"]>): void {
  unrecognized += out.notices.filter((n) => n.kind === "unrecognized").length;
  for (const { error, line } of out.errors) {
    const seq = line.sequence ?? 0;
    // An error must be completed by a verdict line or, for a machine check no verdict followed, by its record.
    if (kinds[seq] === KIND.other) {
      invented++;
      if (inventedSamples.length < 5) inventedSamples.push(line.text.slice(0, 200));
    }
    if (intactLines[seq] === 0) fromDamaged++;
    if (userSpaceLines[seq] === 1) fromUserSpace++;
    try {
      const fitted = fitToSchema(buildMemoryErrorEvent(error, "kmsg", line.at, [], () => undefined, context));
      events++;
      // eslint-disable-next-line no-control-regex
      if (/[\u0000-\u0008\u000a-\u001f\u007f]/.test(`${fitted.event.spec.pageType ?? ""}${fitted.event.spec.result ?? ""}`)) controlCharacters++;
      if (fitted.issues.length > 0) {
        refusedBySchema++;
        if (schemaSamples.length < 5)
          schemaSamples.push(`${fitted.issues.map((i) => `${i.path}: ${i.message}`).join("; ")} from ${JSON.stringify(line.text.slice(0, 160))}`);
      }
    } catch (e) {
      crash("build event", line.text, e);
    }
  }
}

const start = performance.now();
for (let i = 0; i < LINES; i++) {
  const { text, kind, intact, userSpace } = generate();
  kinds[i] = KIND[kind];
  intactLines[i] = intact ? 1 : 0;
  userSpaceLines[i] = userSpace ? 1 : 0;
  // Shuffled sequences: lines of different pfns interleave, and time moves one ms per line.
  const line: KernelLine = { source: "kmsg", sequence: i, text, at: i };
  try {
    const t = performance.now();
    parseKernelLine(text);
    parseOnlyMs += performance.now() - t;
    deliver(assembler.push(line));
    if (i % 1000 === 999) deliver(assembler.expire(i));
  } catch (e) {
    crash("parse/assemble", text, e);
  }
  if (i % 10_000 === 0) peakRss = Math.max(peakRss, process.memoryUsage().rss);
}
deliver(assembler.expire(LINES + 10_000));
const seconds = (performance.now() - start) / 1000;
peakRss = Math.max(peakRss, process.memoryUsage().rss);

const commit = (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
})();
const result = {
  date: new Date().toISOString(),
  commit,
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  seed: SEED,
  lines: LINES,
  seconds: Number(seconds.toFixed(2)),
  linesPerSecond: Math.round(LINES / seconds),
  parseOnlyLinesPerSecond: Math.round(LINES / (parseOnlyMs / 1000)),
  peakRssMiB: Number((peakRss / MiB).toFixed(1)),
  crashes,
  crashSamples,
  events,
  eventsInventedFromNonVerdictLines: invented,
  inventedSamples,
  eventsFromDamagedLines: fromDamaged,
  eventsFromUserSpaceLines: fromUserSpace,
  eventsWithControlCharacters: controlCharacters,
  eventsTheSchemaRefuses: refusedBySchema,
  schemaSamples,
  unrecognizedLines: unrecognized,
};
mkdirSync("bench/results", { recursive: true });
writeFileSync("bench/results/fuzz.json", `${JSON.stringify(result, null, 2)}\n`);
console.log(
  `fuzz: ${LINES.toLocaleString("en")} lines (seed ${SEED}) through parse, assemble, event build in ${result.seconds} s ` +
    `(${result.linesPerSecond.toLocaleString("en")} lines/s; parse alone ${result.parseOnlyLinesPerSecond.toLocaleString("en")} lines/s), peak RSS ${result.peakRssMiB} MiB`,
);
console.log(
  `crashes ${crashes}; events ${events}, invented from non-verdict lines ${invented}, from user-space lines ${fromUserSpace}, ` +
    `with control characters in their words ${controlCharacters}, from damaged lines ${fromDamaged}, ` +
    `refused by the schema ${refusedBySchema}; lines reported as not understood ${unrecognized.toLocaleString("en")}`,
);
for (const s of [...crashSamples, ...inventedSamples, ...schemaSamples]) console.log(`  ${s}`);
console.log("saved bench/results/fuzz.json");
