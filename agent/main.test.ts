// The agent's command line on bad input: one clear line naming the file and line, exit 2, no stack.
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const main = new URL("./main.ts", import.meta.url).pathname;

function run(replayText: string | Buffer): { status: number | null; stderr: string; stdout: string } {
  const dir = mkdtempSync(join(tmpdir(), "mce-agent-main-"));
  mkdirSync(join(dir, "host", "proc", "sys", "kernel", "random"), { recursive: true });
  writeFileSync(join(dir, "host", "proc", "sys", "kernel", "random", "boot_id"), "0b5e7c6a-1111-2222-3333-444455556666\n");
  writeFileSync(join(dir, "log.replay"), replayText);
  const args = [
    main,
    "--node-name",
    "n1",
    "--host-root",
    join(dir, "host"),
    "--state-dir",
    join(dir, "state"),
    "--replay",
    join(dir, "log.replay"),
    "--kubeconfig",
    join(dir, "kubeconfig"),
  ];
  const result = spawnSync(process.execPath, args, { encoding: "utf8", timeout: 30_000, env: { PATH: process.env.PATH ?? "" } });
  return { status: result.status, stderr: result.stderr, stdout: result.stdout };
}

describe("mce-agent --replay with a malformed file", () => {
  it.each([
    ["a line without an offset", "Memory failure: 0x5205: recovery action for huge page: Recovered\n", 1],
    ["a negative offset", "0 ok line\n-1 Memory failure: 0x5205: recovery action for huge page: Recovered\n", 2],
    ["an offset in exponent form", "1e9 Memory failure: 0x5205: recovery action for huge page: Recovered\n", 1],
    ["binary", Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x00, 0x01, 0xff, 0xfe, 0x0a]), 1],
  ])("%s: exit 2 with one line naming file:line", (_what, text, line) => {
    const { status, stderr, stdout } = run(text);
    expect(status).toBe(2);
    expect(stdout).toBe("");
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stderr).toMatch(new RegExp(`^mce-agent: --replay: .*log\\.replay:${line}: expected '<offset-seconds> <kernel line>'`));
  });
});
