// The API on a real kube-apiserver: the CRDs install, every kind round-trips, kubectl shows the columns
// and the descriptions, and invalid objects are refused with a message naming the field.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CrdKind } from "../../crds/generated.ts";
import { validateResource } from "../../crds/validate.ts";
import { kubectl, uniqueName } from "./cluster/helpers.ts";

const apiVersion = "mce-operator.io/v1alpha1";

function event(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion,
    kind: "MemoryErrorEvent",
    metadata: { name, labels: { "mce-operator.io/e2e": "true" } },
    spec: {
      nodeName: "worker-1",
      bootID: "6f1c1f4e-8a4b-4b1e-9d7a-3c1f0e2b9a11",
      observedAt: "2026-11-25T12:00:00Z",
      source: "Kmsg",
      pfn: "0x5205",
      physicalAddress: "0x5205000",
      severity: "ActionOptional",
      pageType: "huge page",
      result: "Recovered",
      hugepage: { size: "2Mi", headPfn: "0x5200", numaNode: 0 },
      mappers: [
        {
          pid: 4242,
          command: "dpdk-testpmd",
          podUID: "0d9f3b2e-1111-4c4c-8888-123456789abc",
          podNamespace: "nfv",
          podName: "upf-0",
          container: "testpmd",
          containerID: "containerd://3f2a",
          mapping: "Private",
          virtualStart: "0x7f3a00200000",
          virtualEnd: "0x7f3a00400000",
          killPolicy: "Default",
          signalledByKernel: false,
        },
      ],
      kernelLines: ["Memory failure: 0x5205: recovery action for huge page: Recovered"],
      ...spec,
    },
  };
}

function health(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    apiVersion,
    kind: "NodeMemoryHealth",
    metadata: { name, labels: { "mce-operator.io/e2e": "true" } },
    spec: {
      nodeName: name,
      bootID: "6f1c1f4e-8a4b-4b1e-9d7a-3c1f0e2b9a11",
      kernelVersion: "6.1.0-56-amd64",
      observedAt: "2026-11-25T12:00:00Z",
      hugepagePools: [{ size: "2Mi", numaNode: 0, total: 32, free: 16, surplus: 0 }],
      hardwareCorruptedBytes: 4096,
      capabilities: { earlyKill: false, recovery: true, softOffline: true, injection: false, tracefs: true, kmsg: true },
      ...spec,
    },
  };
}

function policy(name: string, spec: Record<string, unknown> = {}): Record<string, unknown> {
  return { apiVersion, kind: "ContainmentPolicy", metadata: { name, labels: { "mce-operator.io/e2e": "true" } }, spec: { mode: "DryRun", ...spec } };
}

const apply = (obj: unknown): ReturnType<typeof kubectl> =>
  kubectl(["apply", "--server-side", "--field-manager=e2e", "-f", "-"], { input: JSON.stringify(obj) });

