import { describe, expect, it } from "vitest";
import type { KernelError } from "../kernel/assemble.ts";
import { validateResource } from "../crds/validate.ts";
import { shrunkPoolSizes } from "./agent.ts";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildMemoryErrorEvent, containersOf, fitToSchema, type EventContext, type PodInfo } from "./event.ts";
import { hugetlbPageFlags, writeFakeHost } from "./fake-host.ts";
import { HostFiles } from "./host.ts";
import type { Mapper } from "./mappings.ts";

const uid = "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60";
const containerID = "c0ffee".padEnd(64, "0");
const pod: PodInfo = {
  uid,
  namespace: "nfv",
  name: "upf-dpdk-0",
  containers: containersOf([{ name: "dpdk", containerID: `containerd://${containerID}` }, { name: "init" }]),
  annotations: {},
};
const context: EventContext = {
  nodeName: "edge-worker-1",
  bootID: "0f6c1b1e-6d2a-4c55-9d8e-2b1f0c9e7a11",
  pods: { pod: (u) => (u === uid ? pod : undefined) },
  earlyKill: false,
  poolSizes: ["2Mi"],
  numaNodeOfPfn: () => 0,
};
const mapper: Mapper = {
  pid: 4242,
  command: "dpdk-testpmd",
  pod: { podUID: uid, qos: "Guaranteed", containerID, runtime: "containerd" },
  size: "2Mi",
  headPfn: 0x5200,
  virtualStart: 0x7f56bd800000,
  virtualEnd: 0x7f56bda00000,
  shared: false,
};
const error: KernelError = {
  pfn: 0x5205,
  severity: "ActionOptional",
  source: "Kmsg",
  pageType: "huge page",
  result: "Recovered",
  signalled: [],
  lines: ["Memory failure: 0x5205: recovery action for huge page: Recovered"],
};

describe("buildMemoryErrorEvent", () => {
  it("names, labels and fills the event, pod and container resolved", () => {
    const event = buildMemoryErrorEvent(error, "kmsg", Date.parse("2026-01-01T00:00:00Z"), [mapper], () => undefined, context);
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect(event.metadata).toEqual({ name: "edge-worker-1-0f6c1b1e-5205", labels: { "mce-operator.io/node": "edge-worker-1" } });
    expect(event.spec).toEqual({
      nodeName: "edge-worker-1",
      bootID: context.bootID,
      observedAt: "2026-01-01T00:00:00.000Z",
      source: "Kmsg",
      pfn: "0x5205",
      severity: "ActionOptional",
      pageType: "huge page",
      result: "Recovered",
      hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
      mappers: [
        {
          pid: 4242,
          command: "dpdk-testpmd",
          podUID: uid,
          podNamespace: "nfv",
          podName: "upf-dpdk-0",
          container: "dpdk",
          containerID,
          mapping: "Private",
          virtualStart: "0x7f56bd800000",
          virtualEnd: "0x7f56bda00000",
          killPolicy: "Default",
          signalledByKernel: false,
        },
      ],
      kernelLines: error.lines,
    });
  });

  it("marks mappers the kernel signalled and adds ones the index had not seen", () => {
    const signalled: KernelError = {
      ...error,
      signalled: [
        { command: "dpdk-testpmd", pid: 4242 },
        { command: "hwp", pid: 531 },
      ],
    };
    const event = buildMemoryErrorEvent(
      signalled,
      "kmsg",
      0,
      [mapper],
      (pid) => (pid === 531 ? { pid, command: "hwp", pod: { podUID: uid, qos: "Burstable" } } : undefined),
      context,
    );
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect(event.spec.mappers?.map((m) => [m.pid, m.signalledByKernel, m.killPolicy, m.podName])).toEqual([
      [4242, true, "Default", "upf-dpdk-0"],
      [531, true, "Early", "upf-dpdk-0"],
    ]);
  });

  it("gives a free hugepage the node's only pool size, and a shared mapping its file", () => {
    const free = buildMemoryErrorEvent({ ...error, pageType: "free huge page" }, "replay", 0, [], () => undefined, context);
    expect([free.spec.source, free.spec.hugepage, free.spec.mappers]).toEqual(["Replay", { size: "2Mi", headPfn: "0x5200", numaNode: 0 }, undefined]);
    const shared = buildMemoryErrorEvent(error, "kmsg", 0, [{ ...mapper, shared: true, file: "/dev/hugepages/cache", pod: undefined }], () => undefined, {
      ...context,
      poolSizes: ["2Mi", "1Gi"],
    });
    expect(shared.spec.mappers?.[0]).toMatchObject({ mapping: "Shared", hugetlbfsFile: "/dev/hugepages/cache" });
    expect(shared.spec.mappers?.[0]?.podUID).toBeUndefined();
  });

  it("with pools of both sizes, gives a free hugepage the size of the one pool that just shrank, and none when both or neither did", () => {
    const free = { ...error, pageType: "free huge page" };
    const both = { ...context, poolSizes: ["2Mi", "1Gi"] as const };
    expect(buildMemoryErrorEvent(free, "kmsg", 0, [], () => undefined, { ...both, shrunkPoolSizes: ["1Gi"] }).spec.hugepage).toEqual({
      size: "1Gi",
      headPfn: "0x0",
      numaNode: 0,
    });
    expect(buildMemoryErrorEvent(free, "kmsg", 0, [], () => undefined, { ...both, shrunkPoolSizes: ["2Mi", "1Gi"] }).spec.hugepage).toBeUndefined();
    expect(buildMemoryErrorEvent(free, "kmsg", 0, [], () => undefined, { ...both, shrunkPoolSizes: [] }).spec.hugepage).toBeUndefined();
    expect(
      shrunkPoolSizes(
        [
          { size: "2Mi", numaNode: 0, total: 32, free: 32 },
          { size: "2Mi", numaNode: 1, total: 8, free: 8 },
          { size: "1Gi", numaNode: 0, total: 2, free: 2 },
        ],
        [
          { size: "2Mi", numaNode: 0, total: 31, free: 31 },
          { size: "2Mi", numaNode: 1, total: 9, free: 9 },
          { size: "1Gi", numaNode: 0, total: 1, free: 1 },
        ],
      ),
    ).toEqual(["1Gi"]);
  });

  it("leaves out the hugepage when its size cannot be known", () => {
    const event = buildMemoryErrorEvent({ ...error, pageType: "dirty LRU page" }, "kmsg", 0, [], () => undefined, context);
    expect(event.spec.hugepage).toBeUndefined();
  });

  it("gives a corrected error on a free 2 MiB hugepage, with no mapper and no page type, its size from kpageflags (issue 14)", () => {
    const root = mkdtempSync(join(tmpdir(), "event-"));
    writeFakeHost(root, { kpageflags: [hugetlbPageFlags(0x40200, "2Mi"), { pfn: 0x5000, flags: 0n }] });
    const files = new HostFiles(root);
    const both = {
      ...context,
      poolSizes: ["2Mi", "1Gi"] as const,
      hugepageSizeOfPfn: (pfn: number) => files.hugepageSizeOfPfn(pfn, ["2Mi", "1Gi"]),
    };
    const corrected = (pfn: number): KernelError => ({ pfn, severity: "Corrected", source: "MachineCheck", signalled: [], lines: ["x"] });
    const event = buildMemoryErrorEvent(corrected(0x40305), "kmsg", 0, [], () => undefined, both);
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect(event.spec.hugepage).toEqual({ size: "2Mi", headPfn: "0x40200", numaNode: 0 });
    // A pfn in no hugetlb page still has none; a mapper's size comes first; the page-type rule stays the last resort.
    expect(buildMemoryErrorEvent(corrected(0x5000), "kmsg", 0, [], () => undefined, both).spec.hugepage).toBeUndefined();
    expect(buildMemoryErrorEvent(corrected(0x40305), "kmsg", 0, [{ ...mapper, size: "1Gi" }], () => undefined, both).spec.hugepage?.size).toBe("1Gi");
    const free = { ...error, pageType: "free huge page" };
    expect(buildMemoryErrorEvent(free, "kmsg", 0, [], () => undefined, { ...both, shrunkPoolSizes: ["1Gi"] }).spec.hugepage?.size).toBe("1Gi");
  });

  it("keeps a machine check's address and a corrected severity", () => {
    const event = buildMemoryErrorEvent(
      { pfn: 0x1234, severity: "Corrected", source: "MachineCheck", physicalAddress: 0x1234000, signalled: [], lines: ["x"] },
      "kmsg",
      0,
      [],
      () => undefined,
      context,
    );
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect([event.spec.physicalAddress, event.spec.severity, event.spec.source]).toEqual(["0x1234000", "Corrected", "MachineCheck"]);
  });
});

