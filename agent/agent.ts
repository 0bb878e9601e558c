// The agent composed: kernel-line sources → error assembly → MemoryErrorEvents (with the index's
// mappers) → durable queue → reporter; the index refreshed and NodeMemoryHealth applied on timers.
import type {
  MemoryErrorEventSpec,
  MemoryErrorEventStatusKernelSignal,
  NodeMemoryHealth,
  NodeMemoryHealthSpec,
  NodeMemoryHealthSpecHugepagePool,
  NodeMemoryHealthSpecNumaMemory,
} from "../crds/generated.ts";
import { group, memoryErrorEventName, version } from "../crds/naming.ts";
import { clip } from "../crds/validate.ts";
import { HUGEPAGE_SIZES, pfnToPhysicalAddress, type HugepageSize } from "../kernel/pfn.ts";
import { ErrorAssembler, type Assembled, type AssembledError } from "./assembler.ts";
import { CorrectedErrorLedger, dimmEntry } from "./corrected.ts";
import type { RasdaemonDimm } from "./rasdaemon.ts";
import type { Clock } from "../runtime/clock.ts";
import { alreadyPoisoned, type KernelError } from "../kernel/assemble.ts";
import { inRanges } from "../kernel/iomem.ts";
import { buildMemoryErrorEvent, fitToSchema, type EventContext, type PodDirectory } from "./event.ts";
import type { HostFiles, HostMemory } from "./host.ts";
import type { HealthSink } from "./kube.ts";
import type { Logger } from "../runtime/log.ts";
import { readKillPolicy, type HugetlbIndex } from "./mappings.ts";
import type { AgentMetrics } from "./metrics.ts";
import { Reporter, type Backoff, type EventSink } from "./reporter.ts";
import type { KernelLine, LineSource, SourceName } from "./source.ts";
import type { AgentState } from "./state.ts";

export interface AgentOptions {
  nodeName: string;
  bootID: string;
  kernelVersion?: string | undefined;
  host: HostFiles;
  state: AgentState;
  index: HugetlbIndex;
  pods: PodDirectory;
  sink: EventSink;
  health: HealthSink;
  sources: LineSource[];
  /** Which kernel sources are being read, for NodeMemoryHealth capabilities. */
  reading: { kmsg: boolean; tracefs: boolean };
  /** Corrected-error count from rasdaemon, for hosts without EDAC counters. */
  rasdaemonCorrected?: () => number | undefined;
  /** rasdaemon's errors per DIMM, with their hours, for hosts without EDAC's per-DIMM counters. */
  rasdaemonDimms?: (now: number) => RasdaemonDimm[] | undefined;
  /**
   * The one source whose corrected errors are counted: kmsg and tracefs both carry each machine-check
   * record, and counting both would reach every threshold at half the errors. Unset: every source counts
   * (one source, or a replay).
   */
  correctedSource?: SourceName | undefined;
  /** Most corrected-error pages made into events per boot (default CORRECTED_EVENTS_PER_BOOT). */
  correctedEventsPerBoot?: number;
  /** Most corrected-error pages made into events per minute; the rest are only counted (default 60). */
  correctedEventsPerMinute?: number;
  clock: Clock;
  log: Logger;
  metrics: AgentMetrics;
  indexIntervalMs?: number;
  healthIntervalMs?: number;
  backoff?: Backoff;
  /** Where processes the kernel signalled after an event was made are recorded (the event's status). */
  kernelSignals?: KernelSignalSink;
}

export interface KernelSignalSink {
  addKernelSignals(eventName: string, signals: MemoryErrorEventStatusKernelSignal[]): Promise<void>;
}

/** Most corrected-error page events one boot makes; later pages are only counted. */
export const CORRECTED_EVENTS_PER_BOOT = 1000;
// Lines of one error arrive within milliseconds; a machine check without a verdict waits this long.
const EXPIRE_TICK_MS = 1000;
// The spec barely changes: apply when it does, and otherwise this often so observedAt stays fresh.
const HEALTH_HEARTBEAT_MS = 5 * 60_000;
// Free memory moves all the time: it alone is published when it moved this much (or with anything else).
const FREE_BYTES_MOVED = 64 * 1024 * 1024;
const MOVED_SHARE = 0.1;

