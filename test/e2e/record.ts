// Records a tier's figures on purpose: copies what the last run left in .test-results/ (not tracked) into
// bench/results/ (tracked), where the README's figures come from. Tests never write bench/results/.
//
//   npm run record -- kernel        .test-results/kernel-conformance.json -> bench/results/
//   npm run record -- node          .test-results/real-node.json          -> bench/results/
//   npm run record -- kernel node   both
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;

/** The figures each tier writes, by the name `npm run record --` takes. */
export const recorded: Record<string, string[]> = {
  kernel: ["kernel-conformance.json"],
  node: ["real-node.json"],
};

function main(args: string[]): number {
  if (args.length === 0 || args.some((a) => !(a in recorded))) {
    console.error(`usage: npm run record -- ${Object.keys(recorded).join(" | ")} ...`);
    for (const [tier, files] of Object.entries(recorded)) console.error(`  ${tier}: .test-results/${files.join(", .test-results/")}`);
    return 2;
  }
  mkdirSync(join(root, "bench", "results"), { recursive: true });
  let failed = false;
  for (const file of args.flatMap((tier) => recorded[tier] ?? [])) {
    const from = join(root, ".test-results", file);
    if (!existsSync(from)) {
      console.error(`${from} is missing: run the tier first (see docs/developing.md)`);
      failed = true;
      continue;
    }
    copyFileSync(from, join(root, "bench", "results", file));
    console.log(`recorded bench/results/${file} (from the run of ${statSync(from).mtime.toISOString()}); commit it with the figures it changes`);
  }
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
