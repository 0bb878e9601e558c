// The informer against an in-memory API server (FakeListWatch) and a fake clock.
import { afterEach, describe, expect, it } from "vitest";
import { ApiError, type WatchEvent } from "./api.ts";
import { Informer, objectKey, type InformerOptions } from "./informer.ts";
import { FakeClock, settle } from "./testing/fake-clock.ts";
import { FakeListWatch } from "./testing/fake-list-watch.ts";

const pod = (name: string, rv: string, uid = `uid-${name}`): Record<string, unknown> => ({ metadata: { name, namespace: "n", uid, resourceVersion: rv } });
const event = (type: WatchEvent["type"], object: Record<string, unknown>): WatchEvent => ({ type, object });
const list = (rv: string, items: Record<string, unknown>[], next?: string) => ({
  metadata: { resourceVersion: rv, ...(next !== undefined && { continue: next }) },
  items,
});
const gone = (): ApiError => ApiError.fromStatus("watch /api/v1/pods", { code: 410, reason: "Expired", message: "too old resource version" });

type Meta = { name: string; resourceVersion: string };
const stops: AbortController[] = [];
afterEach(() => {
  for (const stop of stops.splice(0)) stop.abort();
});

function start(server: FakeListWatch, clock = new FakeClock(), options: Partial<InformerOptions<Meta>> = {}) {
  const upserts: string[] = [];
  const deletes: string[] = [];
  const errors: { status: number | undefined; retryInMs: number }[] = [];
  const name = (meta: Meta): string => `${meta.name}@${meta.resourceVersion}`;
  const informer = new Informer<Meta>(server, {
    path: "/api/v1/pods",
    query: { fieldSelector: "spec.nodeName=n1" },
    transform: (raw) => raw.metadata as Meta,
    onUpsert: (key, meta) => {
      expect(key).toBe(`n/${meta.name}`);
      upserts.push(name(meta));
    },
    onDelete: (_key, meta) => deletes.push(name(meta)),
    onError: (error, retryInMs) => errors.push({ status: error instanceof ApiError ? error.status : undefined, retryInMs }),
    clock,
    backoff: { initialMs: 100, maxMs: 400 },
    ...options,
  });
  const abort = new AbortController();
  stops.push(abort);
  const done = informer.run(abort.signal);
  return { informer, upserts, deletes, errors, clock, abort, done };
}

