// Names and labels both programs agree on. An event's name is derived from what identifies the error
// (node, boot, pfn), so a retried or restarted report can only ever create the same object.
import { createHash } from "node:crypto";

export const group = "mce-operator.io";
export const version = "v1alpha1";
/** Label on every MemoryErrorEvent naming its node, so an agent can watch only its own. */
export const nodeLabel = `${group}/node`;
/** Pod annotation that opts a pod in to the early signal (the policy may name another). */
export const earlySignalAnnotation = `${group}/early-signal`;
/** Pod annotation where the agent publishes the virtual ranges a pod lost. */
export const lostRangesAnnotation = `${group}/lost-ranges`;
/** Node condition the operator keeps, for NHC, draino and dashboards. */
export const nodeConditionType = "HugepageMemoryDegraded";

/**
 * `<node>-<boot id prefix>-<pfn hex>`, shortened with a hash when it would exceed a DNS subdomain. A page's
 * first corrected error is `<node>-<boot id prefix>-ce-<pfn hex>`: an uncorrected error or a soft offline
 * of the same page later is another error, and must not meet the corrected one's name.
 */
export function memoryErrorEventName(nodeName: string, bootID: string, pfn: number, corrected = false): string {
  const boot = bootID.replace(/[^a-z0-9]/g, "").slice(0, 8);
  const name = `${nodeName}-${boot}${corrected ? "-ce" : ""}-${pfn.toString(16)}`;
  if (name.length <= 253) return name;
  const digest = createHash("sha256")
    .update(`${nodeName}/${bootID}/${pfn}${corrected ? "/ce" : ""}`)
    .digest("hex")
    .slice(0, 16);
  return `${nodeName.slice(0, 253 - digest.length - 1)}-${digest}`;
}
