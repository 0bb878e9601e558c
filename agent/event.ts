// A memory error as the MemoryErrorEvent the agent reports: what the kernel said, plus who maps the
// hugepage (from the index, known before the error) and what the kernel's own lines add.
import type { KernelError } from "../kernel/assemble.ts";
import { formatPfn, hugepageHeadPfn, type HugepageSize } from "../kernel/pfn.ts";
import type { MemoryErrorEvent, MemoryErrorEventSpec, MemoryErrorEventSpecMapper } from "../crds/generated.ts";
import { group, memoryErrorEventName, nodeLabel, version } from "../crds/naming.ts";
import { crdInfo } from "../crds/generated.ts";
import { clip, validateValue } from "../crds/validate.ts";
import type { SchemaIssue } from "../crds/validate.ts";
import { containerIDOfStatus } from "./cgroup.ts";
import type { KillPolicy, Mapper, ProcessInfo } from "./mappings.ts";
import type { SourceName } from "./source.ts";

export interface PodInfo {
  uid: string;
  namespace: string;
  name: string;
  /** Container name by runtime container id (the id without its `containerd://` scheme). */
  containers: ReadonlyMap<string, string>;
  annotations: Readonly<Record<string, string>>;
}

/** The pods on this node, by uid. */
export interface PodDirectory {
  pod(uid: string): PodInfo | undefined;
}

/** Container names by id from a pod's status.containerStatuses (and init and ephemeral ones). */
export function containersOf(statuses: readonly { name: string; containerID?: string | undefined }[]): Map<string, string> {
  return new Map(
    statuses.flatMap((status) =>
      status.containerID === undefined || status.containerID === "" ? [] : [[containerIDOfStatus(status.containerID), status.name] as const],
    ),
  );
}

export interface EventContext {
  nodeName: string;
  bootID: string;
  pods: PodDirectory;
  /** vm.memory_failure_early_kill; a process the kernel signalled while it is off had opted in itself. */
  earlyKill?: boolean | undefined;
  /** The hugepage sizes with a pool on this node: a free hugepage's size is the only one there is. */
  poolSizes: readonly HugepageSize[];
  /** With pools of several sizes: those whose total fell since the agent last read them (a dissolved free hugepage's). */
  shrunkPoolSizes?: readonly HugepageSize[] | undefined;
  numaNodeOfPfn: (pfn: number) => number | undefined;
  /** The size of the hugetlb page holding a pfn, from /proc/kpageflags; undefined when in none or unknown. */
  hugepageSizeOfPfn?: (pfn: number) => HugepageSize | undefined;
  /** A process's PR_MCE_KILL policy now; absent or undefined means unknown, reported as Default. */
  killPolicyOf?: (pid: number) => KillPolicy | undefined;
}

const MAX_MAPPERS = 256;
const MAX_LINES = 64;
const MAX_LINE = 1024;

export function buildMemoryErrorEvent(
  error: KernelError,
  /** Where the agent read it ("agent": an action of its own, which the kernel did not log). */
  source: SourceName | "agent",
  observedAt: number,
  mappers: readonly Mapper[],
  describe: (pid: number) => ProcessInfo | undefined,
  context: EventContext,
): MemoryErrorEvent {
  const signalled = new Set(error.signalled.map((s) => s.pid));
  const specMappers: MemoryErrorEventSpecMapper[] = mappers.map((mapper) => ({
    ...processFields(mapper, context.pods),
    mapping: mapper.shared ? "Shared" : "Private",
    ...(mapper.file !== undefined && { hugetlbfsFile: mapper.file }),
    virtualStart: hex(mapper.virtualStart),
    virtualEnd: hex(mapper.virtualEnd),
    killPolicy: context.killPolicyOf?.(mapper.pid) ?? "Default",
    signalledByKernel: signalled.has(mapper.pid),
  }));
  // The kernel may name a process the index had not seen map the page yet.
  for (const { pid, command } of error.signalled) {
    if (specMappers.some((m) => m.pid === pid)) continue;
    const known = describe(pid);
    specMappers.push({
      ...processFields(known ?? { pid, command }, context.pods),
      // The kernel's own name for the process it signalled.
      command: clip(command, 64),
      mapping: "Private",
      killPolicy: context.killPolicyOf?.(pid) ?? (context.earlyKill === false ? "Early" : "Default"),
      signalledByKernel: true,
    });
  }
  // A free hugepage has no mapper to tell its size: the kernel's page flags do (a corrected error's lines name no
  // page type); else, when the kernel's page type says huge, the only pool there is, or the only one that just shrank.
  const candidates = context.poolSizes.length === 1 ? context.poolSizes : (context.shrunkPoolSizes ?? []);
  const size =
    mappers[0]?.size ??
    context.hugepageSizeOfPfn?.(error.pfn) ??
    (error.pageType?.includes("huge") === true && candidates.length === 1 ? candidates[0] : undefined);
  const spec: MemoryErrorEventSpec = {
    nodeName: context.nodeName,
    bootID: context.bootID,
    observedAt: new Date(observedAt).toISOString(),
    source: source === "replay" && error.source === "Kmsg" ? "Replay" : error.source,
    pfn: formatPfn(error.pfn),
    ...(error.physicalAddress !== undefined && { physicalAddress: hex(error.physicalAddress) }),
    severity: error.severity,
    ...(error.loggedAtBoot === true && { loggedAtBoot: true }),
    ...(error.pageType !== undefined && { pageType: clip(error.pageType, 128) }),
    ...(error.result !== undefined && { result: clip(error.result, 64) }),
    ...(size !== undefined && { hugepage: hugepageOf(error.pfn, size, context) }),
    ...(specMappers.length > 0 && { mappers: specMappers.slice(0, MAX_MAPPERS) }),
    kernelLines: error.lines.slice(0, MAX_LINES).map((line) => line.slice(0, MAX_LINE)),
  };
  return {
    apiVersion: `${group}/${version}`,
    kind: "MemoryErrorEvent",
    metadata: {
      name: memoryErrorEventName(context.nodeName, context.bootID, error.pfn, error.severity === "Corrected"),
      labels: { [nodeLabel]: context.nodeName },
    },
    spec,
  };
}

