// The simulator's scenario file: a cluster snapshot plus a timeline of kernel events. Validated against
// a schema so a mistake is reported with the file, the path and line inside it, and what was expected.
import { LineCounter, parseDocument } from "yaml";
import type { DefaultedContainmentPolicy } from "../../crds/generated.ts";
import type { JsonSchema } from "../../crds/schema.ts";
import { parseResource, SchemaError, validateValue } from "../../crds/validate.ts";
import type { SchemaIssue } from "../../crds/validate.ts";
import { parseQuantity } from "../../crds/quantity.ts";
import { MAX_PFN, type HugepageSize } from "../../kernel/pfn.ts";
import { parseDuration } from "../model/duration.ts";
import { selectorMatches } from "../model/selector.ts";

const hexPattern = "^(0x)?[0-9a-fA-F]+$";
/** What a scenario may expand to: enough for the design's largest clusters, small enough to simulate. */
export const MAX_NODES = 10_000;
export const MAX_PODS = 300_000;
/** Corrected errors in one timeline entry: as many as the policy's highest threshold. */
export const MAX_COUNT = 1_000_000;
/** The highest pfn x86-64 addresses: 52 physical address bits, 4 KiB pages. */
const quantityPattern = "^[0-9]+(Ki|Mi|Gi|Ti)?$";
const str = (description: string, extra: JsonSchema = {}): JsonSchema => ({ type: "string", description, ...extra });
const int = (description: string, minimum = 0): JsonSchema => ({ type: "integer", description, minimum });
const bool = (description: string): JsonSchema => ({ type: "boolean", description });
const map = (description: string): JsonSchema => ({ type: "object", description, additionalProperties: { type: "string" } });
const sizeEnum: JsonSchema = { type: "string", enum: ["2Mi", "1Gi"], description: "hugepage size" };
const perSize = (description: string): JsonSchema => ({
  type: "object",
  description,
  properties: { "2Mi": str("quantity", { pattern: quantityPattern }), "1Gi": str("quantity", { pattern: quantityPattern }) },
});
const selector: JsonSchema = { type: "object", description: "label selector", properties: { matchLabels: map("labels") }, required: ["matchLabels"] };

