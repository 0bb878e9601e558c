// The programs' Kubernetes client against real local servers: HTTPS with a self-signed certificate made
// by openssl (server TLS, client certificates, tokens, kubeconfig and in-cluster variants; a credential
// plugin through client-node, loaded only then), and a scripted plain-HTTP API server for errors and
// list-then-watch (resume, 410 Gone, backoff, deletions).
import { execFile, execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import { connect, type AddressInfo, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { stringify } from "yaml";
import { ApiError } from "./api.ts";
import type { Clock } from "./clock.ts";
import { APPLY_PATCH, inClusterConfig, KubeClient, loadKubeconfig, loadKubeconfigFile, MERGE_PATCH, tokenFromFile, type ClusterConfig } from "./http.ts";
import { Informer } from "./informer.ts";

interface Seen {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage["headers"];
  body: string;
  clientCert: boolean;
}

type Handler = (request: Seen, res: ServerResponse) => void;

const dir = mkdtempSync(join(tmpdir(), "kube-http-"));
const file = (name: string): string => join(dir, name);

function certificate(name: string): void {
  execFileSync(
    "openssl",
    [
      "req",
      "-x509",
      "-newkey",
      "ec",
      "-pkeyopt",
      "ec_paramgen_curve:prime256v1",
      "-nodes",
      "-keyout",
      file(`${name}.key`),
      "-out",
      file(`${name}.crt`),
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    { stdio: "ignore" },
  );
}

const servers: Server[] = [];
let seen: Seen[] = [];

async function listen(server: Server, handler: Handler): Promise<string> {
  server.on("request", (req: IncomingMessage, res: ServerResponse) => {
    let body = "";
    req.on("data", (chunk: Buffer) => (body += chunk.toString()));
    req.on("end", () => {
      const url = new URL(req.url ?? "/", "http://x");
      const socket = req.socket as { getPeerCertificate?: () => { subject?: unknown } };
      const request = {
        method: req.method ?? "",
        path: url.pathname,
        query: url.searchParams,
        headers: req.headers,
        body,
        clientCert: socket.getPeerCertificate?.().subject !== undefined,
      };
      seen.push(request);
      handler(request, res);
    });
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return String((server.address() as AddressInfo).port);
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(body));
}

const ok: Handler = (_req, res) => {
  json(res, 200, { kind: "Pod", metadata: { name: "p" } });
};

let httpsPort: string;
let mtlsPort: string;

beforeAll(async () => {
  certificate("server");
  certificate("client");
  httpsPort = await listen(createHttpsServer({ cert: readFileSync(file("server.crt")), key: readFileSync(file("server.key")) }), ok);
  // Requires a client certificate signed by (here: equal to) client.crt.
  mtlsPort = await listen(
    createHttpsServer({
      cert: readFileSync(file("server.crt")),
      key: readFileSync(file("server.key")),
      ca: readFileSync(file("client.crt")),
      requestCert: true,
      rejectUnauthorized: true,
    }),
    ok,
  );
});

afterAll(() => {
  for (const server of servers) {
    server.closeAllConnections();
    server.close();
  }
  rmSync(dir, { recursive: true, force: true });
});

afterEach(() => {
  seen = [];
});

function kubeconfig(name: string, cluster: Record<string, unknown>, user: Record<string, unknown>, extra: Record<string, unknown> = {}): string {
  const path = file(name);
  writeFileSync(
    path,
    stringify({
      apiVersion: "v1",
      kind: "Config",
      clusters: [
        { name: "other", cluster: { server: "https://192.0.2.1:1" } },
        { name: "local", cluster },
      ],
      users: [{ name: "me", user }],
      contexts: [
        { name: "wrong", context: { cluster: "other", user: "me" } },
        { name: "right", context: { cluster: "local", user: "me" } },
      ],
      "current-context": "right",
      ...extra,
    }),
  );
  return path;
}

async function get(config: ClusterConfig): Promise<unknown> {
  const client = new KubeClient(config);
  try {
    return await client.request("GET", "/api/v1/namespaces/default/pods/p");
  } finally {
    await client.close();
  }
}

const b64 = (name: string): string => readFileSync(file(name)).toString("base64");

describe("kubeconfig", () => {
  it("uses the current context, with CA and client certificate files relative to the kubeconfig", async () => {
    const path = kubeconfig(
      "files.yaml",
      { server: `https://127.0.0.1:${mtlsPort}/`, "certificate-authority": "server.crt" },
      { "client-certificate": "client.crt", "client-key": join(dir, "client.key") },
    );
    const config = loadKubeconfigFile(path);
    expect(config.server).toBe(`https://127.0.0.1:${mtlsPort}`);
    expect(await get(config)).toEqual({ kind: "Pod", metadata: { name: "p" } });
    expect(seen[0]?.clientCert).toBe(true);
    expect(seen[0]?.path).toBe("/api/v1/namespaces/default/pods/p");
  });

  it("takes inline -data and a token, sent as a bearer token", async () => {
    const path = kubeconfig("data.yaml", { server: `https://localhost:${httpsPort}`, "certificate-authority-data": b64("server.crt") }, { token: "abc.def" });
    expect(await get(loadKubeconfigFile(path))).toMatchObject({ kind: "Pod" });
    expect(seen[0]?.headers.authorization).toBe("Bearer abc.def");
    expect(seen[0]?.headers.accept).toBe("application/json");
  });

  it("takes client-certificate-data and client-key-data", async () => {
    const path = kubeconfig(
      "cert-data.yaml",
      { server: `https://127.0.0.1:${mtlsPort}`, "certificate-authority-data": b64("server.crt") },
      { "client-certificate-data": b64("client.crt"), "client-key-data": b64("client.key") },
    );
    expect(await get(loadKubeconfigFile(path))).toMatchObject({ kind: "Pod" });
    expect(seen[0]?.clientCert).toBe(true);
  });

  it("reads a tokenFile and reads it again once it is old", async () => {
    writeFileSync(file("token"), "first\n");
    const path = kubeconfig("token-file.yaml", { server: `https://127.0.0.1:${httpsPort}`, "certificate-authority": "server.crt" }, { tokenFile: "token" });
    const config = loadKubeconfigFile(path);
    await get(config);
    expect(seen[0]?.headers.authorization).toBe("Bearer first");

    let now = 0;
    const token = tokenFromFile(file("token"), { now: () => now }, 60_000);
    expect(token()).toBe("first");
    writeFileSync(file("token"), "second\n");
    now = 59_999;
    expect(token()).toBe("first");
    now = 60_000;
    expect(token()).toBe("second");
    // A failed read keeps the last good token.
    rmSync(file("token"));
    now = 200_000;
    expect(token()).toBe("second");
  });

  it("verifies the server certificate unless insecure-skip-tls-verify", async () => {
    const strict = kubeconfig("strict.yaml", { server: `https://127.0.0.1:${httpsPort}` }, {});
    const error = await get(loadKubeconfigFile(strict)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(ApiError);
    expect((error as Error).message).toMatch(/^GET \/api\/v1\/namespaces\/default\/pods\/p: .*certificate/);
    const insecure = kubeconfig("insecure.yaml", { server: `https://127.0.0.1:${httpsPort}`, "insecure-skip-tls-verify": true }, {});
    expect(await get(loadKubeconfigFile(insecure))).toMatchObject({ kind: "Pod" });
  });

  it("takes another context by name, and says what is missing or unsupported", () => {
    const path = kubeconfig("contexts.yaml", { server: "https://127.0.0.1:6443" }, { token: "t" });
    expect(loadKubeconfigFile(path, "wrong").server).toBe("https://192.0.2.1:1");
    expect(() => loadKubeconfigFile(path, "nope")).toThrow(/no context named 'nope'/);
    expect(() => loadKubeconfigFile(kubeconfig("no-context.yaml", { server: "https://x" }, {}, { "current-context": "" }))).toThrow(/no current-context/);
    expect(() => loadKubeconfigFile(kubeconfig("no-server.yaml", {}, {}))).toThrow(/cluster 'local' has no server/);
    expect(() => loadKubeconfigFile(kubeconfig("exec.yaml", { server: "https://x" }, { exec: { command: "aws" } }))).toThrow(
      /context 'right': 'exec' credentials: not supported by mce-agent/,
    );
    expect(() => loadKubeconfigFile(kubeconfig("auth-provider.yaml", { server: "https://x" }, { "auth-provider": { name: "oidc" } }))).toThrow(
      /'auth-provider' credentials: not supported/,
    );
    expect(() => loadKubeconfigFile(kubeconfig("proxy.yaml", { server: "https://x", "proxy-url": "http://proxy:3128" }, {}))).toThrow(
      /a 'proxy-url': not supported/,
    );
    expect(() => loadKubeconfigFile(file("missing.yaml"))).toThrow(/cannot read kubeconfig/);
    writeFileSync(file("bad.yaml"), "clusters: [\n");
    expect(() => loadKubeconfigFile(file("bad.yaml"))).toThrow(/cannot read kubeconfig/);
  });

  it("takes tls-server-name, client-node's token-file spelling, impersonation and basic auth", async () => {
    writeFileSync(file("token2"), "from-token-file\n");
    const cluster = { server: `https://127.0.0.1:${httpsPort}`, "certificate-authority": "server.crt" };
    // The certificate names 127.0.0.1 and localhost: the name asked for is the one checked.
    const named = kubeconfig("server-name.yaml", { ...cluster, "tls-server-name": "localhost" }, { "token-file": "token2", as: "alice" });
    expect(await get(loadKubeconfigFile(named))).toMatchObject({ kind: "Pod" });
    expect(seen[0]?.headers).toMatchObject({ authorization: "Bearer from-token-file", "impersonate-user": "alice" });
    const misnamed = kubeconfig("misnamed.yaml", { ...cluster, "tls-server-name": "elsewhere.example" }, {});
    await expect(get(loadKubeconfigFile(misnamed))).rejects.toThrow(/elsewhere\.example/);
    const basic = kubeconfig("basic.yaml", cluster, { username: "admin", password: "secret" });
    await get(loadKubeconfigFile(basic));
    expect(seen.at(-1)?.headers.authorization).toBe(`Basic ${Buffer.from("admin:secret").toString("base64")}`);
  });

  it("loadKubeconfig gives the same config as loadKubeconfigFile when no plugin is needed", async () => {
    const path = kubeconfig("plain.yaml", { server: `https://localhost:${httpsPort}`, "certificate-authority-data": b64("server.crt") }, { token: "plain" });
    const config = await loadKubeconfig(path);
    expect(config.authorize).toBeUndefined();
    expect(config).toMatchObject({ server: `https://localhost:${httpsPort}`, ca: readFileSync(file("server.crt")) });
    expect(await get(config)).toMatchObject({ kind: "Pod" });
    expect(seen[0]?.headers.authorization).toBe("Bearer plain");
    expect((await loadKubeconfig(path, "wrong")).server).toBe("https://192.0.2.1:1");
  });

  it("builds the in-cluster config from the environment and the service account directory", async () => {
    const sa = mkdtempSync(join(dir, "sa-"));
    writeFileSync(join(sa, "token"), "sa-token\n");
    writeFileSync(join(sa, "ca.crt"), readFileSync(file("server.crt")));
    const config = inClusterConfig({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: httpsPort }, sa);
    expect(await get(config)).toMatchObject({ kind: "Pod" });
    expect(seen[0]?.headers.authorization).toBe("Bearer sa-token");
    expect(inClusterConfig({ KUBERNETES_SERVICE_HOST: "fd00::1", KUBERNETES_SERVICE_PORT: "443" }, sa).server).toBe("https://[fd00::1]:443");
    expect(() => inClusterConfig({}, sa)).toThrow(/not running in a cluster/);
    expect(() => inClusterConfig({ KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: "443" }, join(dir, "nowhere"))).toThrow(/token/);
  });
});

describe("credential plugins, through client-node loaded for them alone", () => {
  // A tiny exec credential plugin: counts its runs in a file and prints an ExecCredential, a token that
  // names the run (expiring at PLUGIN_EXPIRES) or a client certificate; PLUGIN_FAIL makes it fail as a
  // real one does when there is no session.
  const plugin = file("plugin.mjs");
  const counter = file("plugin-runs");
  beforeAll(() => {
    writeFileSync(
      plugin,
      [
        'import { readFileSync, writeFileSync } from "node:fs";',
        "const env = process.env;",
        'if (env.PLUGIN_FAIL) { process.stderr.write("no session: log in first\\n"); process.exit(1); }',
        'let runs = 0; try { runs = Number(readFileSync(env.PLUGIN_COUNTER, "utf8")); } catch {}',
        "runs++;",
        "writeFileSync(env.PLUGIN_COUNTER, String(runs));",
        "const status = env.PLUGIN_CERT",
        '  ? { clientCertificateData: readFileSync(env.PLUGIN_CERT, "utf8"), clientKeyData: readFileSync(env.PLUGIN_KEY, "utf8") }',
        "  : { token: `exec-token-${runs}`, expirationTimestamp: env.PLUGIN_EXPIRES };",
        'process.stdout.write(JSON.stringify({ apiVersion: "client.authentication.k8s.io/v1", kind: "ExecCredential", status }));',
      ].join("\n"),
    );
    chmodSync(plugin, 0o755);
  });
  afterEach(() => {
    rmSync(counter, { force: true });
  });

  const exec = (env: Record<string, string>): Record<string, unknown> => ({
    exec: {
      apiVersion: "client.authentication.k8s.io/v1",
      command: process.execPath,
      args: [plugin],
      env: Object.entries({ PLUGIN_COUNTER: counter, ...env }).map(([name, value]) => ({ name, value })),
      interactiveMode: "Never",
    },
  });
  const cluster = (port: string): Record<string, unknown> => ({ server: `https://127.0.0.1:${port}`, "certificate-authority": "server.crt" });
  const runs = (): number => Number(readFileSync(counter, "utf8"));

  async function requests(config: ClusterConfig, count: number): Promise<void> {
    const client = new KubeClient(config);
    try {
      for (let i = 0; i < count; i++) await client.request("GET", "/api/v1/namespaces/default/pods/p");
    } finally {
      await client.close();
    }
  }

  it("sends the plugin's token, runs it again once the token expired, and keeps its TLS settings", async () => {
    const lasting = kubeconfig("exec-lasting.yaml", cluster(httpsPort), exec({ PLUGIN_EXPIRES: "2999-01-01T00:00:00Z" }));
    await requests(await loadKubeconfig(lasting), 3);
    expect(seen.map((s) => s.headers.authorization)).toEqual(["Bearer exec-token-1", "Bearer exec-token-1", "Bearer exec-token-1"]);
    expect(runs()).toBe(1);
    seen = [];
    rmSync(counter);
    const expired = kubeconfig("exec-expired.yaml", cluster(httpsPort), exec({ PLUGIN_EXPIRES: "2000-01-01T00:00:00Z" }));
    await requests(await loadKubeconfig(expired), 2);
    expect(seen.map((s) => s.headers.authorization)).toEqual(["Bearer exec-token-1", "Bearer exec-token-2"]);
  });

  it("presents the client certificate a plugin gives", async () => {
    const path = kubeconfig("exec-cert.yaml", cluster(mtlsPort), exec({ PLUGIN_CERT: file("client.crt"), PLUGIN_KEY: file("client.key") }));
    await requests(await loadKubeconfig(path), 2);
    expect(seen.map((s) => s.clientCert)).toEqual([true, true]);
    expect(seen[0]?.headers.authorization).toBeUndefined();
  });

  it("says the plugin's own words when it fails, with no status", async () => {
    const path = kubeconfig("exec-fails.yaml", cluster(httpsPort), exec({ PLUGIN_FAIL: "1" }));
    const client = new KubeClient(await loadKubeconfig(path));
    const error = await client.request("GET", "/api/v1/pods").catch((e: unknown) => e);
    await client.close();
    expect(error).not.toBeInstanceOf(ApiError);
    expect((error as Error).message).toBe("GET /api/v1/pods: no credentials: no session: log in first");
    expect(seen).toEqual([]);
  });

  it("goes through a proxy-url with client-node's proxy agent", async () => {
    // A CONNECT proxy on loopback that records where it was asked to tunnel.
    const tunnels: string[] = [];
    const proxy = createHttpServer();
    proxy.on("connect", (req: IncomingMessage, client: Socket, head: Buffer) => {
      tunnels.push(req.url ?? "");
      const [host = "", port = ""] = (req.url ?? "").split(":");
      const upstream = connect(Number(port), host, () => {
        client.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(client).pipe(upstream);
      });
      upstream.on("error", () => client.destroy());
      client.on("error", () => upstream.destroy());
    });
    servers.push(proxy);
    await new Promise<void>((resolve) => proxy.listen(0, "127.0.0.1", resolve));
    const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
    const path = kubeconfig("proxied.yaml", { ...cluster(httpsPort), "proxy-url": proxyUrl }, { token: "through-proxy" });
    await requests(await loadKubeconfig(path), 1);
    expect(tunnels).toEqual([`127.0.0.1:${httpsPort}`]);
    expect(seen[0]?.headers.authorization).toBe("Bearer through-proxy");
  });

  it("loads client-node for a plugin, and never for a token or the in-cluster service account", async () => {
    // A fresh process (vitest itself has loaded client-node for other tests): a module hook records
    // whether anything under @kubernetes/client-node is resolved while the config is loaded and used.
    // Run asynchronously: the servers answering it are in this process.
    const probe = async (kubeconfigFile: string | undefined): Promise<{ clientNode: boolean; answer: unknown }> => {
      const script = [
        'import { registerHooks } from "node:module";',
        "let clientNode = false;",
        "registerHooks({ resolve(specifier, context, next) {",
        "  const resolved = next(specifier, context);",
        '  if (resolved.url.includes("/@kubernetes/client-node/")) clientNode = true;',
        "  return resolved;",
        "} });",
        `const { inClusterConfig, KubeClient, loadKubeconfig } = await import(${JSON.stringify(new URL("./http.ts", import.meta.url).href)});`,
        `const file = ${JSON.stringify(kubeconfigFile ?? null)};`,
        `const config = file === null ? inClusterConfig(process.env, ${JSON.stringify(join(dir, "probe-sa"))}) : await loadKubeconfig(file);`,
        "const client = new KubeClient(config);",
        'const answer = await client.request("GET", "/api/v1/namespaces/default/pods/p");',
        "await client.close();",
        "process.stdout.write(JSON.stringify({ clientNode, answer }));",
      ].join("\n");
      const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], {
        encoding: "utf8",
        env: { ...process.env, KUBERNETES_SERVICE_HOST: "127.0.0.1", KUBERNETES_SERVICE_PORT: httpsPort },
      });
      return JSON.parse(stdout) as { clientNode: boolean; answer: unknown };
    };
    const sa = join(dir, "probe-sa");
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, "token"), "sa-token\n");
    writeFileSync(join(sa, "ca.crt"), readFileSync(file("server.crt")));
    const pod = { kind: "Pod", metadata: { name: "p" } };
    expect(await probe(undefined)).toEqual({ clientNode: false, answer: pod });
    expect(await probe(kubeconfig("probe-token.yaml", cluster(httpsPort), { token: "t" }))).toEqual({ clientNode: false, answer: pod });
    expect(await probe(kubeconfig("probe-cert.yaml", cluster(mtlsPort), { "client-certificate": "client.crt", "client-key": "client.key" }))).toEqual({
      clientNode: false,
      answer: pod,
    });
    expect(await probe(kubeconfig("probe-exec.yaml", cluster(httpsPort), exec({ PLUGIN_EXPIRES: "2999-01-01T00:00:00Z" })))).toEqual({
      clientNode: true,
      answer: pod,
    });
    expect(seen.map((s) => s.headers.authorization)).toEqual(["Bearer sa-token", "Bearer t", undefined, "Bearer exec-token-1"]);
  });
});

describe("requests", () => {
  let client: KubeClient;
  let handler: Handler = ok;

  beforeAll(async () => {
    const port = await listen(createHttpServer(), (req, res) => {
      handler(req, res);
    });
    client = new KubeClient({ server: `http://127.0.0.1:${port}/prefix/` }, { requestTimeoutMs: 500 });
  });

  afterAll(async () => {
    await client.close();
  });

  it("sends JSON with the patch content types and query, and parses the answer", async () => {
    handler = (req, res) => {
      json(res, 200, { echo: JSON.parse(req.body) as unknown });
    };
    expect(
      await client.request("PATCH", "/apis/g/v1/things/a", {
        query: { fieldManager: "mce-agent", force: true, skip: undefined },
        body: { spec: { x: 1 } },
        contentType: APPLY_PATCH,
      }),
    ).toEqual({ echo: { spec: { x: 1 } } });
    await client.request("PATCH", "/api/v1/namespaces/n/pods/p", { body: { metadata: { annotations: { a: "b" } } }, contentType: MERGE_PATCH });
    await client.request("POST", "/api/v1/namespaces/n/events", { body: {} });
    expect(seen.map((s) => [s.method, s.path, s.headers["content-type"], s.query.toString()])).toEqual([
      ["PATCH", "/prefix/apis/g/v1/things/a", "application/apply-patch+yaml", "fieldManager=mce-agent&force=true"],
      ["PATCH", "/prefix/api/v1/namespaces/n/pods/p", "application/merge-patch+json", ""],
      ["POST", "/prefix/api/v1/namespaces/n/events", "application/json", ""],
    ]);
    expect(seen[0]?.headers["user-agent"]).toBe("mce-agent");
    expect(seen[0]?.headers.authorization).toBeUndefined();
  });

  it("turns an error status into a ApiError with the API server's message", async () => {
    handler = (_req, res) => {
      json(res, 409, {
        kind: "Status",
        apiVersion: "v1",
        status: "Failure",
        reason: "AlreadyExists",
        code: 409,
        message: 'memoryerrorevents.mce-operator.io "x" already exists',
      });
    };
    const error = await client.request("POST", "/apis/mce-operator.io/v1alpha1/memoryerrorevents", { body: {} }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      status: 409,
      reason: "AlreadyExists",
      message: 'POST /apis/mce-operator.io/v1alpha1/memoryerrorevents: 409 AlreadyExists: memoryerrorevents.mce-operator.io "x" already exists',
    });

    handler = (_req, res) => {
      res.writeHead(502, { "Content-Type": "text/html" });
      res.end("<html>bad gateway</html>");
    };
    await expect(client.request("GET", "/api/v1/pods")).rejects.toMatchObject({
      status: 502,
      reason: "Bad Gateway",
      message: "GET /api/v1/pods: 502 Bad Gateway: <html>bad gateway</html>",
    });
  });

  it("says why when no API server answered, with no status", async () => {
    handler = () => {
      // Never answers: the request times out.
    };
    const timedOut = await client.request("GET", "/api/v1/pods").catch((e: unknown) => e);
    expect(timedOut).not.toBeInstanceOf(ApiError);
    expect((timedOut as Error).message).toBe("GET /api/v1/pods: timed out");
    // A port nothing listens on any more.
    const gone = createHttpServer();
    await new Promise<void>((resolve) => gone.listen(0, "127.0.0.1", resolve));
    const port = (gone.address() as AddressInfo).port;
    await new Promise((resolve) => gone.close(resolve));
    const closed = new KubeClient({ server: `http://127.0.0.1:${port}` });
    const refused = await closed.request("GET", "/api/v1/pods").catch((e: unknown) => e);
    expect((refused as Error).message).toMatch(/^GET \/api\/v1\/pods: connect ECONNREFUSED/);
    expect(refused).not.toBeInstanceOf(ApiError);
    await closed.close();
  });
});

