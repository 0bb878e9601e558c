// operator/Dockerfile, checked without a Docker engine: every COPY source exists in the build context
// or the stage it names, the entrypoint and every module it loads are in the final image, only
// production dependencies are installed, and the real build output runs.
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { checkDockerfile, realBuild, repoRoot } from "../test/e2e/chart/dockerfile.ts";

describe("operator/Dockerfile", () => {
  let build: ReturnType<typeof realBuild>;
  beforeAll(() => {
    build = realBuild();
  }, 120_000);
  afterAll(() => {
    build.cleanup();
  });

  it("names only paths that exist, and the final image holds the entrypoint and everything it imports", () => {
    const check = checkDockerfile(join(repoRoot, "operator", "Dockerfile"), build.out);
    expect(check.problems).toEqual([]);
    expect(check.entrypoint).toEqual(["node", "dist/operator/cli.js"]);
    expect(check.cmd).toEqual(["run"]);
    expect(check.modules).toContain("/app/dist/operator/main.js");
    expect(check.modules).toContain("/app/dist/crds/generated.js");
    // Production dependencies only: no TypeScript, no test runner, no pinned node binary.
    for (const dev of ["typescript", "vitest", "node", "eslint"]) expect(check.files).not.toContain(`/app/node_modules/${dev}/package.json`);
    expect(check.files).toContain("/app/node_modules/@kubernetes/client-node/package.json");
    // No test files and no sources in the runtime image.
    expect(check.files.filter((f) => f.endsWith(".ts") || f.includes(".test."))).toEqual([]);
    expect(check.files).toContain("/app/examples/dpdk-private-2m.yaml");
  });

  it("its entrypoint, as built, runs: `simulate` on the bundled example", () => {
    const stdout = execFileSync(process.execPath, [join(build.out, "dist", "operator", "cli.js"), "simulate", "examples/dpdk-private-2m.yaml"], { cwd: repoRoot, encoding: "utf8" });
    expect(stdout).toMatch(/Evict nfv\/upf-dpdk-0/);
    const help = execFileSync(process.execPath, [join(build.out, "dist", "operator", "cli.js"), "run", "--help"], { cwd: repoRoot, encoding: "utf8" });
    expect(help).toMatch(/--quarantine-priority-class/);
  });
});