const scenarioSchema: JsonSchema = {
  type: "object",
  required: ["nodes", "timeline"],
  properties: {
    description: str("what the scenario shows"),
    start: str("wall-clock time of the first timeline entry", { format: "date-time" }),
    policies: { type: "array", description: "ContainmentPolicy objects (metadata and spec)", items: { type: "object", additionalProperties: true } },
    nodes: {
      type: "array",
      description: "nodes",
      items: {
        type: "object",
        required: ["name"],
        properties: {
          name: str("node name; with replicas, the prefix of name-0, name-1, ..."),
          replicas: { ...int("how many identical nodes this entry stands for", 1), maximum: MAX_NODES },
          labels: map("node labels"),
          kernelRelease: str("uname -r of the node's kernel"),
          earlyKill: bool("vm.memory_failure_early_kill"),
          pools: {
            type: "array",
            description: "hugepage pools",
            items: {
              type: "object",
              required: ["size", "total", "free"],
              properties: {
                size: sizeEnum,
                numaNode: { ...int("NUMA node"), maximum: 1023 },
                total: { ...int("nr_hugepages"), maximum: 1_000_000 },
                free: { ...int("free_hugepages"), maximum: 1_000_000 },
              },
            },
          },
          allocatable: perSize("what the kubelet advertises; defaults to the pools"),
          freeMemory: {
            type: "string",
            description: "free memory on NUMA node 0 (a quantity such as 3Gi), for pool replacement",
            pattern: "^[0-9]+(Ki|Mi|Gi|Ti)?$",
          },
          free2MiBlocks: int("free memory on NUMA node 0 in whole 2 MiB blocks (buddy order 9 and up)"),
          softOffline: bool("the kernel has /sys/devices/system/memory/soft_offline_page (default true)"),
          enableSoftOffline: { ...int("vm.enable_soft_offline (Linux 6.11+): 0 turns soft offline off, bit 1 skips hugetlb pages"), maximum: 255 },
        },
      },
    },
    pods: {
      type: "array",
      description: "pods",
      items: {
        type: "object",
        required: ["name", "node"],
        properties: {
          name: str("pod name"),
          namespace: str("namespace (default)"),
          node: str("node the pod runs on"),
          labels: map("pod labels"),
          annotations: map("pod annotations"),
          priority: { type: "integer", description: "pod priority" },
          hugepages: perSize("hugepage requests"),
          mappings: {
            type: "array",
            description: "hugetlb mappings the agent's index knows for this pod's processes",
            items: {
              type: "object",
              required: ["pid", "command", "size", "headPfn"],
              properties: {
                container: str("container name"),
                pid: int("process id", 1),
                command: str("comm"),
                size: sizeEnum,
                headPfn: str("pfn of the first mapped hugepage", { pattern: hexPattern }),
                count: int("consecutive hugepages mapped", 1),
                virtualStart: str("virtual address of the mapping", { pattern: hexPattern }),
                hugetlbfsFile: str("hugetlbfs file for a shared mapping (MAP_SHARED)"),
                killPolicy: { type: "string", enum: ["Early", "Late", "Default"], description: "PR_MCE_KILL policy" },
              },
            },
          },
        },
      },
    },
    pdbs: {
      type: "array",
      description: "PodDisruptionBudgets",
      items: {
        type: "object",
        required: ["name", "selector", "disruptionsAllowed"],
        properties: { name: str("name"), namespace: str("namespace"), selector, disruptionsAllowed: int("disruptions allowed now") },
      },
    },
    timeline: {
      type: "array",
      description: "kernel events in time order",
      items: {
        type: "object",
        required: ["at"],
        properties: {
          at: str("offset from start, a duration such as 0s, 90s, 2h", { pattern: "^([0-9]+(\\.[0-9]+)?(ms|s|m|h))+$" }),
          node: str("the node the kernel runs on"),
          nodes: selector,
          kernel: str("verbatim kernel lines"),
          error: {
            type: "object",
            description: "a structured memory error",
            required: ["pfn", "severity"],
            properties: {
              pfn: str("raw pfn", { pattern: hexPattern }),
              severity: { type: "string", enum: ["Corrected", "ActionOptional", "ActionRequired", "Fatal", "SoftOffline"], description: "severity" },
              pageType: str("the kernel's page type words"),
              result: str("the kernel's result word"),
              size: sizeEnum,
              count: { ...int("Corrected only: how many corrected errors the page took at this time (default 1)", 1), maximum: MAX_COUNT },
              dimm: str("Corrected only: the DIMM holding the page (EDAC's name, such as mc0/dimm1, or its label); it counts the errors too", {
                maxLength: 64,
              }),
            },
          },
          dimm: {
            type: "object",
            description: "corrected errors on a DIMM that name no page (its EDAC counter rose)",
            required: ["name", "count"],
            properties: {
              name: str("EDAC's name of the DIMM, such as mc0/dimm1", { maxLength: 64 }),
              label: str("the DIMM's label, the silkscreen name", { maxLength: 128 }),
              count: { ...int("how many corrected errors", 1), maximum: MAX_COUNT },
            },
          },
        },
      },
    },
  },
};

export interface ScenarioMapping {
  container?: string;
  pid: number;
  command: string;
  size: HugepageSize;
  headPfn: string;
  count?: number;
  virtualStart?: string;
  hugetlbfsFile?: string;
  killPolicy?: "Early" | "Late" | "Default";
}

export interface ScenarioNode {
  name: string;
  replicas?: number;
  labels?: Record<string, string>;
  kernelRelease?: string;
  earlyKill?: boolean;
  pools?: { size: HugepageSize; numaNode?: number; total: number; free: number }[];
  allocatable?: Partial<Record<HugepageSize, string>>;
  freeMemory?: string;
  free2MiBlocks?: number;
  softOffline?: boolean;
  enableSoftOffline?: number;
}

export interface ScenarioPod {
  name: string;
  namespace?: string;
  node: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  priority?: number;
  hugepages?: Partial<Record<HugepageSize, string>>;
  mappings?: ScenarioMapping[];
}

