// A Logger that keeps its entries in memory, for tests.
import type { LogFields, Logger, LogLevel } from "../log.ts";

export interface LogEntry extends LogFields {
  level: LogLevel;
  msg: string;
}

export function memoryLogger(entries: LogEntry[] = [], base: LogFields = {}): Logger & { entries: LogEntry[] } {
  const keep =
    (level: LogLevel) =>
    (msg: string, fields: LogFields = {}): void => {
      entries.push({ ...base, ...fields, level, msg });
    };
  return {
    entries,
    debug: keep("debug"),
    info: keep("info"),
    warn: keep("warn"),
    error: keep("error"),
    child: (fields) => memoryLogger(entries, { ...base, ...fields }),
  };
}
