// The Helm chart without installing it: CRDs identical to crds/, `helm lint --strict`, what `helm
// template` renders by default and with every option on (and that the API server accepts it, server-side
// dry run), the values schema covering every value, the alert rules under `promtool test rules`, and the
// alerts and dashboard naming only metrics the programs export.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { createNamespace, clients, deleteNamespace, kubectl } from "./cluster/helpers.ts";
import { chartDir, helm, repoRoot, run, template, type K8sObject } from "./chart/harness.ts";
import type { AgentStatus } from "../../agent/kube.ts";
import { quarantineImage } from "../../operator/kube/actions.ts";

const allOn = {
  metrics: { serviceMonitor: { enabled: true }, prometheusRule: { enabled: true }, dashboard: { enabled: true } },
  defaultPolicy: { enabled: true },
};

interface Container {
  name: string;
  args?: string[];
  securityContext?: {
    privileged?: boolean;
    allowPrivilegeEscalation?: boolean;
    readOnlyRootFilesystem?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
  volumeMounts?: { name: string; mountPath: string; readOnly?: boolean }[];
}
interface PodSpec {
  hostPID?: boolean;
  hostNetwork?: boolean;
  serviceAccountName?: string;
  priorityClassName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; seccompProfile?: { type: string } };
  containers: Container[];
  volumes?: { name: string; hostPath?: { path: string; type?: string } }[];
}
const podSpec = (o: K8sObject | undefined): PodSpec => (o as unknown as { spec: { template: { spec: PodSpec } } }).spec.template.spec;
const find = (objects: K8sObject[], kind: string, name?: RegExp): K8sObject | undefined =>
  objects.find((o) => o.kind === kind && (name === undefined || name.test(o.metadata.name)));

describe("the chart's CRDs", () => {
  it("are byte for byte the files of crds/", () => {
    const top = readdirSync(join(repoRoot, "crds"))
      .filter((f) => f.endsWith(".yaml"))
      .sort();
    const chart = readdirSync(join(chartDir, "crds")).sort();
    const copy = "copy them: cp crds/*.yaml charts/mce-operator/crds/";
    expect(chart, `charts/mce-operator/crds/ holds other files than crds/*.yaml; ${copy}`).toEqual(top);
    for (const file of top) {
      const same = readFileSync(join(repoRoot, "crds", file)).equals(readFileSync(join(chartDir, "crds", file)));
      expect(same, `charts/mce-operator/crds/${file} differs from crds/${file}; ${copy}`).toBe(true);
    }
  });
});