export interface ScenarioEntry {
  at: string;
  node?: string;
  nodes?: { matchLabels: Record<string, string> };
  kernel?: string;
  error?: {
    pfn: string;
    severity: "Corrected" | "ActionOptional" | "ActionRequired" | "Fatal" | "SoftOffline";
    pageType?: string;
    result?: string;
    size?: HugepageSize;
    count?: number;
    dimm?: string;
  };
  dimm?: { name: string; label?: string; count: number };
}

export interface Scenario {
  description?: string;
  start?: string;
  policies: DefaultedContainmentPolicy[];
  nodes: ScenarioNode[];
  pods: ScenarioPod[];
  pdbs: { name: string; namespace?: string; selector: { matchLabels: Record<string, string> }; disruptionsAllowed: number }[];
  timeline: ScenarioEntry[];
}

export class ScenarioError extends Error {
  constructor(file: string, issues: (SchemaIssue & { line?: number | undefined })[]) {
    super(issues.map((i) => `${file}${i.line ? `:${i.line}` : ""}: ${i.path || "(top level)"}: ${i.message}`).join("\n"));
    this.name = "ScenarioError";
  }
}

/** "spec.pods[2].name" → ["spec", "pods", 2, "name"], for finding the YAML node of an issue. */
const pathKeys = (path: string): (string | number)[] =>
  [...path.matchAll(/([^.[\]]+)|\[(\d+)\]/g)].map((m) => (m[2] !== undefined ? Number(m[2]) : (m[1] ?? "")));

/** Parses and validates a scenario; every problem names the file, the path and the line. */
export function parseScenario(text: string, file: string): Scenario {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length > 0)
    throw new ScenarioError(
      file,
      doc.errors.map((e) => ({ path: "", message: e.message.split("\n")[0] ?? e.message, line: e.linePos?.[0].line })),
    );
  const lineOf = (path: string): number | undefined => {
    const keys = pathKeys(path);
    for (let n = keys.length; n > 0; n--) {
      const node = doc.getIn(keys.slice(0, n), true) as { range?: [number, number, number] } | undefined;
      if (node?.range) return lineCounter.linePos(node.range[0]).line;
    }
    return undefined;
  };
  const raw: unknown = doc.toJS();
  const issues = validateValue(scenarioSchema, raw);
  if (issues.length > 0)
    throw new ScenarioError(
      file,
      issues.map((i) => ({ ...i, line: lineOf(i.path) })),
    );
  const scenario = raw as Omit<Scenario, "policies" | "pods" | "pdbs"> & { policies?: unknown[]; pods?: ScenarioPod[]; pdbs?: Scenario["pdbs"] };
  const policies = (scenario.policies ?? [{ metadata: { name: "default" }, spec: { mode: "Enforce" } }]).map((p, i) => {
    try {
      return parseResource("ContainmentPolicy", p, `policies[${i}]`);
    } catch (e) {
      if (!(e instanceof SchemaError)) throw e;
      throw new ScenarioError(
        file,
        e.issues.map((issue) => ({ path: `policies[${i}].${issue.path}`, message: issue.message, line: lineOf(`policies[${i}].${issue.path}`) })),
      );
    }
  });
  const entryIssues = scenario.timeline.flatMap((entry, i): SchemaIssue[] => {
    const path = `timeline[${i}]`;
    const what = [entry.kernel, entry.error, entry.dimm].filter(Boolean).length;
    const where = [entry.node, entry.nodes].filter(Boolean).length;
    return [
      ...(what === 1 ? [] : [{ path, message: "expected exactly one of kernel (verbatim lines), error (structured) or dimm (corrected errors on a DIMM)" }]),
      ...(where === 1 ? [] : [{ path, message: "expected exactly one of node or nodes" }]),
    ];
  });
  const issuesFound = [...entryIssues, ...consistencyIssues(scenario)];
  if (issuesFound.length > 0)
    throw new ScenarioError(
      file,
      issuesFound.map((i) => ({ ...i, line: lineOf(i.path) })),
    );
  return { ...scenario, policies, pods: scenario.pods ?? [], pdbs: scenario.pdbs ?? [] };
}

