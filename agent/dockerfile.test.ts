// agent/Dockerfile, checked without a Docker engine (see test/e2e/chart/dockerfile.ts): every path it
// names exists, the final image holds the entrypoint and every module it loads, production
// dependencies only, and the built entrypoint starts.
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkDockerfile, imageEntrypoint, realBuild, repoRoot } from "../test/e2e/chart/dockerfile.ts";

describe("agent/Dockerfile", () => {
  let build: ReturnType<typeof realBuild>;
  beforeAll(() => {
    build = realBuild();
  }, 120_000);
  afterAll(() => {
    build.cleanup();
  });

  it("names only paths that exist, and the final image holds the entrypoint and everything it imports", () => {
    const check = checkDockerfile(join(repoRoot, "agent", "Dockerfile"), build.out);
    expect(check.problems).toEqual([]);
    expect(check.entrypoint).toEqual(["node", "--lite-mode", "--max-semi-space-size=1", "dist/agent/main.js"]);
    expect(check.modules).toEqual(expect.arrayContaining(["/app/dist/agent/main.js", "/app/dist/agent/kube.js", "/app/dist/kernel/lines.js"]));
    // The agent and the operator are two programs: nothing of the operator is in the agent's image.
    expect(check.files.filter((f) => f.startsWith("/app/dist/operator/"))).toEqual([]);
    for (const dev of ["typescript", "vitest", "node", "eslint"]) expect(check.files).not.toContain(`/app/node_modules/${dev}/package.json`);
    expect(check.files.filter((f) => f.endsWith(".ts") || f.includes(".test."))).toEqual([]);
  });

  it("its entrypoint, as built and with its node flags, loads every module and checks its flags", () => {
    const [, ...args] = imageEntrypoint(join(repoRoot, "agent", "Dockerfile"));
    const result = spawnSync(process.execPath, args.map((a) => (a.endsWith(".js") ? join(build.out, a) : a)), { cwd: repoRoot, encoding: "utf8", env: { PATH: process.env.PATH ?? "" } });
    expect(result.stderr).toMatch(/no node name: set NODE_NAME/);
    expect(result.status).toBe(2);
  });
});