/** Whether free memory per NUMA node moved enough since `before` to be published on its own. */
export function numaMemoryMoved(before: NodeMemoryHealthSpecNumaMemory[], now: NodeMemoryHealthSpecNumaMemory[]): boolean {
  if (before.length !== now.length) return true;
  const moved = (a: number | undefined, b: number | undefined, floor: number): boolean =>
    a === undefined || b === undefined ? a !== b : Math.abs(a - b) >= Math.max(floor, MOVED_SHARE * a);
  return now.some((node, i) => {
    const old = before[i];
    return old?.numaNode !== node.numaNode || moved(old.freeBytes, node.freeBytes, FREE_BYTES_MOVED) || moved(old.free2MiBlocks, node.free2MiBlocks, 1);
  });
}

/** The sizes whose pools hold fewer hugepages in `now` than in `before`, summed over NUMA nodes. */
export function shrunkPoolSizes(before: readonly NodeMemoryHealthSpecHugepagePool[], now: readonly NodeMemoryHealthSpecHugepagePool[]): HugepageSize[] {
  const total = (pools: readonly NodeMemoryHealthSpecHugepagePool[], size: HugepageSize): number =>
    pools.filter((p) => p.size === size).reduce((sum, p) => sum + p.total, 0);
  return HUGEPAGE_SIZES.filter((size) => total(now, size) < total(before, size));
}

