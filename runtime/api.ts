// What both programs' Kubernetes clients share: the query and watch-event shapes, and the one error a
// request the API server answered with an error status becomes (`status` is the HTTP status).

export type Query = Record<string, string | number | boolean | undefined>;

export interface WatchEvent {
  type: "ADDED" | "MODIFIED" | "DELETED" | "BOOKMARK" | "ERROR";
  object: Record<string, unknown>;
}

/** The parts of a metav1.Status an error needs. */
export interface StatusObject {
  code?: number;
  reason?: string;
  message?: string;
}

export class ApiError extends Error {
  /** The HTTP status (404, 409, 410, 429...). */
  readonly status: number;
  /** The Status object's reason (AlreadyExists, Conflict, Expired...), or the HTTP status text. */
  readonly reason: string;

  constructor(status: number, reason: string, message: string) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.reason = reason;
  }

  /** From an error answer: `text` is its body, a Status object or (from a proxy) anything else. */
  static fromResponse(what: string, status: number, statusText: string, text: string): ApiError {
    let parsed: StatusObject = {};
    try {
      parsed = JSON.parse(text) as StatusObject;
    } catch {
      // Not a Status object (a proxy's page): the raw text is the message.
    }
    return ApiError.fromStatus(what, {
      ...parsed,
      code: status,
      reason: parsed.reason ?? statusText,
      message: parsed.message ?? (text.slice(0, 500) || statusText),
    });
  }

  /** From a Status object, as a watch's ERROR event carries one. */
  static fromStatus(what: string, status: StatusObject): ApiError {
    const code = status.code ?? 500;
    const reason = status.reason ?? "Unknown";
    return new ApiError(code, reason, `${what}: ${code} ${reason}: ${status.message ?? ""}`);
  }
}

/** The HTTP status of an ApiError, undefined for anything else (no API server answered). */
export function apiStatusOf(error: unknown): number | undefined {
  return error instanceof ApiError ? error.status : undefined;
}

/** True when the request never reached an API server that answered (refused, reset, timed out), or it failed on its side. */
export function isUnreachable(error: unknown): boolean {
  return !(error instanceof ApiError) || error.status >= 500;
}

/**
 * The resource a request path names, as the API server's own metrics name it: `pods/eviction`,
 * `memoryerrorevents/status`, `events`, `nodes`; the group, version, namespace and object name dropped.
 */
export function resourceOf(path: string): string {
  const parts = path.split("?")[0]?.split("/").filter(Boolean) ?? [];
  // /api/v1/... or /apis/<group>/<version>/...
  let rest = parts[0] === "api" ? parts.slice(2) : parts.slice(3);
  if (rest[0] === "namespaces" && rest.length >= 3) rest = rest.slice(2);
  const [resource, , subresource] = rest;
  return subresource ? `${resource ?? ""}/${subresource}` : (resource ?? "");
}
