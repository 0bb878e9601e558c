import { describe, expect, it } from "vitest";
import { envName, flagUsage, parseDuration, parseFlags, type FlagSpecs } from "./flags.ts";

const flags = {
  "node-name": { type: "string", env: "NODE_NAME", help: "this node" },
  "state-dir": { type: "string", default: "/var/lib/x", help: "state" },
  port: { type: "integer", default: 9464, min: 0, max: 65535, help: "port" },
  "leader-elect": { type: "boolean", default: true, help: "elect" },
  interval: { type: "duration", default: "5s", min: "100ms", max: "1h", help: "how often" },
  "log-level": { type: "enum", default: "info", values: ["debug", "info", "warn", "error"], help: "level" },
} as const satisfies FlagSpecs;

const values = (argv: string[], env: Record<string, string> = {}) => {
  const parsed = parseFlags(flags, argv, env);
  if (parsed.help) throw new Error("unexpected help");
  return parsed.values;
};

describe("flags", () => {
  it("has the defaults", () => {
    expect(values([])).toEqual({
      "node-name": undefined,
      "state-dir": "/var/lib/x",
      port: 9464,
      "leader-elect": true,
      interval: 5000,
      "log-level": "info",
    });
  });

  it("reads every flag from the command line, as --flag value and --flag=value", () => {
    expect(values(["--node-name", "n1", "--state-dir=/s", "--port", "80", "--leader-elect=false", "--interval", "1m30s", "--log-level=debug"])).toEqual({
      "node-name": "n1",
      "state-dir": "/s",
      port: 80,
      "leader-elect": false,
      interval: 90_000,
      "log-level": "debug",
    });
    expect(values(["--leader-elect"])["leader-elect"]).toBe(true);
  });

  it("reads every flag from MCE_ environment variables, then a flag's own variable", () => {
    const env = {
      MCE_NODE_NAME: "from-mce",
      NODE_NAME: "from-downward-api",
      MCE_STATE_DIR: "/e",
      MCE_PORT: "81",
      MCE_LEADER_ELECT: "false",
      MCE_INTERVAL: "250ms",
      MCE_LOG_LEVEL: "warn",
    };
    expect(values([], env)).toEqual({ "node-name": "from-mce", "state-dir": "/e", port: 81, "leader-elect": false, interval: 250, "log-level": "warn" });
    expect(values([], { NODE_NAME: "from-downward-api" })["node-name"]).toBe("from-downward-api");
    // An empty variable counts as unset.
    expect(values([], { MCE_NODE_NAME: "", NODE_NAME: "n" })["node-name"]).toBe("n");
  });

  it("lets the command line win over the environment", () => {
    expect(values(["--port=82", "--node-name=cli"], { MCE_PORT: "81", MCE_NODE_NAME: "env", NODE_NAME: "env2" })).toMatchObject({
      port: 82,
      "node-name": "cli",
    });
  });

  it("says help for --help and -h, before looking at anything else", () => {
    expect(parseFlags(flags, ["--port=x", "--help"], {})).toEqual({ help: true });
    expect(parseFlags(flags, ["-h"], {})).toEqual({ help: true });
  });

  it("lists every flag in --help with its type, default and environment variables", () => {
    const usage = flagUsage("usage: x [flags]", flags);
    for (const name of Object.keys(flags)) expect(usage).toMatch(new RegExp(`^  --${name}\\b.*\\[\\$${envName(name)}`, "m"));
    expect(usage).toContain("--node-name string");
    expect(usage).toContain("[$MCE_NODE_NAME, $NODE_NAME]");
    expect(usage).toContain("--interval duration");
    expect(usage).toContain("how often (default 5s)");
    expect(usage).toContain("--log-level debug|info|warn|error");
    expect(usage).toMatch(/^ {2}--help\b/m);
  });

  it.each([
    [["--no-such-flag"], {}, "unknown flag --no-such-flag (see --help)"],
    [["--no-such=1"], {}, "unknown flag --no-such (see --help)"],
    [["positional"], {}, 'unexpected argument "positional": every option is a --flag (see --help)'],
    [["--port"], {}, "--port needs a value"],
    [["--port=http"], {}, '--port "http": not an integer from 0 to 65535'],
    [["--port=70000"], {}, '--port "70000": not an integer from 0 to 65535'],
    [["--leader-elect=yes"], {}, '--leader-elect "yes": not true or false'],
    [["--log-level=loud"], {}, '--log-level "loud": not one of debug, info, warn, error'],
    [["--interval=soon"], {}, '--interval "soon": not a duration such as 500ms, 30s, 5m or 1h30m, or a number of seconds'],
    [["--interval=5x"], {}, '--interval "5x": not a duration such as 500ms, 30s, 5m or 1h30m, or a number of seconds'],
    [["--interval=10ms"], {}, '--interval "10ms": not a duration from 100ms to 1h'],
    [[], { MCE_INTERVAL: "soon" }, 'MCE_INTERVAL "soon": not a duration such as 500ms, 30s, 5m or 1h30m, or a number of seconds'],
  ])("refuses %j %j with a message naming the flag", (argv, env, message) => {
    expect(() => parseFlags(flags, argv, env)).toThrow(message);
  });

  it("takes Go durations and plain numbers of seconds alike", () => {
    expect(["500ms", "30s", "5m", "1h30m", "1.5s", "2h0m0s", "5", "0.5", "0"].map(parseDuration)).toEqual([
      500, 30_000, 300_000, 5_400_000, 1500, 7_200_000, 5000, 500, 0,
    ]);
    for (const bad of ["", "s", "5 s", "-5s", "5sm", "1d", "m5"]) expect(parseDuration(bad)).toBeUndefined();
  });

  it("names the environment variable of a flag", () => {
    expect(envName("quarantine-priority-class")).toBe("MCE_QUARANTINE_PRIORITY_CLASS");
  });
});
