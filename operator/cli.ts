#!/usr/bin/env node
// mce-operator's command line. `simulate` runs the containment model on a scenario with no cluster;
// with no arguments it simulates a bundled example so a newcomer sees the main job at once.
import { readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { runOperator } from "./main.ts";
import { renderTimeline } from "./simulate/render.ts";
import { parseScenario } from "./simulate/scenario.ts";
import { simulate } from "./simulate/simulate.ts";

const usage = `usage:
  mce-operator run [flags]            (the operator; run --help for its flags)
  mce-operator simulate SCENARIO.yaml [--output text|json]
  mce-operator                        (simulates examples/dpdk-private-2m.yaml)`;

const root = join(dirname(fileURLToPath(import.meta.url)), "..");

export function runSimulate(args: string[]): { code: number; stdout: string; stderr: string } {
  const outputAt = args.findIndex((a) => a === "--output" || a.startsWith("--output="));
  const flag = args[outputAt];
  const output = flag === undefined ? "text" : flag.includes("=") ? flag.slice("--output=".length) : args[outputAt + 1];
  const files = args.filter((a, i) => !a.startsWith("--") && (outputAt < 0 || i !== outputAt + 1));
  const [file] = files;
  if (files.length !== 1 || !file || (output !== "text" && output !== "json"))
    return {
      code: 2,
      stdout: "",
      stderr: `${files.length !== 1 ? "expected one scenario file" : `--output must be text or json, got ${String(output)}`}\n${usage}\n`,
    };
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (e) {
    return { code: 1, stdout: "", stderr: `${file}: cannot read: ${(e as Error).message}\n` };
  }
  try {
    // The whole result is built before anything is printed, so an error never leaves half a timeline.
    const result = simulate(parseScenario(text, file));
    return { code: 0, stdout: output === "json" ? `${JSON.stringify(result, null, 2)}\n` : `${renderTimeline(result, file)}\n`, stderr: "" };
  } catch (e) {
    const message = (e as Error).message;
    return { code: 1, stdout: "", stderr: `${message.startsWith(file) ? message : `${file}: ${message}`}\n` };
  }
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === "run") return runOperator(rest);
  let result;
  if (command === undefined) result = runSimulate([relative(process.cwd(), join(root, "examples", "dpdk-private-2m.yaml"))]);
  else if (command === "simulate") result = runSimulate(rest);
  else if (command === "--help" || command === "-h" || command === "help") result = { code: 0, stdout: `${usage}\n`, stderr: "" };
  else result = { code: 2, stdout: "", stderr: `unknown command ${command}\n${usage}\n` };
  process.stdout.write(result.stdout);
  process.stderr.write(result.stderr);
  return result.code;
}

if (import.meta.main) {
  // A closed pipe (`| head`) ends the output quietly, as other command-line tools do.
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code !== "EPIPE") throw e;
  });
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
