import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { writeFakeProcess } from "./fake-host.ts";
import { decodePagemapEntry, HugetlbIndex, parseHugetlbVmas, parseKillPolicy } from "./mappings.ts";

const uid = "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60";
const id = "c0ffee".padEnd(64, "0");
const containerd = `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${uid.replaceAll("-", "_")}.slice/cri-containerd-${id}.scope\n`;
const host = "0::/system.slice/ovs-vswitchd.service\n";
const base = 0x7f56bd800000;

let procDir: string;
let index: HugetlbIndex;

beforeEach(() => {
  procDir = mkdtempSync(join(tmpdir(), "proc-"));
  index = new HugetlbIndex({ procDir, clock: new FakeClock() });
});

afterEach(() => {
  rmSync(procDir, { recursive: true, force: true });
});

describe("parseHugetlbVmas", () => {
  it("keeps only hugetlb VMAs, with sharing and the backing file", () => {
    const smaps = [
      "00400000-00452000 r-xp 00000000 08:01 1234   /usr/bin/app",
      "KernelPageSize:        4 kB",
      "7f0000000000-7f0000400000 rw-s 00000000 00:2f 77   /dev/hugepages/db-cache",
      "KernelPageSize:     2048 kB",
      "7f4000000000-7f4040000000 rw-p 00000000 00:10 78   /anon_hugepage (deleted)",
      "KernelPageSize:  1048576 kB",
      "7fff00000000-7fff00021000 rw-p 00000000 00:00 0",
      "KernelPageSize:        4 kB",
    ].join("\n");
    expect(parseHugetlbVmas(smaps)).toEqual([
      { start: 0x7f0000000000, end: 0x7f0000400000, shared: true, path: "/dev/hugepages/db-cache", size: "2Mi" },
      { start: 0x7f4000000000, end: 0x7f4040000000, shared: false, path: "/anon_hugepage (deleted)", size: "1Gi" },
    ]);
  });
});

describe("decodePagemapEntry", () => {
  it("reads bit 63 and bits 0-54", () => {
    expect(decodePagemapEntry((1n << 63n) | (1n << 55n) | 0x5200n)).toEqual({ present: true, pfn: 0x5200 });
    // A poisoned hugepage reads as not present, not as a swap entry.
    expect(decodePagemapEntry(0x0080000000000000n)).toEqual({ present: false });
  });
});

