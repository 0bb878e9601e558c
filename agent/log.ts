// Structured JSON logs, one object per line, so a log pipeline can filter by level and object.
export type LogLevel = "debug" | "info" | "warn" | "error";

const RANK: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

export function isLogLevel(value: string): value is LogLevel {
  return value in RANK;
}

/** Writes `{"time","level","msg",...fields}` lines at or above `level`. */
export function jsonLogger(level: LogLevel, write: (line: string) => void = (line) => process.stdout.write(line)): Logger {
  const emit =
    (at: LogLevel) =>
    (message: string, fields: LogFields = {}): void => {
      if (RANK[at] < RANK[level]) return;
      write(`${JSON.stringify({ time: new Date().toISOString(), level: at, msg: message, ...fields }, errorsAsText)}\n`);
    };
  return { debug: emit("debug"), info: emit("info"), warn: emit("warn"), error: emit("error") };
}

// Error objects stringify to {}; a log line should say what went wrong.
function errorsAsText(_key: string, value: unknown): unknown {
  return value instanceof Error ? value.message : value;
}

export interface LogEntry extends LogFields {
  level: LogLevel;
  msg: string;
}

/** Keeps entries in memory, for tests. */
export function memoryLogger(): Logger & { entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const keep =
    (level: LogLevel) =>
    (msg: string, fields: LogFields = {}): void => {
      entries.push({ ...fields, level, msg });
    };
  return { entries, debug: keep("debug"), info: keep("info"), warn: keep("warn"), error: keep("error") };
}
