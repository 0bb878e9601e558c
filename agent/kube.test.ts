// The agent's status writes against a scripted plain-HTTP API server: what each server-side apply of
// a MemoryErrorEvent's status carries.
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { MemoryErrorEvent, MemoryErrorEventStatus } from "../crds/generated.ts";
import { FakeClock } from "../runtime/testing/fake-clock.ts";
import { KubeClient } from "./http.ts";
import { KubeApi } from "./kube.ts";

interface Seen {
  method: string;
  path: string;
  query: string;
  contentType: string | undefined;
  body: { status?: MemoryErrorEventStatus } & Record<string, unknown>;
}

let server: Server;
let client: KubeClient;
let seen: Seen[] = [];
/** Answers held back while `hold` is set, so requests could overlap. */
let hold = false;
let held: (() => void)[] = [];

beforeAll(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      seen.push({
        method: req.method ?? "",
        path: url.pathname,
        query: url.searchParams.toString(),
        contentType: req.headers["content-type"],
        body: JSON.parse(body) as Seen["body"],
      });
      const answer = (): void => {
        res.writeHead(200, { "Content-Type": "application/json" }).end(body);
      };
      if (hold) held.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  client = new KubeClient({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}` });
});

afterAll(async () => {
  await client.close();
  server.closeAllConnections();
  server.close();
});

beforeEach(() => {
  seen = [];
  hold = false;
  held = [];
});

const NAME = "edge-1-0f6c1b1e-5200";
const given = {
  state: "Given" as const,
  before: 31,
  requested: 32,
  after: 32,
  file: "/host/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages",
  at: "2026-01-01T00:00:00.000Z",
};
const signalled = { uid: "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60", state: "Done" as const, signal: "SIGUSR1" as const };

function event(uid: string, status?: MemoryErrorEventStatus): MemoryErrorEvent {
  return {
    apiVersion: "mce-operator.io/v1alpha1",
    kind: "MemoryErrorEvent",
    metadata: { name: NAME, uid },
    spec: { nodeName: "edge-1", bootID: "b", observedAt: "2026-01-01T00:00:00Z", source: "Kmsg", pfn: "0x5205", severity: "ActionOptional" },
    ...(status !== undefined && { status }),
  };
}

describe("KubeApi status writes", () => {
  it("applies status.poolReplacementResult on the status subresource as mce-agent", async () => {
    const api = new KubeApi(client, "edge-1", new FakeClock());
    await api.applyPoolReplacementResult(NAME, given);
    expect(seen).toEqual([
      {
        method: "PATCH",
        path: `/apis/mce-operator.io/v1alpha1/memoryerrorevents/${NAME}/status`,
        query: "fieldManager=mce-agent&force=true",
        contentType: "application/apply-patch+yaml",
        body: { apiVersion: "mce-operator.io/v1alpha1", kind: "MemoryErrorEvent", metadata: { name: NAME }, status: { poolReplacementResult: given } },
      },
    ]);
  });

  it("carries every part the agent owns in each apply, so one part never drops the other", async () => {
    const api = new KubeApi(client, "edge-1", new FakeClock());
    await api.applyEarlySignals(NAME, [signalled]);
    await api.applyPoolReplacementResult(NAME, given);
    await api.applyEarlySignals(NAME, [signalled, { ...signalled, uid: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a" }]);
    expect(seen.map((s) => s.body.status)).toEqual([
      { earlySignals: [signalled] },
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled, { ...signalled, uid: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a" }], poolReplacementResult: given },
    ]);
  });

  it("after a restart, carries what the watch shows the agent owns; its own writes win over an older watch event", async () => {
    const api = new KubeApi(client, "edge-1", new FakeClock());
    api.observe(event("u1", { earlySignals: [signalled], poolReplacementResult: { state: "Waiting", message: "waiting" } }));
    await api.applyPoolReplacementResult(NAME, given);
    // An event older than the write: its Waiting must not come back.
    api.observe(event("u1", { earlySignals: [signalled], poolReplacementResult: { state: "Waiting", message: "waiting" } }));
    await api.applyEarlySignals(NAME, [signalled]);
    expect(seen.map((s) => s.body.status)).toEqual([
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled], poolReplacementResult: given },
    ]);
  });

  it("forgets what it owned of a deleted event, and of one made again under the same name", async () => {
    const api = new KubeApi(client, "edge-1", new FakeClock());
    api.observe(event("u1", { earlySignals: [signalled] }));
    await api.applyPoolReplacementResult(NAME, given);
    // Deleted and made again, the deletion unseen: another uid.
    api.observe(event("u2"));
    await api.applyEarlySignals(NAME, []);
    api.forget(NAME);
    await api.applyPoolReplacementResult(NAME, given);
    expect(seen.map((s) => s.body.status)).toEqual([
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [] },
      { poolReplacementResult: given },
    ]);
  });

  it("sends the applies of one event one at a time, each built when it is sent", async () => {
    hold = true;
    const api = new KubeApi(client, "edge-1", new FakeClock());
    const first = api.applyEarlySignals(NAME, [signalled]);
    const second = api.applyPoolReplacementResult(NAME, given);
    await expect.poll(() => seen.length).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The second waits for the first's answer.
    expect(seen).toHaveLength(1);
    hold = false;
    held.shift()?.();
    await Promise.all([first, second]);
    // Both were asked for before the first went out, so both carry both.
    expect(seen.map((s) => s.body.status)).toEqual([
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled], poolReplacementResult: given },
    ]);
  });
});
