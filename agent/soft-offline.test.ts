import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { HostFiles } from "./host.ts";
import { AgentMetrics } from "./metrics.ts";
import { hostPoolFiles } from "./pool-replacement.ts";
import { hostSoftOfflineFiles, SOFT_OFFLINE_FILE, SoftOffliner, type SoftOfflineFiles, type SoftOfflineResult } from "./soft-offline.ts";

function requested(status: Partial<NonNullable<MemoryErrorEvent["status"]>> = {}, node = "edge-1"): MemoryErrorEvent {
  return {
    apiVersion: "mce-operator.io/v1alpha1",
    kind: "MemoryErrorEvent",
    metadata: { name: "edge-1-b-ce-5205", uid: "u1" },
    spec: {
      nodeName: node,
      bootID: "b",
      observedAt: "2026-12-01T10:00:00Z",
      source: "MachineCheck",
      pfn: "0x5205",
      severity: "Corrected",
      hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
    },
    status: { prevention: { action: "SoftOffline", state: "Requested", reason: "10 corrected errors" }, ...status },
  };
}

function setup(files: SoftOfflineFiles) {
  const results: [string, SoftOfflineResult][] = [];
  const retired: number[] = [];
  const offliner = new SoftOffliner({
    nodeName: "edge-1",
    api: {
      applySoftOfflineResult: (name, result) => {
        results.push([name, result]);
        return Promise.resolve();
      },
    },
    files,
    retired: (pfn) => retired.push(pfn),
    clock: new FakeClock(),
    log: memoryLogger(),
    metrics: new AgentMetrics(),
  });
  return { offliner, results, retired };
}

describe("SoftOffliner", () => {
  it("writes the page's physical address to soft_offline_page and reports the pool before and after", async () => {
    const root = mkdtempSync(join(tmpdir(), "soft-offline-"));
    const host = new HostFiles(root);
    const pool = "sys/devices/system/node/node0/hugepages/hugepages-2048kB";
    mkdirSync(join(root, pool), { recursive: true });
    mkdirSync(join(root, "sys/devices/system/memory"), { recursive: true });
    writeFileSync(join(root, pool, "nr_hugepages"), "32\n");
    const real = hostSoftOfflineFiles(host, hostPoolFiles(host));
    // As the kernel does with a free hugepage to migrate to: the poisoned one leaves the pool.
    const files: SoftOfflineFiles = {
      readTotal: real.readTotal,
      softOffline: async (address) => {
        await real.softOffline(address);
        writeFileSync(join(root, pool, "nr_hugepages"), "31\n");
      },
    };
    const { offliner, results, retired } = setup(files);
    await offliner.reconcile(requested());
    expect(readFileSync(join(root, SOFT_OFFLINE_FILE), "utf8")).toBe("0x5205000\n");
    expect(results).toEqual([
      [
        "edge-1-b-ce-5205",
        expect.objectContaining({
          state: "Done",
          poolBefore: 32,
          poolAfter: 31,
          message: expect.stringContaining("hugepages-2Mi on NUMA node 0: 32 → 31") as string,
        }),
      ],
    ]);
    expect(retired).toEqual([0x5205]);
  });

  it("reports the kernel's refusal in words, and never retires the page", async () => {
    const busy = Object.assign(new Error("EBUSY: resource busy or locked, write"), { code: "EBUSY" });
    const { offliner, results, retired } = setup({ readTotal: () => Promise.resolve(32), softOffline: () => Promise.reject(busy) });
    await offliner.reconcile(requested());
    expect(results[0]?.[1]).toMatchObject({
      state: "Failed",
      message: "soft offline of pfn 0x5205 refused: the kernel could not isolate or migrate the page (EBUSY)",
    });
    expect(retired).toEqual([]);
  });

  it("does nothing for another node, a page not requested, or a result already recorded; says again what it did but is not in status yet", async () => {
    let writes = 0;
    const { offliner, results } = setup({
      readTotal: () => Promise.resolve(32),
      softOffline: () => {
        writes += 1;
        return Promise.resolve();
      },
    });
    await offliner.reconcile(requested({}, "edge-2"));
    await offliner.reconcile(requested({ prevention: { action: "None", state: "Watching" } }));
    await offliner.reconcile(requested({ softOfflineResult: { state: "Done" } }));
    expect(writes).toBe(0);
    await offliner.reconcile(requested());
    await offliner.reconcile(requested());
    expect(writes).toBe(1);
    expect(results).toHaveLength(2);
    expect(results[1]).toEqual(results[0]);
  });
});
