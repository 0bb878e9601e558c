// The bridge to client-node's credentials, with a KubeConfig stand-in whose answers the test sets: the
// headers each request gets, and the connection pool kept while the TLS material stays and replaced
// when a plugin's certificate changes. (runtime/http.test.ts runs a real exec plugin through it.)
import type { KubeConfig } from "@kubernetes/client-node";
import type { RequestOptions } from "node:https";
import { describe, expect, it, vi } from "vitest";
import { fromKubeConfig, isKubeConfig } from "./client-node-credentials.ts";

function standIn(server: string, answer: () => RequestOptions): { kubeConfig: KubeConfig; asked: () => number } {
  let asked = 0;
  const kubeConfig = {
    getCurrentCluster: () => ({ name: "c", server, skipTLSVerify: false }),
    applyToHTTPSOptions: (options: RequestOptions) => {
      asked++;
      Object.assign(options, answer());
      return Promise.resolve();
    },
  } as unknown as KubeConfig;
  return { kubeConfig, asked: () => asked };
}

/** The options a pool was made with (node's Agent keeps them; its types do not say so). */
const optionsOf = (agent: unknown): unknown => (agent as { options?: unknown } | undefined)?.options;

describe("fromKubeConfig", () => {
  it("asks for credentials on every request and sends its headers, a basic auth among them", async () => {
    const { kubeConfig, asked } = standIn("https://api.example:6443/", () => ({
      headers: { Authorization: "Bearer t", "Impersonate-User": "alice" },
      auth: "admin:secret",
    }));
    const config = fromKubeConfig(kubeConfig);
    expect(config.server).toBe("https://api.example:6443");
    const first = await config.authorize?.();
    expect(first?.headers).toEqual({ Authorization: `Basic ${Buffer.from("admin:secret").toString("base64")}`, "Impersonate-User": "alice" });
    await config.authorize?.();
    expect(asked()).toBe(2);
    config.close?.();
  });

  it("keeps one pool while the TLS material is the same, and replaces it when a certificate changes", async () => {
    let cert = "cert-1";
    const { kubeConfig } = standIn("https://api.example:6443", () => ({ ca: Buffer.from("ca"), cert, key: "key", headers: {} }));
    const config = fromKubeConfig(kubeConfig);
    const a = await config.authorize?.();
    const b = await config.authorize?.();
    expect(b?.agent).toBe(a?.agent);
    expect(optionsOf(a?.agent)).toMatchObject({ keepAlive: true, cert: "cert-1", key: "key" });
    if (a === undefined) throw new Error("no authorization");
    const replaced = vi.spyOn(a.agent, "destroy");
    cert = "cert-2";
    const c = await config.authorize?.();
    expect(c?.agent).not.toBe(a.agent);
    expect(optionsOf(c?.agent)).toMatchObject({ cert: "cert-2" });
    // The replaced pool had nothing in flight: it is closed at once.
    expect(replaced).toHaveBeenCalledOnce();
    if (c === undefined) throw new Error("no authorization");
    const current = vi.spyOn(c.agent, "destroy");
    config.close?.();
    expect(current).toHaveBeenCalledOnce();
  });

  it("tells a client-node KubeConfig from a ClusterConfig", () => {
    expect(isKubeConfig(standIn("https://x", () => ({})).kubeConfig)).toBe(true);
    expect(isKubeConfig({ server: "https://x" })).toBe(false);
  });
});
