import { chmodSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { HostFiles } from "./host.ts";
import type { Device } from "./source.ts";
import { enableTraceEvents, TracefsSource } from "./tracefs.ts";

function tracefs(events: string[]): HostFiles {
  const root = mkdtempSync(join(tmpdir(), "tracefs-"));
  const dir = join(root, "sys/kernel/tracing");
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, "trace_pipe"), "");
  for (const event of events) {
    mkdirSync(join(dir, "events", event), { recursive: true });
    writeFileSync(join(dir, "events", event, "enable"), "0\n");
  }
  return new HostFiles(root);
}

describe("enableTraceEvents", () => {
  it("enables the events tracefs has", () => {
    const host = tracefs(["ras/memory_failure_event"]);
    expect(enableTraceEvents(host)).toMatchObject({ available: true, events: ["ras/memory_failure_event"] });
    expect(readFileSync(host.path("sys/kernel/tracing/events/ras/memory_failure_event/enable"), "utf8")).toBe("1");
  });

  it("enables EDAC's mc_event beside the error events, for the DIMM of a page", () => {
    const host = tracefs(["ras/memory_failure_event", "mce/mce_record", "ras/mc_event"]);
    expect(enableTraceEvents(host)).toMatchObject({ available: true, events: ["ras/memory_failure_event", "mce/mce_record", "ras/mc_event"] });
    expect(readFileSync(host.path("sys/kernel/tracing/events/ras/mc_event/enable"), "utf8")).toBe("1");
  });

  it("does not read tracefs for mc_event alone: it names DIMMs, no error", () => {
    const host = tracefs(["ras/mc_event"]);
    expect(enableTraceEvents(host)).toEqual({ available: false, reason: "tracefs has neither ras/memory_failure_event nor mce/mce_record" });
    expect(readFileSync(host.path("sys/kernel/tracing/events/ras/mc_event/enable"), "utf8")).toBe("0\n");
  });

  it("says why when tracefs is missing or lacks the events", () => {
    expect(enableTraceEvents(new HostFiles(mkdtempSync(join(tmpdir(), "none-"))))).toEqual({
      available: false,
      reason: "tracefs is not mounted under the host root",
    });
    expect(enableTraceEvents(tracefs([]))).toMatchObject({ available: false });
  });

  it.skipIf(process.getuid?.() === 0)("says so and carries on without permission", () => {
    const host = tracefs(["mce/mce_record"]);
    chmodSync(host.path("sys/kernel/tracing/events/mce/mce_record/enable"), 0o444);
    expect(enableTraceEvents(host)).toMatchObject({ available: false, reason: expect.stringContaining("no permission") as unknown });
  });
});

describe("TracefsSource", () => {
  it("splits the stream into lines, across reads, skipping the header", async () => {
    const chunks = ["# tracer: nop\n  kworker/0:2-53  [000] .....   123.46: memory_failure_event: pfn 0x5203: recovery ", "action for huge page: Recovered\n"];
    const device: Device = {
      read: (buffer) => {
        const chunk = chunks.shift();
        return chunk === undefined ? Promise.resolve(0) : Promise.resolve(buffer.write(chunk));
      },
      close: () => Promise.resolve(),
    };
    const source = new TracefsSource({ open: () => Promise.resolve(device), clock: new FakeClock() });
    const lines: string[] = [];
    for await (const line of source.lines(new AbortController().signal)) lines.push(line.text);
    expect(lines).toEqual(["  kworker/0:2-53  [000] .....   123.46: memory_failure_event: pfn 0x5203: recovery action for huge page: Recovered"]);
  });
});
