// The operator's cluster writes through its REST client against a scripted plain-HTTP API server: the
// verb, path, patch type and body of each, and how each API answer becomes an outcome; and the REST
// client itself: credentials, the request count, watches.
import { KubeConfig } from "@kubernetes/client-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { ApiError, type WatchEvent } from "../../runtime/api.ts";
import { FakeClock } from "../../runtime/testing/fake-clock.ts";
import { ScriptedApiServer, status } from "../../runtime/testing/scripted-api-server.ts";
import { cordonedByAnnotation } from "../state.ts";
import { KubeActions } from "./actions.ts";
import { KubeLeases } from "./leases.ts";
import { KubeRest } from "./rest.ts";

let server: ScriptedApiServer;
let rest: KubeRest;
const verbs: string[] = [];

beforeAll(async () => {
  server = await ScriptedApiServer.start();
  rest = new KubeRest({ server: server.url, token: () => "t0ken" });
  rest.onRequest = (verb) => verbs.push(verb);
});

afterAll(async () => {
  await rest.close();
  await server.close();
});

beforeEach(() => {
  server.reset();
  verbs.length = 0;
});

const actions = (): KubeActions =>
  new KubeActions(rest, { clock: new FakeClock(Date.parse("2026-01-01T00:00:00Z")), quarantinePriorityClass: "mce-quarantine" });
const sent = (): [string, string, string, string | undefined][] => server.seen.map((s) => [s.method, s.path, s.query, s.contentType]);

