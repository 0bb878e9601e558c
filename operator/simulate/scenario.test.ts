// Scenarios a careless user could write: each is refused with file:line:path and exit 1, nothing printed.
import { spawnSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runSimulate } from "../cli.ts";

const dir = mkdtempSync(join(tmpdir(), "mce-scenario-"));
let n = 0;
function scenario(text: string): string {
  const file = join(dir, `s${++n}.yaml`);
  writeFileSync(file, text);
  return file;
}

const node = "nodes:\n  - name: w1\n    pools: [{ size: 2Mi, total: 32, free: 16 }]\n";
const timeline = "timeline:\n  - at: 0s\n    node: w1\n    error: { pfn: '0x5205', severity: ActionOptional }\n";

const cases: [string, string, RegExp][] = [
  ["a billion replicas", "nodes:\n  - name: w\n    replicas: 1000000000\n" + timeline, /:3: nodes\[0\]\.replicas: must be at most 10000/],
  [
    "more nodes than allowed in all",
    "nodes:\n  - name: a\n    replicas: 6000\n  - name: b\n    replicas: 6000\ntimeline: []\n",
    /:5: nodes\[1\]\.replicas: the scenario expands to more than 10000 nodes/,
  ],
  ["two nodes of one name", node + "  - name: w1\n" + timeline, /:4: nodes\[1\]\.name: node w1 is named twice/],
  [
    "two pods of one name",
    node + "pods:\n  - { name: p, node: w1 }\n  - { name: p, node: w1 }\n" + timeline,
    /:6: pods\[1\]\.name: pod default\/p is named twice/,
  ],
  ["a pod on an unknown node", node + "pods:\n  - name: p\n    node: w9\n" + timeline, /:6: pods\[0\]\.node: no node named w9/],
  [
    "a timeline out of order",
    node +
      "timeline:\n  - at: 10s\n    node: w1\n    error: { pfn: '0x1', severity: Fatal }\n  - at: 5s\n    node: w1\n    error: { pfn: '0x2', severity: Fatal }\n",
    /:8: timeline\[1\]\.at: 5s comes before the entry above it/,
  ],
  [
    "free above total",
    "nodes:\n  - name: w1\n    pools:\n      - { size: 2Mi, total: 4, free: 8 }\n" + timeline,
    /:4: nodes\[0\]\.pools\[0\]\.free: free \(8\) exceeds total \(4\)/,
  ],
  [
    "a NUMA node out of range",
    "nodes:\n  - name: w1\n    pools:\n      - { size: 2Mi, numaNode: 99999999999, total: 4, free: 1 }\n" + timeline,
    /:4: nodes\[0\]\.pools\[0\]\.numaNode: must be at most 1023/,
  ],
  [
    "a quantity that overflows",
    "nodes:\n  - name: w1\n    allocatable:\n      2Mi: 99999999999999999999999Ti\n" + timeline,
    /:4: nodes\[0\]\.allocatable\.2Mi: 99999999999999999999999Ti is too large a quantity/,
  ],
  [
    "a selector that matches nothing",
    node + "timeline:\n  - at: 0s\n    nodes: { matchLabels: { rack: r9 } }\n    error: { pfn: '0x1', severity: Fatal }\n",
    /:6: timeline\[0\]\.nodes: selects no node/,
  ],
  [
    "an unknown node in the timeline",
    node + "timeline:\n  - at: 0s\n    node: w9\n    error: { pfn: '0x1', severity: Fatal }\n",
    /:6: timeline\[0\]\.node: no node named w9/,
  ],
  [
    "a pfn beyond the address space",
    node + "timeline:\n  - at: 0s\n    node: w1\n    error: { pfn: '0xffffffffffffff', severity: Fatal }\n",
    /:7: timeline\[0\]\.error\.pfn: 0xffffffffffffff is beyond the 52-bit physical address space/,
  ],
  [
    "cordon before taint in a policy",
    "policies:\n  - metadata: { name: p }\n    spec:\n      escalation: { taintAfter: 5, cordonAfter: 3 }\n" + node + timeline,
    /:4: policies\[0\]\.spec\.escalation: cordonAfter must be greater than taintAfter \(taint before cordon\)/,
  ],
  [
    "an offset that is not a duration",
    node + "timeline:\n  - at: soon\n    node: w1\n    error: { pfn: '0x1', severity: Fatal }\n",
    /:5: timeline\[0\]\.at: "soon" does not match/,
  ],
  [
    "both node and nodes",
    node + "timeline:\n  - at: 0s\n    node: w1\n    nodes: { matchLabels: {} }\n    error: { pfn: '0x1', severity: Fatal }\n",
    /:5: timeline\[0\]: expected exactly one of node or nodes/,
  ],
  [
    "a count on an uncorrected error",
    node + "timeline:\n  - at: 0s\n    node: w1\n    error: { pfn: '0x1', severity: Fatal, count: 3 }\n",
    /:7: timeline\[0\]\.error\.count: count is only for Corrected errors, not Fatal/,
  ],
  [
    "a DIMM on an uncorrected error",
    node + "timeline:\n  - at: 0s\n    node: w1\n    error: { pfn: '0x1', severity: ActionOptional, dimm: mc0/dimm0 }\n",
    /:7: timeline\[0\]\.error\.dimm: dimm is only for Corrected errors, not ActionOptional/,
  ],
  [
    "no corrected errors at all",
    node + "timeline:\n  - at: 0s\n    node: w1\n    error: { pfn: '0x1', severity: Corrected, count: 0 }\n",
    /:7: timeline\[0\]\.error\.count: must be at least 1, got 0/,
  ],
  [
    "a DIMM entry without its count",
    node + "timeline:\n  - at: 0s\n    node: w1\n    dimm: { name: mc0/dimm0 }\n",
    /:7: timeline\[0\]\.dimm\.count: required value is missing/,
  ],
  [
    "a DIMM entry with a page",
    node + "timeline:\n  - at: 0s\n    node: w1\n    dimm: { name: mc0/dimm0, count: 4, pfn: '0x1' }\n",
    /:7: timeline\[0\]\.dimm\.pfn: unknown field/,
  ],
  [
    "a DIMM entry and an error in one",
    node + "timeline:\n  - at: 0s\n    node: w1\n    dimm: { name: mc0/dimm0, count: 4 }\n    error: { pfn: '0x1', severity: Corrected }\n",
    /:5: timeline\[0\]: expected exactly one of kernel \(verbatim lines\), error \(structured\) or dimm \(corrected errors on a DIMM\)/,
  ],
  [
    "a vm.enable_soft_offline out of range",
    "nodes:\n  - name: w1\n    enableSoftOffline: 256\n" + timeline,
    /:3: nodes\[0\]\.enableSoftOffline: must be at most 255, got 256/,
  ],
  ["a YAML list at the top", "- a\n- b\n", /: \(top level\): expected an object/],
  ["an empty file", "", /: \(top level\): expected an object/],
];

describe("simulate refuses a bad scenario", () => {
  it.each(cases)("%s", (_what, text, message) => {
    const file = scenario(text);
    const out = runSimulate([file]);
    expect(out.code).toBe(1);
    expect(out.stdout).toBe("");
    expect(out.stderr).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}${message.source}`));
  });

  it("from the command line: exit 1, one line on stderr, nothing on stdout", () => {
    const file = scenario("nodes:\n  - name: w\n    replicas: 1000000000\n" + timeline);
    const cli = new URL("../cli.ts", import.meta.url).pathname;
    const result = spawnSync(process.execPath, [cli, "simulate", file], { encoding: "utf8", timeout: 30_000 });
    expect(result.status).toBe(1);
    expect(result.stdout).toBe("");
    expect(result.stderr.trim().split("\n")).toEqual([`${file}:3: nodes[0].replicas: must be at most 10000, got 1000000000`]);
  });
});
