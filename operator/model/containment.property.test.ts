import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decideContainment } from "./containment.ts";
import type { ContainmentInput } from "./containment.ts";
import type { Mapper, PodState } from "./types.ts";
import { T0, budget, input, mapper, memoryError, node, pod, policySpec } from "./fixtures.ts";

const podName = fc.stringMatching(/^[a-z][a-z0-9-]{0,11}$/);

/** A node with some pods, a subset of which map the poisoned hugepage. */
const scenario = fc
  .record({
    names: fc.uniqueArray(podName, { minLength: 1, maxLength: 12 }),
    mapsMask: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
    optIn: fc.array(fc.boolean(), { minLength: 12, maxLength: 12 }),
    shared: fc.boolean(),
    earlyKill: fc.boolean(),
    killPolicy: fc.constantFrom<Mapper["killPolicy"]>("Default", "Early", "Late"),
    severity: fc.constantFrom<"ActionOptional" | "ActionRequired" | "SoftOffline" | "Corrected">(
      "ActionOptional",
      "ActionRequired",
      "SoftOffline",
      "Corrected",
    ),
    history: fc.nat({ max: 6 }),
    mode: fc.constantFrom<"DryRun" | "Enforce">("DryRun", "Enforce"),
    inFlight: fc.nat({ max: 12 }),
  })
  .map((s): ContainmentInput => {
    const pods = s.names.map((n, i) => pod(n, { annotations: s.optIn[i] ? { "mce-operator.io/early-signal": "true" } : {} }));
    const mappers = s.names.filter((_, i) => s.mapsMask[i]).map((n) => mapper(n, { mapping: s.shared ? "Shared" : "Private", killPolicy: s.killPolicy }));
    return input({
      error: memoryError({ severity: s.severity, mappers }),
      node: node({
        earlyKill: s.earlyKill,
        history: Array.from({ length: s.history }, (_, i) => ({ at: T0 - (i + 1) * 1000, severity: "ActionOptional" as const })),
      }),
      pods,
      policy: policySpec({ mode: s.mode }),
      budget: budget({ evictionsInFlight: s.inFlight }),
    });
  });

describe("containment model invariants", () => {
  it("same input gives the same output", () => {
    fc.assert(
      fc.property(scenario, (i) => {
        expect(decideContainment(i)).toEqual(decideContainment(structuredClone(i)));
      }),
    );
  });

  it("never touches a pod that maps nothing poisoned", () => {
    fc.assert(
      fc.property(scenario, (i) => {
        const mappers = new Set(i.error.mappers.map((m) => m.podUID));
        for (const p of decideContainment(i).pods) expect(mappers.has(p.uid)).toBe(true);
      }),
    );
  });

  it("adding unrelated pods and nodes changes no decision", () => {
    const extra = fc.uniqueArray(
      podName.map((n) => `zz-${n}`),
      { maxLength: 20 },
    );
    fc.assert(
      fc.property(scenario, extra, fc.nat({ max: 1000 }), (i, names, moreNodes) => {
        const unrelated: PodState[] = names.map((n) => pod(n, { nodeName: n.length % 2 ? "worker-2" : "worker-1" }));
        const bigger = { ...i, pods: [...i.pods, ...unrelated], budget: { ...i.budget, totalNodes: i.budget.totalNodes + moreNodes } };
        expect(decideContainment(bigger)).toEqual(decideContainment(i));
      }),
    );
  });

  it("never taints or cordons more nodes than the budget, whatever the storm", () => {
    const storm = fc.record({
      totalNodes: fc.integer({ min: 1, max: 200 }),
      percent: fc.integer({ min: 0, max: 100 }),
      maxNodeActions: fc.integer({ min: 1, max: 50 }),
      events: fc.array(fc.record({ node: fc.nat(), gapMs: fc.nat({ max: 120_000 }) }), { minLength: 1, maxLength: 300 }),
    });
    fc.assert(
      fc.property(storm, ({ totalNodes, percent, maxNodeActions, events }) => {
        const policy = policySpec({
          escalation: { taintAfter: 1, cordonAfter: 2 },
          safety: { maxUnavailableNodesPercent: percent, circuitBreaker: { maxNodeActions, window: "1h" }, cooldown: "1s" },
        });
        const actioned = new Set<string>();
        const actionTimes: number[] = [];
        const history = new Map<string, { at: number; severity: "ActionOptional" }[]>();
        let now = T0;
        for (const e of events) {
          now += e.gapMs;
          const name = `node-${e.node % totalNodes}`;
          const past = history.get(name) ?? [];
          const d = decideContainment(
            input({
              error: memoryError({ nodeName: name, observedAt: now }),
              node: node({ name, history: past, tainted: actioned.has(name) }),
              policy,
              budget: budget({ totalNodes, actionedNodes: actioned, nodeActionTimes: actionTimes }),
              now,
            }),
          );
          history.set(name, [...past, { at: now, severity: "ActionOptional" }]);
          if (d.nodeAction.state === "Planned") {
            actioned.add(name);
            actionTimes.push(now);
          }
          expect(actioned.size).toBeLessThanOrEqual(Math.floor((totalNodes * percent) / 100));
          expect(actionTimes.filter((t) => t > now - 3_600_000).length).toBeLessThanOrEqual(maxNodeActions);
        }
      }),
    );
  });
});