describe("Informer", () => {
  it("lists, then watches from the list's resourceVersion, and resumes from the last event when the server ends the watch", async () => {
    const server = new FakeListWatch();
    server.lists.push(list("10", [pod("a", "5"), pod("b", "7")]));
    server.watches.push(
      { events: [event("MODIFIED", pod("a", "11")), event("ADDED", pod("c", "12"))] },
      { events: [event("BOOKMARK", { metadata: { resourceVersion: "15" } }), event("DELETED", pod("b", "16"))] },
    );
    const { informer, upserts, deletes, errors } = start(server);
    await server.whenIdle();
    expect(informer.hasSynced).toBe(true);
    await informer.synced;
    expect(upserts).toEqual(["a@5", "b@7", "a@11", "c@12"]);
    // The object as the DELETED event shows it last.
    expect(deletes).toEqual(["b@16"]);
    expect(errors).toEqual([]);
    expect([...informer.store.keys()]).toEqual(["n/a", "n/c"]);
    expect(server.watchQueries.map((q) => q.resourceVersion)).toEqual(["10", "12", "16"]);
    for (const q of server.watchQueries) {
      expect(q).toMatchObject({ fieldSelector: "spec.nodeName=n1", allowWatchBookmarks: true });
      expect(q.timeoutSeconds).toBeGreaterThanOrEqual(240);
      expect(q.timeoutSeconds).toBeLessThanOrEqual(300);
    }
    expect(server.requests.filter(([kind]) => kind === "list").map(([, q]) => q)).toEqual([
      { fieldSelector: "spec.nodeName=n1", limit: 500, continue: undefined },
    ]);
  });

  it("turns each page into its slim copies before asking for the next: a large cluster's raw objects are never all held at once", async () => {
    const server = new FakeListWatch();
    server.lists.push(list("10", [pod("a", "1"), pod("b", "2")], "page2"), list("10", [pod("c", "3")]));
    const listsAsked: number[] = [];
    const { upserts } = start(server, new FakeClock(), {
      transform: (raw) => {
        listsAsked.push(server.requests.filter(([kind]) => kind === "list").length);
        return raw.metadata as Meta;
      },
    });
    await server.whenIdle();
    expect(upserts).toEqual(["a@1", "b@2", "c@3"]);
    expect(listsAsked).toEqual([1, 1, 2]);
  });

  it("resumes a quiet watch the server ended at its timeout from the same resourceVersion", async () => {
    const server = new FakeListWatch();
    server.lists.push(list("10", []));
    const { clock, errors } = start(server, new FakeClock(), { watchSeconds: { min: 20, max: 25 } });
    await server.whenIdle();
    await clock.advance(25_000);
    server.endOpenWatch();
    await server.whenIdle();
    expect(errors).toEqual([]);
    expect(server.watchQueries.map((q) => [q.resourceVersion, (q.timeoutSeconds as number) >= 20 && (q.timeoutSeconds as number) <= 25])).toEqual([
      ["10", true],
      ["10", true],
    ]);
  });

  it("lists again on 410 Gone, from an ERROR event or the watch request itself, reporting what vanished as deleted and only what changed", async () => {
    const server = new FakeListWatch();
    server.lists.push(
      list("10", [pod("a", "5"), pod("b", "7"), pod("c", "8")]),
      // Paged: b unchanged, c replaced by a new pod of the same name, a gone.
      list("30", [pod("b", "7")], "page2"),
      list("30", [pod("c", "25", "uid-c2"), pod("d", "26")]),
      list("40", [pod("b", "7"), pod("c", "25", "uid-c2"), pod("d", "26")]),
    );
    server.watches.push({ error: gone() }, { error: new ApiError(410, "Gone", "watch: 410") });
    const { upserts, deletes, errors, clock } = start(server);
    await server.whenIdle();
    expect(upserts).toEqual(["a@5", "b@7", "c@8", "c@25", "d@26"]);
    expect(deletes).toEqual(["c@8", "a@5"]);
    expect(errors).toEqual([]);
    expect(clock.pending).toEqual([]);
    expect(server.requests.filter(([kind]) => kind === "list").map(([, q]) => q.continue)).toEqual([undefined, undefined, "page2", undefined]);
    expect(server.watchQueries.map((q) => q.resourceVersion)).toEqual(["10", "30", "40"]);
  });

  it("backs off a failed list or a dropped watch, capped and doubling, reset once something gets through, and resumes where it was", async () => {
    const server = new FakeListWatch();
    const down = (): Error => new Error("connect ECONNREFUSED");
    server.lists.push(down(), down(), down(), down(), list("10", [pod("a", "5")]));
    server.watches.push({ error: down() }, { events: [event("MODIFIED", pod("a", "11"))], error: down() });
    const { upserts, errors, clock } = start(server);
    for (const ms of [100, 200, 400, 400, 100, 100]) {
      await settle();
      expect(clock.pending).toEqual([ms]);
      await clock.advance(ms);
    }
    await server.whenIdle();
    expect(errors.map((e) => e.retryInMs)).toEqual([100, 200, 400, 400, 100, 100]);
    expect(upserts).toEqual(["a@5", "a@11"]);
    // The dropped watches resume from the last resourceVersion seen, without a new list.
    expect(server.watchQueries.map((q) => q.resourceVersion)).toEqual(["10", "10", "11"]);
    expect(server.requests.filter(([kind]) => kind === "list")).toHaveLength(5);
  });

  it("waits a short flat pause on 429, not a growing backoff", async () => {
    const server = new FakeListWatch();
    const busy = (): ApiError => new ApiError(429, "TooManyRequests", "storage is (re)initializing");
    server.lists.push(busy(), busy(), busy(), list("1", []));
    const { errors, clock, informer } = start(server);
    for (let i = 0; i < 3; i++) {
      await settle();
      await clock.advance(1000);
    }
    await informer.synced;
    expect(errors).toEqual([
      { status: 429, retryInMs: 1000 },
      { status: 429, retryInMs: 1000 },
      { status: 429, retryInMs: 1000 },
    ]);
  });

  it("backs off when the server ends each watch at once with no event, instead of a tight loop", async () => {
    const server = new FakeListWatch();
    server.lists.push(list("10", []));
    server.watches.push({}, {});
    const { errors, clock } = start(server);
    await settle();
    await clock.advance(100);
    await clock.advance(200);
    await server.whenIdle();
    expect(errors.map((e) => [e.status, e.retryInMs])).toEqual([
      [undefined, 100],
      [undefined, 200],
    ]);
    expect(server.watchQueries.map((q) => q.resourceVersion)).toEqual(["10", "10", "10"]);
  });

  it("stops when aborted, with a watch in flight", async () => {
    const server = new FakeListWatch();
    server.lists.push(list("1", [pod("a", "1")]));
    const { abort, done, upserts } = start(server);
    await server.whenIdle();
    abort.abort();
    await done;
    expect(upserts).toEqual(["a@1"]);
  });

  it("keys objects by namespace/name, or name alone when cluster-scoped", () => {
    expect(objectKey(pod("a", "1"))).toBe("n/a");
    expect(objectKey({ metadata: { name: "node-1" } })).toBe("node-1");
  });
});
