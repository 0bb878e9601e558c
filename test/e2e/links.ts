// Every link in the repository's Markdown must stay inside the repository and resolve: a relative link
// to a file or directory that exists (and, for a heading anchor, a heading that exists), never an
// http(s) address or a path that climbs out of the repository. Checked by docs-links.test.ts in the e2e
// tier; `npm exec -- node test/e2e/links.ts` prints the broken ones and exits 1 if there are any.
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";

export const repoRoot = resolve(new URL("../..", import.meta.url).pathname);

const skipped = new Set(["node_modules", ".git", "dist", ".test-results", ".cache"]);

/** Every *.md file under `root`, relative to it, outside dependencies, builds and results. */
export function markdownFiles(root = repoRoot, dir = root): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (skipped.has(entry.name)) continue;
    const path = join(dir, entry.name);
    if (entry.isDirectory()) found.push(...markdownFiles(root, path));
    else if (entry.isFile() && entry.name.endsWith(".md")) found.push(relative(root, path));
  }
  return found.sort();
}

/** Fenced code blocks blanked (their lines kept, so line numbers hold). */
function withoutFences(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, (block) => block.replace(/[^\n]/g, " "));
}

/** The text a reader sees as prose: no fenced code, and inline code spans reduced to a placeholder. */
function prose(markdown: string): string {
  return withoutFences(markdown).replace(/`[^`\n]*`/g, "code");
}

/** GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens. */
export function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

function anchorsIn(file: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  for (const m of withoutFences(readFileSync(file, "utf8")).matchAll(/^#{1,6}\s+(.+?)\s*#*$/gm)) {
    const base = anchorOf((m[1] ?? "").replaceAll("`", ""));
    // GitHub numbers repeated headings: name, name-1, name-2...
    const n = counts.get(base) ?? 0;
    counts.set(base, n + 1);
    anchors.add(n === 0 ? base : `${base}-${n}`);
  }
  return anchors;
}

export interface BrokenLink {
  file: string;
  line: number;
  target: string;
  why: string;
}

/** The links of one Markdown file (relative to `root`) that leave the repository or resolve to nothing. */
export function brokenLinksIn(file: string, root = repoRoot): BrokenLink[] {
  const text = prose(readFileSync(join(root, file), "utf8"));
  const broken: BrokenLink[] = [];
  const lineOf = (index: number): number => text.slice(0, index).split("\n").length;
  const targets: { target: string; index: number }[] = [];
  // Inline links and images [text](target "title"), reference definitions [label]: target, autolinks <http://...>.
  for (const m of text.matchAll(/\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)/g)) targets.push({ target: m[1] ?? "", index: m.index });
  for (const m of text.matchAll(/^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+"[^"]*")?\s*$/gm)) targets.push({ target: m[1] ?? "", index: m.index });
  // Bare addresses, which GitHub turns into links too.
  for (const m of text.matchAll(/<?\b(https?:\/\/[^\s)>]+)/g)) targets.push({ target: m[1] ?? "", index: m.index });
  for (const { target, index } of targets) {
    const report = (why: string): void => {
      if (!broken.some((b) => b.line === lineOf(index) && b.target === target)) broken.push({ file, line: lineOf(index), target, why });
    };
    if (target === "") {
      report("empty link");
      continue;
    }
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) {
      report("points outside the repository");
      continue;
    }
    const [pathPart = "", anchor] = target.split("#", 2);
    const resolved = pathPart === "" ? join(root, file) : resolve(root, dirname(file), decodeURIComponent(pathPart));
    if (resolved !== root && !resolved.startsWith(root + sep)) {
      report("climbs out of the repository");
      continue;
    }
    if (!existsSync(resolved)) {
      report(`no such file: ${relative(root, resolved)}`);
      continue;
    }
    if (anchor !== undefined && anchor !== "" && statSync(resolved).isFile() && resolved.endsWith(".md") && !anchorsIn(resolved).has(anchor))
      report(`no heading for #${anchor} in ${relative(root, resolved)}`);
  }
  return broken;
}

export function brokenLinks(root = repoRoot): BrokenLink[] {
  return markdownFiles(root).flatMap((file) => brokenLinksIn(file, root));
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === new URL(import.meta.url).pathname) {
  const broken = brokenLinks();
  for (const b of broken) console.log(`${b.file}:${b.line}: ${b.target} (${b.why})`);
  console.log(`${markdownFiles().length} Markdown files, ${broken.length} broken link(s)`);
  process.exitCode = broken.length === 0 ? 0 : 1;
}
