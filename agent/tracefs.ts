// The kernel's trace events for memory errors, ras/memory_failure_event and mce/mce_record, read from
// trace_pipe where tracefs is mounted. They carry the verdict even when printk is rate-limited or
// filtered by loglevel. trace_pipe consumes what it gives: another reader of it takes lines from us.
// EDAC's ras/mc_event, where a memory-controller driver is loaded, names the DIMM of an error's address.
import { writeFileSync } from "node:fs";
import type { Clock } from "../runtime/clock.ts";
import type { HostFiles } from "./host.ts";
import { errnoCode, type Device, type KernelLine, type LineSource } from "./source.ts";

const MOUNTS = ["sys/kernel/tracing", "sys/kernel/debug/tracing"];
const EVENTS = ["events/ras/memory_failure_event", "events/mce/mce_record", "events/ras/mc_event"];

export type TracefsProbe = { available: true; dir: string; events: string[] } | { available: false; reason: string };

/** Finds tracefs and enables the events it has; says why when it cannot. */
export function enableTraceEvents(host: HostFiles): TracefsProbe {
  const mount = MOUNTS.find((dir) => host.exists(dir, "trace_pipe"));
  if (mount === undefined) return { available: false, reason: "tracefs is not mounted under the host root" };
  const events = EVENTS.filter((event) => host.exists(mount, event, "enable"));
  // mc_event alone only attributes pages to DIMMs: without an error event there is nothing to read.
  if (!events.some((event) => event !== "events/ras/mc_event"))
    return { available: false, reason: "tracefs has neither ras/memory_failure_event nor mce/mce_record" };
  try {
    for (const event of events) writeFileSync(host.path(mount, event, "enable"), "1");
  } catch (error) {
    const code = errnoCode(error);
    if (code === "EACCES" || code === "EPERM" || code === "EROFS")
      return { available: false, reason: `no permission to enable trace events (${code}); the agent needs write access to tracefs` };
    throw error;
  }
  return { available: true, dir: host.path(mount), events: events.map((event) => event.replace("events/", "")) };
}

export interface TracefsSourceOptions {
  open: () => Promise<Device>;
  clock: Clock;
  pollMs?: number;
}

export class TracefsSource implements LineSource {
  readonly name = "tracefs";
  readonly #options: TracefsSourceOptions;

  constructor(options: TracefsSourceOptions) {
    this.#options = options;
  }

  async *lines(signal: AbortSignal): AsyncGenerator<KernelLine> {
    const { clock, pollMs = 200 } = this.#options;
    const device = await this.#options.open();
    const buffer = Buffer.alloc(65536);
    // trace_pipe is a byte stream: a read may end mid-line.
    let partial = "";
    try {
      while (!signal.aborted) {
        let bytes: number;
        try {
          bytes = await device.read(buffer);
        } catch (error) {
          if (errnoCode(error) !== "EAGAIN") throw error;
          await clock.sleep(pollMs, signal);
          continue;
        }
        if (bytes === 0) break;
        const lines = (partial + buffer.toString("utf8", 0, bytes)).split("\n");
        partial = lines.pop() ?? "";
        for (const text of lines) if (text !== "" && !text.startsWith("#")) yield { source: "tracefs", text, at: clock.now() };
      }
    } finally {
      await device.close();
    }
  }
}
