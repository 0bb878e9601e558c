import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runSimulate } from "../cli.ts";
import type { SimulationResult } from "./simulate.ts";

const run = (file: string): SimulationResult => {
  const out = runSimulate([file, "--output", "json"]);
  expect(out.stderr).toBe("");
  return JSON.parse(out.stdout) as SimulationResult;
};

describe("mce-operator simulate on the bundled examples", () => {
  it("covers every example", () => {
    expect(readdirSync("examples").sort()).toEqual([
      "corrected-errors-soft-offline.yaml",
      "db-shared-hugetlbfs.yaml",
      "dpdk-private-2m.yaml",
      "failed-1g.yaml",
      "free-hugepage.yaml",
      "rack-storm.yaml",
      "self-healing-pool.yaml",
    ]);
  });

  it("DPDK on a private 2 MiB hugepage: evicts the mapper only, reads the machine check", () => {
    const r = run("examples/dpdk-private-2m.yaml");
    const [step] = r.steps;
    expect(step?.kernelLines).toHaveLength(6);
    expect(step?.error).toMatchObject({ pfn: "0x5203", severity: "ActionOptional", hugepage: { size: "2Mi", headPfn: "0x5200" } });
    expect(step?.decision?.pods.map((p) => [p.name, p.action, p.state])).toEqual([["upf-dpdk-0", "Evict", "Planned"]]);
    expect(step?.decision?.quarantine).toEqual([{ size: "2Mi", bytes: 2 * 2 ** 20, state: "Planned" }]);
    expect(step?.capacity).toEqual([{ size: "2Mi", advertisedBytes: 2 ** 30, realBytes: 2 ** 30 - 2 * 2 ** 20, quarantinedBytes: 2 * 2 ** 20 }]);
  });

  it("database on shared hugetlbfs: signals the opted-in server, evicts the sidecar, both warned by the kernel", () => {
    const step = run("examples/db-shared-hugetlbfs.yaml").steps[0];
    expect(step?.decision?.prediction.poolEffect).toBe("HeldForever");
    expect(step?.decision?.prediction.mappers.map((m) => m.atError)).toEqual(["AO", "AO"]);
    expect(step?.decision?.pods.map((p) => [p.name, p.action, p.signal])).toEqual([
      ["pg-0", "EarlySignal", "SIGUSR1"],
      ["pg-backup-0", "Evict", undefined],
    ]);
  });

  it("free hugepage: no pod touched, 2 MiB quarantined, 4 KiB of memory lost", () => {
    const d = run("examples/free-hugepage.yaml").steps[0]?.decision;
    expect([d?.pods, d?.prediction.poolEffect, d?.prediction.memoryLostBytes, d?.quarantine[0]?.bytes]).toEqual([[], "Dissolved", 4096, 2 * 2 ** 20]);
  });

  it("failed 1 GiB page: eviction blocked by the PodDisruptionBudget, never a delete", () => {
    const d = run("examples/failed-1g.yaml").steps[0]?.decision;
    expect(d?.prediction.kernelResult).toBe("Failed");
    expect(d?.pods.map((p) => [p.action, p.state])).toEqual([["Evict", "Blocked"]]);
    expect(d?.quarantine[0]).toMatchObject({ size: "1Gi", bytes: 2 ** 30 });
  });

  it("a scenario names each node's kernel: the same 1 GiB error is predicted under 6.1's, 6.12's or the conservative profile", () => {
    const scenario = readFileSync("examples/failed-1g.yaml", "utf8");
    const dir = mkdtempSync(join(tmpdir(), "simulate-kernel-"));
    const under = (release: string): SimulationResult["steps"][number]["decision"] => {
      const file = join(dir, `${release}.yaml`);
      writeFileSync(file, scenario.replace("kernelRelease: 6.1.0-56-amd64", `kernelRelease: ${release}`));
      return run(file).steps[0]?.decision;
    };
    expect(under("6.1.0-56-amd64")?.prediction).toMatchObject({ kernelProfile: "linux-6.1", verified: true, kernelResult: "Failed" });
    expect(under("6.12.117+deb12-amd64")?.prediction).toMatchObject({ kernelProfile: "linux-6.12", verified: true, kernelResult: "Recovered" });
    expect(under("5.10.0-30-amd64")?.prediction).toMatchObject({ kernelProfile: "conservative", verified: false });
  });

  it("self-healing pools: the free 2 MiB page is replaced and its quarantine released; the 1 GiB one stays quarantined", () => {
    const [free, gigantic] = run("examples/self-healing-pool.yaml").steps;
    expect(free?.decision?.poolReplacement).toMatchObject({ action: "Replace", state: "Given", expected: "Likely", size: "2Mi", maxTotal: 512 });
    expect(free?.capacity.find((c) => c.size === "2Mi")).toEqual({ size: "2Mi", advertisedBytes: 2 ** 30, realBytes: 2 ** 30, quarantinedBytes: 0 });
    expect(gigantic?.decision?.poolReplacement).toMatchObject({ action: "Replace", state: "Refused", expected: "Uncertain", afterMappersExit: true });
    expect(gigantic?.capacity.find((c) => c.size === "1Gi")).toMatchObject({ realBytes: 7 * 2 ** 30, quarantinedBytes: 2 ** 30 });
    expect(runSimulate(["examples/self-healing-pool.yaml"]).stdout).toContain("replacement hugepages-2Mi [Given, likely]");
  });

  it("storm across half a rack: the circuit breaker holds all but three node actions", () => {
    const r = run("examples/rack-storm.yaml");
    expect(r.summary.taintedNodes).toHaveLength(3);
    expect(r.summary.cordonedNodes).toEqual([]);
    const held = r.steps.filter((s) => s.decision?.nodeAction.state === "HeldByBudget");
    expect(held.length).toBe(r.summary.heldNodeActions);
    expect(held.every((s) => /circuit breaker is open/.test(s.decision?.nodeAction.reason ?? ""))).toBe(true);
  });

  it("corrected errors: a page watched then soft-offlined, a page with nowhere to migrate to and a failing DIMM move their pods", () => {
    const r = run("examples/corrected-errors-soft-offline.yaml");
    const decided = r.steps.map((s) => [s.at, s.node, (s.preventions ?? []).map((p) => `${p.action}/${p.state}`).join(",")]);
    expect(decided).toEqual([
      ["0s", "edge-1", "None/Watching"],
      ["2h", "edge-1", "None/Watching"],
      ["5h", "edge-1", "SoftOffline/Done"],
      ["6h", "edge-1", "None/Skipped"],
      ["7h", "edge-2", "None/Watching"],
      ["9h", "edge-2", "Evict/Requested"],
      ["10h", "edge-3", "None/Watching"],
      ["12h", "edge-3", "Evict/Requested"],
    ]);
    const [first, second, offlined, retired, , moved, , dimm] = r.steps;
    // Only a page's first corrected error is a MemoryErrorEvent with a containment decision.
    expect([first?.decision?.phase, second?.decision, second?.error?.count]).toEqual(["Ignored", undefined, 4]);
    expect(first?.error?.hugepage).toEqual({ size: "2Mi", headPfn: "0x200000" });
    expect(offlined?.preventions?.[0]).toMatchObject({ correctedErrors: 10, pool: { size: "2Mi", totalDelta: -1, freeDelta: -1, from: "Pool" } });
    // Reported by the agent as a SoftOffline error, the lost hugepage is quarantined.
    expect(offlined?.capacity).toEqual([{ size: "2Mi", advertisedBytes: 2 ** 30, realBytes: 2 ** 30 - 2 * 2 ** 20, quarantinedBytes: 2 * 2 ** 20 }]);
    expect(retired?.preventions?.[0]?.reason).toMatch(/^pfn 0x200103 is already retired/);
    expect(moved?.preventions?.[0]?.reason).toMatch(/no free 2Mi hugepage and no free 2 MiB block of memory/);
    expect(moved?.preventions?.[0]?.pods.map((p) => [p.namespace, p.name, p.action, p.state])).toEqual([["shop", "pg-0", "Evict", "Planned"]]);
    expect(dimm?.error).toBeUndefined();
    expect(dimm?.dimm).toEqual({ name: "mc0/dimm2", label: "CPU0_DIMM_C1", count: 14 });
    expect(dimm?.preventions?.[0]?.reason).toMatch(/DIMM mc0\/dimm2 has 15 in 24h \(threshold 10\): its DIMM is failing/);
    expect(dimm?.preventions?.[0]?.pods.map((p) => p.name)).toEqual(["virt-launcher-vm-a"]);
    expect(r.summary).toMatchObject({ errors: 37, evictions: 2, softOfflines: 1, quarantinedBytes: 2 * 2 ** 20 });
    const out = runSimulate(["examples/corrected-errors-soft-offline.yaml"]).stdout;
    expect(out).toContain("+2h  edge-1  pfn 0x200103  Corrected ×4  (counted; the page already has its event)\n  prevention [Watching]: 5 corrected error(s)");
    expect(out).toContain("  prevention [SoftOffline, Done]: 10 corrected error(s) on pfn 0x200103 in 24h (page threshold 10): soft-offline it;");
    expect(out).toContain("    pool 2Mi: total -1, free -1, now\n");
    expect(out).toContain("    Evict shop/pg-0 [Planned]: maps a hugepage at risk of an uncorrected error");
    expect(out).toContain("+12h  edge-3  DIMM mc0/dimm2 (CPU0_DIMM_C1)  Corrected ×14  (no page named)");
    expect(out).toContain("1 soft offline(s)");
    expect(out).not.toContain("no pod maps the poisoned hugepage");
  });

  it("prints the same facts as a readable timeline", () => {
    const out = runSimulate(["examples/dpdk-private-2m.yaml"]).stdout;
    expect(out).toContain("Evict nfv/upf-dpdk-0 [Planned]");
    expect(out).toContain("kubelet advertises 1Gi, kernel can give 1022Mi, quarantined 2Mi");
  });
});

