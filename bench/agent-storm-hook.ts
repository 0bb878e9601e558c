// The storm case of agent.bench.ts, inside the agent: loaded with `node --import` before the real agent
// (dist/agent/main.js with its image's node flags, composed by main.ts as on a node), it stands in for the
// kernel's /dev/kmsg with a storm of corrected machine-check records, counts the agent's state-file writes
// and samples the process's CPU and memory. It writes what it measured to $STORM_RESULT when the process
// exits, and says `agent-storm: done` on standard error once the storm and the quiet after it are over.
// Only node's own modules: it is compiled on its own and runs before any of the agent's.
//
// The fake /dev/kmsg behaves as the kernel's does for a non-blocking reader: one record per read, EAGAIN
// when the reader has caught up (the agent then polls again in 200 ms), EPIPE when records the reader had
// not read yet were overwritten (then the oldest record still there, its sequence showing the gap). Each
// read is a real read(2) of /dev/zero through libuv's thread pool first, so the event loop turns per
// record as it does on /dev/kmsg. Records come due at STORM_RATE a second for STORM_SECONDS; the ring
// holds STORM_RING_LINES lines.
//
// With STORM_REPLAY set it replays a file of /dev/kmsg records instead of a storm (bench/peer.ts): one
// record a line, its dictionary lines (` KEY=value`) after it, given with it as the kernel does. The file
// is followed as it grows: a record is due once its line is in the file, and reads find EAGAIN when they
// have caught up with it. There is no ring in this mode (nothing is overwritten) and no storm, warm-up or
// `done` line; the result says when the first and the last record were read.
import type * as Fs from "node:fs";
import type { FileHandle } from "node:fs/promises";
import { createRequire, syncBuiltinESMExports } from "node:module";
import { performance } from "node:perf_hooks";
import { StringDecoder } from "node:string_decoder";

interface FsSyncCalls {
  openSync: (path: Fs.PathLike, ...rest: unknown[]) => number;
  readSync: (fd: number, buffer: Buffer, offset: number, length: number, position: number) => number;
  writeSync: (fd: number, ...rest: unknown[]) => number;
  fsyncSync: typeof Fs.fsyncSync;
  closeSync: typeof Fs.closeSync;
  renameSync: typeof Fs.renameSync;
  readFileSync: typeof Fs.readFileSync;
  writeFileSync: typeof Fs.writeFileSync;
  statSync: typeof Fs.statSync;
}
interface FsPromiseCalls {
  open: (path: Fs.PathLike, ...rest: unknown[]) => Promise<FileHandle>;
}

const require = createRequire(import.meta.url);
const fs = require("node:fs") as FsSyncCalls;
const fsp = require("node:fs/promises") as FsPromiseCalls;

function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`agent-storm-hook: ${name} is not set`);
  return value;
}

const KMSG = env("STORM_KMSG");
const STATE_FILE = env("STORM_STATE_FILE");
const RESULT = env("STORM_RESULT");
/** The file of kmsg records to replay instead of a storm. */
const REPLAY = process.env.STORM_REPLAY === "" ? undefined : process.env.STORM_REPLAY;
/** A storm's setting; a replay has none (0). */
const setting = (name: string): number => (REPLAY === undefined ? Number(env(name)) : 0);
const RATE = setting("STORM_RATE");
const SECONDS = setting("STORM_SECONDS");
const PAGES = setting("STORM_PAGES");
const PFN_BASE = setting("STORM_PFN_BASE");
const BURST = setting("STORM_BURST");
const WARMUP_MS = setting("STORM_WARMUP_MS");
const QUIET_MS = setting("STORM_QUIET_MS");
const RING_LINES = setting("STORM_RING_LINES");

// The storm's lines: bursts of BURST records, each burst announced by "Machine check events logged", each
// record a bank line and its TSC/ADDR line, as the kernel's __print_mce() prints a corrected error.
const LINES_PER_BURST = 1 + 2 * BURST;
const RECORDS = RATE * SECONDS;
/** Pages are visited in a scattered order (a stride prime to their number), 17 pfns apart. */
const STRIDE = 7919;
const PFN_SPACING = 17;
const FIRST_SEQUENCE = 40_000;
const UPTIME_USEC = 3_600_000_000;

/** Lines of the first `records` records, with their bursts' announcements. */
function linesOfRecords(records: number): number {
  const bursts = Math.floor(records / BURST);
  const rest = records % BURST;
  return bursts * LINES_PER_BURST + (rest > 0 ? 1 + 2 * rest : 0);
}
/** Records whose ADDR line is among the first `lines` lines. */
function recordsOfLines(lines: number): number {
  const burst = Math.floor(lines / LINES_PER_BURST);
  const j = lines % LINES_PER_BURST;
  return burst * BURST + (j > 0 ? Math.floor((j - 1) / 2) : 0);
}
const LINES = linesOfRecords(RECORDS);

function pfnOf(record: number): number {
  return PFN_BASE + ((record * STRIDE) % PAGES) * PFN_SPACING;
}

