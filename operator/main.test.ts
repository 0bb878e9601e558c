import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it, vi } from "vitest";
import { clusterConfig, operatorFlags, operatorUsage, parseConfig, runOperator, type OperatorConfig } from "./main.ts";

const config = (argv: string[], env: Record<string, string> = {}): OperatorConfig => {
  const c = parseConfig(argv, env);
  if (c === "help") throw new Error("unexpected help");
  return c;
};

describe("operator configuration", () => {
  it("has defaults a cluster install can run with", () => {
    expect(config([], { POD_NAMESPACE: "mce", POD_NAME: "mce-operator-abc" })).toMatchObject({
      namespace: "mce",
      identity: "mce-operator-abc",
      metricsAddress: "0.0.0.0",
      metricsPort: 8080,
      leaderElect: true,
      leaseName: "mce-operator",
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      concurrency: 16,
      resyncMs: 300_000,
      logLevel: "info",
    });
  });

  it("takes every flag from the command line as the chart passes them", () => {
    expect(
      config([
        "--kubeconfig=/k",
        "--namespace=ns",
        "--identity=me",
        "--metrics-address=127.0.0.1",
        "--metrics-port=9000",
        "--leader-elect=false",
        "--lease-name=l",
        "--lease-duration=30s",
        "--renew-deadline=20s",
        "--retry-period=500ms",
        "--concurrency=8",
        "--resync=1h30m",
        "--log-level=debug",
        "--quarantine-priority-class=pc",
      ]),
    ).toEqual({
      kubeconfig: "/k",
      namespace: "ns",
      identity: "me",
      metricsAddress: "127.0.0.1",
      metricsPort: 9000,
      leaderElect: false,
      leaseName: "l",
      leaseDurationMs: 30_000,
      renewDeadlineMs: 20_000,
      retryPeriodMs: 500,
      concurrency: 8,
      resyncMs: 5_400_000,
      logLevel: "debug",
      quarantinePriorityClass: "pc",
    });
  });

  it("reads flags first, then MCE_ environment variables, then the variables Kubernetes sets", () => {
    const c = config(["--concurrency=8", "--lease-duration", "30s"], {
      MCE_CONCURRENCY: "2",
      MCE_LOG_LEVEL: "debug",
      MCE_LEADER_ELECT: "false",
      MCE_NAMESPACE: "from-mce",
      POD_NAMESPACE: "from-pod",
    });
    expect([c.concurrency, c.leaseDurationMs, c.logLevel, c.leaderElect, c.namespace]).toEqual([8, 30_000, "debug", false, "from-mce"]);
  });

  it("says help for --help, and the help names every flag", () => {
    expect(parseConfig(["--concurrency=x", "--help"], {})).toBe("help");
    for (const flag of Object.keys(operatorFlags)) expect(operatorUsage).toContain(`--${flag}`);
  });

  it.each([
    [["--metrics-port=http"], /--metrics-port "http": not an integer from 0 to 65535/],
    [["--lease-duration=soon"], /--lease-duration "soon": not a duration/],
    [["--leader-elect=yes"], /--leader-elect "yes": not true or false/],
    [["--log-level=loud"], /--log-level "loud": not one of debug, info, warn, error/],
    [["--renew-deadline=20s"], /--renew-deadline must be shorter than --lease-duration/],
    [["--no-such-flag"], /unknown flag --no-such-flag/],
  ])("refuses %j with a message naming the flag", (argv, message) => {
    expect(() => parseConfig(argv, {})).toThrow(message);
  });
});

describe("the API server's address and credentials", () => {
  const dir = mkdtempSync(join(tmpdir(), "mce-operator-main-"));
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  afterEach(() => {
    vi.unstubAllEnvs();
    vi.restoreAllMocks();
  });

  it("reads --kubeconfig with the runtime's client, not client-node", async () => {
    const file = join(dir, "kubeconfig");
    writeFileSync(
      file,
      JSON.stringify({
        clusters: [{ name: "c", cluster: { server: "https://10.0.0.1:6443/", "insecure-skip-tls-verify": true } }],
        users: [{ name: "u", user: { token: "t" } }],
        contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
        "current-context": "x",
      }),
    );
    const config = await clusterConfig(file);
    expect(config).toMatchObject({ server: "https://10.0.0.1:6443", insecureSkipTLSVerify: true });
    expect(config.token?.()).toBe("t");
    expect(config.authorize).toBeUndefined();
  });

  it("without --kubeconfig, needs the in-cluster environment", async () => {
    vi.stubEnv("KUBERNETES_SERVICE_HOST", "");
    await expect(clusterConfig(undefined)).rejects.toThrow(/not running in a cluster/);
  });

  it("run says in one line why it cannot start, and exits 1", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    expect(await runOperator([`--kubeconfig=${join(dir, "missing")}`, "--metrics-port=0"])).toBe(1);
    expect(stderr).toHaveBeenCalledWith(expect.stringMatching(/^mce-operator run: cannot read kubeconfig .*missing: ENOENT/));
  });
});
