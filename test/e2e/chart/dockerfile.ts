// Checks a Dockerfile without a Docker engine: every stage is replayed on a model of its filesystem,
// fed by the real build context (the repository filtered by .dockerignore) and the real TypeScript
// build (tsc -p tsconfig.build.json into a temporary directory). A COPY whose source is not there, a
// RUN the model does not know, an entrypoint that is not in the final image, or a module the entrypoint
// imports (transitively) that the final image lacks, is a problem, reported with the line it came from.
import { execFileSync } from "node:child_process";
import { builtinModules } from "node:module";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, posix, relative } from "node:path";

export const repoRoot = join(dirname(new URL(import.meta.url).pathname), "..", "..", "..");

/** What backs one file of a stage: a file on this machine, or a package npm would have installed. */
type Backing = { kind: "file"; path: string } | { kind: "package"; name: string };
type StageFs = Map<string, Backing>;

interface Stage {
  name: string;
  base: string;
  fs: StageFs;
  workdir: string;
  entrypoint?: string[];
  cmd?: string[];
}

export interface DockerfileCheck {
  problems: string[];
  /** The final stage's files (absolute paths). */
  files: string[];
  entrypoint: string[];
  cmd: string[];
  /** Compiled modules the entrypoint loads, as final-image paths. */
  modules: string[];
}

/** .dockerignore as Docker reads it: patterns in order, the last match wins, `!` re-includes. */
export function dockerignore(text: string): (path: string) => boolean {
  const rules = text
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line !== "" && !line.startsWith("#"))
    .map((line) => {
      const negate = line.startsWith("!");
      const pattern = posix.normalize((negate ? line.slice(1) : line).replace(/^\/+/, "")).replace(/\/+$/, "");
      let source = "";
      for (let i = 0; i < pattern.length; i++) {
        const ch = pattern.charAt(i);
        if (pattern.startsWith("**/", i)) {
          source += "(?:.*/)?";
          i += 2;
        } else if (pattern.startsWith("**", i)) {
          source += ".*";
          i += 1;
        } else if (ch === "*") source += "[^/]*";
        else if (ch === "?") source += "[^/]";
        else source += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
      }
      return { negate, regex: new RegExp(`^${source}$`) };
    });
  return (path: string): boolean => {
    // A pattern that matches a parent directory matches everything in it.
    const prefixes = path.split("/").map((_, i, parts) => parts.slice(0, i + 1).join("/"));
    let excluded = false;
    for (const rule of rules) if (prefixes.some((p) => rule.regex.test(p))) excluded = !rule.negate;
    return excluded;
  };
}

function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    return entry.isDirectory() ? walk(path) : [path];
  });
}

/** The build context: repository files .dockerignore lets through, by path relative to the root. */
export function buildContext(root = repoRoot): Map<string, string> {
  const ignored = dockerignore(existsSync(join(root, ".dockerignore")) ? readFileSync(join(root, ".dockerignore"), "utf8") : "");
  const files = new Map<string, string>();
  for (const top of readdirSync(root)) {
    if (top === "node_modules" || top === ".git" || top === "dist") continue;
    const path = join(root, top);
    for (const file of statSync(path).isDirectory() ? walk(path) : [path]) {
      const rel = relative(root, file);
      if (!ignored(rel)) files.set(rel, file);
    }
  }
  return files;
}

/**
 * Runs the real build (tsc -p tsconfig.build.json) into a fresh directory inside node_modules/.cache,
 * so the output can also be run with the repository's node_modules. Returns the output root (its
 * dist/ holds the build) and a cleanup.
 */
export function realBuild(root = repoRoot): { out: string; cleanup: () => void } {
  const out = join(root, "node_modules", ".cache", `mce-image-check-${process.pid}-${Date.now()}`);
  mkdirSync(out, { recursive: true });
  execFileSync(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", join(root, "tsconfig.build.json"), "--outDir", join(out, "dist")], { cwd: root, stdio: "pipe" });
  // The compiled files are ES modules, as package.json's "type" says for the image.
  writeFileSync(join(out, "package.json"), JSON.stringify({ type: "module" }));
  return { out, cleanup: () => { rmSync(out, { recursive: true, force: true }); } };
}

/** The final stage's ENTRYPOINT, in exec form: what the image runs. */
export function imageEntrypoint(dockerfilePath: string): string[] {
  let entrypoint: string[] = [];
  for (const { op, args } of instructions(readFileSync(dockerfilePath, "utf8"))) {
    if (op === "FROM") entrypoint = [];
    if (op === "ENTRYPOINT") entrypoint = execForm(args) ?? [];
  }
  return entrypoint;
}

function instructions(text: string): { line: number; op: string; args: string }[] {
  const result: { line: number; op: string; args: string }[] = [];
  let pending = "";
  let start = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.trim();
    if (pending === "" && (line === "" || line.startsWith("#"))) return;
    if (pending === "") start = i + 1;
    if (line.endsWith("\\")) {
      pending += `${line.slice(0, -1)} `;
      return;
    }
    const full = (pending + line).trim();
    pending = "";
    const space = full.search(/\s/);
    result.push({ line: start, op: full.slice(0, space < 0 ? undefined : space).toUpperCase(), args: space < 0 ? "" : full.slice(space + 1).trim() });
  });
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

