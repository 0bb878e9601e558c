// What loading each program's code costs in memory before it does anything, on Node 24: the RSS and heap
// of a fresh process once it has imported the operator's module graph (operator/main.ts, without running
// it), its REST client alone, the agent's graph, and each of them with @kubernetes/client-node imported
// too, which is what the operator carried before its REST client moved to runtime/http.ts. Each figure
// is the median of BENCH_RUNS processes (default 5), measured after a full GC. Two ways of loading:
// the compiled JavaScript as the images run it (tsc into a temporary directory), and the TypeScript
// sources as `npm start` and the tests run them (Node's type stripping costs some memory of its own).
// `--baseline REV` (or BENCH_BASELINE) measures the operator at another commit too, compiled, from
// `git archive` (the working tree and the index are left alone). Saves bench/results/client-memory.json.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";

const MiB = 2 ** 20;
const root = resolve(import.meta.dirname, "..");
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const { values } = parseArgs({ options: { baseline: { type: "string" } } });
const baseline = values.baseline ?? process.env.BENCH_BASELINE;
const git = (...args: string[]): string => execFileSync("git", args, { cwd: root, encoding: "utf8", env: { ...process.env, GIT_OPTIONAL_LOCKS: "0" } }).trim();
// The commit, and `-dirty` when the measured code differs from it (the figures are of the tree as it is).
const commit = ((): string => {
  const head = git("rev-parse", "--short", "HEAD");
  return git("status", "--porcelain", "--", "operator", "agent", "runtime", "crds", "kernel", "package.json") === "" ? head : `${head}-dirty`;
})();

/** The modules agent/main.ts imports (main.ts itself runs the agent as it loads, so it is left out). */
function agentModules(sourceRoot: string, tree: string, extension: string): string[] {
  const main = readFileSync(join(sourceRoot, "agent/main.ts"), "utf8");
  const relative = [...main.matchAll(/^import [^;]*? from "(\.{1,2}\/[^"]+)\.ts";$/gm)].map((m) => m[1] ?? "");
  return relative.map((path) => join(tree, "agent", `${path}${extension}`));
}

interface Memory {
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
}

