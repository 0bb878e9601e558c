import { describe, expect, it } from "vitest";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { KmsgSource, parseKmsgRecord } from "./kmsg.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import type { Device, KernelLine } from "./source.ts";

/** A record, or "EAGAIN" / "EPIPE" for a read failing with that errno. */
type Step = string;

/** /dev/kmsg as a script: each read returns the next record or fails with the next errno; then end of file. */
function fakeDevice(steps: Step[]): Device & { closed: boolean } {
  const queue = [...steps];
  const device = {
    closed: false,
    read: (buffer: Buffer): Promise<number> => {
      const step = queue.shift();
      if (step === undefined) return Promise.resolve(0);
      if (step === "EAGAIN" || step === "EPIPE") return Promise.reject(Object.assign(new Error(step), { code: step }));
      return Promise.resolve(buffer.write(step));
    },
    close: (): Promise<void> => {
      device.closed = true;
      return Promise.resolve();
    },
  };
  return device;
}

async function readAll(
  steps: Step[],
  after?: number,
): Promise<{ lines: KernelLine[]; lost: number[]; device: { closed: boolean }; log: ReturnType<typeof memoryLogger> }> {
  const device = fakeDevice(steps);
  const log = memoryLogger();
  const lost: number[] = [];
  const clock = new FakeClock();
  // Sleeps return at once: the clock is only consulted for stamps here.
  clock.sleep = () => Promise.resolve();
  const source = new KmsgSource({ open: () => Promise.resolve(device), clock, log, after, onLost: (n) => lost.push(n) });
  const lines: KernelLine[] = [];
  for await (const line of source.lines(new AbortController().signal)) lines.push(line);
  return { lines, lost, device, log };
}

describe("parseKmsgRecord", () => {
  it("reads the header and drops dictionary lines", () => {
    expect(parseKmsgRecord("3,1500,12345678,-;Memory failure: 0x5205: recovery action for huge page: Recovered\n SUBSYSTEM=memory\n")).toEqual({
      sequence: 1500,
      flag: "-",
      line: "3,1500,12345678,-;Memory failure: 0x5205: recovery action for huge page: Recovered",
      message: "Memory failure: 0x5205: recovery action for huge page: Recovered",
    });
  });

  it("keeps the flag when the header has more fields (caller id)", () => {
    expect(parseKmsgRecord("4,1501,14000001,c,caller=T125;MCE: Killing")?.flag).toBe("c");
  });

  it("refuses what is not a record", () => {
    expect(parseKmsgRecord("Memory failure: 0x1: x")).toBeUndefined();
  });
});

describe("KmsgSource", () => {
  it("yields records in order with their sequence", async () => {
    const { lines, lost, device } = await readAll(["6,1,100,-;one", "EAGAIN", "6,2,200,-;two"]);
    expect(lines.map((l) => [l.sequence, l.text])).toEqual([
      [1, "6,1,100,-;one"],
      [2, "6,2,200,-;two"],
    ]);
    expect(lines.every((l) => l.source === "kmsg")).toBe(true);
    expect(lost).toEqual([]);
    expect(device.closed).toBe(true);
  });

  it("skips what the cursor already handled and counts records overwritten while the agent was away", async () => {
    const { lines, lost } = await readAll(["6,8,1,-;old", "6,10,1,-;handled", "6,14,1,-;new"], 10);
    expect(lines.map((l) => l.sequence)).toEqual([14]);
    expect(lost).toEqual([3]);
  });

  it("counts a sequence gap as lost records", async () => {
    const { lost } = await readAll(["6,1,1,-;a", "6,2,1,-;b", "6,7,1,-;c"]);
    expect(lost).toEqual([4]);
  });

  it("logs EPIPE (records overwritten), counts the jump after it, and carries on", async () => {
    const { lines, lost, log } = await readAll(["6,1,1,-;a", "EPIPE", "6,40,1,-;b"]);
    expect(lines.map((l) => l.sequence)).toEqual([1, 40]);
    expect(lost).toEqual([38]);
    expect(log.entries.some((e) => e.level === "warn" && e.msg.includes("overwritten"))).toBe(true);
  });

  it("joins continuation pieces into one line carrying the last piece's sequence", async () => {
    const { lines } = await readAll(["4,5,1,c;Memory failure: 0x5205: ", "4,6,1,+;recovery action for huge page: ", "4,7,1,+;Recovered", "6,8,1,-;next"]);
    expect(lines.map((l) => [l.sequence, l.text])).toEqual([
      [7, "4,5,1,c;Memory failure: 0x5205: recovery action for huge page: Recovered"],
      [8, "6,8,1,-;next"],
    ]);
  });

  it("ends a continued line when the device has nothing more for now", async () => {
    const { lines } = await readAll(["4,5,1,c;start", "EAGAIN", "6,6,1,-;next"]);
    expect(lines.map((l) => l.text)).toEqual(["4,5,1,c;start", "6,6,1,-;next"]);
  });

  it("rethrows errors other than EAGAIN and EPIPE, closing the device", async () => {
    const device = fakeDevice([]);
    device.read = () => Promise.reject(Object.assign(new Error("denied"), { code: "EACCES" }));
    const source = new KmsgSource({ open: () => Promise.resolve(device), clock: new FakeClock(), log: memoryLogger() });
    await expect(async () => {
      for await (const line of source.lines(new AbortController().signal)) expect(line).toBeUndefined();
    }).rejects.toThrow("denied");
    expect(device.closed).toBe(true);
  });
});
