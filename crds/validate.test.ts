import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { generate, loadCrds } from "./gen.ts";
import { applyDefaults, celRules, parseResource, SchemaError, validateResource, validateValue } from "./validate.ts";
import type { JsonSchema } from "./schema.ts";
import { crdInfo } from "./generated.ts";

describe("generated code", () => {
  it("matches the YAML it is generated from", () => {
    expect(readFileSync("crds/generated.ts", "utf8")).toBe(generate(loadCrds()));
  });

  it("changes when the YAML changes", () => {
    const crds = loadCrds();
    const [first] = crds;
    if (!first?.schema.properties?.spec) throw new Error("no spec");
    first.schema.properties.spec.properties = { ...first.schema.properties.spec.properties, extra: { type: "string", description: "new" } };
    expect(generate(crds)).not.toBe(readFileSync("crds/generated.ts", "utf8"));
    expect(generate(crds)).toContain("  /** new */\n  extra?: string;");
  });

  it("describes every field, as kubectl explain needs", () => {
    const missing: string[] = [];
    const walk = (schema: import("./schema.ts").JsonSchema, path: string): void => {
      if (path.split(".").length > 1 && !schema.description && !path.endsWith(".metadata")) missing.push(path);
      for (const [k, v] of Object.entries(schema.properties ?? {})) walk(v, `${path}.${k}`);
      if (schema.items) walk({ description: "item", ...schema.items }, `${path}[]`);
    };
    for (const info of Object.values(crdInfo)) walk(info.schema, info.kind);
    expect(missing).toEqual([]);
  });
});

describe("runtime validation", () => {
  const event = {
    metadata: { name: "worker-1-boot-0x5205" },
    spec: {
      nodeName: "worker-1",
      bootID: "b",
      observedAt: "2026-11-25T12:00:00Z",
      source: "Kmsg",
      pfn: "0x5205",
      severity: "ActionOptional",
      pageType: "a word the kernel invented tomorrow",
    },
  };

  it("accepts a valid event, keeping unknown page-type words", () => {
    expect(parseResource("MemoryErrorEvent", event, "e").spec.pageType).toBe("a word the kernel invented tomorrow");
  });

  it("names every bad field", () => {
    const bad = { ...event, spec: { ...event.spec, pfn: "5205", severity: "Bad", mappers: [{ pid: 0, command: "x", mapping: "Private" }] } };
    try {
      parseResource("MemoryErrorEvent", bad, "event.yaml");
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(SchemaError);
      expect((e as SchemaError).issues.map((i) => i.path)).toEqual(["spec.pfn", "spec.severity", "spec.mappers[0].killPolicy", "spec.mappers[0].pid"]);
      expect((e as Error).message).toMatch(/^event\.yaml: spec\.pfn: "5205" does not match/);
    }
  });

  it("refuses duplicate keys of a list-map and a missing name", () => {
    const pools = [
      { size: "2Mi", numaNode: 0, total: 1, free: 1 },
      { size: "2Mi", numaNode: 0, total: 2, free: 2 },
    ];
    expect(() =>
      parseResource("NodeMemoryHealth", { metadata: {}, spec: { nodeName: "n", bootID: "b", observedAt: "2026-11-25T12:00:00Z", hugepagePools: pools } }, "h"),
    ).toThrow(/spec\.hugepagePools\[1\]: duplicate entry \["2Mi",0\].*metadata\.name: required value is missing/);
  });

  it("applies nested defaults without touching what is set", () => {
    const spec = applyDefaults(crdInfo.ContainmentPolicy.schema, { spec: { mode: "Enforce", escalation: { taintAfter: 3, cordonAfter: 6 } } }) as {
      spec: Record<string, Record<string, unknown>>;
    };
    expect(spec.spec.mode).toBe("Enforce");
    expect(spec.spec.escalation).toMatchObject({ taintAfter: 3, cordonAfter: 6, window: "24h" });
    expect(spec.spec.safety).toMatchObject({ maxUnavailableNodesPercent: 10, circuitBreaker: { maxNodeActions: 5, window: "1h" } });
  });

  it("checks types, bounds and date-times", () => {
    expect(validateValue({ type: "integer", minimum: 0 }, 1.5)).toEqual([{ path: "", message: "expected an integer, got 1.5" }]);
    expect(validateValue({ type: "string", format: "date-time" }, "yesterday")[0]?.message).toMatch(/not an RFC 3339 date-time/);
    expect(validateValue({ type: "array", maxItems: 1, items: { type: "string" } }, ["a", 2], "x")).toEqual([
      { path: "x", message: "must have at most 1 items, has 2" },
      { path: "x[1]", message: "expected a string, got 2" },
    ]);
  });
});

describe("the CRDs' CEL rules, run by the runtime validator too", () => {
  const rulesOf = (schema: JsonSchema): { rule: string; message?: string }[] => [
    ...(schema["x-kubernetes-validations"] ?? []),
    ...Object.values(schema.properties ?? {}).flatMap(rulesOf),
    ...(schema.items ? rulesOf(schema.items) : []),
    ...(typeof schema.additionalProperties === "object" ? rulesOf(schema.additionalProperties) : []),
  ];

  it("has an implementation of every rule but the transition rules, under the rule's message", () => {
    const rules = Object.values(crdInfo).flatMap((info) => rulesOf(info.schema));
    expect(rules.length).toBeGreaterThan(10);
    for (const { rule, message = rule } of rules.filter((r) => !r.rule.includes("oldSelf"))) expect(celRules[message], message).toBeDefined();
  });

  const event = (pfn: string, hugepage: { size: string; headPfn: string }): unknown => ({
    apiVersion: "mce-operator.io/v1alpha1",
    kind: "MemoryErrorEvent",
    metadata: { name: "e" },
    spec: { nodeName: "worker-1", bootID: "b", observedAt: "2026-11-25T12:00:00Z", source: "Kmsg", pfn, severity: "ActionOptional", hugepage },
  });
  it.each([
    ["0x5205", "2Mi", "0x5200", true],
    ["0x5205", "2Mi", "0x5000", false],
    ["0x5205", "2Mi", "0x5201", false],
    ["0x105", "2Mi", "0x0", true],
    ["0x1ff", "2Mi", "0x0", true],
    ["0x205", "2Mi", "0x200", true],
    ["0x140205", "1Gi", "0x140000", true],
    ["0x140205", "1Gi", "0x100000", false],
    ["0x3ffff", "1Gi", "0x0", true],
    ["0x40005", "1Gi", "0x40000", true],
  ] as const)("pfn %s in a %s hugepage headed %s: %s", (pfn, size, headPfn, valid) => {
    expect(validateResource("MemoryErrorEvent", event(pfn, { size, headPfn })).length === 0).toBe(valid);
  });

  it("drops null fields as the API server does, and leaves the rules to the cache when asked", () => {
    const policy = { metadata: { name: "p" }, spec: { mode: "Enforce", safety: { cooldown: "0s" }, escalation: { taintKey: null } } };
    expect(() => parseResource("ContainmentPolicy", policy, "p")).toThrow(/spec\.safety: cooldown must be at least 1s/);
    const cached = parseResource("ContainmentPolicy", policy, "p", { celRules: false });
    expect(cached.spec.escalation.taintKey).toBe("mce-operator.io/memory-failing");
  });
});