/** One fresh process: imports `modules` in order, collects garbage, reports process.memoryUsage(). */
function measureOnce(cwd: string, modules: string[]): Memory {
  const script = [
    `for (const m of ${JSON.stringify(modules)}) await import(m.startsWith("/") ? "file://" + m : m);`,
    "globalThis.gc(); await new Promise((r) => setTimeout(r, 100)); globalThis.gc();",
    "const m = process.memoryUsage();",
    "process.stdout.write(JSON.stringify({ rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal, external: m.external }));",
  ].join("\n");
  const child = spawnSync(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], { cwd, encoding: "utf8" });
  if (child.status !== 0) throw new Error(`importing ${modules.join(", ")} failed: ${child.stderr}`);
  const m = JSON.parse(child.stdout) as { rss: number; heapUsed: number; heapTotal: number; external: number };
  const mib = (bytes: number): number => Number((bytes / MiB).toFixed(1));
  return { rssMiB: mib(m.rss), heapUsedMiB: mib(m.heapUsed), heapTotalMiB: mib(m.heapTotal), externalMiB: mib(m.external) };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : Number((((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2).toFixed(1));
}

function measure(cwd: string, modules: string[]): Memory {
  const runs = Array.from({ length: RUNS }, () => measureOnce(cwd, modules));
  return {
    rssMiB: median(runs.map((r) => r.rssMiB)),
    heapUsedMiB: median(runs.map((r) => r.heapUsedMiB)),
    heapTotalMiB: median(runs.map((r) => r.heapTotalMiB)),
    externalMiB: median(runs.map((r) => r.externalMiB)),
  };
}

const work = mkdtempSync(join(tmpdir(), "mce-client-memory-"));
process.once("exit", () => {
  rmSync(work, { recursive: true, force: true });
});

/** Compiles a source tree (tsconfig.build.json) into a directory that resolves the repository's node_modules. */
function compile(sourceRoot: string, name: string): string {
  const out = join(work, name);
  execFileSync(join(root, "node_modules/.bin/tsc"), ["-p", join(sourceRoot, "tsconfig.build.json"), "--outDir", out, "--sourceMap", "false"], {
    cwd: sourceRoot,
    stdio: "inherit",
  });
  writeFileSync(join(out, "package.json"), JSON.stringify({ type: "module" }));
  symlinkSync(join(root, "node_modules"), join(out, "node_modules"));
  return out;
}

/** The source tree of another commit, from `git archive`, with the repository's node_modules. */
function checkout(rev: string): string {
  const dir = join(work, "baseline-src");
  mkdirSync(dir);
  const tar = execFileSync(
    "git",
    ["archive", "--format=tar", rev, "--", "operator", "agent", "crds", "kernel", "runtime", "tsconfig.json", "tsconfig.build.json"],
    {
      cwd: root,
      maxBuffer: 256 * MiB,
    },
  );
  execFileSync("tar", ["-x", "-C", dir], { input: tar });
  writeFileSync(join(dir, "package.json"), readFileSync(join(root, "package.json")));
  symlinkSync(join(root, "node_modules"), join(dir, "node_modules"));
  return dir;
}

const CLIENT_NODE = "@kubernetes/client-node";

function cases(sourceRoot: string, tree: string, extension: string): Record<string, string[]> {
  const at = (path: string): string => join(tree, `${path}${extension}`);
  const agent = agentModules(sourceRoot, tree, extension);
  return {
    "node alone": [],
    [CLIENT_NODE]: [CLIENT_NODE],
    "operator/kube/rest": [at("operator/kube/rest")],
    "operator/main": [at("operator/main")],
    "operator/main + client-node": [at("operator/main"), CLIENT_NODE],
    agent: agent,
    "agent + client-node": [...agent, CLIENT_NODE],
  };
}

type Table = Record<string, Memory>;

/** `tree` holds the modules to import (compiled from `sourceRoot`, or `sourceRoot` itself). */
function run(label: string, sourceRoot: string, tree: string, extension: string, only?: string[]): Table {
  const table: Table = {};
  for (const [name, modules] of Object.entries(cases(sourceRoot, tree, extension))) {
    if (only !== undefined && !only.includes(name)) continue;
    table[name] = measure(tree, modules);
    const m = table[name];
    console.log(`${label.padEnd(9)} ${name.padEnd(28)} RSS ${m.rssMiB.toFixed(1).padStart(6)} MiB   heap used ${m.heapUsedMiB.toFixed(1).padStart(5)} MiB`);
  }
  return table;
}

console.log(`Node ${process.version}, median of ${RUNS} processes each, after a full GC`);
const compiled = run("compiled", root, compile(root, "compiled"), ".js");
const source = run("source", root, root, ".ts");
let baselineTable: Table | undefined;
if (baseline !== undefined) {
  const rev = git("rev-parse", "--short", baseline);
  const sourceRoot = checkout(baseline);
  baselineTable = run(`@${rev}`, sourceRoot, compile(sourceRoot, "baseline"), ".js", ["operator/kube/rest", "operator/main", "agent"]);
}

const delta = (table: Table, a: string, b: string, key: keyof Memory): number => Number(((table[a]?.[key] ?? 0) - (table[b]?.[key] ?? 0)).toFixed(1));
const savings = (table: Table): Record<string, number> => ({
  clientNodeRssMiB: delta(table, "operator/main + client-node", "operator/main", "rssMiB"),
  clientNodeHeapUsedMiB: delta(table, "operator/main + client-node", "operator/main", "heapUsedMiB"),
  agentClientNodeRssMiB: delta(table, "agent + client-node", "agent", "rssMiB"),
});
const result = {
  date: new Date().toISOString(),
  commit,
  node: process.version,
  cpu: cpus()[0]?.model ?? "unknown",
  cores: availableParallelism(),
  runs: RUNS,
  compiled,
  source,
  clientNodeCost: { compiled: savings(compiled), source: savings(source) },
  ...(baselineTable === undefined
    ? {}
    : {
        baseline: {
          commit: git("rev-parse", "--short", baseline ?? "HEAD"),
          compiled: baselineTable,
          operatorRssSavedMiB: Number(((baselineTable["operator/main"]?.rssMiB ?? 0) - (compiled["operator/main"]?.rssMiB ?? 0)).toFixed(1)),
          operatorHeapUsedSavedMiB: Number(((baselineTable["operator/main"]?.heapUsedMiB ?? 0) - (compiled["operator/main"]?.heapUsedMiB ?? 0)).toFixed(1)),
        },
      }),
};
console.log(
  `@kubernetes/client-node on top of operator/main: +${result.clientNodeCost.compiled.clientNodeRssMiB} MiB RSS, ` +
    `+${result.clientNodeCost.compiled.clientNodeHeapUsedMiB} MiB heap (compiled); +${result.clientNodeCost.source.clientNodeRssMiB} MiB RSS (source)`,
);
if (result.baseline !== undefined)
  console.log(
    `operator/main at ${result.baseline.commit} → this tree (compiled): ${result.baseline.operatorRssSavedMiB} MiB RSS and ` +
      `${result.baseline.operatorHeapUsedSavedMiB} MiB heap saved`,
  );
mkdirSync(join(root, "bench/results"), { recursive: true });
writeFileSync(join(root, "bench/results/client-memory.json"), `${JSON.stringify(result, null, 2)}\n`);
console.log("saved bench/results/client-memory.json");