describe("HugetlbIndex", () => {
  it("maps a raw pfn to the mappers of its hugepage, with pod and container", () => {
    writeFakeProcess(procDir, { pid: 4242, comm: "dpdk-testpmd", cgroup: containerd, vmas: [{ start: base, size: "2Mi", pfns: [0x5000, 0x5200] }] });
    const report = index.refresh();
    expect(report).toMatchObject({ processes: 1, smapsRead: 1, hugepages: 2, pfnsHidden: false });
    expect(index.mappersOf(0x5205)).toEqual([
      {
        pid: 4242,
        command: "dpdk-testpmd",
        pod: { podUID: uid, qos: "Burstable", containerID: id, runtime: "containerd" },
        size: "2Mi",
        headPfn: 0x5200,
        virtualStart: base + 0x200000,
        virtualEnd: base + 0x400000,
        shared: false,
        file: undefined,
      },
    ]);
    expect(index.mappersOf(0x5400)).toEqual([]);
  });

  it("describes a process again when its maps change: runc's init execs the container's command", () => {
    writeFakeProcess(procDir, { pid: 813, comm: "runc:[2:INIT]", cgroup: containerd });
    index.refresh();
    expect(index.process(813)?.command).toBe("runc:[2:INIT]");
    writeFakeProcess(procDir, { pid: 813, comm: "hwp", cgroup: containerd, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    index.refresh();
    expect(index.mappersOf(0x5200)).toMatchObject([{ pid: 813, command: "hwp", pod: { podUID: uid, containerID: id } }]);
  });

  it.each([
    ["containerd, systemd, burstable", containerd, { qos: "Burstable", runtime: "containerd" }],
    [
      "CRI-O, systemd, besteffort",
      `0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${uid.replaceAll("-", "_")}.slice/crio-${id}.scope\n`,
      { qos: "BestEffort", runtime: "cri-o" },
    ],
    [
      "Docker, systemd, guaranteed",
      `0::/kubepods.slice/kubepods-pod${uid.replaceAll("-", "_")}.slice/docker-${id}.scope\n`,
      { qos: "Guaranteed", runtime: "docker" },
    ],
    ["cgroupfs v1, burstable", `12:memory:/kubepods/burstable/pod${uid}/${id}\n1:name=systemd:/kubepods/burstable/pod${uid}/${id}\n`, { qos: "Burstable" }],
    ["cgroupfs v1, guaranteed", `4:memory:/kubepods/pod${uid}/${id}\n`, { qos: "Guaranteed" }],
  ])("resolves the pod of a %s process", (_name, cgroup, expected) => {
    writeFakeProcess(procDir, { pid: 10, comm: "app", cgroup, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    index.refresh();
    expect(index.mappersOf(0x5200)[0]?.pod).toMatchObject({ podUID: uid, containerID: id, ...expected });
  });

  it("indexes host processes without a pod", () => {
    writeFakeProcess(procDir, { pid: 1, comm: "ovs-vswitchd", cgroup: host, vmas: [{ start: base, size: "1Gi", pfns: [0x100000] }] });
    index.refresh();
    expect(index.mappersOf(0x100005)).toMatchObject([{ pid: 1, pod: undefined, size: "1Gi", headPfn: 0x100000, virtualEnd: base + 0x40000000 }]);
  });

  it("finds every mapper of a shared hugetlbfs page", () => {
    const vma = { start: base, size: "2Mi" as const, shared: true, path: "/dev/hugepages/db-cache", pfns: [0x3e00] };
    writeFakeProcess(procDir, { pid: 601, comm: "postgres", cgroup: containerd, vmas: [vma] });
    writeFakeProcess(procDir, { pid: 602, comm: "sidecar", cgroup: host, vmas: [{ ...vma, start: base + 0x40000000 }] });
    index.refresh();
    expect(index.mappersOf(0x3e11).map((m) => [m.pid, m.shared, m.file])).toEqual([
      [601, true, "/dev/hugepages/db-cache"],
      [602, true, "/dev/hugepages/db-cache"],
    ]);
  });

  it("leaves out hugepages not faulted in, and picks them up once they are", () => {
    writeFakeProcess(procDir, { pid: 7, comm: "app", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [null] }] });
    expect(index.refresh().hugepages).toBe(0);
    writeFakeProcess(procDir, { pid: 7, comm: "app", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    const report = index.refresh();
    expect(report.smapsRead).toBe(0);
    expect(index.mappersOf(0x5200)).toHaveLength(1);
  });

  it("keeps a hugepage that goes from present to not present under its VMA: the kernel poisoned it", () => {
    writeFakeProcess(procDir, { pid: 7, comm: "app", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    index.refresh();
    writeFakeProcess(procDir, { pid: 7, comm: "app", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [null] }] });
    // What 6.1's pagemap gives for a poisoned hugepage: not present, not a swap entry.
    const fd = openSync(join(procDir, "7", "pagemap"), "r+");
    writeSync(fd, Buffer.from("0000000000008000", "hex"), 0, 8, (base / 4096) * 8);
    closeSync(fd);
    index.refresh();
    expect(index.mappersOf(0x5205).map((m) => [m.pid, m.virtualStart])).toEqual([[7, base]]);
  });

  it("says when pfns read as zero (no CAP_SYS_ADMIN)", () => {
    writeFakeProcess(procDir, { pid: 7, comm: "app", cgroup: host, hidePfns: true, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    expect(index.refresh()).toMatchObject({ pfnsHidden: true, hugepages: 0 });
  });

  it("reads smaps again only for new processes and changed maps, and forgets exited ones", () => {
    writeFakeProcess(procDir, { pid: 1, comm: "a", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    writeFakeProcess(procDir, { pid: 2, comm: "b", cgroup: host });
    expect(index.refresh().smapsRead).toBe(2);
    expect(index.refresh().smapsRead).toBe(0);
    writeFakeProcess(procDir, { pid: 2, comm: "b", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x5400] }] });
    writeFakeProcess(procDir, { pid: 3, comm: "c", cgroup: host });
    expect(index.refresh().smapsRead).toBe(2);
    expect(index.mappersOf(0x5400).map((m) => m.pid)).toEqual([2]);
    rmSync(join(procDir, "1"), { recursive: true });
    expect(index.refresh().processes).toBe(2);
    // One refresh later the exited process is still named (it mapped the page when it was poisoned)…
    expect(index.mappersOf(0x5200).map((m) => m.pid)).toEqual([1]);
    index.refresh();
    // …and after the next it is forgotten.
    expect(index.mappersOf(0x5200)).toEqual([]);
  });

  it("still names the mappers of a page soft offline moved before its line was read", () => {
    writeFakeProcess(procDir, { pid: 4, comm: "db", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x5200] }] });
    index.refresh();
    // MADV_SOFT_OFFLINE migrated the data: the same virtual range now sits on another hugepage.
    writeFakeProcess(procDir, { pid: 4, comm: "db", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [0x7a00] }] });
    index.refresh();
    expect(index.mappersOf(0x5205).map((m) => [m.pid, m.headPfn])).toEqual([[4, 0x5200]]);
    expect(index.mappersOf(0x7a00).map((m) => m.pid)).toEqual([4]);
  });

  it("caps smaps reads per refresh and catches up later", () => {
    const capped = new HugetlbIndex({ procDir, clock: new FakeClock(), maxSmapsPerRefresh: 2 });
    for (let pid = 1; pid <= 5; pid++) writeFakeProcess(procDir, { pid, comm: "p", cgroup: host, vmas: [{ start: base, size: "2Mi", pfns: [pid * 512] }] });
    expect(capped.refresh()).toMatchObject({ smapsRead: 2, smapsDeferred: 3, hugepages: 2 });
    expect(capped.refresh()).toMatchObject({ smapsRead: 2, smapsDeferred: 1, hugepages: 4 });
    expect(capped.refresh()).toMatchObject({ smapsRead: 1, smapsDeferred: 0, hugepages: 5 });
  });

  it("describes a pid it has not indexed from /proc", () => {
    writeFakeProcess(procDir, { pid: 9, comm: "hwp", cgroup: containerd });
    expect(index.process(9)).toMatchObject({ pid: 9, command: "hwp", pod: { podUID: uid } });
    expect(index.process(10)).toBeUndefined();
  });

  it("skips a process that vanishes mid-scan", () => {
    writeFakeProcess(procDir, { pid: 5, comm: "gone", cgroup: host });
    rmSync(join(procDir, "5", "comm"));
    writeFileSync(join(procDir, "self"), "");
    expect(index.refresh().processes).toBe(0);
  });
});

describe("parseKillPolicy", () => {
  // task->flags as 6.1 showed them for hwp with no prctl, PR_MCE_KILL_LATE and PR_MCE_KILL_EARLY.
  const stat = (flags: number): string => `129 (hw p) (x) S 1 129 129 0 -1 ${flags} 95 0 0 0 0 0 0 0 20 0 1 0 398 4784128 229 18446744073709551615`;
  it("reads PF_MCE_PROCESS and PF_MCE_EARLY from field 9, whatever comm holds", () => {
    expect(parseKillPolicy(stat(4194304))).toBe("Default");
    expect(parseKillPolicy(stat(4194432))).toBe("Late");
    expect(parseKillPolicy(stat(138412160))).toBe("Early");
    expect(parseKillPolicy("garbage")).toBeUndefined();
  });
});