export class Agent {
  readonly #o: AgentOptions;
  readonly #reporter: Reporter;
  readonly #assemblers = new Map<SourceName, ErrorAssembler>();
  readonly #lastSequence = new Map<SourceName, number>();
  #memory: HostMemory;
  /** The pools as read before #memory: the last reading may have come between a dissolution and its line. */
  #poolsBefore: NodeMemoryHealthSpecHugepagePool[] = [];
  #healthApplied: { key: string; numaMemory: NodeMemoryHealthSpecNumaMemory[]; at: number } | undefined;
  #healthDue = true;
  /** Publications asked for now: one asked during a pass makes the health loop run again without its pause. */
  #healthAsked = 0;
  #wakeHealth: (() => void) | undefined;
  #pfnsHiddenLogged = false;
  #expiredLogged = { at: -Infinity, unsaid: 0 };
  /** /proc/iomem's System RAM, read at most once a minute: it changes only with memory hotplug. */
  #ram: { at: number; ranges: ReturnType<HostFiles["systemRam"]> } | undefined;
  readonly #corrected: CorrectedErrorLedger;
  /** When this minute's corrected-error events began, and how many were made in it. */
  #correctedMinute = { start: 0, made: 0 };

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#corrected = new CorrectedErrorLedger(options.state.corrected);
    this.#reporter = new Reporter({
      state: options.state,
      sink: options.sink,
      clock: options.clock,
      log: options.log,
      metrics: options.metrics,
      backoff: options.backoff,
    });
    this.#memory = options.host.memory();
  }

  async run(signal: AbortSignal): Promise<void> {
    const { indexIntervalMs = 5000, healthIntervalMs = 30_000 } = this.#o;
    // The index must know the mappings before the first kernel line is read.
    this.#refreshIndex();
    this.#reporter.notify();
    await Promise.all([
      this.#reporter.run(signal),
      ...this.#o.sources.map((source) => this.#follow(source, signal)),
      this.#every(indexIntervalMs, signal, () => {
        this.#refreshIndex();
      }),
      this.#every(EXPIRE_TICK_MS, signal, () => {
        this.#expire();
      }),
      this.#healthLoop(healthIntervalMs, signal),
    ]);
    this.#o.state.flush();
  }

  async #every(ms: number, signal: AbortSignal, work: () => void | Promise<void>): Promise<void> {
    while (!signal.aborted) {
      try {
        await work();
      } catch (error) {
        this.#o.log.error("periodic work failed", { error });
      }
      await this.#o.clock.sleep(ms, signal);
    }
  }

  /**
   * Publishes NodeMemoryHealth as soon as it can, whether or not the figures look changed: called after
   * the agent changed a hugepage pool, so the operator sees the new size without waiting for the timer.
   */
  refreshHealth(): void {
    this.#healthDue = true;
    this.#healthAsked++;
    this.#wakeHealth?.();
  }

  async #healthLoop(ms: number, signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      const asked = this.#healthAsked;
      try {
        await this.#applyHealth();
      } catch (error) {
        this.#o.log.error("periodic work failed", { error });
      }
      if (this.#healthAsked !== asked) continue;
      const wake = new AbortController();
      const stop = (): void => {
        wake.abort();
      };
      signal.addEventListener("abort", stop, { once: true });
      this.#wakeHealth = stop;
      await this.#o.clock.sleep(ms, wake.signal);
      this.#wakeHealth = undefined;
      signal.removeEventListener("abort", stop);
    }
  }

  async #follow(source: LineSource, signal: AbortSignal): Promise<void> {
    const { log, clock } = this.#o;
    const assembler = new ErrorAssembler();
    this.#assemblers.set(source.name, assembler);
    while (!signal.aborted) {
      try {
        for await (const line of source.lines(signal)) this.#onLine(line, assembler);
        log.info("kernel line source ended", { source: source.name, stopping: signal.aborted });
        return;
      } catch (error) {
        log.error("kernel line source failed; reopening in 5s", { source: source.name, error });
        await clock.sleep(5000, signal);
      }
    }
  }

  #onLine(line: KernelLine, assembler: ErrorAssembler): void {
    this.#o.metrics.kernelLines.inc({ source: line.source });
    if (line.sequence !== undefined) this.#lastSequence.set(line.source, line.sequence);
    this.#handle(line.source, assembler, assembler.push(line));
  }

  #expire(): void {
    for (const [source, assembler] of this.#assemblers) this.#handle(source, assembler, assembler.expire(this.#o.clock.now()));
    this.#o.state.flush();
  }

  #handle(source: SourceName, assembler: ErrorAssembler, out: Assembled): void {
    const { state, metrics, log, index, nodeName, bootID } = this.#o;
    for (const notice of out.notices) {
      switch (notice.kind) {
        case "unrecognized":
          metrics.parseErrors.inc({ source });
          log.warn("kernel line looks like a memory-failure line but fits no known shape; not reported", {
            source,
            line: notice.line.text,
            reason: notice.reason,
          });
          break;
        case "killed-on-access": {
          const process = index.process(notice.pid);
          log.warn("process touched a poisoned page and got SIGBUS BUS_MCEERR_AR", {
            source,
            pid: notice.pid,
            command: notice.command,
            virtualAddress: `0x${notice.virtualAddress.toString(16)}`,
            podUID: process?.pod?.podUID,
          });
          break;
        }
        case "unpoison":
          log.info(notice.done ? "page unpoisoned" : "unpoison refused or not needed", {
            source,
            pfn: notice.pfn === undefined ? undefined : `0x${notice.pfn.toString(16)}`,
            line: notice.line.text,
          });
          break;
        case "late-signal":
          this.#recordLateSignals(memoryErrorEventName(nodeName, bootID, notice.pfn), [{ pid: notice.pid, command: notice.command }], notice.line.at);
          break;
        // EDAC's mc_event only says which DIMM the page is on. It is never counted: x86's EDAC drivers decode
        // the machine check whose record (mce_record, or the kmsg lines) the agent counts already, and counting
        // both would count one error twice. A page the agent has not counted yet keeps the DIMM for its count.
        case "dimm-of-page":
          if (this.#corrected.locateDimm(notice.pfn, notice)) {
            state.saveCorrected(() => this.#corrected.data());
            this.#healthDue = true;
          }
          log.debug("EDAC located a memory error on a DIMM", {
            source,
            pfn: `0x${notice.pfn.toString(16)}`,
            dimm: notice.label,
            mc: notice.mc,
            layers: notice.layers,
            errorType: notice.errorType,
            count: notice.count,
          });
          break;
        case "expired": {
          metrics.expiredLines.inc(notice.lines.length);
          // A storm that overruns the kmsg ring leaves pieces of records at every read: said once a minute,
          // with how many went unsaid (the metric counts every line).
          const now = this.#o.clock.now();
          if (now - this.#expiredLogged.at < 60_000) {
            this.#expiredLogged.unsaid += notice.lines.length;
            break;
          }
          log.warn("memory-failure lines no error completed; dropped", {
            source,
            lines: notice.lines.map((l) => l.text),
            ...(this.#expiredLogged.unsaid > 0 && { droppedSinceLastSaid: this.#expiredLogged.unsaid }),
          });
          this.#expiredLogged = { at: now, unsaid: 0 };
          break;
        }
      }
    }
    const last = this.#lastSequence.get(source);
    const held = assembler.holdBack;
    const cursor = last === undefined ? undefined : { source, sequence: held === undefined ? last : Math.min(last, held - 1) };
    // A machine check outside the memory the kernel manages (an MMIO hole, a reserved range) is reported for
    // what it is, never as an error on a page.
    const ram = out.errors.some(({ error }) => error.source === "MachineCheck") ? this.#systemRam() : undefined;
    const onPages = out.errors.filter(({ error, line }) => {
      if (ram === undefined || error.source !== "MachineCheck" || error.physicalAddress === undefined || inRanges(error.physicalAddress, ram)) return true;
      metrics.notMemory.inc();
      log.warn("machine check at a physical address outside System RAM (MMIO or reserved): no memory error event", {
        source,
        physicalAddress: `0x${error.physicalAddress.toString(16)}`,
        severity: error.severity,
        line: line.text,
      });
      return false;
    });
    if (onPages.length === 0) {
      if (cursor !== undefined) state.advance(cursor.source, cursor.sequence);
      return;
    }
    // 6.11+ ends an access to an already-poisoned page with a verdict of its own: its processes belong to
    // the pfn's event, which the agent made before (the second create would only get 409).
    for (const { error, line } of onPages)
      if (alreadyPoisoned(error.pageType) && error.signalled.length > 0)
        this.#recordLateSignals(memoryErrorEventName(nodeName, bootID, error.pfn), error.signalled, line.at);
    this.#enqueue(
      source,
      onPages.filter(({ error, line }) => this.#countCorrected(error, line.at, source)),
      cursor,
    );
  }

  /** Makes the errors' MemoryErrorEvents, with the index's mappers, and queues them durably with the cursor. */
  #enqueue(
    source: SourceName | "agent",
    errors: AssembledError[],
    cursor: { source: SourceName; sequence: number } | undefined,
    /** What the page's corrected-error event knew: the page has moved, and the index may no longer say. */
    page?: Pick<MemoryErrorEventSpec, "hugepage" | "mappers">,
  ): void {
    const { state, metrics, log, index, host, nodeName, bootID } = this.#o;
    // Only counted (a storm on known pages): the cursor moves with the next flush, not a write per batch.
    if (errors.length === 0) {
      if (cursor !== undefined) state.advance(cursor.source, cursor.sequence);
      return;
    }
    const context: EventContext = {
      nodeName,
      bootID,
      pods: this.#o.pods,
      earlyKill: this.#memory.capabilities.earlyKill,
      poolSizes: [...new Set(this.#memory.hugepagePools.filter((pool) => pool.total > 0).map((pool): HugepageSize => pool.size))],
      shrunkPoolSizes: this.#shrunkPools(),
      numaNodeOfPfn: (pfn) => host.numaNodeOfPfn(pfn),
      hugepageSizeOfPfn: (pfn) => host.hugepageSizeOfPfn(pfn, context.poolSizes),
      killPolicyOf: (pid) => readKillPolicy(host.path("proc"), pid),
    };
    const queued = errors.map(({ error, line }) => {
      metrics.errors.inc({ source, severity: error.severity });
      // No process of this boot touched an error from before it: whoever maps the pfn now is not affected.
      const mappers = error.loggedAtBoot === true ? [] : index.mappersOf(error.pfn);
      if (error.loggedAtBoot === true)
        log.warn("machine check logged at boot: the error happened before this boot began", {
          source,
          pfn: `0x${error.pfn.toString(16)}`,
          severity: error.severity,
        });
      const fitted = fitToSchema(buildMemoryErrorEvent(error, source, line.at, mappers, (pid) => index.process(pid), context));
      const { event } = fitted;
      if (page !== undefined) {
        event.spec.hugepage ??= page.hugepage;
        if ((event.spec.mappers ?? []).length === 0 && (page.mappers ?? []).length > 0) event.spec.mappers = page.mappers;
      }
      if (error.severity === "Corrected") this.#corrected.locate(error.pfn, event.spec.hugepage);
      if (fitted.dropped.length > 0 || fitted.issues.length > 0)
        log.warn("memory error event cut to the CRD's schema", { memoryErrorEvent: event.metadata.name, dropped: fitted.dropped, unfixable: fitted.issues });
      log.info("memory error seen", {
        memoryErrorEvent: event.metadata.name,
        source,
        pfn: event.spec.pfn,
        severity: event.spec.severity,
        pageType: event.spec.pageType,
        result: event.spec.result,
        mappers: event.spec.mappers?.length ?? 0,
      });
      return { event, readAt: line.at };
    });
    for (const dropped of state.enqueue(queued, cursor)) {
      metrics.queueDropped.inc({ severity: dropped.spec.severity });
      log.warn("event queue full: dropped the oldest corrected error", { memoryErrorEvent: dropped.metadata.name });
    }
    this.#reporter.notify();
    // The pool changes as the kernel finishes with the page.
    this.#healthDue = true;
  }

  /**
   * Counts a corrected error, and says whether it becomes an event: only a page's first does, and no more
   * than correctedEventsPerMinute of those (a failing DIMM's storm over many pages is counted, not sent);
   * a page held back gets its event with its next error. A soft offline retires its page.
   */
  #countCorrected(error: KernelError, at: number, source: SourceName | "agent"): boolean {
    const { metrics, state, clock, correctedSource } = this.#o;
    // The other source's copy of a record the counted source carries too: neither counted nor sent.
    if (error.severity === "Corrected" && correctedSource !== undefined && source !== correctedSource) return false;
    if (error.severity === "SoftOffline" && error.result !== "Failed") {
      this.#corrected.softOfflined(error.pfn, at);
      state.saveCorrected(() => this.#corrected.data());
      return true;
    }
    if (error.severity !== "Corrected") return true;
    const first = this.#corrected.count(error.pfn, at);
    const now = clock.now();
    if (now - this.#correctedMinute.start >= 60_000) this.#correctedMinute = { start: now, made: 0 };
    // Bounded per boot too: a failing rank touches more pages than etcd or the agent's watch should hold,
    // and by then the DIMM's counts say what the pages would.
    const allowed =
      first &&
      this.#correctedMinute.made < (this.#o.correctedEventsPerMinute ?? 60) &&
      this.#corrected.made < (this.#o.correctedEventsPerBoot ?? CORRECTED_EVENTS_PER_BOOT);
    if (allowed) {
      this.#correctedMinute.made += 1;
      this.#corrected.reported(error.pfn);
    }
    metrics.correctedErrors.inc({ outcome: allowed ? "first" : first ? "held" : "counted" });
    state.saveCorrected(() => this.#corrected.data());
    this.#healthDue = true;
    return allowed;
  }

  /**
   * The page is retired by a soft offline the agent carried out: counted as such, published now, and
   * reported as a SoftOffline error like one the kernel logs (it logs nothing for this one), so the
   * capacity it took from the pool is quarantined and replaced as any soft-offlined hugepage's is.
   */
  softOfflined(pfn: number, at: number, page?: Pick<MemoryErrorEventSpec, "hugepage" | "mappers">): void {
    this.#corrected.softOfflined(pfn, at);
    this.#o.state.saveCorrected(() => this.#corrected.data());
    const address = pfnToPhysicalAddress(pfn);
    const text = `soft_offline_page 0x${address.toString(16)}: done by the agent`;
    const error: KernelError = { pfn, severity: "SoftOffline", source: "Agent", physicalAddress: address, signalled: [], lines: [] };
    this.#enqueue("agent", [{ error, line: { source: "kmsg", text, at } }], undefined, page);
    this.refreshHealth();
  }

  #systemRam(): ReturnType<HostFiles["systemRam"]> {
    const now = this.#o.clock.now();
    if (this.#ram === undefined || now - this.#ram.at >= 60_000) this.#ram = { at: now, ranges: this.#o.host.systemRam() };
    return this.#ram.ranges;
  }

  /** Records processes the kernel signalled for an event's pfn after the event was made, with their pods. */
  #recordLateSignals(eventName: string, processes: readonly { pid: number; command: string }[], at: number): void {
    const { index, log, kernelSignals } = this.#o;
    const signals = processes.map(({ pid, command }): MemoryErrorEventStatusKernelSignal => {
      const podUID = index.process(pid)?.pod?.podUID;
      return { pid, command: clip(command, 64), ...(podUID !== undefined && { podUID }), at: new Date(at).toISOString() };
    });
    log.info("the kernel signalled processes for a page poisoned before", { memoryErrorEvent: eventName, processes: signals });
    kernelSignals?.addKernelSignals(eventName, signals).catch((error: unknown) => {
      log.warn("could not record the processes the kernel signalled on the event", { memoryErrorEvent: eventName, error });
    });
  }

  /** The sizes whose pools shrank since the last reading, or else since the one before it. */
  #shrunkPools(): HugepageSize[] {
    const now = this.#o.host.hugepagePools();
    const since = shrunkPoolSizes(this.#memory.hugepagePools, now);
    return since.length > 0 ? since : shrunkPoolSizes(this.#poolsBefore, now);
  }

  #refreshIndex(): void {
    const { index, metrics, log } = this.#o;
    const report = index.refresh();
    metrics.indexScan.observe(report.durationMs / 1000);
    metrics.indexProcesses.set(report.processes);
    metrics.indexHugepages.set(report.hugepages);
    if (report.pfnsHidden && !this.#pfnsHiddenLogged) {
      this.#pfnsHiddenLogged = true;
      log.error("pagemap shows hugepages without their pfn: the agent lacks CAP_SYS_ADMIN and cannot tell who maps a poisoned hugepage", {});
    }
  }

  async #applyHealth(): Promise<void> {
    const { host, clock, metrics, log, nodeName, bootID, kernelVersion, reading, rasdaemonCorrected } = this.#o;
    const asked = this.#healthAsked;
    this.#poolsBefore = this.#memory.hugepagePools;
    this.#memory = host.memory();
    const { hugepagePools, hardwareCorruptedBytes, numaMemory, memoryFailureCounters, edacCorrected, capabilities, dimms: edacDimms } = this.#memory;
    const correctedErrors = edacCorrected ?? rasdaemonCorrected?.();
    const now = clock.now();
    this.#corrected.readDimms(edacDimms, now);
    const correctedErrorPages = this.#corrected.pages();
    const dimms = edacDimms.length > 0 ? this.#corrected.dimms() : (this.#o.rasdaemonDimms?.(now) ?? []).map(dimmEntry);
    const spec: Omit<NodeMemoryHealthSpec, "observedAt"> = {
      nodeName,
      bootID,
      ...(kernelVersion !== undefined && { kernelVersion }),
      hugepagePools,
      ...(hardwareCorruptedBytes !== undefined && { hardwareCorruptedBytes }),
      ...(memoryFailureCounters.length > 0 && { memoryFailureCounters }),
      ...(correctedErrors !== undefined && { correctedErrors }),
      ...(correctedErrorPages.length > 0 && { correctedErrorPages }),
      ...(dimms.length > 0 && { dimms }),
      capabilities: { ...capabilities, ...reading },
    };
    // Free memory, which changes at every read, is compared apart: published when it moved enough.
    const key = JSON.stringify(spec);
    const last = this.#healthApplied;
    if (!this.#healthDue && last?.key === key && !numaMemoryMoved(last.numaMemory, numaMemory) && now - last.at < HEALTH_HEARTBEAT_MS) return;
    const health: NodeMemoryHealth = {
      apiVersion: `${group}/${version}`,
      kind: "NodeMemoryHealth",
      metadata: { name: nodeName },
      spec: { ...spec, ...(numaMemory.length > 0 && { numaMemory }), observedAt: new Date(now).toISOString() },
    };
    try {
      await this.#o.health.apply(health);
      metrics.healthApplies.inc({ outcome: "ok" });
      this.#healthApplied = { key, numaMemory, at: now };
      // Asked for again while this was read or sent: the next pass publishes whatever it reads.
      if (this.#healthAsked === asked) this.#healthDue = false;
      log.debug("node memory health applied", { nodeMemoryHealth: nodeName });
    } catch (error) {
      metrics.healthApplies.inc({ outcome: "error" });
      log.warn("could not apply node memory health; will retry", { nodeMemoryHealth: nodeName, error });
    }
  }
}
