// What every kernel-line source gives the agent, and the non-blocking device reads two of them share.
import { constants } from "node:fs";
import { open } from "node:fs/promises";

export type SourceName = "kmsg" | "tracefs" | "replay";

export interface KernelLine {
  source: SourceName;
  /** Position in the source that survives a restart (kmsg sequence, replay line); absent for trace_pipe, which forgets what it gave. */
  sequence?: number | undefined;
  /** The kernel's text, prefixes kept: the parser strips them. */
  text: string;
  /** When the agent read it, ms since the epoch. */
  at: number;
}

export interface LineSource {
  readonly name: SourceName;
  /** Yields lines until `signal` aborts or the source ends. */
  lines(signal: AbortSignal): AsyncIterable<KernelLine>;
}

/** A character device read without blocking: a read rejects with EAGAIN when nothing is there yet. */
export interface Device {
  read(buffer: Buffer): Promise<number>;
  close(): Promise<void>;
}

export async function openDevice(path: string): Promise<Device> {
  // O_NONBLOCK: a blocking read would hold a libuv thread until the kernel writes, and block shutdown.
  const handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  return {
    read: async (buffer) => (await handle.read(buffer, 0, buffer.length, null)).bytesRead,
    close: () => handle.close(),
  };
}

export function errnoCode(error: unknown): string | undefined {
  return error instanceof Error && "code" in error && typeof error.code === "string" ? error.code : undefined;
}
