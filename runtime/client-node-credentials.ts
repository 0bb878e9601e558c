// The one path on which the programs use @kubernetes/client-node: a kubeconfig whose user needs a
// credential plugin (`exec`, `auth-provider`: a cloud's token command, OIDC) or whose cluster is behind a
// `proxy-url`. client-node runs the plugin, caches what it gives until it expires, and builds the proxy
// connection; http.ts's client sends each request with the headers and TLS material it works out.
// client-node costs about 80 MiB of RSS, so it is loaded here with a dynamic import, only when
// loadKubeconfig finds such a context: the in-cluster service account and a kubeconfig with a token, a
// token file or a client certificate never load this module's import of it. The type import below is
// erased when compiled and loads nothing.
import type { KubeConfig } from "@kubernetes/client-node";
import type { Agent as HttpAgent, OutgoingHttpHeaders } from "node:http";
import type { AgentOptions, RequestOptions } from "node:https";
import type { Authorization, ClusterConfig } from "./http.ts";
import { http, https } from "./node-http.ts";

/** The kubeconfig's context `context` read by client-node, which then gives every request its credentials. */
export async function loadWithClientNode(file: string, context: string): Promise<ClusterConfig> {
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(file);
  kubeConfig.setCurrentContext(context);
  return fromKubeConfig(kubeConfig);
}

/** True for a client-node KubeConfig (which tests and benchmarks still build): it has a current cluster. */
export function isKubeConfig(value: object): value is KubeConfig {
  return typeof (value as Partial<KubeConfig>).getCurrentCluster === "function";
}

/** TLS material as one comparable string. */
const text = (value: unknown): string =>
  Array.isArray(value)
    ? value.map(text).join(",")
    : typeof value === "string" || Buffer.isBuffer(value)
      ? Buffer.from(value).toString("base64")
      : String(value);

const busy = (agent: HttpAgent): boolean => Object.values(agent.sockets).some((sockets) => (sockets?.length ?? 0) > 0);

/**
 * A ClusterConfig whose every request asks `kubeConfig` for its credentials (client-node's
 * applyToHTTPSOptions: its authenticators, the exec plugin's cached answer, the files' contents). The
 * connection pool is kept while the TLS material stays the same, and a new one made when it changes (a
 * plugin's client certificate rotates); behind a proxy, client-node's own proxy agent is used.
 */
export function fromKubeConfig(kubeConfig: KubeConfig): ClusterConfig {
  const cluster = kubeConfig.getCurrentCluster();
  if (cluster === null) throw new Error("the kubeconfig has no current cluster");
  let pool: { material: string; agent: HttpAgent } | undefined;
  // Pools replaced while requests were in flight on them (a watch): closed once those have ended.
  let retired: HttpAgent[] = [];
  const authorize = async (): Promise<Authorization> => {
    const options: RequestOptions = {};
    await kubeConfig.applyToHTTPSOptions(options);
    const headers: Record<string, string> = {};
    for (const [name, value] of Object.entries((options.headers ?? {}) as OutgoingHttpHeaders))
      if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(", ") : String(value);
    if (typeof options.auth === "string") headers.Authorization = `Basic ${Buffer.from(options.auth).toString("base64")}`;
    if (cluster.proxyUrl !== undefined && cluster.proxyUrl !== "" && options.agent instanceof http.Agent) return { headers, agent: options.agent };
    const tls: AgentOptions = {
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      rejectUnauthorized: options.rejectUnauthorized,
      servername: options.servername,
    };
    const material = [text(tls.ca), text(tls.cert), text(tls.key), String(tls.rejectUnauthorized), tls.servername ?? ""].join("/");
    for (const agent of retired.filter((a) => !busy(a))) agent.destroy();
    retired = retired.filter(busy);
    if (pool?.material !== material) {
      if (pool !== undefined) {
        if (busy(pool.agent)) retired.push(pool.agent);
        else pool.agent.destroy();
      }
      pool = { material, agent: cluster.server.startsWith("https:") ? new https.Agent({ keepAlive: true, ...tls }) : new http.Agent({ keepAlive: true }) };
    }
    return { headers, agent: pool.agent };
  };
  return {
    server: cluster.server.replace(/\/+$/, ""),
    authorize,
    close: () => {
      for (const agent of [...retired.splice(0), ...(pool === undefined ? [] : [pool.agent])]) agent.destroy();
      pool = undefined;
    },
  };
}