describe("helm lint and template", () => {
  it("lints clean with --strict, with the defaults and with every option on", async () => {
    for (const set of [
      [],
      [
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.prometheusRule.enabled=true,metrics.dashboard.enabled=true,defaultPolicy.enabled=true,agent.poolReplacement.enabled=true",
      ],
    ]) {
      const result = await helm(["lint", "--strict", chartDir, ...set]);
      expect(result.code, result.stdout + result.stderr).toBe(0);
      expect(result.stdout).not.toMatch(/\[(WARNING|ERROR)\]/);
    }
  });

  it("refuses values the schema does not know or allow", async () => {
    const unknown = await helm(["template", "x", chartDir, "--set", "agent.privilegd=true"]);
    expect(unknown.code).not.toBe(0);
    expect(unknown.stderr).toMatch(/additional properties 'privilegd' not allowed/);
    const bad = await helm(["template", "x", chartDir, "--set", "defaultPolicy.mode=Maybe"]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/defaultPolicy\/mode/);
  });

  it("the schema describes every value of values.yaml", () => {
    const values = parse(readFileSync(join(chartDir, "values.yaml"), "utf8")) as Record<string, unknown>;
    const schema = JSON.parse(readFileSync(join(chartDir, "values.schema.json"), "utf8")) as Schema;
    interface Schema {
      type?: string;
      properties?: Record<string, Schema>;
      description?: string;
      additionalProperties?: unknown;
    }
    const missing: string[] = [];
    const undescribed: string[] = [];
    const walk = (value: unknown, node: Schema, path: string): void => {
      if (path !== "" && node.description === undefined && node.type !== "object") undescribed.push(path);
      if (node.type !== "object" || node.properties === undefined || typeof value !== "object" || value === null || Array.isArray(value)) return;
      for (const [key, child] of Object.entries(value)) {
        const sub = node.properties[key];
        if (sub === undefined) missing.push(`${path}.${key}`);
        else walk(child, sub, `${path}.${key}`);
      }
    };
    walk(values, schema, "");
    expect(missing).toEqual([]);
    expect(undescribed).toEqual([]);
  });

  it("renders least-privilege pods: a restricted operator, an agent with named capabilities and no privileged", async () => {
    const objects = await template();
    const operator = podSpec(find(objects, "Deployment"));
    expect((find(objects, "Deployment") as unknown as { spec: { replicas: number } }).spec.replicas).toBe(2);
    expect(operator.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    expect(operator.containers[0]?.securityContext).toEqual({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ["ALL"] } });
    expect(operator.containers[0]?.args).toEqual(
      expect.arrayContaining(["run", "--leader-elect=true", "--quarantine-priority-class=mce-mce-operator-quarantine"]),
    );
    expect(operator.hostPID ?? false).toBe(false);

    const agent = podSpec(find(objects, "DaemonSet"));
    const container = agent.containers[0];
    expect(agent.hostPID).toBe(true);
    expect(agent.hostNetwork ?? false).toBe(false);
    expect(container?.securityContext).toEqual({
      privileged: false,
      allowPrivilegeEscalation: false,
      readOnlyRootFilesystem: true,
      capabilities: { drop: ["ALL"], add: ["SYS_ADMIN", "SYS_PTRACE", "DAC_READ_SEARCH", "KILL", "SYSLOG"] },
    });
    // Read-only host mounts, except tracefs (enabling events) and the agent's own state directory.
    const writable = (container?.volumeMounts ?? []).filter((m) => m.readOnly !== true).map((m) => m.mountPath);
    expect(writable.sort()).toEqual(["/host/sys/devices/system/memory", "/host/sys/kernel/tracing", "/var/lib/mce-agent"]);
    expect(Object.fromEntries((agent.volumes ?? []).map((v) => [v.name, v.hostPath?.path]))).toEqual({
      proc: "/proc",
      sys: "/sys",
      "memory-blocks": "/sys/devices/system/memory",
      tracefs: "/sys/kernel/tracing",
      kmsg: "/dev/kmsg",
      rasdaemon: "/var/lib/rasdaemon",
      state: "/var/lib/mce-agent",
    });
    // Every capability is explained in values.yaml.
    const valuesText = readFileSync(join(chartDir, "values.yaml"), "utf8");
    for (const cap of container?.securityContext?.capabilities?.add ?? []) expect(valuesText).toMatch(new RegExp(`#\\s+${cap}\\s+\\S`));
  });

  it("makes only the NUMA nodes' hugepage pools writable when pool replacement is on", async () => {
    const agent = podSpec(find(await template({ agent: { poolReplacement: { enabled: true }, softOffline: { enabled: false } } }), "DaemonSet"));
    const writable = (agent.containers[0]?.volumeMounts ?? []).filter((m) => m.readOnly !== true).map((m) => m.mountPath);
    expect(writable.sort()).toEqual(["/host/sys/devices/system/node", "/host/sys/kernel/tracing", "/var/lib/mce-agent"]);
    expect(agent.volumes?.find((v) => v.name === "numa-nodes")?.hostPath).toEqual({ path: "/sys/devices/system/node", type: "Directory" });
    expect(agent.containers[0]?.securityContext?.privileged).toBe(false);
  });

  it("binds the admission policies to what the code writes: the placeholder's image, the agent's status fields", async () => {
    const objects = await template();
    const operatorPolicy = JSON.stringify(find(objects, "ValidatingAdmissionPolicy", /-placeholder-pods$/));
    expect(operatorPolicy).toContain(`== \\"${quarantineImage}\\"`);
    const agentPolicy = JSON.stringify(find(objects, "ValidatingAdmissionPolicy", /-agent-own-events$/));
    // Every status field of a MemoryErrorEvent the agent does not own is guarded against it.
    const crd = parse(readFileSync(join(repoRoot, "crds", "memoryerrorevents.yaml"), "utf8")) as {
      spec: { versions: { schema: { openAPIV3Schema: { properties: { status: { properties: Record<string, unknown> } } } } }[] };
    };
    const fields = Object.keys(crd.spec.versions[0]?.schema.openAPIV3Schema.properties.status.properties ?? {});
    const agentOwned: (keyof AgentStatus)[] = ["earlySignals", "poolReplacementResult", "kernelSignals", "softOfflineResult"];
    const guarded = [...agentPolicy.matchAll(/object\.\?status\.\?(\w+) == oldObject/g)].map((m) => m[1]);
    expect(guarded.sort()).toEqual(fields.filter((f) => !(agentOwned as string[]).includes(f)).sort());
  });

  it("gives each component exactly the RBAC its code uses", async () => {
    const objects = await template();
    const rules = (kind: string, name: RegExp): unknown => (find(objects, kind, name) as unknown as { rules: unknown }).rules;
    const strip = (r: unknown): unknown => JSON.parse(JSON.stringify(r)) as unknown;
    expect(strip(rules("ClusterRole", /-operator$/))).toEqual([
      { apiGroups: ["mce-operator.io"], resources: ["memoryerrorevents", "nodememoryhealths", "containmentpolicies"], verbs: ["list", "watch"] },
      { apiGroups: ["mce-operator.io"], resources: ["memoryerrorevents/status", "nodememoryhealths/status", "containmentpolicies/status"], verbs: ["patch"] },
      { apiGroups: [""], resources: ["nodes"], verbs: ["get", "list", "watch", "patch"] },
      { apiGroups: [""], resources: ["nodes/status"], verbs: ["patch"] },
      { apiGroups: [""], resources: ["pods"], verbs: ["list", "watch", "delete"] },
      { apiGroups: [""], resources: ["pods/eviction"], verbs: ["create"] },
      { apiGroups: ["policy"], resources: ["poddisruptionbudgets"], verbs: ["list", "watch"] },
      { apiGroups: [""], resources: ["events"], verbs: ["create"] },
    ]);
    expect(strip(rules("Role", /-operator$/))).toEqual([
      { apiGroups: [""], resources: ["pods"], verbs: ["create"] },
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], verbs: ["create"] },
      { apiGroups: ["coordination.k8s.io"], resources: ["leases"], resourceNames: ["mce-operator"], verbs: ["get", "update"] },
    ]);
    expect(strip(rules("ClusterRole", /-agent$/))).toEqual([
      { apiGroups: ["mce-operator.io"], resources: ["memoryerrorevents"], verbs: ["create", "list", "watch"] },
      { apiGroups: ["mce-operator.io"], resources: ["memoryerrorevents/status"], verbs: ["patch"] },
      { apiGroups: ["mce-operator.io"], resources: ["nodememoryhealths"], verbs: ["create", "patch"] },
      { apiGroups: [""], resources: ["pods"], verbs: ["list", "watch", "patch"] },
    ]);
    // No wildcard anywhere, and nobody may read secrets.
    expect(JSON.stringify(objects.filter((o) => o.kind.endsWith("Role")))).not.toMatch(/"\*"|secrets/);
  });

  it("with every option on renders the ServiceMonitor, the PrometheusRule from files/alerts.yaml, the dashboard and the default policy", async () => {
    const objects = await template(allOn);
    const rule = find(objects, "PrometheusRule") as unknown as { apiVersion: string; spec: unknown };
    expect(rule.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(rule.spec).toEqual(parse(readFileSync(join(chartDir, "files", "alerts.yaml"), "utf8")));
    const monitor = find(objects, "ServiceMonitor") as unknown as {
      apiVersion: string;
      spec: { endpoints: { port: string; path: string }[]; selector: unknown };
    };
    expect(monitor.apiVersion).toBe("monitoring.coreos.com/v1");
    expect(monitor.spec.endpoints).toMatchObject([{ port: "metrics", path: "/metrics" }]);
    // The Services it selects exist, both with a port named metrics.
    const services = objects.filter((o) => o.kind === "Service") as unknown as {
      metadata: { labels: Record<string, string> };
      spec: { ports: { name: string }[] };
    }[];
    expect(services.map((s) => s.metadata.labels["app.kubernetes.io/component"]).sort()).toEqual(["agent", "operator"]);
    for (const s of services) expect(s.spec.ports[0]?.name).toBe("metrics");
    const dashboard = find(objects, "ConfigMap", /dashboard/) as unknown as { data: Record<string, string> };
    expect(JSON.parse(dashboard.data["mce-operator.json"] ?? "")).toEqual(JSON.parse(readFileSync(join(chartDir, "files", "dashboard.json"), "utf8")));
    expect((find(objects, "ContainmentPolicy") as unknown as { spec: unknown }).spec).toEqual({ mode: "DryRun" });
  });

  it("the API server accepts every object, by default and with every option on (server-side dry run)", async () => {
    const c = clients();
    const namespace = await createNamespace(c, "chart-dry");
    try {
      const crds = await kubectl(["apply", "--server-side", "--field-manager=e2e", "-f", "crds/"]);
      expect(crds.code, crds.stderr).toBe(0);
      await kubectl(["wait", "--for=condition=Established", "--timeout=30s", "crd/containmentpolicies.mce-operator.io"]);
      for (const values of [{}, allOn]) {
        // monitoring.coreos.com is not served by this cluster: those two are checked above.
        const objects = (await template(values, "dry", namespace)).filter((o) => !o.apiVersion.startsWith("monitoring.coreos.com/"));
        const result = await kubectl(["apply", "--dry-run=server", "-n", namespace, "-f", "-"], {
          input: objects.map((o) => JSON.stringify(o)).join("\n---\n"),
        });
        expect(result.code, result.stderr).toBe(0);
        expect(result.stdout.trim().split("\n")).toHaveLength(objects.length);
      }
    } finally {
      await deleteNamespace(c, namespace);
    }
  });
});