describe("a machine check logged at boot (issue 15.6)", () => {
  it("says so on the event, which the CRD accepts", () => {
    const event = buildMemoryErrorEvent(
      { pfn: 0x5203, severity: "Fatal", source: "MachineCheck", physicalAddress: 0x5203000, signalled: [], lines: ["x"], loggedAtBoot: true },
      "kmsg",
      0,
      [],
      () => undefined,
      context,
    );
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect([event.spec.severity, event.spec.loggedAtBoot, event.spec.mappers]).toEqual(["Fatal", true, undefined]);
  });
});

describe("the event fits the CRD before it is sent (issue 18.2)", () => {
  it("keeps the error when the kernel signalled a process with a long name that the index had not seen", () => {
    const long = "x".repeat(200);
    const event = buildMemoryErrorEvent({ ...error, signalled: [{ pid: 4242, command: long }] }, "kmsg", 0, [], () => undefined, context);
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect(event.spec.mappers?.[0]?.command).toHaveLength(64);
  });

  it("drops a detail the schema refuses (a signalled process with pid 0) and keeps the error", () => {
    const built = buildMemoryErrorEvent({ ...error, signalled: [{ pid: 0, command: "bad" }] }, "kmsg", 0, [mapper], () => undefined, context);
    const { event, dropped, issues } = fitToSchema(built);
    expect(validateResource("MemoryErrorEvent", event)).toEqual([]);
    expect(issues).toEqual([]);
    expect(dropped).toEqual([expect.stringMatching(/^spec\.mappers\[1\]\.pid: must be at least 1/)]);
    expect(event.spec.mappers?.map((m) => m.pid)).toEqual([mapper.pid]);
    expect([event.spec.pfn, event.spec.severity]).toEqual(["0x5205", "ActionOptional"]);
  });

  it("says what it cannot fix", () => {
    const built = buildMemoryErrorEvent(error, "kmsg", 0, [], () => undefined, { ...context, nodeName: "" });
    const { issues } = fitToSchema(built);
    expect(issues.map((i) => i.path)).toContain("spec.nodeName");
  });
});
