// Carries out the soft offlines the operator requests for this node: a page whose corrected errors
// reached the policy's threshold is handed to the kernel (its physical address written to
// /sys/devices/system/memory/soft_offline_page), which migrates the hugepage holding it and retires the
// 4 KiB page; nobody is signalled. The outcome goes in status.softOfflineResult with the pool before and
// after. Asking twice is harmless (the kernel answers 0 for a page already poisoned), so a restart
// between the write and the report simply does it again.
import { writeFile } from "node:fs/promises";
import type { MemoryErrorEvent, MemoryErrorEventStatusSoftOfflineResult } from "../crds/generated.ts";
import { parseHex, pfnToPhysicalAddress } from "../kernel/pfn.ts";
import type { Clock } from "../runtime/clock.ts";
import type { Logger } from "../runtime/log.ts";
import { ValueQueue } from "../runtime/queue.ts";
import type { HostFiles } from "./host.ts";
import type { AgentMetrics } from "./metrics.ts";
import type { PoolFiles } from "./pool-replacement.ts";
import { errnoCode } from "./source.ts";

export type SoftOfflineResult = MemoryErrorEventStatusSoftOfflineResult;

export interface SoftOfflineApi {
  /** Server-side applies status.softOfflineResult with field manager mce-agent. */
  applySoftOfflineResult(eventName: string, result: SoftOfflineResult): Promise<void>;
}

export interface SoftOfflineFiles extends Pick<PoolFiles, "readTotal"> {
  /** Asks the kernel to soft-offline the page at `physicalAddress`; rejects with the errno it answers. */
  softOffline(physicalAddress: number): Promise<void>;
}

export const SOFT_OFFLINE_FILE = "sys/devices/system/memory/soft_offline_page";

export function hostSoftOfflineFiles(host: HostFiles, pools: PoolFiles): SoftOfflineFiles {
  return {
    readTotal: (size, numaNode) => pools.readTotal(size, numaNode),
    // The store reads an address (kstrtoull base 0) and shifts it to a pfn.
    softOffline: (physicalAddress) => writeFile(host.path(SOFT_OFFLINE_FILE), `0x${physicalAddress.toString(16)}\n`),
  };
}

export interface SoftOfflinerOptions {
  nodeName: string;
  api: SoftOfflineApi;
  files: SoftOfflineFiles;
  /** The page is retired: counted as such, reported, and NodeMemoryHealth published now. */
  retired: (pfn: number, at: number, page: Pick<MemoryErrorEvent["spec"], "hugepage" | "mappers">) => void;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
}

/** What the kernel's errno means for a soft offline. */
function refusal(error: unknown): string {
  const code = errnoCode(error);
  const why: Record<string, string> = {
    EBUSY: "the kernel could not isolate or migrate the page (EBUSY)",
    EIO: "the kernel could not migrate the page (EIO)",
    ENOMEM: "no memory to migrate the page to (ENOMEM)",
    EOPNOTSUPP: "soft offline is turned off (vm.enable_soft_offline) or not possible for this page (EOPNOTSUPP)",
    EPERM: "the agent lacks CAP_SYS_ADMIN (EPERM)",
    EACCES: "the agent cannot write soft_offline_page (EACCES)",
    ENOENT: "the kernel has no soft_offline_page (ENOENT)",
    ENXIO: "the pfn is not memory the kernel manages (ENXIO)",
  };
  return (code && why[code]) ?? (error instanceof Error ? error.message : String(error));
}

export class SoftOffliner {
  readonly #o: SoftOfflinerOptions;
  readonly #queue: ValueQueue<MemoryErrorEvent>;
  /** Results this process wrote, by event name and uid, until status shows them. */
  readonly #carriedOut = new Map<string, { uid: string | undefined; result: SoftOfflineResult }>();

