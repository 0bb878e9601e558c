// LeaseClient on coordination.k8s.io/v1: replace sends the resourceVersion it read, so a stale
// candidate gets 409 Conflict instead of overwriting the holder.
import { ApiError } from "../../runtime/api.ts";
import type { Lease, LeaseClient } from "../leader.ts";
import type { RestClient } from "./rest.ts";

export class KubeLeases implements LeaseClient {
  private readonly rest: RestClient;
  private readonly path: string;
  private readonly collection: string;

  constructor(rest: RestClient, namespace: string, name: string) {
    this.rest = rest;
    this.collection = `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`;
    this.path = `${this.collection}/${name}`;
  }

  async get(): Promise<Lease | undefined> {
    try {
      return await this.rest.request<Lease>("GET", this.path);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  create(lease: Lease): Promise<Lease> {
    return this.rest.request<Lease>("POST", this.collection, { body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease } });
  }

  replace(lease: Lease): Promise<Lease> {
    return this.rest.request<Lease>("PUT", this.path, { body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease } });
  }
}
