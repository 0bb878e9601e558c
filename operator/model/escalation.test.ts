import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decideContainment } from "./containment.ts";
import { breaker, clusterBudget, decideNodeAction, heldActionDue, nodeActionHold, nodeHealth } from "./escalation.ts";
import { T0, budget, input, memoryError, node, policySpec } from "./fixtures.ts";
import type { ErrorRecord, Severity } from "./types.ts";

const hour = 3_600_000;
const severities: Severity[] = ["ActionOptional", "ActionRequired", "Fatal", "Corrected", "SoftOffline"];

/** A node's errors over two days, thresholds as a policy may set them, and what the node carries now. */
const escalationCase = fc
  .record({
    errors: fc.array(fc.record({ ago: fc.integer({ min: 0, max: 48 * hour }), severity: fc.constantFrom(...severities) }), { maxLength: 30 }),
    taintAfter: fc.integer({ min: 1, max: 6 }),
    extra: fc.integer({ min: 1, max: 6 }),
    countCorrected: fc.integer({ min: 0, max: 5 }),
    tainted: fc.boolean(),
    cordoned: fc.boolean(),
  })
  .map((c) => ({
    ...c,
    history: c.errors.map((e): ErrorRecord => ({ at: T0 - e.ago, severity: e.severity })),
    policy: policySpec({ escalation: { taintAfter: c.taintAfter, cordonAfter: c.taintAfter + c.extra, countCorrected: c.countCorrected } }),
  }));

