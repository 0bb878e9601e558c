// The scenario x kernel matrix of the kernel tier, from each kernel's figures: for every scenario, on
// every kernel, whether the kernel did what the model predicted under the profile the operator chose,
// and where a kernel behaves otherwise than the first, what it did. Printed after the tier's runs
// (run.sh) and pasted into README.md beside it.
//
//   node test/e2e/kernel/matrix.ts 6.1 6.12 [--dir bench/results]
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describeOutcome, type Row } from "./conformance.ts";

export interface KernelFigures {
  kernel: { package: string; version: string; release: string };
  scenarios: Row[];
}

export const figuresFile = (series: string): string => `kernel-conformance-${series}.json`;

export function renderMatrix(runs: readonly KernelFigures[]): string {
  const head = `| scenario | ${runs.map((r) => r.kernel.release).join(" | ")} |`;
  const lines = [head, `|---|${runs.map(() => "---|").join("")}`];
  const scenarios = [...new Set(runs.flatMap((r) => r.scenarios.map((s) => s.scenario)))];
  const first = runs[0];
  for (const scenario of scenarios) {
    const base = first?.scenarios.find((s) => s.scenario === scenario);
    const cells = runs.map((run) => {
      const row = run.scenarios.find((s) => s.scenario === scenario);
      if (row === undefined) return "not run";
      const verdict = row.agreed ? `agreed (${row.profile})` : `**disagreed** (${row.profile}): predicted ${describeOutcome(row.predicted)}`;
      // Where this kernel did otherwise than the first, say what it did.
      const differs = run !== first && base !== undefined && describeOutcome(base.observed) !== describeOutcome(row.observed);
      return differs ? `${verdict}; differs: ${describeOutcome(row.observed)}` : verdict;
    });
    lines.push(`| ${scenario} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

function main(args: string[]): number {
  const at = args.indexOf("--dir");
  const dir = at >= 0 ? (args[at + 1] ?? "") : join(".test-results", "figures");
  const series = at >= 0 ? args.filter((_, i) => i !== at && i !== at + 1) : args;
  const runs: KernelFigures[] = [];
  for (const s of series) {
    const file = join(dir, figuresFile(s));
    if (!existsSync(file)) {
      console.error(`${file} is missing: the tier did not finish on ${s}`);
      continue;
    }
    runs.push(JSON.parse(readFileSync(file, "utf8")) as KernelFigures);
  }
  if (runs.length === 0) return 1;
  const agreed = runs.map((r) => `${r.kernel.release}: ${r.scenarios.filter((s) => s.agreed).length} of ${r.scenarios.length} agreed`);
  console.log(`\nKernel tier, scenario x kernel (${agreed.join("; ")})\n\n${renderMatrix(runs)}\n`);
  return runs.length === series.length ? 0 : 1;
}

if (import.meta.url === `file://${process.argv[1] ?? ""}`) process.exitCode = main(process.argv.slice(2));
