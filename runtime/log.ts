// Structured JSON logs, one object per line: {"time","level","msg",...fields}, the same shape in both
// programs, so a log pipeline can filter by level and by the object a line names.
import { systemClock, type Clock } from "./clock.ts";

export type LogLevel = "debug" | "info" | "warn" | "error";
export const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warn", "error"];

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  /** A logger that adds `fields` to every line. */
  child(fields: LogFields): Logger;
}

export interface JsonLoggerOptions {
  /** Fields on every line (component, node). */
  fields?: LogFields;
  write?: (line: string) => void;
  clock?: Clock;
}

// Error objects stringify to {}; a log line should say what went wrong.
function errorsAsText(_key: string, value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

/** Writes lines at or above `level`, to standard output unless told otherwise. */
export function jsonLogger(level: LogLevel, options: JsonLoggerOptions = {}): Logger {
  const { fields: base = {}, write = (line: string) => process.stdout.write(line), clock = systemClock } = options;
  const least = LOG_LEVELS.indexOf(level);
  const emit =
    (at: LogLevel) =>
    (msg: string, fields: LogFields = {}): void => {
      if (LOG_LEVELS.indexOf(at) < least) return;
      write(`${JSON.stringify({ time: new Date(clock.now()).toISOString(), level: at, msg, ...base, ...fields }, errorsAsText)}\n`);
    };
  return {
    debug: emit("debug"),
    info: emit("info"),
    warn: emit("warn"),
    error: emit("error"),
    child: (fields) => jsonLogger(level, { ...options, fields: { ...base, ...fields } }),
  };
}

export const silentLogger: Logger = jsonLogger("error", { write: () => undefined });