const packageName = (specifier: string): string => specifier.split("/").slice(0, specifier.startsWith("@") ? 2 : 1).join("/");

/** Relative and bare specifiers a compiled ES module imports (static, re-exports and literal dynamic). */
export function importsOf(source: string): string[] {
  const found = new Set<string>();
  for (const m of source.matchAll(/(?:^|[\s;}])(?:import|export)\s[^"'`;]*?\sfrom\s*["']([^"']+)["']|(?:^|[\s;}])import\s*["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)/gm)) {
    const spec = m[1] ?? m[2] ?? m[3];
    if (spec !== undefined) found.add(spec);
  }
  return [...found];
}

/** Replays `dockerfilePath` on the build context and the real build output rooted at `buildOut`. */
export function checkDockerfile(dockerfilePath: string, buildOut: string, root = repoRoot): DockerfileCheck {
  const problems: string[] = [];
  const context = buildContext(root);
  const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { type?: string; dependencies?: Record<string, string>; devDependencies?: Record<string, string> };
  const stages: Stage[] = [];
  const where = (line: number): string => `${relative(root, dockerfilePath)}:${line}`;
  const resolve = (stage: Stage, path: string): string => posix.resolve(stage.workdir, path);

  for (const { line, op, args } of instructions(readFileSync(dockerfilePath, "utf8"))) {
    if (op === "FROM") {
      const [base = "", as, name] = args.split(/\s+/);
      const from = stages.find((s) => s.name === base);
      if (!from && !/^node:24([.-]|$)/.test(base)) problems.push(`${where(line)}: base image ${base} is not Node 24 (node:24-...)`);
      stages.push({ name: as?.toUpperCase() === "AS" && name ? name : String(stages.length), base, fs: new Map(from?.fs ?? []), workdir: from?.workdir ?? "/" });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) {
      if (op !== "ARG") problems.push(`${where(line)}: ${op} before FROM`);
      continue;
    }
    switch (op) {
      case "WORKDIR":
        stage.workdir = resolve(stage, args);
        break;
      case "COPY":
      case "ADD": {
        const words = args.split(/\s+/);
        const flags = words.filter((w) => w.startsWith("--"));
        const paths = words.filter((w) => !w.startsWith("--"));
        const dest = paths.pop();
        if (dest === undefined || paths.length === 0) {
          problems.push(`${where(line)}: ${op} needs a source and a destination`);
          break;
        }
        const fromFlag = flags.find((f) => f.startsWith("--from="))?.slice("--from=".length);
        const destination = resolve(stage, dest);
        const intoDir = dest.endsWith("/") || paths.length > 1;
        for (const src of paths) {
          if (/[*?[]/.test(src)) {
            problems.push(`${where(line)}: ${src}: wildcards are not modelled; name the paths`);
            continue;
          }
          // Files the source names: one file, or everything under a directory.
          let matched: [string, Backing][];
          let isDir = false;
          if (fromFlag !== undefined) {
            const source = stages.find((s) => s.name === fromFlag);
            if (!source) {
              problems.push(`${where(line)}: --from=${fromFlag}: no such stage`);
              continue;
            }
            const abs = posix.resolve("/", src);
            const file = source.fs.get(abs);
            if (file) matched = [[abs, file]];
            else {
              isDir = true;
              const prefix = `${abs.replace(/\/$/, "")}/`;
              matched = [...source.fs].filter(([p]) => p.startsWith(prefix)).map(([p, b]) => [p.slice(prefix.length), b]);
            }
          } else {
            const rel = posix.normalize(src).replace(/^\.\//, "").replace(/\/$/, "");
            const file = context.get(rel);
            if (file !== undefined) matched = [[rel, { kind: "file", path: file }]];
            else {
              isDir = true;
              const prefix = rel === "." ? "" : `${rel}/`;
              matched = [...context].filter(([p]) => p.startsWith(prefix)).map(([p, f]) => [p.slice(prefix.length), { kind: "file", path: f }]);
            }
          }
          if (matched.length === 0) {
            problems.push(`${where(line)}: ${op} ${src}: ${fromFlag === undefined ? "not in the build context (missing, or excluded by .dockerignore)" : `not in stage ${fromFlag}`}`);
            continue;
          }
          for (const [path, backing] of matched) {
            const target = isDir ? posix.join(destination, path) : intoDir ? posix.join(destination, basename(path)) : destination;
            stage.fs.set(target, backing);
          }
        }
        break;
      }
      case "RUN": {
        const npmCi = /^npm ci(\s|$)/.exec(args);
        const tsc = /^npx tsc -p (\S+)$/.exec(args);
        if (npmCi) {
          for (const file of ["package.json", "package-lock.json"])
            if (!stage.fs.has(resolve(stage, file))) problems.push(`${where(line)}: npm ci needs ${file} in ${stage.workdir}`);
          const names = [...Object.keys(pkg.dependencies ?? {}), ...(args.includes("--omit=dev") ? [] : Object.keys(pkg.devDependencies ?? {}))];
          for (const name of names) stage.fs.set(resolve(stage, `node_modules/${name}/package.json`), { kind: "package", name });
        } else if (tsc?.[1] !== undefined) {
          const config = tsc[1];
          for (const file of [config, "tsconfig.json"])
            if (!stage.fs.has(resolve(stage, file))) problems.push(`${where(line)}: tsc needs ${file} in ${stage.workdir}`);
          if (!stage.fs.has(resolve(stage, "node_modules/typescript/package.json"))) problems.push(`${where(line)}: tsc needs typescript installed (npm ci with dev dependencies)`);
          // The real build's output for every source this stage has.
          const prefix = stage.workdir === "/" ? "/" : `${stage.workdir}/`;
          for (const [path, backing] of [...stage.fs]) {
            if (!path.startsWith(prefix) || !path.endsWith(".ts") || path.endsWith(".d.ts") || backing.kind !== "file") continue;
            const rel = path.slice(prefix.length).replace(/\.ts$/, ".js");
            const built = join(buildOut, "dist", rel);
            if (existsSync(built)) stage.fs.set(`${prefix}dist/${rel}`, { kind: "file", path: built });
          }
        } else problems.push(`${where(line)}: RUN ${args}: not modelled by this check; teach test/e2e/chart/dockerfile.ts what it does`);
        break;
      }
      case "ENTRYPOINT":
      case "CMD": {
        const form = execForm(args);
        if (!form) problems.push(`${where(line)}: ${op} must use the exec form (a JSON array), so signals reach node`);
        else if (op === "ENTRYPOINT") stage.entrypoint = form;
        else stage.cmd = form;
        break;
      }
      case "ENV":
      case "USER":
      case "EXPOSE":
      case "LABEL":
      case "ARG":
        break;
      default:
        problems.push(`${where(line)}: ${op}: not modelled by this check`);
    }
  }

  const final = stages.at(-1);
  if (!final) return { problems: [...problems, "no FROM"], files: [], entrypoint: [], cmd: [], modules: [] };
  const command = [...(final.entrypoint ?? []), ...(final.cmd ?? [])];
  const modules: string[] = [];
  // node, its own flags, then the script.
  const [program, ...rest] = command;
  const script = rest.find((arg) => !arg.startsWith("-"));
  if (program !== "node" || script === undefined) problems.push(`the image must start \`node [flags] <script>\`, not ${JSON.stringify(command)}`);
  else {
    const entry = resolve(final, script);
    if (!final.fs.has(entry)) problems.push(`entrypoint ${script}: ${entry} is not in the final image`);
    // The compiled files are ES modules only under a package.json with "type": "module".
    let dir = posix.dirname(entry);
    for (;;) {
      const manifest = final.fs.get(posix.join(dir, "package.json"));
      if (manifest?.kind === "file") {
        if ((JSON.parse(readFileSync(manifest.path, "utf8")) as { type?: string }).type !== "module") problems.push(`${posix.join(dir, "package.json")} does not say "type": "module"`);
        break;
      }
      if (dir === "/") {
        problems.push(`no package.json above ${entry}: node would load the compiled ES modules as CommonJS`);
        break;
      }
      dir = posix.dirname(dir);
    }
    const builtins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));
    const queue = [entry];
    const seen = new Set<string>();
    while (queue.length > 0) {
      const path = queue.shift() ?? "";
      if (seen.has(path)) continue;
      seen.add(path);
      const backing = final.fs.get(path);
      if (backing?.kind !== "file") continue;
      modules.push(path);
      for (const spec of importsOf(readFileSync(backing.path, "utf8"))) {
        if (spec.startsWith(".")) {
          const target = posix.resolve(posix.dirname(path), spec);
          if (!final.fs.has(target)) problems.push(`${path} imports ${spec}: ${target} is not in the final image`);
          else queue.push(target);
        } else if (!builtins.has(spec) && !builtins.has(spec.split("/")[0] ?? "")) {
          const name = packageName(spec);
          if (!final.fs.has(posix.join(final.workdir, "node_modules", name, "package.json")))
            problems.push(`${path} imports ${spec}: package ${name} is not installed in the final image${pkg.devDependencies?.[name] !== undefined ? " (it is a devDependency)" : ""}`);
        }
      }
    }
  }
  return { problems, files: [...final.fs.keys()].sort(), entrypoint: final.entrypoint ?? [], cmd: final.cmd ?? [], modules };
}
