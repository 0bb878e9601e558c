// The controller's wiring, over an in-memory list/watch of every collection it reads and the fake
// cluster: defaults applied once at the cache boundary, nothing acted on before the caches sync or
// while another replica leads, what each change queues, and the periodic resync.
import { afterEach, describe, expect, it, vi } from "vitest";
import type { MemoryErrorEvent } from "../crds/generated.ts";
import type { Query, WatchEvent } from "../runtime/api.ts";
import type { ListWatchClient } from "../runtime/informer.ts";
import { FakeClock, settle } from "../runtime/testing/fake-clock.ts";
import { memoryLogger } from "../runtime/testing/memory-logger.ts";
import { Controller } from "./controller.ts";
import { OperatorMetrics } from "./metrics.ts";
import { FakeCluster } from "./testing/fake-cluster.ts";
import { memoryEvent } from "./testing/reconcilers.ts";

type Raw = Record<string, unknown>;

const EVENTS = "/apis/mce-operator.io/v1alpha1/memoryerrorevents";
const POLICIES = "/apis/mce-operator.io/v1alpha1/containmentpolicies";
const NODES = "/api/v1/nodes";

/** Every collection the controller lists and watches, in memory; a watch stays open until stopped. */
class FakeCollections implements ListWatchClient {
  readonly items = new Map<string, Raw[]>();
  readonly #watchers = new Map<string, (event: WatchEvent) => void>();
  #version = 10;

