// Builders for model inputs, shared by the model's tests and benchmark so each states only what differs.
import type { ContainmentPolicySpec } from "../../crds/generated.ts";
import { parseResource } from "../../crds/validate.ts";
import type { ContainmentInput } from "./containment.ts";
import type { ClusterBudget, Mapper, MemoryError, NodeState, PodState, Policy } from "./types.ts";

export const T0 = Date.parse("2026-11-25T12:00:00Z");

export function policySpec(spec: Partial<ContainmentPolicySpec> = {}): Policy {
  // As the operator's cache reads a stored policy: the structural schema only (see ValidateOptions).
  return parseResource("ContainmentPolicy", { metadata: { name: "test" }, spec: { mode: "Enforce", ...spec } }, "test policy", { celRules: false }).spec;
}

export function node(overrides: Partial<NodeState> = {}): NodeState {
  return {
    name: "worker-1",
    labels: {},
    kernelRelease: "6.1.0-56-amd64",
    earlyKill: false,
    pools: [{ size: "2Mi", numaNode: 0, total: 32, free: 16 }],
    allocatableBytes: { "2Mi": 32 * 2 * 1024 * 1024 },
    tainted: false,
    cordoned: false,
    history: [],
    poisonedHugepages: [],
    ...overrides,
  };
}

export function pod(name: string, overrides: Partial<PodState> = {}): PodState {
  return {
    uid: `uid-${name}`,
    namespace: "apps",
    name,
    nodeName: "worker-1",
    labels: { app: name },
    annotations: {},
    priority: 0,
    hugepageRequestBytes: { "2Mi": 4 * 1024 * 1024 },
    ...overrides,
  };
}

export function mapper(podName: string, overrides: Partial<Mapper> = {}): Mapper {
  return {
    pid: 100 + podName.length,
    command: podName.slice(0, 15),
    podUID: `uid-${podName}`,
    podNamespace: "apps",
    podName,
    container: "main",
    mapping: "Private",
    killPolicy: "Default",
    virtualStart: "0x7f0000200000",
    virtualEnd: "0x7f0000400000",
    ...overrides,
  };
}

/** A process that maps the hugepage through a shared hugetlbfs file. */
export const shared = (name: string, killPolicy: Mapper["killPolicy"] = "Default"): Mapper =>
  mapper(name, { command: name, mapping: "Shared", hugetlbfsFile: "/dev/hugepages/cache", killPolicy });

export function memoryError(overrides: Partial<MemoryError> = {}): MemoryError {
  return {
    nodeName: "worker-1",
    pfn: 0x5205,
    severity: "ActionOptional",
    pageType: "huge page",
    result: "Recovered",
    hugepage: { size: "2Mi", headPfn: 0x5200, numaNode: 0 },
    mappers: [],
    observedAt: T0,
    ...overrides,
  };
}

export function budget(overrides: Partial<ClusterBudget> = {}): ClusterBudget {
  return { totalNodes: 100, actionedNodes: new Set(), nodeActionTimes: [], evictionsInFlight: 0, ...overrides };
}

export function input(overrides: Partial<ContainmentInput> = {}): ContainmentInput {
  return { error: memoryError(), node: node(), pods: [], pdbs: [], policy: policySpec(), budget: budget(), now: T0, ...overrides };
}
