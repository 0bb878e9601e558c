// Command-line flags for both programs, read the same way: `--foo-bar VALUE` or `--foo-bar=VALUE` on the
// command line, else MCE_FOO_BAR in the environment, else (for a few) a variable Kubernetes sets, else
// the default; the command line wins. Each flag is defined with its help text beside it, and --help
// lists them all. Durations are Go's (500ms, 30s, 5m, 1h30m) or a plain number of seconds.
import { goDurationMs } from "./duration.ts";

interface Common {
  help: string;
  /** A variable read after MCE_<FLAG>, such as the downward API's NODE_NAME. */
  env?: string;
}

export type FlagSpec =
  | (Common & { type: "string"; default?: string })
  | (Common & { type: "integer"; default: number; min: number; max: number })
  | (Common & { type: "boolean"; default: boolean })
  | (Common & { type: "duration"; default: string; min?: string; max?: string })
  | (Common & { type: "enum"; default: string; values: readonly string[] });

export type FlagSpecs = Record<string, FlagSpec>;

type ValueOf<F> = F extends { type: "integer" | "duration" }
  ? number
  : F extends { type: "boolean" }
    ? boolean
    : F extends { type: "enum"; values: readonly (infer V)[] }
      ? V
      : F extends { default: string }
        ? string
        : string | undefined;

/** The flags' values by flag name; durations in milliseconds. */
export type FlagValues<S extends FlagSpecs> = { -readonly [K in keyof S]: ValueOf<S[K]> };

/** A flag that is unknown, lacks its value or has a bad one; the message names it. */
export class FlagError extends Error {
  override name = "FlagError";
}

/** The environment variable a flag is also read from: --foo-bar → MCE_FOO_BAR. */
export function envName(flag: string): string {
  return `MCE_${flag.toUpperCase().replaceAll("-", "_")}`;
}

/** A Go duration (500ms, 30s, 5m, 1h30m) or a plain number of seconds, in milliseconds; undefined when it is neither. */
export function parseDuration(text: string): number | undefined {
  if (/^\d+(\.\d+)?$/.test(text)) return Number(text) * 1000;
  return goDurationMs(text);
}

/** The flags read from `argv` and `env`, or `help` when --help (or -h) was given. Throws a FlagError. */
export function parseFlags<S extends FlagSpecs>(
  specs: S,
  argv: readonly string[],
  env: Record<string, string | undefined>,
): { help: true } | { help: false; values: FlagValues<S> } {
  const given = new Map<string, string>();
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    if (arg === "--help" || arg === "-h") return { help: true };
    if (!arg.startsWith("--")) throw new FlagError(`unexpected argument ${JSON.stringify(arg)}: every option is a --flag (see --help)`);
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    const spec = specs[name];
    if (spec === undefined) throw new FlagError(`unknown flag --${name} (see --help)`);
    let value = eq < 0 ? undefined : arg.slice(eq + 1);
    if (value === undefined && spec.type === "boolean") value = "true";
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new FlagError(`--${name} needs a value`);
    }
    given.set(name, value);
  }
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(specs)) {
    const fromEnv = [envName(name), ...(spec.env === undefined ? [] : [spec.env])].find((v) => env[v] !== undefined && env[v] !== "");
    const text = given.get(name) ?? (fromEnv === undefined ? undefined : env[fromEnv]);
    const source = given.has(name) ? `--${name}` : (fromEnv ?? `--${name}`);
    values[name] = convert(spec, text, source);
  }
  return { help: false, values: values as FlagValues<S> };
}

function convert(spec: FlagSpec, text: string | undefined, source: string): unknown {
  const bad = (expected: string): FlagError => new FlagError(`${source} ${JSON.stringify(text)}: ${expected}`);
  switch (spec.type) {
    case "string":
      return text ?? spec.default;
    case "integer": {
      if (text === undefined) return spec.default;
      const n = Number(text);
      if (text.trim() === "" || !Number.isInteger(n) || n < spec.min || n > spec.max) throw bad(`not an integer from ${spec.min} to ${spec.max}`);
      return n;
    }
    case "boolean":
      if (text === undefined) return spec.default;
      if (text !== "true" && text !== "false") throw bad("not true or false");
      return text === "true";
    case "enum":
      if (text === undefined) return spec.default;
      if (!spec.values.includes(text)) throw bad(`not one of ${spec.values.join(", ")}`);
      return text;
    case "duration": {
      const ms = parseDuration(text ?? spec.default);
      const range = `${spec.min === undefined ? "" : ` from ${spec.min}`}${spec.max === undefined ? "" : ` to ${spec.max}`}`;
      if (ms === undefined) throw bad(`not a duration such as 500ms, 30s, 5m or 1h30m, or a number of seconds`);
      if ((spec.min !== undefined && ms < (parseDuration(spec.min) ?? 0)) || (spec.max !== undefined && ms > (parseDuration(spec.max) ?? Infinity)))
        throw bad(`not a duration${range}`);
      return ms;
    }
  }
}

/** The --help text: a line per flag with its type, help, default and environment variables. */
export function flagUsage(usage: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const type = spec.type === "enum" ? spec.values.join("|") : spec.type === "integer" ? "int" : spec.type === "boolean" ? "" : spec.type;
    const shown = spec.default === undefined || spec.default === "" ? "" : ` (default ${String(spec.default)})`;
    const env = [envName(name), ...(spec.env === undefined ? [] : [spec.env])].map((v) => `$${v}`).join(", ");
    return [`--${name}${type === "" ? "" : ` ${type}`}`, `${spec.help}${shown} [${env}]`] as const;
  });
  const width = Math.max(...rows.map(([flag]) => flag.length));
  return [
    usage,
    "",
    "Flags (each also read from the environment variables named, the command line first):",
    ...rows.map(([flag, help]) => `  ${flag.padEnd(width)}  ${help}`),
    `  ${"--help".padEnd(width)}  this list`,
  ].join("\n");
}