describe("the mce-operator.io API on a real API server", () => {
  beforeAll(async () => {
    const result = await kubectl(["apply", "--server-side", "--field-manager=e2e", "-f", "crds/"]);
    expect(result.stderr).toBe("");
    expect(result.code).toBe(0);
    for (const crd of ["memoryerrorevents", "nodememoryhealths", "containmentpolicies"]) {
      const ready = await kubectl(["wait", "--for=condition=Established", "--timeout=30s", `crd/${crd}.mce-operator.io`]);
      expect(ready.code, ready.stderr).toBe(0);
    }
  });

  afterAll(async () => {
    for (const kind of ["mee", "nmh", "cpol"]) await kubectl(["delete", kind, "-l", "mce-operator.io/e2e=true", "--wait=false"]);
  });

  it("round-trips every kind, spec and status", async () => {
    const names = { mee: uniqueName("worker-1-boot-5205"), nmh: uniqueName("worker"), cpol: uniqueName("policy") };
    const objects = { mee: event(names.mee), nmh: health(names.nmh), cpol: policy(names.cpol, { nodeSelector: { matchLabels: { pool: "dpdk" } } }) };
    for (const [short, obj] of Object.entries(objects)) {
      const created = await apply(obj);
      expect(created.code, created.stderr).toBe(0);
      const got = await kubectl(["get", short, names[short as keyof typeof names], "-o", "json"]);
      const back = JSON.parse(got.stdout) as { spec: Record<string, unknown> };
      expect(back.spec).toMatchObject(obj.spec as Record<string, unknown>);
    }
    const status = {
      phase: "Contained",
      observedGeneration: 1,
      pods: [{ uid: "0d9f3b2e-1111-4c4c-8888-123456789abc", namespace: "nfv", name: "upf-0", action: "Evict", state: "Done", attempts: 1 }],
      quarantine: [{ size: "2Mi", bytes: 2097152, state: "Quarantined" }],
      nodeAction: { action: "None" },
      conditions: [
        { type: "Contained", status: "True", reason: "EvictedMappers", message: "every mapper was evicted", lastTransitionTime: "2026-11-25T12:00:01Z" },
      ],
    };
    const patched = await kubectl(["patch", "mee", names.mee, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status })]);
    expect(patched.code, patched.stderr).toBe(0);
    const withStatus = JSON.parse((await kubectl(["get", "mee", names.mee, "-o", "json"])).stdout) as { status: unknown };
    expect(withStatus.status).toEqual(status);
  });

  it("fills in the policy's defaults", async () => {
    const name = uniqueName("defaults");
    expect((await apply(policy(name))).code).toBe(0);
    const got = JSON.parse((await kubectl(["get", "cpol", name, "-o", "json"])).stdout) as {
      spec: { escalation: unknown; safety: { excludedNamespaces: string[] } };
    };
    expect(got.spec.escalation).toMatchObject({ taintAfter: 2, cordonAfter: 4, window: "24h" });
    expect(got.spec.safety.excludedNamespaces).toEqual(["kube-system"]);
  });

  it("lists all three kinds under the mce category with their columns", async () => {
    const name = uniqueName("columns");
    await apply(event(name));
    await apply(health(uniqueName("columns")));
    await apply(policy(uniqueName("columns")));
    const out = (await kubectl(["get", "mce"])).stdout;
    expect(out).toMatch(/NAME\s+NODE\s+PFN\s+PAGE TYPE\s+RESULT\s+PHASE\s+AGE/);
    expect(out).toMatch(new RegExp(`memoryerrorevent\\.mce-operator\\.io/${name}\\s+worker-1\\s+0x5205\\s+huge page\\s+Recovered`));
    expect(out).toMatch(/NAME\s+HEALTH\s+POISONED HUGEPAGES\s+QUARANTINED\s+WORST DIMM CE\s+AGE/);
    expect(out).toMatch(/NAME\s+MODE\s+MATCHED NODES\s+AGE/);
    expect((await kubectl(["get", "mee", name])).stdout).toMatch(/^NAME\s+NODE\s+PFN/);
  });

  it("explains every field with its description", async () => {
    const out = (await kubectl(["explain", "memoryerrorevent.spec"])).stdout;
    expect(out).toContain("Raw page frame number of the poisoned 4 KiB page");
    expect(out).toMatch(/severity\s+<string> -required-/);
    const mappers = (await kubectl(["explain", "memoryerrorevent.spec.mappers.killPolicy"])).stdout;
    expect(mappers).toContain("PR_MCE_KILL");
    const policyOut = (await kubectl(["explain", "containmentpolicy.spec.safety"])).stdout;
    expect(policyOut).toContain("maxUnavailableNodesPercent");
  });

  const invalid: [string, () => Record<string, unknown>, RegExp][] = [
    ["a severity outside the enum", () => event(uniqueName("bad"), { severity: "Catastrophic" }), /spec\.severity: Unsupported value: "Catastrophic"/],
    [
      "a missing nodeName",
      () => {
        const e = event(uniqueName("bad"));
        delete (e.spec as Record<string, unknown>).nodeName;
        return e;
      },
      /spec\.nodeName: Required value/,
    ],
    ["a pfn without 0x", () => event(uniqueName("bad"), { pfn: "5205" }), /spec\.pfn: Invalid value: "5205"/],
    ["an upper-case pfn", () => event(uniqueName("bad"), { pfn: "0xZZ" }), /spec\.pfn: Invalid value/],
    ["a 4Mi hugepage", () => event(uniqueName("bad"), { hugepage: { size: "4Mi", headPfn: "0x5200" } }), /spec\.hugepage\.size: Unsupported value: "4Mi"/],
    [
      "a mapper with an unknown kill policy",
      () => event(uniqueName("bad"), { mappers: [{ pid: 1, command: "x", mapping: "Private", killPolicy: "Sometimes" }] }),
      /spec\.mappers\[0\]\.killPolicy: Unsupported value/,
    ],
    [
      "a pid of 0",
      () => event(uniqueName("bad"), { mappers: [{ pid: 0, command: "x", mapping: "Private", killPolicy: "Late" }] }),
      /spec\.mappers\[0\]\.pid: Invalid value: 0/,
    ],
    [
      "cordon before taint",
      () => policy(uniqueName("bad"), { escalation: { taintAfter: 5, cordonAfter: 3 } }),
      /spec\.escalation: Invalid value: .*cordonAfter must be greater than taintAfter/,
    ],
    [
      "a budget over 100%",
      () => policy(uniqueName("bad"), { safety: { maxUnavailableNodesPercent: 150 } }),
      /spec\.safety\.maxUnavailableNodesPercent: Invalid value: 150/,
    ],
    ["an unknown mode", () => policy(uniqueName("bad"), { mode: "Sometimes" }), /spec\.mode: Unsupported value: "Sometimes"/],
    ["a duration that is not one", () => policy(uniqueName("bad"), { escalation: { window: "a day" } }), /spec\.escalation\.window: Invalid value: "a day"/],
    [
      "deleteAfter without the fallback",
      () => policy(uniqueName("bad"), { podActions: { eviction: { deleteAfter: "10m" } } }),
      /spec\.podActions\.eviction: Invalid value: .*deleteAfter is only meaningful with fallbackToDelete/,
    ],
    [
      "a taint key Kubernetes refuses",
      () => policy(uniqueName("bad"), { escalation: { taintKey: "bad key!" } }),
      /spec\.escalation\.taintKey: Invalid value: "bad key!"/,
    ],
    [
      "an eviction backoff of 0s",
      () => policy(uniqueName("bad"), { podActions: { eviction: { backoff: "0s" } } }),
      /spec\.podActions\.eviction: Invalid value: .*backoff must be at least 1s/,
    ],
    [
      "an escalation window of 0s",
      () => policy(uniqueName("bad"), { escalation: { window: "0s" } }),
      /spec\.escalation: Invalid value: .*window must be at least 1m/,
    ],
    [
      "a circuit breaker window of 0s",
      () => policy(uniqueName("bad"), { safety: { circuitBreaker: { window: "0s" } } }),
      /spec\.safety\.circuitBreaker: Invalid value: .*window must be at least 1m/,
    ],
    [
      "an early-signal timeout of 0s",
      () => policy(uniqueName("bad"), { podActions: { earlySignal: { timeout: "0s" } } }),
      /spec\.podActions\.earlySignal: Invalid value: .*timeout must be at least 1s/,
    ],
    [
      "a replacement window of 30s",
      () => policy(uniqueName("bad"), { poolReplacement: { window: "30s" } }),
      /spec\.poolReplacement: Invalid value: .*window must be at least 1m/,
    ],
    [
      "a health object named for another node",
      () => ({ ...health(uniqueName("node-a")), spec: { ...(health("x").spec as object), nodeName: "node-b" } }),
      /metadata\.name must equal spec\.nodeName/,
    ],
    [
      "a negative free count",
      () => health(uniqueName("bad"), { hugepagePools: [{ size: "2Mi", numaNode: 0, total: 4, free: -1 }] }),
      /spec\.hugepagePools\[0\]\.free: Invalid value: -1/,
    ],
    // Found by the probes of issue 17.
    ["a node name that is no DNS name", () => event(uniqueName("bad"), { nodeName: "Node A/../x" }), /spec\.nodeName: Invalid value: "Node A\/\.\.\/x"/],
    [
      "a hugepage head that is not the head of the pfn's hugepage",
      () => event(uniqueName("bad"), { hugepage: { size: "2Mi", headPfn: "0x5000" } }),
      /spec: Invalid value: .*hugepage\.headPfn must be the head of the hugepage that holds pfn/,
    ],
    [
      "an unaligned hugepage head",
      () => event(uniqueName("bad"), { hugepage: { size: "2Mi", headPfn: "0x5201" } }),
      /spec: Invalid value: .*hugepage\.headPfn must be the head of the hugepage that holds pfn/,
    ],
    [
      "a 1 GiB head that is not the pfn's",
      () => event(uniqueName("bad"), { pfn: "0x140205", hugepage: { size: "1Gi", headPfn: "0x100000" } }),
      /spec: Invalid value: .*hugepage\.headPfn must be the head of the hugepage that holds pfn/,
    ],
    [
      "more free hugepages than the pool holds",
      () => health(uniqueName("bad"), { hugepagePools: [{ size: "2Mi", numaNode: 0, total: 4, free: 5 }] }),
      /spec\.hugepagePools\[0\]: Invalid value: .*free must not exceed total/,
    ],
    [
      "an opt-in annotation that is no qualified name",
      () => policy(uniqueName("bad"), { podActions: { earlySignal: { optInAnnotation: "bad annotation!" } } }),
      /spec\.podActions\.earlySignal\.optInAnnotation: Invalid value: "bad annotation!"/,
    ],
    [
      "a node selector label value Kubernetes refuses",
      () => policy(uniqueName("bad"), { nodeSelector: { matchLabels: { rack: "bad value!" } } }),
      /spec\.nodeSelector\.matchLabels\.rack: Invalid value: "bad value!"/,
    ],
    [
      "a node selector label key Kubernetes refuses",
      () => policy(uniqueName("bad"), { nodeSelector: { matchLabels: { "bad key!": "x" } } }),
      /spec\.nodeSelector\.matchLabels: Invalid value: .*every key must be a label key/,
    ],
    [
      "a window of 400 digits of hours",
      () => policy(uniqueName("bad"), { escalation: { window: `${"9".repeat(400)}h` } }),
      /spec\.escalation\.window: Too long/,
    ],
    ["a cooldown of 0s", () => policy(uniqueName("bad"), { safety: { cooldown: "0s" } }), /spec\.safety: Invalid value: .*cooldown must be at least 1s/],
  ];

  it.each(invalid)("refuses %s, naming the field, as the runtime validator does", async (_what, make, message) => {
    const object = make();
    const result = await apply(object);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(message);
    // The agent, the simulator and the operator's scenario files check objects with the runtime validator:
    // it refuses the same object, naming the same field.
    const issues = validateResource(object.kind as CrdKind, object);
    expect(issues.length, JSON.stringify(issues)).toBeGreaterThan(0);
    const field = /^(\S+?):/.exec(
      result.stderr
        .split("\n")
        .find((line) => /Invalid value|Unsupported value|Required value|Too long/.test(line))
        ?.replace(/^.*?(spec|metadata|status)/, "$1") ?? "",
    )?.[1];
    if (field !== undefined) expect(issues.map((i) => i.path)).toContain(field);
  });

  it("refuses a patch that puts cordonAfter at or below taintAfter, not only on create", async () => {
    const name = uniqueName("escalation");
    expect((await apply(policy(name, { escalation: { taintAfter: 2, cordonAfter: 4 } }))).code).toBe(0);
    const result = await kubectl(["patch", "cpol", name, "--type=merge", "-p", JSON.stringify({ spec: { escalation: { cordonAfter: 2 } } })]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/spec\.escalation: Invalid value: .*cordonAfter must be greater than taintAfter/);
  });

  it("refuses a health verdict outside the enum through the status subresource", async () => {
    const name = uniqueName("health");
    expect((await apply(health(name))).code).toBe(0);
    const result = await kubectl(["patch", "nmh", name, "--subresource=status", "--type=merge", "-p", '{"status":{"health":"Bogus"}}']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/status\.health: Unsupported value: "Bogus"/);
  });

  it("reads a null field as absent, as a create does (the agent creates): nothing invalid is stored", async () => {
    const name = uniqueName("null");
    const object = event(name, { pageType: null });
    // A create drops a null field before it validates; server-side apply refuses it. Either way no stored
    // event has a null page type, and the runtime validator reads null as the create does.
    const created = await kubectl(["create", "-f", "-"], { input: JSON.stringify(object) });
    expect(created.code, created.stderr).toBe(0);
    const stored = JSON.parse((await kubectl(["get", "mee", name, "-o", "json"])).stdout) as { spec: Record<string, unknown> };
    expect("pageType" in stored.spec).toBe(false);
    const applied = await apply(event(uniqueName("null"), { pageType: null }));
    expect(applied.stderr).toMatch(/spec\.pageType: Invalid value: "null": spec\.pageType in body must be of type string/);
    expect(validateResource("MemoryErrorEvent", object)).toEqual([]);
  });

  it("refuses any change to an event's spec", async () => {
    const name = uniqueName("immutable");
    expect((await apply(event(name))).code).toBe(0);
    const result = await kubectl(["patch", "mee", name, "--type=merge", "-p", JSON.stringify({ spec: { pfn: "0x5206" } })]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/spec: Invalid value: .*spec is immutable/);
  });

  it("holds the agent's kernelSignals in an event's status, one entry per pid, and refuses a pid below 1", async () => {
    const name = uniqueName("kernel-signals");
    expect((await apply(event(name))).code).toBe(0);
    const kernelSignals = [
      { pid: 462, command: "hwp", podUID: "0d9f3b2e-1111-4c4c-8888-123456789abc", at: "2026-11-25T12:00:05Z" },
      { pid: 463, command: "hwp", at: "2026-11-25T12:00:06Z" },
    ];
    const patch = (value: unknown) =>
      kubectl(["patch", "mee", name, "--subresource=status", "--type=merge", "-p", JSON.stringify({ status: { kernelSignals: value } })]);
    const ok = await patch(kernelSignals);
    expect(ok.code, ok.stderr).toBe(0);
    const back = JSON.parse((await kubectl(["get", "mee", name, "-o", "json"])).stdout) as { status: { kernelSignals: unknown } };
    expect(back.status.kernelSignals).toEqual(kernelSignals);
    const twice = await patch([kernelSignals[0], kernelSignals[0]]);
    expect(twice.code).not.toBe(0);
    expect(twice.stderr).toMatch(/status\.kernelSignals\[1\]: Duplicate value/);
    const zero = await patch([{ pid: 0, command: "hwp", at: "2026-11-25T12:00:05Z" }]);
    expect(zero.code).not.toBe(0);
    expect(zero.stderr).toMatch(/status\.kernelSignals\[0\]\.pid: Invalid value: 0/);
  });

  it("refuses an invalid status phase through the status subresource", async () => {
    const name = uniqueName("status");
    expect((await apply(event(name))).code).toBe(0);
    const result = await kubectl(["patch", "mee", name, "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Exploded"}}']);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toMatch(/status\.phase: Unsupported value: "Exploded"/);
  });
});
