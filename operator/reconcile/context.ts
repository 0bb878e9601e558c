// What the three reconcilers share: the cache, the narrow interface to the cluster, metrics, the logger,
// the clock, and the helpers that write conditions and record Kubernetes Events.
import { createHash } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import type { MemoryErrorEvent, MemoryErrorEventStatus } from "../../crds/generated.ts";
import { clip } from "../../crds/validate.ts";
import type { ClusterActions, ObjectRef } from "../actions.ts";
import type { Logger } from "../../runtime/log.ts";
import type { OperatorMetrics } from "../metrics.ts";
import type { ClusterState } from "../state.ts";

export interface ReconcileContext {
  state: ClusterState;
  actions: ClusterActions;
  metrics: OperatorMetrics;
  log: Logger;
  /** Namespace of the quarantine placeholder pods. */
  namespace: string;
  now: () => number;
  /** Called when a node's health may have changed. */
  enqueueNode: (name: string) => void;
}

export type Condition = NonNullable<MemoryErrorEventStatus["conditions"]>[number];

export const iso = (ms: number): string => new Date(ms).toISOString();
/** Cut to the CRD's maxLength of every reason and message field the operator writes. */
export const words = (text: string): string => clip(text, 1024);
export const nodeRef = (name: string): ObjectRef => ({ kind: "Node", name, apiVersion: "v1" });
export const podRef = (pod: { name: string; namespace: string; uid: string }): ObjectRef => ({ kind: "Pod", ...pod, apiVersion: "v1" });

export function quarantinePodName(eventName: string, size: string): string {
  return `mce-quarantine-${createHash("sha256").update(eventName).digest("hex").slice(0, 16)}-${size.toLowerCase()}`;
}

/** Sets one condition, keeping its lastTransitionTime while its status does not change. */
export function setCondition(
  conditions: Condition[] | undefined,
  next: Omit<Condition, "lastTransitionTime">,
  now: number,
  generation: number | undefined,
): Condition[] {
  const old = conditions?.find((c) => c.type === next.type);
  const condition: Condition = {
    ...next,
    observedGeneration: generation,
    lastTransitionTime: old && old.status === next.status ? old.lastTransitionTime : iso(now),
  };
  return [...(conditions ?? []).filter((c) => c.type !== next.type), condition];
}

/** A Kubernetes Event is for people: recording one never holds up or stops containment. */
export function recordEvent(context: ReconcileContext, about: ObjectRef, type: "Normal" | "Warning", reason: string, message: string): void {
  context.actions.recordEvent(about, type, reason, message).catch((e: unknown) => {
    context.log.warn("cannot record event", { reason, object: `${about.kind}/${about.name}`, error: e });
  });
}

/** Drops fields whose value is undefined, at every depth: the API server stores no such field. */
function stored(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(stored);
  if (typeof value !== "object" || value === null) return value;
  return Object.fromEntries(Object.entries(value).flatMap(([k, v]) => (v === undefined ? [] : [[k, stored(v)]])));
}

/** Whether two statuses would be stored the same: deep equality, blind to fields left undefined. */
export const sameStatus = (a: unknown, b: unknown): boolean => isDeepStrictEqual(stored(a), stored(b));

/**
 * Applies the operator's part of an event's status and keeps the cache ahead of the watch with what the
 * API server now holds (the agent may have added its part meanwhile), so the next step and the budget see
 * what was just recorded. earlySignals and poolReplacementResult belong to the node's agent: the
 * operator's apply never claims them.
 */
export async function writeEventStatus(context: ReconcileContext, event: MemoryErrorEvent, status: MemoryErrorEventStatus): Promise<void> {
  const held = await context.actions.applyEventStatus(event.metadata.name, { ...status, earlySignals: undefined, poolReplacementResult: undefined });
  context.state.upsertEvent(held);
}