describe("escalation", () => {
  it("counts corrected errors one for each countCorrected, and says so", () => {
    const corrected = Array.from({ length: 5 }, (_, i): ErrorRecord => ({ at: T0 - i * 1000, severity: "Corrected" }));
    const health = nodeHealth(corrected, policySpec({ escalation: { countCorrected: 2 } }).escalation, T0);
    expect(health).toMatchObject({ health: "Degraded", uncorrectedErrors: 0, correctedErrors: 5, countedErrors: 2, calledFor: "Taint" });
    expect(health.words).toBe("2 counted memory error(s) in 24h (0 uncorrected; 5 corrected, counted one per 2)");
  });

  it("counts an error stamped just after the operator's now (a node clock ahead)", () => {
    const health = nodeHealth([{ at: T0 + 500, severity: "ActionOptional" }], policySpec().escalation, T0);
    expect(health.uncorrectedErrors).toBe(1);
  });

  it("the health, the Node condition and the node action never disagree", () => {
    fc.assert(
      fc.property(escalationCase, (c) => {
        const [latest, ...earlier] = c.history;
        const error = memoryError({ severity: latest?.severity ?? "Corrected", observedAt: latest?.at ?? T0 });
        const decision = decideContainment(
          input({ error, node: node({ history: latest ? earlier : [], tainted: c.tainted, cordoned: c.cordoned }), policy: c.policy }),
        );
        // What the node reconciler computes for the node's health and its Node condition, from all its errors.
        const health = nodeHealth(c.history.length > 0 ? c.history : [{ at: error.observedAt, severity: error.severity }], c.policy.escalation, T0);
        const condition = health.health === "Healthy" ? "False" : "True";
        expect(decision.health).toEqual(health);
        const action = decision.nodeAction.action;
        expect(action).toBe(health.calledFor);
        expect(action === "Cordon").toBe(health.health === "Failing");
        if (action === "Taint") expect(health.health).toBe("Degraded");
        if (action !== "None") expect(condition).toBe("True");
        if (health.health === "Healthy") expect(action).toBe("None");
      }),
    );
  });

  it("opens the circuit breaker exactly at the configured count", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 20 }), fc.integer({ min: 0, max: 25 }), fc.integer({ min: 0, max: 10 }), (maxNodeActions, inWindow, outside) => {
        const { safety } = policySpec({ safety: { circuitBreaker: { maxNodeActions, window: "1h" }, maxUnavailableNodesPercent: 100, cooldown: "1s" } });
        const taken = [
          ...Array.from({ length: inWindow }, (_, i) => ({ eventName: `in-${i}`, node: `n${i}`, at: T0 - (i % 59) * 60_000 })),
          ...Array.from({ length: outside }, (_, i) => ({ eventName: `out-${i}`, node: `m${i}`, at: T0 - hour - 1 - i })),
        ];
        const b = clusterBudget({ totalNodes: 1000, actionedNow: [], taken, inFlight: [], evictionsInFlight: 0 });
        expect(breaker(b, safety, T0).open).toBe(inWindow >= maxNodeActions);
        expect(nodeActionHold("fresh", undefined, b, safety, T0)?.heldBy).toBe(inWindow >= maxNodeActions ? "CircuitBreaker" : undefined);
      }),
    );
  });

  it("counts an action in flight and its recorded status once", () => {
    const action = { eventName: "e1", node: "worker-1", at: T0 };
    const b = clusterBudget({ totalNodes: 10, actionedNow: ["worker-1"], taken: [action], inFlight: [action], evictionsInFlight: 0 });
    expect(b.nodeActionTimes).toEqual([T0]);
    expect([...b.actionedNodes]).toEqual(["worker-1"]);
  });

  it("frees a node's budget slot when a person removes its taint", () => {
    const { safety } = policySpec({ safety: { maxUnavailableNodesPercent: 10 } });
    const taken = [{ eventName: "e1", node: "worker-1", at: T0 - 2 * hour }];
    const tainted = clusterBudget({ totalNodes: 10, actionedNow: ["worker-1"], taken, inFlight: [], evictionsInFlight: 0 });
    expect(nodeActionHold("worker-2", undefined, tainted, safety, T0)?.heldBy).toBe("NodeBudget");
    const untainted = clusterBudget({ totalNodes: 10, actionedNow: [], taken, inFlight: [], evictionsInFlight: 0 });
    expect(nodeActionHold("worker-2", undefined, untainted, safety, T0)).toBeUndefined();
    // The action still happened: the breaker counts it.
    expect(untainted.nodeActionTimes).toHaveLength(1);
  });

  it("a removed taint frees its slot, for any number of nodes and any budget", () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 200 }), fc.integer({ min: 1, max: 100 }), fc.integer({ min: 0, max: 200 }), (totalNodes, percent, count) => {
        const actioned = Array.from({ length: Math.min(count, totalNodes) }, (_, i) => `n${i}`);
        const { safety } = policySpec({ safety: { maxUnavailableNodesPercent: percent, circuitBreaker: { maxNodeActions: 100_000 } } });
        const allowed = Math.floor((totalNodes * percent) / 100);
        const before = clusterBudget({ totalNodes, actionedNow: actioned, taken: [], inFlight: [], evictionsInFlight: 0 });
        const after = clusterBudget({ totalNodes, actionedNow: actioned.slice(1), taken: [], inFlight: [], evictionsInFlight: 0 });
        const held = (b: typeof before): boolean => nodeActionHold("candidate", undefined, b, safety, T0)?.heldBy === "NodeBudget";
        expect(held(before)).toBe(actioned.length + 1 > allowed);
        if (actioned.length > 0) expect(held(after)).toBe(actioned.length > allowed);
      }),
    );
  });

  it("retries a held action only while it is due", () => {
    const policy = policySpec({ escalation: { countCorrected: 2 } });
    const corrected = (n: number): ErrorRecord[] => Array.from({ length: n }, (_, i) => ({ at: T0 - i * 1000, severity: "Corrected" as const }));
    const free = { name: "worker-1", tainted: false, cordoned: false };
    const due = (n: number, over: Partial<Parameters<typeof heldActionDue>[0]> = {}): boolean =>
      heldActionDue({ action: "Taint", dryRun: false, latest: true, node: free, health: nodeHealth(corrected(n), policy.escalation, T0), ...over });
    expect(due(4)).toBe(true);
    expect(due(3)).toBe(false);
    expect(due(4, { latest: false })).toBe(false);
    expect(due(4, { dryRun: true })).toBe(false);
    expect(due(4, { node: { ...free, tainted: true } })).toBe(false);
  });

  it("names what holds an action back, in the structured field and the words", () => {
    const health = nodeHealth(
      [
        { at: T0, severity: "ActionOptional" },
        { at: T0 - 1, severity: "Fatal" },
      ],
      policySpec().escalation,
      T0,
    );
    const policy = policySpec();
    const breakerOpen = budget({ nodeActionTimes: [1, 2, 3, 4, 5].map((i) => T0 - i) });
    const held = decideNodeAction({ name: "worker-1", tainted: false, cordoned: false }, health, policy, breakerOpen, T0, false);
    expect(held).toMatchObject({ action: "Taint", state: "HeldByBudget", heldBy: "CircuitBreaker" });
    expect(held.reason).toMatch(/circuit breaker is open: 5 node action\(s\) in 1h \(limit 5\)/);
    const cooling = decideNodeAction({ name: "worker-1", tainted: false, cordoned: false, lastNodeActionAt: T0 - 1000 }, health, policy, budget(), T0, false);
    expect(cooling).toMatchObject({ state: "HeldByBudget", heldBy: "Cooldown" });
  });

  it("keeps the breaker and escalation windows at a minute or more, whatever a stored policy holds", () => {
    // Stored before the CRD's CEL floor existed: the cache's defaulting does not run CEL.
    const policy = policySpec({ escalation: { window: "0s" }, safety: { circuitBreaker: { window: "0s", maxNodeActions: 1 } } });
    const taken = [{ eventName: "e1", node: "n1", at: T0 - 1000 }];
    expect(breaker(clusterBudget({ totalNodes: 10, actionedNow: [], taken, inFlight: [], evictionsInFlight: 0 }), policy.safety, T0).open).toBe(true);
    expect(nodeHealth([{ at: T0 - 1000, severity: "Fatal" }], policy.escalation, T0).uncorrectedErrors).toBe(1);
  });
});
