// Node's http and https modules, loaded with require(). An ESM import of node:http builds the module's
// namespace, which reads every export, including the lazy WebSocket, CloseEvent and MessageEvent getters
// that load undici: about 13 MiB of RSS (measured on Node 24), on every node, for nothing the agent uses.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

export const http = require("node:http") as typeof import("node:http");
export const https = require("node:https") as typeof import("node:https");