describe("alerts and dashboard", () => {
  const alerts = join(chartDir, "files", "alerts.yaml");

  it("the rule file is valid and every alert fires and stays quiet where it should (promtool test rules)", async () => {
    const check = await run("promtool", ["check", "rules", alerts]);
    expect(check.code, check.stdout + check.stderr).toBe(0);
    const result = await run("promtool", ["test", "rules", join(chartDir, "files", "alerts.test.yaml")]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/SUCCESS/);
  });

  it("tests each alert firing and not firing", () => {
    const rules = parse(readFileSync(alerts, "utf8")) as { groups: { rules: { alert?: string }[] }[] };
    const names = rules.groups.flatMap((g) => g.rules.flatMap((r) => (r.alert === undefined ? [] : [r.alert])));
    expect(names.sort()).toEqual([
      "MCEAgentMissing",
      "MCECircuitBreakerOpen",
      "MCEDimmCorrectedErrorsRising",
      "MCEDimmCorrectedErrorsTrending",
      "MCEEvictionBlocked",
      "MCEHugepageCapacityQuarantined",
      "MCEMemoryErrorStorm",
      "MCEUncorrectedMemoryError",
    ]);
    const tests = parse(readFileSync(join(chartDir, "files", "alerts.test.yaml"), "utf8")) as {
      tests: { alert_rule_test: { alertname: string; exp_alerts: unknown[] }[] }[];
    };
    const cases = tests.tests.flatMap((t) => t.alert_rule_test);
    for (const name of names) {
      expect(
        cases.some((c) => c.alertname === name && c.exp_alerts.length > 0),
        `${name} firing`,
      ).toBe(true);
      expect(
        cases.some((c) => c.alertname === name && c.exp_alerts.length === 0),
        `${name} not firing`,
      ).toBe(true);
    }
  });

  it("alerts and dashboard use only metrics the operator and the agent export", () => {
    const exported = new Set<string>();
    for (const file of ["operator/metrics.ts", "agent/metrics.ts"])
      for (const m of readFileSync(join(repoRoot, file), "utf8").matchAll(/name: "(mce_[a-z_]+)"/g)) if (m[1] !== undefined) exported.add(m[1]);
    const histogram = (name: string): string => name.replace(/_(bucket|sum|count)$/, "");
    const dashboard = JSON.parse(readFileSync(join(chartDir, "files", "dashboard.json"), "utf8")) as {
      panels: { title: string; targets?: { expr: string }[] }[];
    };
    const exprs = [...readFileSync(alerts, "utf8").matchAll(/(?<![:\w])(mce_[a-z_]+)(?![:\w])/g)].map((m) => m[1] ?? "");
    for (const p of dashboard.panels)
      for (const t of p.targets ?? []) exprs.push(...[...t.expr.matchAll(/(?<![:\w])(mce_[a-z_]+)(?![:\w])/g)].map((m) => m[1] ?? ""));
    expect(exprs.length).toBeGreaterThan(20);
    const unknown = exprs.filter((name) => !exported.has(name) && !exported.has(histogram(name)));
    expect(unknown).toEqual([]);
    // What the brief asks the dashboard to show.
    const titles = dashboard.panels.map((p) => p.title).join(" | ");
    for (const want of [/errors by node/i, /quarantined/i, /pending and blocked/i, /decision/i, /corrected errors by node and DIMM/i])
      expect(titles).toMatch(want);
    // The corrected-error panel shows each DIMM's count against its node's threshold, from the leader only.
    const dimms = dashboard.panels.find((p) => /corrected errors by node and DIMM/i.test(p.title));
    expect(dimms?.targets?.map((t) => t.expr)).toEqual([
      expect.stringMatching(
        /^max by \(node, dimm, dimm_label\) \(mce_operator_dimm_corrected_errors\{node=~"\$node"\} and on \(instance\) \(mce_operator_leader == 1\)\)$/,
      ),
      expect.stringMatching(/mce_operator_prevention_threshold\{scope="dimm", node=~"\$node"\} and on \(instance\) \(mce_operator_leader == 1\)/),
    ]);
  });
});