/** Line `k` of the storm as /dev/kmsg gives it: `PRI,SEQ,TS_USEC,FLAGS;text`. */
function kmsgLine(k: number): string {
  const burst = Math.floor(k / LINES_PER_BURST);
  const j = k % LINES_PER_BURST;
  const record = burst * BURST + Math.max(0, Math.floor((j - 1) / 2));
  const usec = UPTIME_USEC + Math.floor((record * 1e6) / RATE);
  const head = (priority: number): string => `${priority},${FIRST_SEQUENCE + k},${usec},-;mce: [Hardware Error]: `;
  // pr_info for the announcement, pr_emerg for the record (facility 0, the kernel).
  if (j === 0) return `${head(6)}Machine check events logged`;
  if (j % 2 === 1) return `${head(0)}CPU 0: Machine Check: 0 Bank 9: 9c000000000000c0`;
  const address = pfnOf(record) * 4096 + (record % 64) * 64;
  return `${head(0)}TSC 0 ADDR ${address.toString(16)} MISC 8c`;
}

// What the storm did, as the agent read it.
let startedAt: number | undefined;
let next = 0;
let lostLines = 0;
let lostRecords = 0;
let maxLagLines = 0;
let drainedAt: number | undefined;
let readByStormEnd: number | undefined;
let lostByStormEnd = 0;
let reads = 0;

function errno(code: string): Error {
  return Object.assign(new Error(`${code}: fake /dev/kmsg`), { code });
}

// The replay: the file read 64 KiB at a time from where the last read stopped (never held whole, which
// would weigh on the agent's RSS), split into lines; `at` is the next line to give.
const replay = {
  fd: undefined as number | undefined,
  position: 0,
  decoder: new StringDecoder("utf8"),
  chunk: undefined as Buffer | undefined,
  /** A line not yet ended by its newline. */
  carry: "",
  lines: [] as string[],
  at: 0,
  firstReadAt: undefined as number | undefined,
  lastReadAt: undefined as number | undefined,
};

/** Reads on in the file until it has a whole line to give; false when the file has no more yet. */
function fillReplay(file: string): boolean {
  replay.fd ??= real.openSync(file, "r");
  const chunk = (replay.chunk ??= Buffer.alloc(64 * 1024));
  while (replay.at >= replay.lines.length) {
    const bytes = real.readSync(replay.fd, chunk, 0, chunk.length, replay.position);
    if (bytes === 0) return false;
    replay.position += bytes;
    const parts = (replay.carry + replay.decoder.write(chunk.subarray(0, bytes))).split("\n");
    replay.carry = parts.pop() ?? "";
    replay.lines = parts.filter((line) => line !== "");
    replay.at = 0;
  }
  return true;
}

/** The next record of the file, with its dictionary lines; EAGAIN when the reader has caught up. */
function replayRecord(file: string): string {
  if (!fillReplay(file)) throw errno("EAGAIN");
  let record = replay.lines[replay.at++] ?? "";
  while (fillReplay(file) && replay.lines[replay.at]?.startsWith(" ") === true) record += `\n${replay.lines[replay.at++] ?? ""}`;
  const now = Date.now();
  replay.firstReadAt ??= now;
  replay.lastReadAt = now;
  return record;
}

function dueLines(now: number): number {
  if (startedAt === undefined) return 0;
  const records = Math.min(RECORDS, Math.floor(((now - startedAt) * RATE) / 1000));
  return linesOfRecords(records);
}

async function openKmsg(): Promise<FileHandle> {
  const zero = await realOpen("/dev/zero", "r");
  const scratch = Buffer.alloc(1);
  const read = async (buffer: Buffer, offset = 0, length = buffer.length): Promise<{ bytesRead: number; buffer: Buffer }> => {
    await zero.read(scratch, 0, 1, null);
    reads++;
    if (REPLAY !== undefined) {
      const bytesRead = buffer.write(replayRecord(REPLAY), offset, length, "utf8");
      next++;
      return { bytesRead, buffer };
    }
    const due = dueLines(performance.now());
    if (due - next > RING_LINES) {
      const oldest = due - RING_LINES;
      lostLines += oldest - next;
      lostRecords += recordsOfLines(oldest) - recordsOfLines(next);
      next = oldest;
      throw errno("EPIPE");
    }
    if (next >= due) throw errno("EAGAIN");
    maxLagLines = Math.max(maxLagLines, due - next);
    const bytesRead = buffer.write(kmsgLine(next), offset, length, "utf8");
    next++;
    if (next === LINES) drainedAt ??= performance.now();
    return { bytesRead, buffer };
  };
  // Only what agent/source.ts's openDevice uses of a FileHandle.
  return { read, close: () => zero.close() } as unknown as FileHandle;
}

const realOpen = fsp.open;
fsp.open = (path, ...rest) => (String(path) === KMSG ? openKmsg() : realOpen(path, ...rest));