  constructor(options: SoftOfflinerOptions) {
    this.#o = options;
    this.#queue = new ValueQueue(
      async (_name, event) => {
        await this.reconcile(event);
        return undefined;
      },
      { clock: options.clock, baseDelayMs: 5000, maxDelayMs: 60_000 },
    );
    this.#queue.onError = (name, error, retryInMs) => {
      options.log.warn("soft offline not recorded; will retry", { memoryErrorEvent: name, error, retryInMs });
    };
  }

  offer(event: MemoryErrorEvent): void {
    this.#queue.offer(event.metadata.name, event);
  }

  forget(eventName: string): void {
    this.#queue.forget(eventName);
    this.#carriedOut.delete(eventName);
  }

  stop(): void {
    this.#queue.stop();
  }

  idle(): Promise<void> {
    return this.#queue.idle();
  }

  /** Soft-offlines the page `event` asks for, unless its result is recorded; rejects when the status write failed. */
  async reconcile(event: MemoryErrorEvent): Promise<void> {
    const { api, nodeName } = this.#o;
    const name = event.metadata.name;
    const plan = event.status?.prevention;
    if (event.spec.nodeName !== nodeName || plan?.action !== "SoftOffline" || plan.state !== "Requested" || event.status?.softOfflineResult) {
      this.#carriedOut.delete(name);
      return;
    }
    const carried = this.#carriedOut.get(name);
    if (carried !== undefined && carried.uid === event.metadata.uid) {
      // Done by this process, not yet in status: say it again, never do it again.
      await api.applySoftOfflineResult(name, carried.result);
      return;
    }
    const result = await this.#softOffline(event);
    this.#carriedOut.set(name, { uid: event.metadata.uid, result });
    await api.applySoftOfflineResult(name, result);
    // Reported after the result: the operator reads the pool's change from it when it decides the report.
    if (result.state === "Done") this.#o.retired(parseHex(event.spec.pfn, "spec.pfn"), Date.parse(result.at ?? "") || this.#o.clock.now(), event.spec);
  }

  async #softOffline(event: MemoryErrorEvent): Promise<SoftOfflineResult> {
    const { files, clock, log, metrics } = this.#o;
    const { spec } = event;
    const pfn = parseHex(spec.pfn, `MemoryErrorEvent ${event.metadata.name} spec.pfn`);
    const page = spec.hugepage;
    const pool = page?.numaNode === undefined ? undefined : { size: page.size, numaNode: page.numaNode };
    const readPool = async (): Promise<number | undefined> => (pool ? files.readTotal(pool.size, pool.numaNode).catch(() => undefined) : undefined);
    const poolBefore = await readPool();
    const counts = (poolAfter: number | undefined): Partial<SoftOfflineResult> => ({
      ...(poolBefore !== undefined && { poolBefore }),
      ...(poolAfter !== undefined && { poolAfter }),
    });
    try {
      await files.softOffline(pfnToPhysicalAddress(pfn));
    } catch (error) {
      const message = `soft offline of pfn ${spec.pfn} refused: ${refusal(error)}`;
      metrics.softOfflines.inc({ outcome: "failed" });
      log.warn("soft offline refused by the kernel", { memoryErrorEvent: event.metadata.name, pfn: spec.pfn, error });
      return { state: "Failed", ...counts(await readPool()), at: new Date(clock.now()).toISOString(), message };
    }
    const now = clock.now();
    const poolAfter = await readPool();
    metrics.softOfflines.inc({ outcome: "done" });
    const where = page ? `; ${page.size} hugepage ${page.headPfn} migrated` : "";
    const sizes =
      poolBefore !== undefined && poolAfter !== undefined && pool ? `; hugepages-${pool.size} on NUMA node ${pool.numaNode}: ${poolBefore} → ${poolAfter}` : "";
    log.info("page soft-offlined", { memoryErrorEvent: event.metadata.name, pfn: spec.pfn, poolBefore, poolAfter });
    return { state: "Done", ...counts(poolAfter), at: new Date(now).toISOString(), message: `soft-offlined pfn ${spec.pfn}${where}${sizes}` };
  }
}
