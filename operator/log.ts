// Structured JSON logs, one object per line, with levels; every log about an object names it.
export type Level = "debug" | "info" | "warn" | "error";
const rank: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export type Fields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  error(msg: string, fields?: Fields): void;
  child(fields: Fields): Logger;
}

const errorText = (v: unknown): unknown => (v instanceof Error ? v.message : v);

export function jsonLogger(level: Level = "info", base: Fields = {}, write: (line: string) => void = (l) => process.stdout.write(l)): Logger {
  const emit = (at: Level, msg: string, fields: Fields = {}): void => {
    if (rank[at] < rank[level]) return;
    const entry: Fields = { ts: new Date().toISOString(), level: at, msg, ...base };
    for (const [k, v] of Object.entries(fields)) entry[k] = errorText(v);
    write(`${JSON.stringify(entry)}\n`);
  };
  return {
    debug: (m, f) => {
      emit("debug", m, f);
    },
    info: (m, f) => {
      emit("info", m, f);
    },
    warn: (m, f) => {
      emit("warn", m, f);
    },
    error: (m, f) => {
      emit("error", m, f);
    },
    child: (fields) => jsonLogger(level, { ...base, ...fields }, write),
  };
}

export const silentLogger: Logger = jsonLogger("error", {}, () => undefined);
