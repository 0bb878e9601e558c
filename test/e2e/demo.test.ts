// `npm run demo` on its own control plane: the scenario's error reaches the API through the real agent
// and the real operator contains it, and nothing is left behind.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

describe("npm run demo", () => {
  it("shows a free-hugepage error reported by the agent and quarantined by the operator, then tears down", () => {
    const run = spawnSync("node_modules/.bin/node", ["test/e2e/demo.ts", "--exit-when-done", "examples/free-hugepage.yaml"], {
      encoding: "utf8",
      timeout: 110_000,
    });
    expect(run.stderr).toBe("");
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/● worker-7: memory error at pfn 0x4600 \(ActionOptional, free huge page → Recovered\)/);
    expect(run.stdout).toMatch(/kernel \[linux-6\.1\]: free 2Mi hugepage 0x4600 is dissolved/);
    expect(run.stdout).toMatch(/quarantine 2Mi of hugepages-2Mi: Quarantined/);
    expect(run.stdout).toMatch(/done: every event reached a final phase/);
  }, 120_000);
});