describe("KubeActions", () => {
  it("writes a status by server-side apply on the status subresource, forced, as mce-operator", async () => {
    await actions().applyEventStatus("edge-1-b-5200", { phase: "Contained" });
    await actions().applyHealthStatus("edge-1", { health: "Degraded" });
    await actions().applyPolicyStatus("default", { conditions: [] });
    const apply = "application/apply-patch+yaml";
    expect(sent()).toEqual([
      ["PATCH", "/apis/mce-operator.io/v1alpha1/memoryerrorevents/edge-1-b-5200/status", "fieldManager=mce-operator&force=true", apply],
      ["PATCH", "/apis/mce-operator.io/v1alpha1/nodememoryhealths/edge-1/status", "fieldManager=mce-operator&force=true", apply],
      ["PATCH", "/apis/mce-operator.io/v1alpha1/containmentpolicies/default/status", "fieldManager=mce-operator&force=true", apply],
    ]);
    expect(server.seen[0]?.body).toEqual({
      apiVersion: "mce-operator.io/v1alpha1",
      kind: "MemoryErrorEvent",
      metadata: { name: "edge-1-b-5200" },
      status: { phase: "Contained" },
    });
    expect(verbs).toEqual(["PATCH", "PATCH", "PATCH"]);
  });

  it("evicts through the Eviction subresource: 201 evicted, 404 gone, 429 blocked with the API server's words, else the error", async () => {
    server.script = () => ({ status: 201, body: { kind: "Status", status: "Success" } });
    expect(await actions().evictPod("shop", "db-0")).toEqual({ kind: "evicted" });
    expect(server.seen[0]).toMatchObject({
      method: "POST",
      path: "/api/v1/namespaces/shop/pods/db-0/eviction",
      contentType: "application/json",
      body: { apiVersion: "policy/v1", kind: "Eviction", metadata: { name: "db-0", namespace: "shop" } },
    });
    server.script = () => status(404, "NotFound", 'pods "db-0" not found');
    expect(await actions().evictPod("shop", "db-0")).toEqual({ kind: "gone" });
    server.script = () => status(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
    const blocked = await actions().evictPod("shop", "db-0");
    expect(blocked.kind).toBe("blocked");
    expect(blocked.kind === "blocked" && blocked.message).toContain("would violate the pod's disruption budget");
    server.script = () => status(500, "InternalError", "etcdserver: request timed out");
    const failed = await actions()
      .evictPod("shop", "db-0")
      .catch((e: unknown) => e);
    expect(failed).toMatchObject({ status: 500 });
    expect((failed as ApiError).message).toContain("etcdserver: request timed out");
  });

  it("taints with a JSON patch that tests the resourceVersion it read, keeping every other taint", async () => {
    const node = { metadata: { name: "edge-1", resourceVersion: "41" }, spec: { taints: [{ key: "gpu", value: "a100", effect: "NoSchedule" }] } };
    server.script = () => ({ status: 200, body: node });
    await actions().taintNode("edge-1", "mce-operator.io/memory-errors", "3 uncorrected errors");
    expect(sent()).toEqual([
      ["GET", "/api/v1/nodes/edge-1", "", undefined],
      ["PATCH", "/api/v1/nodes/edge-1", "", "application/json-patch+json"],
    ]);
    expect(server.seen[1]?.body).toEqual([
      { op: "test", path: "/metadata/resourceVersion", value: "41" },
      {
        op: "add",
        path: "/spec/taints",
        value: [
          { key: "gpu", value: "a100", effect: "NoSchedule" },
          { key: "mce-operator.io/memory-errors", value: "3 uncorrected errors", effect: "NoSchedule", timeAdded: "2026-01-01T00:00:00.000Z" },
        ],
      },
    ]);
  });

  it("does not taint a node that has the taint, and a node changed meanwhile is a conflict, not an overwrite", async () => {
    const tainted = { metadata: { resourceVersion: "7" }, spec: { taints: [{ key: "mce-operator.io/memory-errors", effect: "NoSchedule" }] } };
    server.script = () => ({ status: 200, body: tainted });
    await actions().taintNode("edge-1", "mce-operator.io/memory-errors", "again");
    expect(sent().map(([method]) => method)).toEqual(["GET"]);
    server.reset();
    server.script = (r) =>
      r.method === "GET"
        ? { status: 200, body: { metadata: { resourceVersion: "8" }, spec: {} } }
        : status(422, "Invalid", "the server rejected our request due to an error in our request");
    await expect(actions().taintNode("edge-1", "mce-operator.io/memory-errors", "x")).rejects.toMatchObject({ status: 422 });
  });

  it("cordons with a merge patch that marks the cordon as the operator's", async () => {
    await actions().cordonNode("edge-1");
    expect(sent()).toEqual([["PATCH", "/api/v1/nodes/edge-1", "", "application/merge-patch+json"]]);
    expect(server.seen[0]?.body).toEqual({ metadata: { annotations: { [cordonedByAnnotation]: "true" } }, spec: { unschedulable: true } });
  });

  it("sets the node condition by strategic merge on nodes/status, with the heartbeat from the clock", async () => {
    const condition = { status: "True" as const, reason: "UncorrectedMemoryErrors", message: "2 errors", lastTransitionTime: "2025-12-31T00:00:00.000Z" };
    await actions().setNodeCondition("edge-1", condition);
    expect(sent()).toEqual([["PATCH", "/api/v1/nodes/edge-1/status", "", "application/strategic-merge-patch+json"]]);
    expect(server.seen[0]?.body).toEqual({
      status: { conditions: [{ type: "HugepageMemoryDegraded", ...condition, lastHeartbeatTime: "2026-01-01T00:00:00.000Z" }] },
    });
  });

  it("creates the quarantine placeholder bound to its node, owned by its event; 409 means it exists", async () => {
    const placeholder = {
      namespace: "mce-system",
      name: "quarantine-edge-1-5200-2mi",
      nodeName: "edge-1",
      size: "2Mi" as const,
      bytes: 2 * 2 ** 20,
      eventName: "edge-1-b-5200",
      eventUID: "u-1",
    };
    await actions().createQuarantinePod(placeholder);
    server.script = () => status(409, "AlreadyExists", "exists");
    await actions().createQuarantinePod(placeholder);
    server.script = () => status(403, "Forbidden", "pods is forbidden");
    await expect(actions().createQuarantinePod(placeholder)).rejects.toMatchObject({ status: 403 });
    expect(server.seen[0]).toMatchObject({ method: "POST", path: "/api/v1/namespaces/mce-system/pods" });
    expect(server.seen[0]?.body).toMatchObject({
      metadata: {
        name: "quarantine-edge-1-5200-2mi",
        ownerReferences: [{ apiVersion: "mce-operator.io/v1alpha1", kind: "MemoryErrorEvent", name: "edge-1-b-5200", uid: "u-1" }],
      },
      spec: {
        nodeName: "edge-1",
        priorityClassName: "mce-quarantine",
        automountServiceAccountToken: false,
        containers: [{ image: "registry.k8s.io/pause:3.10", resources: { requests: { "hugepages-2Mi": "2Mi" }, limits: { "hugepages-2Mi": "2Mi" } } }],
      },
    });
  });

  it("deletes a pod; one already gone is not an error, any other refusal is", async () => {
    server.script = () => status(404, "NotFound", "gone");
    await actions().deletePod("mce-system", "quarantine-edge-1-5200-2mi");
    server.script = () => status(403, "Forbidden", "no");
    await expect(actions().deletePod("mce-system", "quarantine-edge-1-5200-2mi")).rejects.toBeInstanceOf(ApiError);
    expect(sent().map(([method, path]) => [method, path])).toEqual([
      ["DELETE", "/api/v1/namespaces/mce-system/pods/quarantine-edge-1-5200-2mi"],
      ["DELETE", "/api/v1/namespaces/mce-system/pods/quarantine-edge-1-5200-2mi"],
    ]);
  });

  it("records a core Event about the object, its message cut to 1 KiB; cluster-scoped objects' Events go to default", async () => {
    await actions().recordEvent({ kind: "Node", name: "edge-1", apiVersion: "v1" }, "Warning", "TaintedForMemoryErrors", "m".repeat(5000));
    await actions().recordEvent({ kind: "Pod", apiVersion: "v1", name: "db-0", namespace: "shop", uid: "p-1" }, "Normal", "EvictedForMemoryError", "evicted");
    expect(sent().map(([method, path]) => [method, path])).toEqual([
      ["POST", "/api/v1/namespaces/default/events"],
      ["POST", "/api/v1/namespaces/shop/events"],
    ]);
    const first = server.seen[0]?.body as { metadata: { name: string }; message: string; involvedObject: unknown; source: unknown; type: string };
    expect(first.metadata.name).toMatch(/^edge-1\.[0-9a-f]{16}$/);
    expect(first.message).toHaveLength(1024);
    expect(first).toMatchObject({ type: "Warning", involvedObject: { kind: "Node", name: "edge-1" }, source: { component: "mce-operator" } });
  });

  it("an answer that is not a Status (a proxy's page) still becomes an ApiError with the status and the text", async () => {
    server.script = () => ({ status: 502, body: "Bad Gateway from the load balancer" });
    const refused = await actions()
      .cordonNode("edge-1")
      .catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(ApiError);
    expect(refused).toMatchObject({ status: 502 });
    expect((refused as ApiError).message).toContain("Bad Gateway from the load balancer");
  });
});

describe("KubeLeases", () => {
  const lease = { metadata: { name: "mce-operator", namespace: "mce-system", resourceVersion: "12" }, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } };

  it("reads the lease, and a missing lease is undefined, not an error", async () => {
    const leases = new KubeLeases(rest, "mce-system", "mce-operator");
    server.script = () => ({ status: 200, body: lease });
    expect(await leases.get()).toEqual(lease);
    server.script = () => status(404, "NotFound", 'leases.coordination.k8s.io "mce-operator" not found');
    expect(await leases.get()).toBeUndefined();
    server.script = () => status(403, "Forbidden", "no");
    await expect(leases.get()).rejects.toMatchObject({ status: 403 });
    expect(server.seen.map((s) => s.path)).toEqual(Array(3).fill("/apis/coordination.k8s.io/v1/namespaces/mce-system/leases/mce-operator"));
  });

  it("creates in the collection; replaces with the resourceVersion it read, and a stale one is a 409 for the elector", async () => {
    const leases = new KubeLeases(rest, "mce-system", "mce-operator");
    await leases.create(lease);
    server.script = () => status(409, "Conflict", "the object has been modified; please apply your changes to the latest version and try again");
    await expect(leases.replace(lease)).rejects.toMatchObject({ status: 409 });
    expect(sent().map(([method, path]) => [method, path])).toEqual([
      ["POST", "/apis/coordination.k8s.io/v1/namespaces/mce-system/leases"],
      ["PUT", "/apis/coordination.k8s.io/v1/namespaces/mce-system/leases/mce-operator"],
    ]);
    expect(server.seen[1]?.body).toEqual({ apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease });
  });
});

