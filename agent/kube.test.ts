// The agent's status writes against a scripted plain-HTTP API server: what each server-side apply of
// a MemoryErrorEvent's status carries.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import type { MemoryErrorEvent, MemoryErrorEventStatus } from "../crds/generated.ts";
import { ApiError } from "../runtime/api.ts";
import { ScriptedApiServer, status } from "../runtime/testing/scripted-api-server.ts";
import { KubeClient } from "../runtime/http.ts";
import { KubeApi } from "./kube.ts";

let server: ScriptedApiServer;
let client: KubeClient;
/** The status each request carried. */
const statuses = (): unknown[] => server.seen.map((s) => (s.body as { status?: MemoryErrorEventStatus }).status);

beforeAll(async () => {
  server = await ScriptedApiServer.start();
  client = new KubeClient({ server: server.url });
});

afterAll(async () => {
  await client.close();
  await server.close();
});

beforeEach(() => {
  server.reset();
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
    const api = new KubeApi(client);
    await api.applyPoolReplacementResult(NAME, given);
    expect(server.seen).toEqual([
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
    const api = new KubeApi(client);
    await api.applyEarlySignals(NAME, [signalled]);
    await api.applyPoolReplacementResult(NAME, given);
    await api.applyEarlySignals(NAME, [signalled, { ...signalled, uid: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a" }]);
    expect(statuses()).toEqual([
      { earlySignals: [signalled] },
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled, { ...signalled, uid: "9e8d7c6b-5a49-4382-9170-6f5e4d3c2b1a" }], poolReplacementResult: given },
    ]);
  });

  it("after a restart, carries what the watch shows the agent owns; its own writes win over an older watch event", async () => {
    const api = new KubeApi(client);
    api.observe(event("u1", { earlySignals: [signalled], poolReplacementResult: { state: "Waiting", message: "waiting" } }));
    await api.applyPoolReplacementResult(NAME, given);
    // An event older than the write: its Waiting must not come back.
    api.observe(event("u1", { earlySignals: [signalled], poolReplacementResult: { state: "Waiting", message: "waiting" } }));
    await api.applyEarlySignals(NAME, [signalled]);
    expect(statuses()).toEqual([
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled], poolReplacementResult: given },
    ]);
  });

  it("forgets what it owned of a deleted event, and of one made again under the same name", async () => {
    const api = new KubeApi(client);
    api.observe(event("u1", { earlySignals: [signalled] }));
    await api.applyPoolReplacementResult(NAME, given);
    // Deleted and made again, the deletion unseen: another uid.
    api.observe(event("u2"));
    await api.applyEarlySignals(NAME, []);
    api.forget(NAME);
    await api.applyPoolReplacementResult(NAME, given);
    expect(statuses()).toEqual([{ earlySignals: [signalled], poolReplacementResult: given }, { earlySignals: [] }, { poolReplacementResult: given }]);
  });

  it("sends the applies of one event one at a time, each built when it is sent", async () => {
    server.hold = true;
    const api = new KubeApi(client);
    const first = api.applyEarlySignals(NAME, [signalled]);
    const second = api.applyPoolReplacementResult(NAME, given);
    await expect.poll(() => server.seen.length).toBe(1);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The second waits for the first's answer.
    expect(server.seen).toHaveLength(1);
    server.hold = false;
    server.held.shift()?.();
    await Promise.all([first, second]);
    // Both were asked for before the first went out, so both carry both.
    expect(statuses()).toEqual([
      { earlySignals: [signalled], poolReplacementResult: given },
      { earlySignals: [signalled], poolReplacementResult: given },
    ]);
  });
});

describe("KubeApi kernel signals", () => {
  it("adds processes the kernel signalled later to those recorded, one entry per pid, beside the agent's other parts", async () => {
    const api = new KubeApi(client);
    api.observe(event("u1", { earlySignals: [signalled], kernelSignals: [{ pid: 462, command: "hwp", at: "2026-01-01T00:00:01.000Z" }] }));
    await api.addKernelSignals(NAME, [{ pid: 463, command: "hwp", at: "2026-01-01T00:00:02.000Z" }]);
    await api.addKernelSignals(NAME, [{ pid: 463, command: "hwp", podUID: "p-1", at: "2026-01-01T00:00:03.000Z" }]);
    expect(statuses()).toEqual([
      {
        earlySignals: [signalled],
        kernelSignals: [
          { pid: 462, command: "hwp", at: "2026-01-01T00:00:01.000Z" },
          { pid: 463, command: "hwp", at: "2026-01-01T00:00:02.000Z" },
        ],
      },
      {
        earlySignals: [signalled],
        kernelSignals: [
          { pid: 462, command: "hwp", at: "2026-01-01T00:00:01.000Z" },
          { pid: 463, command: "hwp", podUID: "p-1", at: "2026-01-01T00:00:03.000Z" },
        ],
      },
    ]);
  });
});

describe("KubeApi creates", () => {
  it("creates an event as mce-agent; 409 AlreadyExists is an event already reported", async () => {
    const api = new KubeApi(client);
    expect(await api.create(event("u1"))).toBe("created");
    server.script = () => status(409, "AlreadyExists", `memoryerrorevents.mce-operator.io "${NAME}" already exists`);
    expect(await api.create(event("u1"))).toBe("exists");
    expect(server.seen.map((s) => [s.method, s.path, s.query])).toEqual([
      ["POST", "/apis/mce-operator.io/v1alpha1/memoryerrorevents", "fieldManager=mce-agent"],
      ["POST", "/apis/mce-operator.io/v1alpha1/memoryerrorevents", "fieldManager=mce-agent"],
    ]);
  });

  it("any other refusal is an ApiError with the status and the API server's message, for the reporter to judge", async () => {
    const api = new KubeApi(client);
    for (const [code, reason] of [
      [422, "Invalid"],
      [403, "Forbidden"],
      [500, "InternalError"],
    ] as const) {
      server.script = () => status(code, reason, `spec.pfn: refused by the test (${code})`);
      const refused = await api.create(event("u1")).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(ApiError);
      expect(refused).toMatchObject({ status: code });
      expect((refused as ApiError).message).toContain(`spec.pfn: refused by the test (${code})`);
    }
  });
});