describe("malformed scenarios", () => {
  const write = (name: string, text: string): string => {
    const file = `${process.env.TMPDIR ?? "/tmp"}/${name}-${process.pid}.yaml`;
    writeFileSync(file, text);
    return file;
  };

  it.each([
    [
      "a wrong type",
      "nodes: [{name: n, pools: [{size: 2Mi, total: lots, free: 1}]}]\ntimeline: []\n",
      /:1: nodes\[0\]\.pools\[0\]\.total: expected an integer, got "lots"/,
    ],
    ["a missing field", "nodes: [{name: n}]\ntimeline:\n  - node: n\n    kernel: x\n", /:3: timeline\[0\]\.at: required value is missing/],
    [
      "an unknown hugepage size",
      "nodes:\n  - name: n\n    pools:\n      - {size: 4Mi, total: 1, free: 1}\ntimeline: []\n",
      /:4: nodes\[0\]\.pools\[0\]\.size: unsupported value "4Mi"/,
    ],
    [
      "an invalid policy",
      "policies:\n  - metadata: {name: p}\n    spec: {mode: Sometimes}\nnodes: []\ntimeline: []\n",
      /:3: policies\[0\]\.spec\.mode: unsupported value "Sometimes"/,
    ],
    [
      "both kernel lines and an error",
      "nodes: [{name: n}]\ntimeline:\n  - {at: 0s, node: n, kernel: x, error: {pfn: '0x1', severity: Fatal}}\n",
      /timeline\[0\]: expected exactly one of kernel/,
    ],
    ["broken YAML", "nodes: [\n", /:\d+: \(top level\): /],
  ])("names the file, path and line for %s, and prints nothing else", (_what, text, message) => {
    const file = write("bad", text);
    const out = runSimulate([file]);
    expect(out.code).toBe(1);
    expect(out.stdout).toBe("");
    expect(out.stderr.startsWith(file)).toBe(true);
    expect(out.stderr).toMatch(message);
  });

  it("reports a kernel line it does not understand and makes no event of it", () => {
    const file = write(
      "unknown",
      "nodes: [{name: n, pools: [{size: 2Mi, total: 4, free: 4}]}]\ntimeline:\n  - at: 0s\n    node: n\n    kernel: |\n      Memory failure: 0x4600: something new happened\n",
    );
    const r = JSON.parse(runSimulate([file, "--output=json"]).stdout) as SimulationResult;
    expect(r.steps).toEqual([]);
    expect(r.warnings[0]).toMatch(/timeline\[0\]\.kernel line 1: not understood, no event made/);
  });

  it("reads a log pasted from mail: one error per pfn with the verdict's words, and a soft-wrapped line is reported by its number", () => {
    const pasted = [
      "> Message from syslogd@worker-7 at Dec  1 12:00:00 ...",
      ">  kernel:[  912.004410] mce: [Hardware Error]: Machine check events logged",
      "> > [  912.004411] Memory failure: 0x5203: unhandlable page.",
      ">> [...]",
      ">   [  912.004412] Memory failure: 0x5203: recovery action for get hwpoison page: Ignored",
      "> [  913.100000] Memory failure: 0x6203: recovery action for huge",
      "> page: Recovered",
    ];
    const file = write(
      "pasted",
      `nodes: [{name: n, pools: [{size: 2Mi, total: 4, free: 4}]}]\ntimeline:\n  - at: 0s\n    node: n\n    kernel: |\n${pasted.map((l) => `      ${l}`).join("\n")}\n`,
    );
    const r = JSON.parse(runSimulate([file, "--output=json"]).stdout) as SimulationResult;
    expect(r.steps.map((s) => [s.error?.pfn, s.error?.pageType, s.error?.result])).toEqual([["0x5203", "get hwpoison page", "Ignored"]]);
    expect(r.warnings).toEqual([expect.stringMatching(/^timeline\[0\]\.kernel line 6: not understood, no event made/)]);
  });

  it("corrected errors: the kernel's collector retires a watched page, a moved pod is gone for the next error, DryRun changes nothing", () => {
    const scenario = (mode: string): string =>
      [
        `policies: [{metadata: {name: p}, spec: {mode: ${mode}, prevention: {pageThreshold: 3, dimmThreshold: 5}}}]`,
        "nodes:",
        "  - {name: n, freeMemory: 40Mi, free2MiBlocks: 0, pools: [{size: 2Mi, total: 8, free: 0}]}",
        "pods:",
        "  - {name: a, node: n, mappings: [{pid: 1, command: a, size: 2Mi, headPfn: '0x5000'}]}",
        "  - {name: b, node: n, mappings: [{pid: 2, command: b, size: 2Mi, headPfn: '0x5200'}]}",
        "timeline:",
        "  - {at: 0s, node: n, error: {pfn: '0x5003', severity: Corrected, dimm: mc1/dimm0}}",
        "  - {at: 1m, node: n, error: {pfn: '0x5203', severity: Corrected, count: 2, dimm: mc1/dimm0}}",
        "  - {at: 2m, node: n, kernel: 'RAS: Soft-offlining pfn: 0x5203'}",
        "  - {at: 3m, node: n, dimm: {name: mc1/dimm0, count: 2}}",
        "  - {at: 4m, node: n, error: {pfn: '0x5007', severity: ActionOptional}}",
        "",
      ].join("\n");
    const enforce = JSON.parse(runSimulate([write("ce-enforce", scenario("Enforce")), "--output=json"]).stdout) as SimulationResult;
    const [, second, collector, dimm, loss] = enforce.steps;
    expect(second?.preventions?.map((p) => [p.pfn, p.state, p.correctedErrors])).toEqual([["0x5203", "Watching", 2]]);
    expect(collector?.preventions?.map((p) => [p.pfn, p.state, p.reason.includes("already retired")])).toEqual([["0x5203", "Skipped", true]]);
    // 5 on the DIMM: the page still watched moves its pod; the retired one is not decided again.
    expect(dimm?.preventions?.map((p) => [p.pfn, p.action, p.pods.map((x) => x.name)])).toEqual([["0x5003", "Evict", ["a"]]]);
    expect(loss?.decision?.pods).toEqual([]);
    const dryRun = JSON.parse(runSimulate([write("ce-dryrun", scenario("DryRun")), "--output=json"]).stdout) as SimulationResult;
    expect(dryRun.steps[3]?.preventions?.map((p) => [p.action, p.state, p.pods.map((x) => x.state)])).toEqual([["Evict", "DryRun", ["DryRun"]]]);
    expect(dryRun.steps[4]?.decision?.pods.map((p) => [p.name, p.state])).toEqual([["a", "DryRun"]]);
  });

  it("corrected errors: with no free hugepage in the pool the kernel migrates into free memory, and the pool keeps its size", () => {
    const file = write(
      "ce-buddy",
      "nodes: [{name: n, freeMemory: 1Gi, free2MiBlocks: 5, pools: [{size: 2Mi, total: 8, free: 0}]}]\n" +
        "timeline:\n  - {at: 0s, node: n, error: {pfn: '0x5003', severity: Corrected, count: 10}}\n",
    );
    const out = runSimulate([file]).stdout;
    expect(out).toContain("to a hugepage it allocates from free memory and retires the 4 KiB page: the pool keeps its size");
    expect(out).toContain("    pool 2Mi: unchanged, the new hugepage taken from free memory (4 free 2 MiB block(s) left)\n");
    expect(out).toContain("kernel can give 16Mi");
  });

  it("refuses bad arguments with the usage", () => {
    expect(runSimulate([]).stderr).toMatch(/expected one scenario file\nusage:/);
    expect(runSimulate(["x.yaml", "--output", "xml"]).stderr).toMatch(/--output must be text or json, got xml/);
    expect(runSimulate(["/nonexistent.yaml"]).stderr).toMatch(/^\/nonexistent\.yaml: cannot read/);
  });
});
