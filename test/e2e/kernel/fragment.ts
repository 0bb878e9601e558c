// Fragments the guest's memory on purpose so that the kernel cannot make a 1 GiB hugepage, while most
// memory stays free: the 2 MiB pool is raised over nearly all free memory, one workload faults every page
// in, keeps one per 1 GiB physical range (hwp's keep1g) and unmaps the rest, and the pool shrinks back so
// the rest returns to the buddy allocator. 6.1's alloc_contig_pages skips every 1 GiB range that holds a
// hugetlb page in use, so each range is now unusable for a gigantic page (measured; see the README).
import { randomBytes } from "node:crypto";
import { Workload } from "./guest.ts";
import type { Vm } from "./vm.ts";

const POOL = "/sys/kernel/mm/hugepages/hugepages-2048kB";

export interface Fragmentation {
  /** The pfns of the 2 MiB pages kept in use, one per 1 GiB range. */
  kept: string[];
  /** MemFree once fragmented: well above 1 GiB. */
  memFreeBytes: number;
  /** Frees the kept pages and puts the 2 MiB pool back to its size before. */
  restore(): Promise<void>;
}

const read = async (vm: Vm, file: string): Promise<number> => Number((await vm.run(`cat ${POOL}/${file}`)).trim());
const memFreeKb = async (vm: Vm): Promise<number> => Number(/MemFree:\s+(\d+) kB/.exec(await vm.run("cat /proc/meminfo"))?.[1]);

export async function fragmentFor1GiB(vm: Vm): Promise<Fragmentation> {
  const before = await read(vm, "nr_hugepages");
  // Leave 300 MiB for the guest's own allocations.
  const want = before + Math.floor((await memFreeKb(vm)) / 2048) - 150;
  await vm.run(`echo ${want} > ${POOL}/nr_hugepages`);
  const free = await read(vm, "free_hugepages");
  const workload = await Workload.start(vm, { name: `fragment-${randomBytes(3).toString("hex")}`, size: "2Mi", pages: free });
  try {
    const answer = await workload.command("keep1g", /keep1g unmapped=(\d+) kept=(\S*)/);
    // Back to the buddy allocator: every 2 MiB page not in use.
    await vm.run(`echo $(( $(cat ${POOL}/nr_hugepages) - $(cat ${POOL}/free_hugepages) )) > ${POOL}/nr_hugepages`);
    return {
      kept: (answer[2] ?? "").split(",").filter(Boolean),
      memFreeBytes: (await memFreeKb(vm)) * 1024,
      restore: async () => {
        await workload.exit();
        await vm.run(`echo ${before} > ${POOL}/nr_hugepages`);
        const now = await read(vm, "nr_hugepages");
        if (now !== before) throw new Error(`the 2 MiB pool is ${now} after the fragmentation, not ${before} as before`);
      },
    };
  } catch (error) {
    await workload.exit();
    await vm.run(`echo ${before} > ${POOL}/nr_hugepages`);
    throw error;
  }
}
