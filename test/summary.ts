// Prints the one line CI reads, "N passed, N failed", from the JSON reports every vitest tier wrote
// under .test-results/. A failing step that runs no tests (lint, type-check) counts as one failure.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

interface VitestReport {
  numPassedTests: number;
  numFailedTests: number;
}

const dir = ".test-results";
const reports = existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith(".json")) : [];
let passed = 0;
let failed = 0;
for (const file of reports) {
  const report = JSON.parse(readFileSync(join(dir, file), "utf8")) as VitestReport;
  passed += report.numPassedTests;
  failed += report.numFailedTests;
}
const exitCode = Number(process.argv[2] ?? "0");
if (exitCode !== 0 && failed === 0) failed = 1;
console.log(`${passed} passed, ${failed} failed`);
