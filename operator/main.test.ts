import { describe, expect, it } from "vitest";
import { parseConfig } from "./main.ts";

describe("operator configuration", () => {
  it("has defaults a cluster install can run with", () => {
    const c = parseConfig([], { POD_NAMESPACE: "mce", POD_NAME: "mce-operator-abc" });
    expect(c).toMatchObject({
      namespace: "mce",
      identity: "mce-operator-abc",
      metricsPort: 8080,
      leaderElect: true,
      leaseDurationMs: 15_000,
      renewDeadlineMs: 10_000,
      retryPeriodMs: 2_000,
      concurrency: 16,
      resyncMs: 300_000,
    });
  });

  it("reads flags first, then MCE_ environment variables", () => {
    const c = parseConfig(["--concurrency=8", "--lease-duration", "30s"], { MCE_CONCURRENCY: "2", MCE_LOG_LEVEL: "debug", MCE_LEADER_ELECT: "false" });
    expect([c.concurrency, c.leaseDurationMs, c.logLevel, c.leaderElect]).toEqual([8, 30_000, "debug", false]);
  });

  it.each([
    [["--metrics-port=http"], /--metrics-port: "http" is not an integer from 0 to 65535/],
    [["--lease-duration=soon"], /--lease-duration: "soon" is not a duration/],
    [["--leader-elect=yes"], /--leader-elect: "yes" is not true or false/],
    [["--log-level=loud"], /--log-level: "loud" is not debug, info, warn or error/],
    [["--renew-deadline=20s"], /--renew-deadline must be shorter than --lease-duration/],
    [["--no-such-flag"], /Unknown option '--no-such-flag'/],
  ])("refuses %j with a message naming the flag", (argv, message) => {
    expect(() => parseConfig(argv, {})).toThrow(message);
  });
});
