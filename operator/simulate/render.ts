// The simulator's readable timeline: what the kernel did, what the cluster does and why, capacity after.
import type { SimulationResult, SimulatedStep } from "./simulate.ts";
import { formatBytes } from "../../crds/quantity.ts";

function renderStep(step: SimulatedStep): string[] {
  const e = step.error;
  const words = [e.pageType, e.result].filter(Boolean).join(" → ");
  const out = [`+${step.at}  ${step.node}  pfn ${e.pfn}  ${e.severity}${words ? `  (${words})` : ""}`];
  for (const line of step.kernelLines) out.push(`    │ ${line}`);
  if (step.undecided) return [...out, `  no decision: ${step.undecided}`];
  const d = step.decision;
  if (!d) return out;
  const p = d.prediction;
  out.push(`  kernel [${p.kernelProfile}${p.verified ? "" : ", unverified"}]: ${p.reason}`);
  for (const m of p.mappers) out.push(`    pid ${m.pid} ${m.command}${m.podUID ? ` (${m.podUID})` : " (host)"}: ${m.reason}`);
  if (p.pool) out.push(`    pool ${p.pool.size}: total ${signed(p.pool.totalDelta)}, free ${signed(p.pool.freeDelta)}, ${p.pool.when}`);
  out.push(`  cluster [policy ${step.policy}${d.dryRun ? ", DryRun: nothing is carried out" : ""}]:`);
  for (const pod of d.pods) out.push(`    ${pod.action} ${pod.namespace}/${pod.name} [${pod.state}]: ${pod.reason ?? ""}`);
  if (d.pods.length === 0) out.push("    no pod maps the poisoned hugepage: no pod is touched");
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
  for (const c of step.capacity)
    out.push(
      `  capacity hugepages-${c.size}: kubelet advertises ${formatBytes(c.advertisedBytes)}, kernel can give ${formatBytes(c.realBytes)}, quarantined ${formatBytes(c.quarantinedBytes)} → schedulable ${formatBytes(c.advertisedBytes - c.quarantinedBytes)}`,
    );
  return out;
}

const signed = (n: number): string => (n > 0 ? `+${n}` : `${n}`);

export function renderTimeline(result: SimulationResult, file: string): string {
  const s = result.summary;
  return [
    `Scenario ${file}${result.description ? `: ${result.description}` : ""}`,
    `${result.nodes} node(s), ${result.pods} pod(s), ${result.steps.length} memory error(s)`,
    "",
    ...result.steps.flatMap((step) => [...renderStep(step), ""]),
    ...result.warnings.map((w) => `warning: ${w}`),
    `Summary: ${s.errors} error(s), ${s.evictions} eviction(s), ${s.earlySignals} early signal(s), ${formatBytes(s.quarantinedBytes)} quarantined, ` +
      `tainted [${s.taintedNodes.join(", ")}], cordoned [${s.cordonedNodes.join(", ")}], ${s.heldNodeActions} node action(s) held by the safety budget`,
  ].join("\n");
}