function hugepageOf(pfn: number, size: HugepageSize, context: EventContext): NonNullable<MemoryErrorEventSpec["hugepage"]> {
  const headPfn = hugepageHeadPfn(pfn, size);
  const numaNode = context.numaNodeOfPfn(headPfn);
  return { size, headPfn: formatPfn(headPfn), ...(numaNode !== undefined && { numaNode }) };
}

function processFields(
  process: ProcessInfo,
  pods: PodDirectory,
): Pick<MemoryErrorEventSpecMapper, "pid" | "command" | "podUID" | "podNamespace" | "podName" | "container" | "containerID"> {
  const cgroup = process.pod;
  const pod = cgroup === undefined ? undefined : pods.pod(cgroup.podUID);
  const container = cgroup?.containerID === undefined ? undefined : pod?.containers.get(cgroup.containerID);
  return {
    pid: process.pid,
    command: clip(process.command, 64),
    ...(cgroup !== undefined && { podUID: cgroup.podUID }),
    ...(pod !== undefined && { podNamespace: pod.namespace, podName: pod.name }),
    ...(container !== undefined && { container }),
    ...(cgroup?.containerID !== undefined && { containerID: cgroup.containerID }),
  };
}

function hex(value: number): string {
  return `0x${value.toString(16)}`;
}

/**
 * The event cut to what the CRD accepts, checked by the same validator the operator and the simulator use,
 * so the API server never refuses it and the error is never lost for a detail. A detail that breaks the
 * schema (a mapper, the page-type words, a kernel line) is dropped and named in `dropped`; the error itself
 * (node, boot, pfn, severity) is kept whole. What cannot be fixed so stays in `issues` for the caller to
 * report.
 */
export function fitToSchema(event: MemoryErrorEvent): { event: MemoryErrorEvent; dropped: string[]; issues: SchemaIssue[] } {
  const dropped: string[] = [];
  let spec: MemoryErrorEventSpec = event.spec;
  const issuesOf = (candidate: MemoryErrorEventSpec): SchemaIssue[] => validateValue(crdInfo.MemoryErrorEvent.schema.properties?.spec ?? {}, candidate, "spec");
  for (let issues = issuesOf(spec); issues.length > 0; issues = issuesOf(spec)) {
    const detail = /^spec\.(mappers|kernelLines)\[(\d+)\]|^spec\.(pageType|result|physicalAddress|hugepage)\b/.exec(issues[0]?.path ?? "");
    if (!detail) return { event: { ...event, spec }, dropped, issues };
    dropped.push(`${issues[0]?.path ?? ""}: ${issues[0]?.message ?? ""}`);
    const [, list, index, field] = detail;
    if (list === "mappers") spec = { ...spec, mappers: (spec.mappers ?? []).filter((_, i) => i !== Number(index)) };
    else if (list === "kernelLines") spec = { ...spec, kernelLines: (spec.kernelLines ?? []).filter((_, i) => i !== Number(index)) };
    else if (field) spec = Object.fromEntries(Object.entries(spec).filter(([key]) => key !== field)) as MemoryErrorEventSpec;
  }
  return { event: { ...event, spec }, dropped, issues: [] };
}