  request<T>(_method: "GET", path: string): Promise<T> {
    return Promise.resolve({ metadata: { resourceVersion: String(this.#version) }, items: this.items.get(path) ?? [] } as T);
  }

  watch(path: string, _query: Query, onEvent: (event: WatchEvent) => void, signal: AbortSignal): Promise<void> {
    this.#watchers.set(path, onEvent);
    return new Promise((resolve) => {
      signal.addEventListener(
        "abort",
        () => {
          resolve();
        },
        { once: true },
      );
    });
  }

  /** The API server sends a watch event, with a new resourceVersion on the object. */
  send(path: string, type: WatchEvent["type"], object: Raw): void {
    const metadata = { ...(object.metadata as Raw), resourceVersion: String(++this.#version) };
    const send = this.#watchers.get(path);
    if (send === undefined) throw new Error(`no watch open on ${path}`);
    send({ type, object: { ...object, metadata } });
  }
}

function node(name: string, taints: { key: string; effect: string }[] = []): Raw {
  return { metadata: { name, resourceVersion: "1", labels: {} }, spec: { taints }, status: { allocatable: { "hugepages-2Mi": "64Mi" } } };
}

function setup() {
  const api = new FakeCollections();
  const cluster = new FakeCluster();
  const clock = new FakeClock();
  const log = memoryLogger();
  const controller = new Controller(api, cluster, new OperatorMetrics(false), log, { namespace: "mce-system", concurrency: 2, resyncMs: 600_000, clock });
  const addEvent = (event: MemoryErrorEvent): void => {
    cluster.events.set(event.metadata.name, event);
    api.items.set(EVENTS, [...(api.items.get(EVENTS) ?? []), event as unknown as Raw]);
  };
  return { api, cluster, clock, log, controller, addEvent };
}

let stop: (() => void) | undefined;
afterEach(() => {
  stop?.();
  stop = undefined;
});

describe("Controller", () => {
  it("applies the CRD's defaults to a policy once, as it enters the cache; a policy that breaks the schema is logged and left out", async () => {
    const { api, controller, log } = setup();
    stop = () => {
      controller.stop();
    };
    api.items.set(POLICIES, [
      { apiVersion: "mce-operator.io/v1alpha1", kind: "ContainmentPolicy", metadata: { name: "default", resourceVersion: "3" }, spec: {} },
      { apiVersion: "mce-operator.io/v1alpha1", kind: "ContainmentPolicy", metadata: { name: "broken", resourceVersion: "4" }, spec: { mode: "Sometimes" } },
    ]);
    controller.start();
    await controller.waitForSync();
    expect([...controller.state.policies.keys()]).toEqual(["default"]);
    const policy = controller.state.policies.get("default");
    // Filled from the CRD's +default markers, not by the model.
    expect(policy?.spec.mode).toBe("DryRun");
    expect(policy?.spec.escalation.taintAfter).toBeGreaterThan(0);
    expect(policy?.spec.safety.circuitBreaker.maxNodeActions).toBeGreaterThan(0);
    expect(typeof policy?.spec.escalation.window).toBe("string");
    expect(log.entries.filter((e) => e.level === "error").map((e) => [e.msg, e.policy])).toEqual([["policy ignored: it breaks the CRD's schema", "broken"]]);

    // A valid edit brings it back; breaking it again takes it out.
    api.send(POLICIES, "MODIFIED", {
      apiVersion: "mce-operator.io/v1alpha1",
      kind: "ContainmentPolicy",
      metadata: { name: "broken" },
      spec: { mode: "Enforce" },
    });
    expect(controller.state.policies.get("broken")?.spec.mode).toBe("Enforce");
    api.send(POLICIES, "MODIFIED", { apiVersion: "mce-operator.io/v1alpha1", kind: "ContainmentPolicy", metadata: { name: "broken" }, spec: { mode: 7 } });
    expect(controller.state.policies.has("broken")).toBe(false);
  });

  it("keeps its cache but acts on nothing until it leads and every cache has synced; then everything once, then each change", async () => {
    const { api, cluster, controller, addEvent } = setup();
    stop = () => {
      controller.stop();
    };
    api.items.set(NODES, [node("edge-1")]);
    addEvent(memoryEvent("e1", "edge-1", []));
    controller.start();
    await controller.waitForSync();
    await settle();
    expect(controller.state.events.has("e1")).toBe(true);
    expect(controller.isActing).toBe(false);
    expect(cluster.calls).toEqual([]);

    await controller.startActing();
    await settle();
    expect(cluster.calls).toContain("status e1");

    const e2 = memoryEvent("e2", "edge-1", []);
    cluster.events.set("e2", e2);
    api.send(EVENTS, "ADDED", e2 as unknown as Raw);
    await settle();
    expect(cluster.calls).toContain("status e2");

    // Another replica leads: changes still reach the cache, but nothing is written.
    controller.stopActing();
    const before = cluster.calls.length;
    const e3 = memoryEvent("e3", "edge-1", []);
    cluster.events.set("e3", e3);
    api.send(EVENTS, "ADDED", e3 as unknown as Raw);
    await settle();
    expect(controller.state.events.has("e3")).toBe(true);
    expect(cluster.calls.slice(before)).toEqual([]);
  });

  it("queues node health behind the memory errors, once its changes pause for a second", async () => {
    const { api, clock, controller } = setup();
    stop = () => {
      controller.stop();
    };
    api.items.set(NODES, [node("edge-1")]);
    controller.start();
    await controller.startActing();
    await settle();
    const nodeAdds = vi.spyOn(controller.queues.node, "addQuiet");
    const nodeRuns = vi.spyOn(controller.queues.node, "add");
    const allocatable = (mi: number): Raw => ({ ...node("edge-1"), status: { allocatable: { "hugepages-2Mi": `${mi}Mi` } } });
    api.send(NODES, "MODIFIED", allocatable(62));
    await clock.advance(600);
    api.send(NODES, "MODIFIED", allocatable(60));
    expect(nodeAdds.mock.calls).toEqual([
      ["edge-1", 1000, 5000],
      ["edge-1", 1000, 5000],
    ]);
    await clock.advance(999);
    expect(nodeRuns).not.toHaveBeenCalled();
    // Two changes 0.6 s apart: one run, a second after the last.
    await clock.advance(1);
    expect(nodeRuns.mock.calls).toEqual([["edge-1"]]);
  });

  it("a person's untaint or uncordon re-queues the events whose node action the budget held", async () => {
    const { api, controller, addEvent } = setup();
    stop = () => {
      controller.stop();
    };
    api.items.set(NODES, [node("edge-1", [{ key: "mce-operator.io/memory-errors", effect: "NoSchedule" }]), node("edge-2")]);
    const held = memoryEvent("held", "edge-2", []);
    held.status = { phase: "Escalated", nodeAction: { action: "Taint", state: "HeldByBudget", heldBy: "NodeBudget", reason: "held" } };
    addEvent(held);
    addEvent(memoryEvent("done", "edge-1", []));
    controller.start();
    await controller.startActing();
    await settle();
    const eventAdds = vi.spyOn(controller.queues.event, "add");

    // Labels or allocatable unchanged, taints the same: nothing to retry.
    api.send(NODES, "MODIFIED", node("edge-1", [{ key: "mce-operator.io/memory-errors", effect: "NoSchedule" }]));
    expect(eventAdds).not.toHaveBeenCalled();
    // The taint removed by a person: the held event is tried again, not the other.
    api.send(NODES, "MODIFIED", node("edge-1"));
    expect(eventAdds.mock.calls).toEqual([["held"]]);
  });

  it("re-queues every event and node at each resync, and only while it leads", async () => {
    const { api, clock, controller, addEvent } = setup();
    stop = () => {
      controller.stop();
    };
    api.items.set(NODES, [node("edge-1"), node("edge-2")]);
    addEvent(memoryEvent("e1", "edge-1", []));
    controller.start();
    await controller.startActing();
    await settle();
    const eventAdds = vi.spyOn(controller.queues.event, "add");
    const nodeAdds = vi.spyOn(controller.queues.node, "addQuiet");
    await clock.advance(599_000);
    expect(eventAdds).not.toHaveBeenCalled();
    await clock.advance(1000);
    expect(eventAdds.mock.calls).toEqual([["e1"]]);
    expect(new Set(nodeAdds.mock.calls.map(([name]) => name))).toEqual(new Set(["edge-1", "edge-2"]));
    controller.stopActing();
    await clock.advance(600_000);
    expect(eventAdds).toHaveBeenCalledTimes(1);
  });
});
