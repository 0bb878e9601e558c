// The project as its images hold it: the TypeScript build (tsc -p tsconfig.build.json, as the
// Dockerfiles' build stage runs it) into a scratch directory, and what a Dockerfile's final stage runs.
// The images themselves are built by a real engine (test/e2e/node/images.sh) and checked in
// test/e2e/node/images.test.ts.
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";

export const repoRoot = join(dirname(new URL(import.meta.url).pathname), "..", "..");

/**
 * Runs the real build (tsc -p tsconfig.build.json) into a fresh directory inside node_modules/.cache,
 * so the output can also be run with the repository's node_modules. Returns the output root (its
 * dist/ holds the build) and a cleanup.
 */
export function realBuild(root = repoRoot): { out: string; cleanup: () => void } {
  const out = join(root, "node_modules", ".cache", `mce-build-${process.pid}-${Date.now()}`);
  mkdirSync(out, { recursive: true });
  execFileSync(
    process.execPath,
    [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(root, "tsconfig.build.json"), "--outDir", join(out, "dist")],
    { cwd: root, stdio: "pipe" },
  );
  // The compiled files are ES modules, as package.json's "type" says for the image.
  writeFileSync(join(out, "package.json"), JSON.stringify({ type: "module" }));
  return {
    out,
    cleanup: () => {
      rmSync(out, { recursive: true, force: true });
    },
  };
}

/** The final stage's ENTRYPOINT, in exec form: what the image runs. */
export function imageEntrypoint(dockerfilePath: string): string[] {
  return finalStage(dockerfilePath).entrypoint;
}

/** The final stage's USER (as written, `uid:gid`), or undefined when it sets none. */
export function imageUser(dockerfilePath: string): string | undefined {
  return finalStage(dockerfilePath).user;
}

function finalStage(dockerfilePath: string): { entrypoint: string[]; user?: string } {
  let stage: { entrypoint: string[]; user?: string } = { entrypoint: [] };
  for (const { op, args } of instructions(readFileSync(dockerfilePath, "utf8"))) {
    if (op === "FROM") stage = { entrypoint: [] };
    if (op === "ENTRYPOINT") stage.entrypoint = execForm(args) ?? [];
    if (op === "USER") stage.user = args;
  }
  return stage;
}

/** Instructions with their arguments, continuation lines joined, comments and blank lines skipped. */
function instructions(text: string): { op: string; args: string }[] {
  const result: { op: string; args: string }[] = [];
  let pending = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) continue;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      continue;
    }
    const full = (pending + line).trim();
    pending = "";
    const space = full.search(/\s/);
    result.push({ op: full.slice(0, space < 0 ? undefined : space).toUpperCase(), args: space < 0 ? "" : full.slice(space + 1).trim() });
  }
  return result;
}

function execForm(args: string): string[] | undefined {
  try {
    const parsed: unknown = JSON.parse(args);
    return Array.isArray(parsed) && parsed.every((a) => typeof a === "string") ? parsed : undefined;
  } catch {
    return undefined;
  }
}
