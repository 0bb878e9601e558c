// A plain-HTTP server on loopback that records every request and answers as a test scripts it: the
// agent's and the operator's own HTTP clients are tested against real sockets, not a mocked fetch.
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface SeenRequest {
  method: string;
  path: string;
  query: string;
  contentType: string | undefined;
  body: unknown;
}

export interface Answer {
  status: number;
  body?: unknown;
}

/** Answers a request; the default echoes the body back with 200, as an apply or a create does. */
export type Script = (request: SeenRequest) => Answer;

export const echo: Script = (request) => ({ status: 200, body: request.body ?? {} });

/** A Status object as the API server sends with an error. */
export function status(code: number, reason: string, message: string): Answer {
  return { status: code, body: { kind: "Status", apiVersion: "v1", status: "Failure", code, reason, message } };
}

export class ScriptedApiServer {
  readonly seen: SeenRequest[] = [];
  /** Each seen request's headers, in the same order. */
  readonly headers: IncomingHttpHeaders[] = [];
  script: Script = echo;
  /** While set, answers wait in `held` until a test releases them, so requests could overlap. */
  hold = false;
  held: (() => void)[] = [];
  readonly #server: Server;

  private constructor(server: Server) {
    this.#server = server;
  }

  static async start(): Promise<ScriptedApiServer> {
    const server = createServer();
    const api = new ScriptedApiServer(server);
    server.on("request", (req, res) => {
      let text = "";
      req.on("data", (chunk: Buffer) => (text += chunk.toString()));
      req.on("end", () => {
        const url = new URL(req.url ?? "/", "http://x");
        const request: SeenRequest = {
          method: req.method ?? "",
          path: url.pathname,
          query: url.searchParams.toString(),
          contentType: req.headers["content-type"],
          body: text === "" ? undefined : JSON.parse(text),
        };
        api.seen.push(request);
        api.headers.push(req.headers);
        const answer = (): void => {
          const { status, body } = api.script(request);
          res.writeHead(status, { "Content-Type": "application/json" }).end(body === undefined ? "" : JSON.stringify(body));
        };
        if (api.hold) api.held.push(answer);
        else answer();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return api;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  /** Forgets what was seen and goes back to echoing. */
  reset(): void {
    this.seen.length = 0;
    this.headers.length = 0;
    this.script = echo;
    this.hold = false;
    this.held = [];
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => {
      this.#server.close(() => {
        resolve();
      });
    });
  }
}