/** What the schema cannot say: names that must be unique or must exist, bounds across entries, order. */
function consistencyIssues(scenario: Omit<Scenario, "policies" | "pods" | "pdbs"> & { pods?: ScenarioPod[] }): SchemaIssue[] {
  const issues: SchemaIssue[] = [];
  const nodeLabels = new Map<string, Record<string, string>>();
  let expanded = 0;
  scenario.nodes.forEach((n, i) => {
    const path = `nodes[${i}]`;
    expanded += n.replicas ?? 1;
    if (expanded > MAX_NODES) issues.push({ path: `${path}.replicas`, message: `the scenario expands to more than ${MAX_NODES} nodes` });
    const names = n.replicas ? Array.from({ length: Math.min(n.replicas, MAX_NODES) }, (_, r) => `${n.name}-${r}`) : [n.name];
    for (const name of names) {
      if (nodeLabels.has(name)) issues.push({ path: `${path}.name`, message: `node ${name} is named twice` });
      nodeLabels.set(name, n.labels ?? {});
    }
    (n.pools ?? []).forEach((pool, j) => {
      if (pool.free > pool.total) issues.push({ path: `${path}.pools[${j}].free`, message: `free (${pool.free}) exceeds total (${pool.total})` });
    });
    for (const size of ["2Mi", "1Gi"] as const) quantityIssue(n.allocatable?.[size], `${path}.allocatable.${size}`, issues);
    quantityIssue(n.freeMemory, `${path}.freeMemory`, issues);
  });
  const pods = scenario.pods ?? [];
  if (pods.length > MAX_PODS) issues.push({ path: "pods", message: `more than ${MAX_PODS} pods` });
  const podNames = new Set<string>();
  pods.forEach((pod, i) => {
    const key = `${pod.namespace ?? "default"}/${pod.name}`;
    if (podNames.has(key)) issues.push({ path: `pods[${i}].name`, message: `pod ${key} is named twice` });
    podNames.add(key);
    if (!nodeLabels.has(pod.node)) issues.push({ path: `pods[${i}].node`, message: `no node named ${pod.node}` });
    for (const size of ["2Mi", "1Gi"] as const) quantityIssue(pod.hugepages?.[size], `pods[${i}].hugepages.${size}`, issues);
    (pod.mappings ?? []).forEach((m, j) => {
      pfnIssue(m.headPfn, `pods[${i}].mappings[${j}].headPfn`, issues);
    });
  });
  let previous = 0;
  scenario.timeline.forEach((entry, i) => {
    const path = `timeline[${i}]`;
    const at = parseDuration(entry.at, `${path}.at`);
    if (at < previous) issues.push({ path: `${path}.at`, message: `${entry.at} comes before the entry above it: the timeline is in time order` });
    previous = Math.max(previous, at);
    if (entry.node !== undefined && !nodeLabels.has(entry.node)) issues.push({ path: `${path}.node`, message: `no node named ${entry.node}` });
    if (entry.nodes !== undefined && ![...nodeLabels.values()].some((labels) => selectorMatches(entry.nodes, labels)))
      issues.push({ path: `${path}.nodes`, message: "selects no node" });
    if (entry.error) pfnIssue(entry.error.pfn, `${path}.error.pfn`, issues);
    if (entry.error && entry.error.severity !== "Corrected")
      for (const field of ["count", "dimm"] as const)
        if (entry.error[field] !== undefined)
          issues.push({
            path: `${path}.error.${field}`,
            message: `${field} is only for Corrected errors, not ${entry.error.severity} (an uncorrected error is one event on its page)`,
          });
  });
  return issues;
}

function quantityIssue(text: string | undefined, path: string, issues: SchemaIssue[]): void {
  if (text !== undefined && !Number.isSafeInteger(parseQuantity(text))) issues.push({ path, message: `${text} is too large a quantity` });
}

function pfnIssue(text: string, path: string, issues: SchemaIssue[]): void {
  if (Number.parseInt(text.replace(/^0x/i, ""), 16) > MAX_PFN) issues.push({ path, message: `${text} is beyond the 52-bit physical address space` });
}
