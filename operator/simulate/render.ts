// The simulator's readable timeline: what the kernel did, what the cluster does and why, capacity after.
import type { SimulationResult, SimulatedStep } from "./simulate.ts";
import type { SimulatedPrevention } from "./corrected.ts";
import { formatBytes } from "../../crds/quantity.ts";

function header(step: SimulatedStep): string {
  const e = step.error;
  const times = (count: number | undefined): string => (count !== undefined && count > 1 ? ` ×${count}` : "");
  if (!e) {
    const d = step.dimm;
    return `+${step.at}  ${step.node}  DIMM ${d?.name ?? ""}${d?.label ? ` (${d.label})` : ""}  Corrected${times(d?.count)}  (no page named)`;
  }
  const words = [e.pageType, e.result].filter(Boolean).join(" → ");
  const on = e.dimm ? `  on DIMM ${e.dimm}` : "";
  // A page's later corrected errors are counted by its agent: they make no MemoryErrorEvent of their own.
  const counted = e.severity === "Corrected" && !step.decision && !step.undecided ? "  (counted; the page already has its event)" : "";
  return `+${step.at}  ${step.node}  pfn ${e.pfn}  ${e.severity}${times(e.count)}${on}${words ? `  (${words})` : ""}${counted}`;
}

function renderPrevention(p: SimulatedPrevention): string[] {
  const state = p.action === "None" ? p.state : `${p.action}, ${p.state}`;
  const out = [`  prevention [${state}]: ${p.reason}${p.message ? `; ${p.message}` : ""}`];
  const pool = p.pool;
  if (pool)
    out.push(
      pool.from === "Pool"
        ? `    pool ${pool.size}: total ${signed(pool.totalDelta)}, free ${signed(pool.freeDelta)}, now`
        : `    pool ${pool.size}: unchanged, the new hugepage taken from free memory${pool.free2MiBlocks === undefined ? "" : ` (${pool.free2MiBlocks} free 2 MiB block(s) left)`}`,
    );
  for (const pod of p.pods) out.push(`    ${pod.action} ${pod.namespace}/${pod.name} [${pod.state}]: ${pod.reason ?? ""}`);
  return out;
}

function renderCapacity(step: SimulatedStep): string[] {
  return step.capacity.map(
    (c) =>
      `  capacity hugepages-${c.size}: kubelet advertises ${formatBytes(c.advertisedBytes)}, kernel can give ${formatBytes(c.realBytes)}, quarantined ${formatBytes(c.quarantinedBytes)} → schedulable ${formatBytes(c.advertisedBytes - c.quarantinedBytes)}`,
  );
}

function renderStep(step: SimulatedStep): string[] {
  const out = [header(step)];
  for (const line of step.kernelLines) out.push(`    │ ${line}`);
  if (step.undecided) return [...out, `  no decision: ${step.undecided}`];
  const preventions = step.preventions ?? [];
  if (step.dimm && preventions.length === 0)
    out.push(`  prevention: no watched page on DIMM ${step.dimm.name}: counted only (the risk model decides on a page's corrected-error event)`);
  const d = step.decision;
  if (!d) return [...out, ...preventions.flatMap(renderPrevention), ...renderCapacity(step)];
  const p = d.prediction;
  out.push(`  kernel [${p.kernelProfile}${p.verified ? "" : ", unverified"}]: ${p.reason}`);
  for (const m of p.mappers) out.push(`    pid ${m.pid} ${m.command}${m.podUID ? ` (${m.podUID})` : " (host)"}: ${m.reason}`);
  if (p.pool) out.push(`    pool ${p.pool.size}: total ${signed(p.pool.totalDelta)}, free ${signed(p.pool.freeDelta)}, ${p.pool.when}`);
  out.push(`  cluster [policy ${step.policy}${d.dryRun ? ", DryRun: nothing is carried out" : ""}]:`);
  for (const pod of d.pods) out.push(`    ${pod.action} ${pod.namespace}/${pod.name} [${pod.state}]: ${pod.reason ?? ""}`);
  // A corrected error or a soft offline loses nothing: there is no poisoned hugepage to speak of.
  const lost = step.error?.severity !== "Corrected" && step.error?.severity !== "SoftOffline";
  if (d.pods.length === 0 && lost) out.push("    no pod maps the poisoned hugepage: no pod is touched");
  for (const q of d.quarantine) out.push(`    quarantine ${formatBytes(q.bytes)} of hugepages-${q.size} [${q.state ?? ""}]`);
  const r = d.poolReplacement;
  if (r)
    out.push(
      `    replacement ${r.action === "Replace" ? `hugepages-${r.size ?? ""} [${r.state ?? ""}, ${(r.expected ?? "").toLowerCase()}]` : "none"}: ${r.reason ?? ""}${r.message ? `; ${r.message}` : ""}`,
    );
  const held = d.nodeAction.heldBy ? `, held by ${d.nodeAction.heldBy}` : "";
  out.push(
    `    node ${d.nodeAction.action}${d.nodeAction.state ? ` [${d.nodeAction.state}${held}]` : ""}: ${d.nodeAction.reason ?? ""}; health ${d.health.health}`,
  );
  return [...out, ...preventions.flatMap(renderPrevention), ...renderCapacity(step)];
}

const signed = (n: number): string => (n > 0 ? `+${n}` : `${n}`);

export function renderTimeline(result: SimulationResult, file: string): string {
  const s = result.summary;
  return [
    `Scenario ${file}${result.description ? `: ${result.description}` : ""}`,
    `${result.nodes} node(s), ${result.pods} pod(s), ${s.errors} memory error(s)`,
    "",
    ...result.steps.flatMap((step) => [...renderStep(step), ""]),
    ...result.warnings.map((w) => `warning: ${w}`),
    `Summary: ${s.errors} error(s), ${s.evictions} eviction(s), ${s.earlySignals} early signal(s), ${s.softOfflines} soft offline(s), ${formatBytes(s.quarantinedBytes)} quarantined, ` +
      `tainted [${s.taintedNodes.join(", ")}], cordoned [${s.cordonedNodes.join(", ")}], ${s.heldNodeActions} node action(s) held by the safety budget`,
  ].join("\n");
}
