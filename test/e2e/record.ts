// Records a tier's figures on purpose: copies what the last run left in .test-results/figures/ (not
// tracked) into bench/results/ (tracked), where the README's figures come from. Tests never write
// bench/results/. (Figures sit in a folder of their own: every .test-results/*.json is a vitest report
// that test/summary.ts adds up.)
//
//   npm run record -- kernel        .test-results/figures/kernel-conformance-{6.1,6.12}.json -> bench/results/
//   npm run record -- node          .test-results/figures/real-node.json          -> bench/results/
//   npm run record -- kernel node   both
import { copyFileSync, existsSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

const root = new URL("../..", import.meta.url).pathname;

/** The figures each tier writes, by the name `npm run record --` takes. */
export const recorded: Record<string, string[]> = {
  kernel: ["kernel-conformance-6.1.json", "kernel-conformance-6.12.json"],
  node: ["real-node.json"],
};

function main(args: string[]): number {
  if (args.length === 0 || args.some((a) => !(a in recorded))) {
    console.error(`usage: npm run record -- ${Object.keys(recorded).join(" | ")} ...`);
    for (const [tier, files] of Object.entries(recorded)) console.error(`  ${tier}: ${files.map((f) => `.test-results/figures/${f}`).join(", ")}`);
    return 2;
  }
  mkdirSync(join(root, "bench", "results"), { recursive: true });
  let failed = false;
  for (const file of args.flatMap((tier) => recorded[tier] ?? [])) {
    const from = join(root, ".test-results", "figures", file);
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
