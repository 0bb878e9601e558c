// The images test/e2e/node/images.sh built with a real Docker engine, checked with that engine: each
// entrypoint runs, ENTRYPOINT and USER are what the Dockerfiles say, the running uid is the one the
// chart expects, and only production files are inside (listed with docker create + docker export). The
// sizes are printed. Reads ${XDG_CACHE_HOME:-~/.cache}/mce-operator/images/images.json.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { imageEntrypoint, imageUser, repoRoot } from "../build.ts";

interface Image {
  ref: string;
  id: string;
  tar: string;
  bytes: number;
}
type Name = "operator" | "agent" | "pause" | "workload";

const imagesJson = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mce-operator", "images", "images.json");
const MiB = 2 ** 20;

function docker(args: string[], timeout = 120_000): { code: number | null; stdout: string; stderr: string } {
  const result = spawnSync("docker", args, { encoding: "utf8", timeout, maxBuffer: 64 * MiB });
  if (result.error) throw result.error;
  return { code: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** `docker run --rm --network none ...args`: no container here has any network. */
function run(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  return docker(["run", "--rm", "--network", "none", ...args]);
}

interface Config {
  Entrypoint: string[] | null;
  Cmd: string[] | null;
  User: string;
  WorkingDir: string;
  Env: string[] | null;
  ExposedPorts?: Record<string, object>;
}

function config(ref: string): Config {
  return JSON.parse(docker(["image", "inspect", "-f", "{{json .Config}}", ref]).stdout) as Config;
}

/** Every path in the image's filesystem, without a leading slash (directories end with one). */
function filesOf(ref: string): string[] {
  const created = docker(["create", ref]);
  expect(created.code, created.stderr).toBe(0);
  const id = created.stdout.trim();
  try {
    return execFileSync("sh", ["-c", `docker export ${id} | tar -t`], { encoding: "utf8", maxBuffer: 64 * MiB })
      .split("\n")
      .filter((p) => p !== "");
  } finally {
    docker(["rm", id]);
  }
}

/** The installed packages' directories (`node_modules/a`, `node_modules/a/node_modules/@s/b`), from their package.json. */
function packagesIn(files: string[]): string[] {
  return files.flatMap((f) => /^app\/((?:node_modules\/(?:@[^/]+\/)?[^/]+\/)+)package\.json$/.exec(f)?.[1]?.replace(/\/$/, "") ?? []);
}

/** Filled in beforeAll from images.json. */
let images = {} as Record<Name, Image>;
const files = new Map<Name, string[]>();
const lock = JSON.parse(readFileSync(join(repoRoot, "package-lock.json"), "utf8")) as { packages: Record<string, { dev?: boolean }> };
const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { dependencies: Record<string, string> };

beforeAll(() => {
  if (!existsSync(imagesJson)) throw new Error(`${imagesJson} is missing: run bash test/e2e/node/images.sh`);
  images = JSON.parse(readFileSync(imagesJson, "utf8")) as Record<Name, Image>;
  for (const name of ["operator", "agent"] as const) files.set(name, filesOf(images[name].ref));
}, 300_000);

afterAll(() => {
  if (Object.keys(images).length === 0) return;
  const base = Number(docker(["image", "inspect", "-f", "{{.Size}}", "node:24-bookworm-slim"]).stdout.trim());
  const rows = (Object.entries(images) as [Name, Image][]).map(
    ([name, image]) => `  ${name.padEnd(9)} ${(image.bytes / MiB).toFixed(1).padStart(6)} MiB  ${image.ref}`,
  );
  console.log(`image sizes (docker image inspect .Size; node:24-bookworm-slim ${(base / MiB).toFixed(1)} MiB):\n${rows.join("\n")}`);
});

describe("images.json", () => {
  it("names the four images as the engine has them, each saved to its tar", () => {
    expect(Object.keys(images).sort()).toEqual(["agent", "operator", "pause", "workload"]);
    for (const image of Object.values(images)) {
      const inspect = docker(["image", "inspect", "-f", "{{.Id}} {{.Size}}", image.ref]);
      expect(inspect.code, `${image.ref}: ${inspect.stderr}`).toBe(0);
      expect(inspect.stdout.trim()).toBe(`${image.id} ${String(image.bytes)}`);
      expect(statSync(image.tar).size).toBeGreaterThan(0);
    }
    expect(images.pause.ref).toBe("registry.k8s.io/pause:3.10");
    expect(images.operator.ref).toMatch(/^mce-operator\.local\/mce-operator:[0-9a-f]{16}$/);
    expect(images.agent.ref).toMatch(/^mce-operator\.local\/mce-agent:[0-9a-f]{16}$/);
    expect(images.workload.ref).toMatch(/^mce-operator\.local\/hwp-workload:[0-9a-f]{16}$/);
  });
});

describe("the operator image", () => {
  const dockerfile = join(repoRoot, "operator", "Dockerfile");

  it("has the Dockerfile's ENTRYPOINT and USER, and runs as uid 65532", () => {
    const c = config(images.operator.ref);
    expect(c.Entrypoint).toEqual(imageEntrypoint(dockerfile));
    expect(c.Entrypoint).toEqual(["node", "dist/operator/cli.js"]);
    expect(c.Cmd).toEqual(["run"]);
    expect(c.User).toBe(imageUser(dockerfile));
    expect(c.WorkingDir).toBe("/app");
    expect(c.Env).toContain("NODE_ENV=production");
    expect(Object.keys(c.ExposedPorts ?? {})).toEqual(["8080/tcp"]);
    const ids = run("--entrypoint", "node", images.operator.ref, "-p", "`${process.getuid()}:${process.getgid()}`");
    expect(ids.stdout.trim()).toBe("65532:65532");
  });

  it("runs its entrypoint: `simulate` on the bundled example prints the timeline, `run --help` the flags", () => {
    const simulate = run(images.operator.ref, "simulate", "examples/dpdk-private-2m.yaml");
    expect(simulate.stderr).toBe("");
    expect(simulate.code).toBe(0);
    expect(simulate.stdout).toMatch(/^\+0s {2}edge-worker-1 {2}pfn 0x5203/m);
    expect(simulate.stdout).toMatch(/Evict nfv\/upf-dpdk-0/);
    const help = run(images.operator.ref, "run", "--help");
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/--quarantine-priority-class/);
  });
});

describe("the agent image", () => {
  const dockerfile = join(repoRoot, "agent", "Dockerfile");

  it("has the Dockerfile's ENTRYPOINT and USER, and runs as root", () => {
    const c = config(images.agent.ref);
    expect(c.Entrypoint).toEqual(imageEntrypoint(dockerfile));
    expect(c.Entrypoint).toEqual(["node", "--lite-mode", "--max-semi-space-size=1", "dist/agent/main.js"]);
    expect(c.User).toBe(imageUser(dockerfile));
    expect(c.User).toBe("0:0");
    expect(Object.keys(c.ExposedPorts ?? {})).toEqual(["9464/tcp"]);
    const ids = run("--entrypoint", "node", images.agent.ref, "-p", "`${process.getuid()}:${process.getgid()}`");
    expect(ids.stdout.trim()).toBe("0:0");
  });

  it("runs its entrypoint, with its node flags: without NODE_NAME it exits 2 and says so", () => {
    const result = run(images.agent.ref);
    expect(result.stderr).toMatch(/no node name: set NODE_NAME/);
    expect(result.code).toBe(2);
  });
});

describe.each(["operator", "agent"] as const)("the %s image's files", (name) => {
  const other = name === "operator" ? "agent" : "operator";

  it("are the compiled program and its production dependencies only", () => {
    const all = files.get(name) ?? [];
    const app = all.filter((f) => f.startsWith("app/") && !f.startsWith("app/node_modules/"));
    expect(app).toContain(`app/dist/${name}/${name === "operator" ? "cli" : "main"}.js`);
    expect(app).toContain("app/dist/crds/generated.js");
    expect(app).toContain("app/dist/kernel/lines.js");
    expect(app).toContain("app/package.json");
    // No sources, no tests, no test doubles or fixtures, no build tools.
    expect(app.filter((f) => f.endsWith(".ts") || f.includes(".test."))).toEqual([]);
    expect(app.filter((f) => /^app\/dist\/(agent\/fake-host|operator\/testing\/|runtime\/testing\/|operator\/model\/fixtures|crds\/gen\.)/.test(f))).toEqual(
      [],
    );
    // The two programs are apart: nothing of the other in this image.
    expect(app.filter((f) => f.startsWith(`app/dist/${other}/`))).toEqual([]);
    expect(app.filter((f) => f.startsWith("app/examples/")).length > 0).toBe(name === "operator");
  });

  it("hold no development dependency in /app/node_modules", () => {
    const installed = packagesIn(files.get(name) ?? []);
    for (const dependency of Object.keys(pkg.dependencies)) expect(installed).toContain(`node_modules/${dependency}`);
    // The toolchain, the test runner and the pinned Node binary are not there...
    for (const dev of ["typescript", "vitest", "eslint", "node", "fast-check", "typescript-eslint", "@eslint/js"])
      expect(installed).not.toContain(`node_modules/${dev}`);
    // ...and every installed package is one the lock file installs for production (a devDependency that
    // a production dependency also needs, such as @types/node, is not marked dev there).
    expect(installed.filter((p) => lock.packages[p] === undefined || lock.packages[p].dev === true)).toEqual([]);
  });
});

describe("registry.k8s.io/pause:3.10", () => {
  it("is a static /pause FROM scratch that exits 0 on SIGTERM", () => {
    const c = config(images.pause.ref);
    expect(c.Entrypoint).toEqual(["/pause"]);
    expect(c.User).toBe("65535:65535");
    const started = docker(["run", "-d", "--network", "none", images.pause.ref]);
    expect(started.code, started.stderr).toBe(0);
    const id = started.stdout.trim();
    try {
      expect(docker(["stop", "-t", "10", id]).code).toBe(0);
      // Exit code 0 is pause's own SIGTERM handler: had it ignored the signal, docker would have killed it
      // with SIGKILL after the 10 s grace period, and the exit code would be 137.
      expect(docker(["inspect", "-f", "{{.State.ExitCode}}", id]).stdout.trim()).toBe("0");
    } finally {
      docker(["rm", "-f", id]);
    }
  });

  it("reaps the zombies of a pod's processes, as PID 1 of their PID namespace", () => {
    const started = docker(["run", "-d", "--network", "none", images.pause.ref]);
    const id = started.stdout.trim();
    try {
      // A grandchild orphaned in the pause container's PID namespace is reparented to pause, which must
      // reap it: afterwards no zombie is left.
      const result = docker([
        "run",
        "--rm",
        "--network",
        "none",
        "--pid",
        `container:${id}`,
        "--entrypoint",
        "/bin/sh",
        images.workload.ref,
        "-c",
        "(sleep 0.2 &); sleep 1; ps -o pid,ppid,stat,comm",
      ]);
      expect(result.code, result.stderr).toBe(0);
      expect(result.stdout).toMatch(/^\s*1\s+0\s+\S+\s+pause$/m);
      expect(result.stdout.split("\n").filter((line) => /\sZ\S*\s/.test(line))).toEqual([]);
    } finally {
      docker(["rm", "-f", id]);
    }
  });
});

describe("the hwp workload image", () => {
  it("runs the static /hwp (no arguments: exit 2) and has a static busybox shell", () => {
    expect(config(images.workload.ref).Entrypoint).toEqual(["/hwp"]);
    expect(run(images.workload.ref).code).toBe(2);
    const shell = run("--entrypoint", "/bin/sh", images.workload.ref, "-c", "echo $0 ok; ls /");
    expect(shell.code, shell.stderr).toBe(0);
    expect(shell.stdout).toMatch(/^\/bin\/sh ok$/m);
    expect(shell.stdout.split(/\s+/)).toEqual(expect.arrayContaining(["bin", "hwp"]));
  });
});