// The state file: agent/state.ts writes `agent-state.json.tmp` (open, write, fsync, close) and renames it.
const TEMP_FILE = `${STATE_FILE}.tmp`;
const stateFds = new Map<number, { openedAt: number; bytes: number }>();
const stateWrites = { count: 0, duringStorm: 0, bytes: 0, maxBytes: 0, fsyncs: 0, ms: 0 };
const real = { ...fs };
fs.openSync = (path, ...rest) => {
  const openedAt = performance.now();
  const fd = real.openSync(path, ...rest);
  if (String(path) === TEMP_FILE) stateFds.set(fd, { openedAt, bytes: 0 });
  return fd;
};
fs.writeSync = (fd, ...rest) => {
  const written = real.writeSync(fd, ...rest);
  const open = stateFds.get(fd);
  if (open !== undefined) open.bytes += written;
  return written;
};
fs.fsyncSync = (fd) => {
  real.fsyncSync(fd);
  if (stateFds.has(fd)) stateWrites.fsyncs++;
};
let lastClosed: { openedAt: number; bytes: number } | undefined;
fs.closeSync = (fd) => {
  real.closeSync(fd);
  lastClosed = stateFds.get(fd) ?? lastClosed;
  stateFds.delete(fd);
};
fs.renameSync = (from, to) => {
  real.renameSync(from, to);
  if (String(to) !== STATE_FILE || lastClosed === undefined) return;
  const now = performance.now();
  stateWrites.count++;
  if (startedAt !== undefined && now - startedAt <= SECONDS * 1000) stateWrites.duringStorm++;
  stateWrites.bytes += lastClosed.bytes;
  stateWrites.maxBytes = Math.max(stateWrites.maxBytes, lastClosed.bytes);
  // From opening the temp file to the rename: the JSON built, written, fsynced and renamed.
  stateWrites.ms += now - lastClosed.openedAt;
  lastClosed = undefined;
};
syncBuiltinESMExports();

// The process, sampled four times a second: resident set, V8 heap in use, CPU time.
interface Sample {
  /** Seconds since the storm began (negative before). */
  t: number;
  rssMiB: number;
  heapMiB: number;
  cpuSeconds: number;
}
const MiB = 2 ** 20;
const loadedAt = performance.now();
const sample = (): Sample => {
  const memory = process.memoryUsage();
  const cpu = process.cpuUsage();
  return {
    t: Number(((performance.now() - (startedAt ?? loadedAt + WARMUP_MS)) / 1000).toFixed(2)),
    rssMiB: Number((memory.rss / MiB).toFixed(1)),
    heapMiB: Number((memory.heapUsed / MiB).toFixed(1)),
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
  };
};
const samples: Sample[] = [];
setInterval(() => samples.push(sample()), 250).unref();
const peakRssMiB = (): number => Number(/^VmHWM:\s+(\d+) kB/m.exec(real.readFileSync("/proc/self/status", "utf8"))?.[1] ?? 0) / 1024;

let before: Sample | undefined;
let stormEnd: Sample | undefined;
let after: Sample | undefined;
let stateWritesByStormEnd = 0;
if (REPLAY === undefined)
  setTimeout(() => {
    before = sample();
    startedAt = performance.now();
    setTimeout(() => {
      stormEnd = sample();
      readByStormEnd = next;
      lostByStormEnd = lostRecords;
      stateWritesByStormEnd = stateWrites.count;
    }, SECONDS * 1000);
    setTimeout(
      () => {
        after = sample();
        process.stderr.write("agent-storm: done\n");
      },
      SECONDS * 1000 + QUIET_MS,
    );
  }, WARMUP_MS);

process.on("exit", () => {
  let stateFileBytes: number | undefined;
  try {
    stateFileBytes = real.statSync(STATE_FILE).size;
  } catch {
    stateFileBytes = undefined;
  }
  const readLines = (at: number): number => recordsOfLines(at);
  const measured =
    REPLAY === undefined
      ? {
          records: RECORDS,
          lines: LINES,
          linesRead: next - lostLines,
          recordsRead: readLines(next) - lostRecords,
          recordsReadByStormEnd: readByStormEnd === undefined ? undefined : readLines(readByStormEnd) - lostByStormEnd,
          recordsLostByStormEnd: lostByStormEnd,
          recordsLost: lostRecords,
          linesLost: lostLines,
          maxLagLines,
          drainedSeconds: drainedAt === undefined || startedAt === undefined ? undefined : (drainedAt - startedAt) / 1000,
          before,
          stormEnd,
          after,
        }
      : // When the first and the last record were read, ms since the epoch.
        { recordsRead: next, firstReadAt: replay.firstReadAt, lastReadAt: replay.lastReadAt };
  real.writeFileSync(
    RESULT,
    JSON.stringify({
      ...measured,
      reads,
      peakRssMiB: peakRssMiB(),
      samples,
      stateWrites: { ...stateWrites, byStormEnd: stateWritesByStormEnd },
      stateFileBytes,
    }),
  );
});