describe("list, then watch", () => {
  interface Watch {
    events?: Record<string, unknown>[];
    /** An HTTP error instead of a stream. */
    status?: number;
    /** Keep the stream open until the client goes. */
    hang?: boolean;
  }
  let lists: (Record<string, unknown> | number)[] = [];
  let watches: Watch[] = [];
  let client: KubeClient;

  const pod = (name: string, rv: string, uid = `uid-${name}`): Record<string, unknown> => ({ metadata: { name, namespace: "n", uid, resourceVersion: rv } });
  const event = (type: string, object: Record<string, unknown>): Record<string, unknown> => ({ type, object });
  const gone = event("ERROR", { kind: "Status", code: 410, reason: "Expired", message: "too old resource version: 1 (5)" });

  beforeAll(async () => {
    const port = await listen(createHttpServer(), (req, res) => {
      if (req.query.get("watch") !== "true") {
        const answer = lists.shift() ?? 500;
        if (typeof answer === "number") json(res, answer, { kind: "Status", code: answer, reason: "InternalError", message: "scripted failure" });
        else json(res, 200, answer);
        return;
      }
      const watch = watches.shift() ?? { hang: true };
      if (watch.status !== undefined) {
        json(res, watch.status, { kind: "Status", code: watch.status, reason: watch.status === 410 ? "Expired" : "InternalError", message: "scripted" });
        return;
      }
      res.writeHead(200, { "Content-Type": "application/json" });
      for (const e of watch.events ?? []) res.write(`${JSON.stringify(e)}\n`);
      if (watch.hang !== true) res.end();
    });
    client = new KubeClient({ server: `http://127.0.0.1:${port}` });
  });

  afterAll(async () => {
    await client.close();
  });

  afterEach(() => {
    lists = [];
    watches = [];
  });

  /** Runs an informer on this client until the server has no scripted watch left (a hanging one), then stops it. */
  async function run(): Promise<{ upserts: string[]; deletes: string[]; errors: number[]; sleeps: number[] }> {
    const upserts: string[] = [];
    const deletes: string[] = [];
    const errors: number[] = [];
    const sleeps: number[] = [];
    const abort = new AbortController();
    // Every scripted watch, then the hanging one.
    const total = watches.length + 1;
    type Meta = { name: string; resourceVersion: string };
    const name = (meta: Meta): string => `${meta.name}@${meta.resourceVersion}`;
    // Time stands still: every backoff is recorded and over at once.
    const clock: Clock = {
      now: () => 0,
      sleep: (ms) => {
        sleeps.push(ms);
        return Promise.resolve();
      },
      setTimeout: () => undefined,
      clearTimeout: () => undefined,
    };
    const informer = new Informer(client, {
      path: "/api/v1/pods",
      query: { fieldSelector: "spec.nodeName=n1" },
      transform: (raw) => raw.metadata as Meta,
      onUpsert: (_key, meta) => upserts.push(name(meta)),
      onDelete: (_key, meta) => deletes.push(name(meta)),
      onError: (error, retryInMs) => {
        errors.push(error instanceof ApiError ? error.status : 0);
        expect(retryInMs).toBeGreaterThan(0);
      },
      clock,
      backoff: { initialMs: 100, maxMs: 400 },
      watchSeconds: { min: 20, max: 25 },
    });
    const done = informer.run(abort.signal);
    await expect.poll(() => watchRequests().length).toBeGreaterThanOrEqual(total);
    abort.abort();
    await done;
    return { upserts, deletes, errors, sleeps };
  }

  const watchRequests = (): URLSearchParams[] => seen.filter((s) => s.query.get("watch") === "true").map((s) => s.query);

  it("lists, watches from the list's resourceVersion, and resumes from the last event when the server ends the watch", async () => {
    lists = [{ metadata: { resourceVersion: "10" }, items: [pod("a", "5"), pod("b", "7")] }];
    watches = [
      { events: [event("MODIFIED", pod("a", "11")), event("ADDED", pod("c", "12"))] },
      { events: [event("BOOKMARK", { metadata: { resourceVersion: "15" } }), event("DELETED", pod("b", "16"))] },
    ];
    const result = await run();
    expect(result.upserts).toEqual(["a@5", "b@7", "a@11", "c@12"]);
    expect(result.deletes).toEqual(["b@16"]);
    expect(result.errors).toEqual([]);
    const watched = watchRequests();
    expect(watched.map((q) => q.get("resourceVersion"))).toEqual(["10", "12", "16"]);
    for (const q of watched) {
      expect(q.get("fieldSelector")).toBe("spec.nodeName=n1");
      expect(q.get("allowWatchBookmarks")).toBe("true");
      expect(Number(q.get("timeoutSeconds"))).toBeGreaterThanOrEqual(20);
      expect(Number(q.get("timeoutSeconds"))).toBeLessThanOrEqual(25);
    }
    expect(seen.filter((s) => s.query.get("watch") !== "true")).toHaveLength(1);
    expect(seen[0]?.query.get("limit")).toBe("500");
  });

  it("re-lists on 410 Gone, reporting what vanished as deleted and only what changed as updated", async () => {
    lists = [
      { metadata: { resourceVersion: "10" }, items: [pod("a", "5"), pod("b", "7"), pod("c", "8")] },
      // Paged: b unchanged, c replaced by a new pod of the same name, a gone.
      { metadata: { resourceVersion: "30", continue: "page2" }, items: [pod("b", "7")] },
      { metadata: { resourceVersion: "30" }, items: [pod("c", "25", "uid-c2"), pod("d", "26")] },
      { metadata: { resourceVersion: "40" }, items: [pod("b", "7"), pod("c", "25", "uid-c2"), pod("d", "26")] },
    ];
    watches = [{ events: [gone] }, { status: 410 }];
    const result = await run();
    expect(result.upserts).toEqual(["a@5", "b@7", "c@8", "c@25", "d@26"]);
    expect(result.deletes).toEqual(["c@8", "a@5"]);
    expect(result.errors).toEqual([]);
    expect(result.sleeps).toEqual([]);
    expect(seen.filter((s) => s.query.get("watch") !== "true").map((s) => s.query.get("continue"))).toEqual([null, null, "page2", null]);
    expect(watchRequests().map((q) => q.get("resourceVersion"))).toEqual(["10", "30", "40"]);
  });

  it("restarts after failures with a capped exponential backoff, reset once it gets through", async () => {
    lists = [500, 500, 500, 500, { metadata: { resourceVersion: "10" }, items: [pod("a", "5")] }];
    watches = [{ status: 500 }, { events: [event("MODIFIED", pod("a", "11"))] }, { status: 503 }];
    const result = await run();
    expect(result.errors).toEqual([500, 500, 500, 500, 500, 503]);
    expect(result.sleeps).toEqual([100, 200, 400, 400, 100, 100]);
    expect(result.upserts).toEqual(["a@5", "a@11"]);
    expect(watchRequests().map((q) => q.get("resourceVersion"))).toEqual(["10", "10", "11", "11"]);
  });

  it("backs off when the server ends each watch at once, with no event", async () => {
    lists = [{ metadata: { resourceVersion: "10" }, items: [] }];
    watches = [{ events: [] }, { events: [] }];
    const result = await run();
    expect(result.errors).toEqual([0, 0]);
    expect(result.sleeps).toEqual([100, 200]);
    expect(watchRequests().map((q) => q.get("resourceVersion"))).toEqual(["10", "10", "10"]);
  });

  it("stops when aborted, with a watch in flight", async () => {
    lists = [{ metadata: { resourceVersion: "1" }, items: [] }];
    const result = await run();
    expect(result).toEqual({ upserts: [], deletes: [], errors: [], sleeps: [] });
  });
});
