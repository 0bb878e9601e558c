import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { parseReplay, ReplaySource } from "./replay.ts";
import type { KernelLine } from "./source.ts";

function file(text: string): string {
  const path = join(mkdtempSync(join(tmpdir(), "replay-")), "log.txt");
  writeFileSync(path, text);
  return path;
}

describe("parseReplay", () => {
  it("reads offset lines, numbering them by line", () => {
    expect(parseReplay("# demo\n0 first\n\n1.5 Memory failure: 0x5205: recovery action for huge page: Recovered\n", "x")).toEqual([
      { offset: 0, sequence: 2, text: "first" },
      { offset: 1.5, sequence: 4, text: "Memory failure: 0x5205: recovery action for huge page: Recovered" },
    ]);
  });

  it("reads kmsg records, timed from the first record and skipping dictionary lines", () => {
    expect(parseReplay("3,1500,12000000,-;a\n SUBSYSTEM=x\n4,1501,14500000,-;b\n", "x")).toEqual([
      { offset: 0, sequence: 1500, text: "3,1500,12000000,-;a" },
      { offset: 2.5, sequence: 1501, text: "4,1501,14500000,-;b" },
    ]);
  });

  it("reads a log quoted from mail: quote markers and indentation go, elisions are skipped", () => {
    const quoted = [
      "> 0 Memory failure: 0x5205: Sending SIGBUS to hwp:462 due to hardware memory corruption",
      ">> [...]",
      "> > 0.5 Memory failure: 0x5205: recovery action for huge page: Recovered",
      "    ...",
      "  >3,1500,12000000,-;Memory failure: 0x5206: recovery action for free huge page: Recovered",
    ].join("\n");
    expect(parseReplay(quoted, "x").map((l) => [l.sequence, l.text])).toEqual([
      [1, "Memory failure: 0x5205: Sending SIGBUS to hwp:462 due to hardware memory corruption"],
      [3, "Memory failure: 0x5205: recovery action for huge page: Recovered"],
      [1500, "3,1500,12000000,-;Memory failure: 0x5206: recovery action for free huge page: Recovered"],
    ]);
  });

  it("names the file and line of a line in neither form", () => {
    expect(() => parseReplay("0 ok\nMemory failure without a time\n", "demo.log")).toThrow(/^demo\.log:2: expected/);
  });

  it("reads the project's kmsg sample", () => {
    expect(parseReplay("6,512,412345,-;mce: CPU0: Thermal monitoring enabled (TM1)\n", "x")[0]?.sequence).toBe(512);
  });
});

describe("ReplaySource", () => {
  it("plays lines at their offsets", async () => {
    const clock = new FakeClock();
    const source = new ReplaySource({ file: file("0 a\n2 b\n"), clock });
    const seen: KernelLine[] = [];
    const done = (async () => {
      for await (const line of source.lines(new AbortController().signal)) seen.push(line);
    })();
    await clock.advance(0);
    expect(seen.map((l) => l.text)).toEqual(["a"]);
    await clock.advance(1999);
    expect(seen).toHaveLength(1);
    await clock.advance(1);
    await done;
    const start = seen[0]?.at ?? 0;
    expect(seen.map((l) => [l.text, l.sequence, l.at - start])).toEqual([
      ["a", 1, 0],
      ["b", 2, 2000],
    ]);
  });

  it("resumes after the cursor", async () => {
    const clock = new FakeClock();
    clock.sleep = () => Promise.resolve();
    const source = new ReplaySource({ file: file("0 a\n0 b\n0 c\n"), clock, after: 2 });
    const seen: string[] = [];
    for await (const line of source.lines(new AbortController().signal)) seen.push(line.text);
    expect(seen).toEqual(["c"]);
  });

  it("stops when aborted", async () => {
    const clock = new FakeClock();
    const source = new ReplaySource({ file: file("0 a\n60 b\n"), clock });
    const abort = new AbortController();
    const seen: string[] = [];
    const done = (async () => {
      for await (const line of source.lines(abort.signal)) seen.push(line.text);
    })();
    await clock.advance(0);
    abort.abort();
    await done;
    expect(seen).toEqual(["a"]);
  });

  it("fails at construction on a bad file", () => {
    expect(() => new ReplaySource({ file: file("nonsense\n"), clock: new FakeClock() })).toThrow(/:1: expected/);
  });
});
