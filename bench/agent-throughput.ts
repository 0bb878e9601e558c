// The agent's throughput, apart so it can also run compiled under the node flags its image runs with (V8's
// lite mode cannot strip types: it has no WebAssembly): kmsg lines read, parsed and grouped per second,
// and the hugetlb index's scan cost over 500 synthetic processes. Run directly, it prints both as JSON.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import { ErrorAssembler } from "../agent/assembler.ts";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { writeFakeProcess } from "../agent/fake-host.ts";
import { KmsgSource } from "../agent/kmsg.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { HugetlbIndex } from "../agent/mappings.ts";

const LINES = Number(process.env.BENCH_LINES ?? 200_000);
const PROCESSES = 500;

// 1. kmsg: records through the reader and the assembler, 1 in 50 a memory-failure line, as on a busy host.
export async function kmsgRate(): Promise<{ lines: number; seconds: number; linesPerSecond: number; errors: number }> {
  const other = "6,{seq},{ts},-;e1000e 0000:00:19.0 eth0: NIC Link is Up 1000 Mbps Full Duplex, Flow Control: Rx/Tx";
  const ours = [
    "3,{seq},{ts},-;Memory failure: 0x{pfn}: Sending SIGBUS to dpdk:4242 due to hardware memory corruption",
    "3,{seq},{ts},-;Memory failure: 0x{pfn}: recovery action for huge page: Recovered",
  ];
  const records: Buffer[] = [];
  for (let seq = 1; seq <= LINES; seq++) {
    const template = seq % 50 === 0 ? ours[0] : seq % 50 === 1 && seq > 1 ? ours[1] : other;
    records.push(
      Buffer.from(
        (template ?? other)
          .replace("{seq}", String(seq))
          .replace("{ts}", String(seq * 1000))
          .replace("{pfn}", (0x5000 + Math.floor(seq / 50) * 0x200).toString(16)),
      ),
    );
  }
  let next = 0;
  const device = {
    read: (buffer: Buffer): Promise<number> => Promise.resolve(next < records.length ? (records[next++] ?? Buffer.alloc(0)).copy(buffer) : 0),
    close: () => Promise.resolve(),
  };
  const clock = new FakeClock();
  const source = new KmsgSource({ open: () => Promise.resolve(device), clock, log: memoryLogger() });
  const assembler = new ErrorAssembler();
  let errors = 0;
  const start = performance.now();
  for await (const line of source.lines(new AbortController().signal)) errors += assembler.push(line).errors.length;
  const seconds = (performance.now() - start) / 1000;
  return { lines: LINES, seconds: Number(seconds.toFixed(3)), linesPerSecond: Math.round(LINES / seconds), errors };
}

// 2. The index over 500 processes, 50 of them mapping 16 hugepages each.
export function indexCost(): { processes: number; hugepages: number; fullScanMs: number; incrementalScanMs: number; oneChangedScanMs: number } {
  const root = mkdtempSync(join(tmpdir(), "bench-proc-"));
  const cgroup = (i: number): string =>
    `0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${i.toString(16).padStart(8, "0")}_0000_4000_8000_000000000000.slice/cri-containerd-${i.toString(16).padStart(64, "0")}.scope\n`;
  for (let pid = 1; pid <= PROCESSES; pid++) {
    const maps =
      pid % 10 === 0
        ? [{ start: 0x7f0000000000 + pid * 0x40000000, size: "2Mi" as const, pfns: Array.from({ length: 16 }, (_, i) => (pid * 16 + i) * 512) }]
        : [];
    writeFakeProcess(root, { pid, comm: `proc-${pid}`, cgroup: cgroup(pid), vmas: maps });
  }
  const index = new HugetlbIndex({ procDir: root, clock: { now: () => performance.now() }, maxSmapsPerRefresh: PROCESSES });
  const full = index.refresh();
  const incremental = index.refresh();
  writeFakeProcess(root, { pid: 7, comm: "proc-7", cgroup: cgroup(7), vmas: [{ start: 0x7e0000000000, size: "2Mi", pfns: [0x900000] }] });
  const oneChanged = index.refresh();
  rmSync(root, { recursive: true, force: true });
  return {
    processes: full.processes,
    hugepages: index.hugepages,
    fullScanMs: Number(full.durationMs.toFixed(2)),
    incrementalScanMs: Number(incremental.durationMs.toFixed(2)),
    oneChangedScanMs: Number(oneChanged.durationMs.toFixed(2)),
  };
}

if (import.meta.main) console.log(JSON.stringify({ kmsg: await kmsgRate(), index: indexCost() }));