describe("KubeRest", () => {
  it("sends the token, JSON and its name with every request, and counts each verb", async () => {
    await rest.request("GET", "/api/v1/nodes/edge-1");
    await rest.request("POST", "/api/v1/namespaces/n/events", { body: { reason: "x" }, query: { dryRun: "All", skip: undefined } });
    expect(server.headers[0]).toMatchObject({ authorization: "Bearer t0ken", accept: "application/json", "user-agent": "mce-operator" });
    expect(server.headers[0]?.["content-type"]).toBeUndefined();
    expect(sent()[1]).toEqual(["POST", "/api/v1/namespaces/n/events", "dryRun=All", "application/json"]);
    expect(verbs).toEqual(["GET", "POST"]);
  });

  it("watches with bookmarks, and an ERROR event ends the watch with its Status: 410 Gone for the informer", async () => {
    const events: WatchEvent[] = [];
    const pod = { metadata: { name: "p", namespace: "n", resourceVersion: "7" } };
    server.script = () => ({ status: 200, body: { type: "ADDED", object: pod } });
    await rest.watch("/api/v1/pods", { resourceVersion: "5", timeoutSeconds: 20 }, (e) => events.push(e), new AbortController().signal);
    expect(events).toEqual([{ type: "ADDED", object: pod }]);
    expect(sent()[0]).toEqual(["GET", "/api/v1/pods", "resourceVersion=5&timeoutSeconds=20&allowWatchBookmarks=true&watch=true", undefined]);
    server.script = () => ({
      status: 200,
      body: { type: "ERROR", object: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version: 5 (9)" } },
    });
    const gone = await rest.watch("/api/v1/pods", { resourceVersion: "5" }, (e) => events.push(e), new AbortController().signal).catch((e: unknown) => e);
    expect(gone).toBeInstanceOf(ApiError);
    expect(gone).toMatchObject({ status: 410, reason: "Expired" });
    expect(events).toHaveLength(1);
    // An aborted watch is not sent, nor counted.
    const aborted = new AbortController();
    aborted.abort();
    await rest.watch("/api/v1/pods", {}, (e) => events.push(e), aborted.signal);
    expect(verbs).toEqual(["WATCH", "WATCH"]);
    expect(server.seen).toHaveLength(2);
  });

  it("still takes a KubeConfig of client-node, as the e2e tests and benchmarks build one, asking it for credentials each request", async () => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({
      clusters: [{ name: "local", server: server.url, skipTLSVerify: true }],
      users: [{ name: "operator", token: "from-kubeconfig", impersonateUser: "someone" }],
      contexts: [{ name: "local", cluster: "local", user: "operator" }],
      currentContext: "local",
    });
    const fromKubeConfig = new KubeRest(kubeConfig);
    try {
      await fromKubeConfig.request("PATCH", "/api/v1/nodes/edge-1", { body: { spec: {} }, patch: "merge" });
      await fromKubeConfig.request("GET", "/api/v1/nodes/edge-1");
    } finally {
      await fromKubeConfig.close();
    }
    expect(sent().map(([method, , , contentType]) => [method, contentType])).toEqual([
      ["PATCH", "application/merge-patch+json"],
      ["GET", undefined],
    ]);
    for (const headers of server.headers)
      expect(headers).toMatchObject({ authorization: "Bearer from-kubeconfig", "impersonate-user": "someone", "user-agent": "mce-operator" });
  });
});
