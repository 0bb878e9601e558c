import { describe, expect, it } from "vitest";
import { resourceOf } from "./api.ts";

describe("resourceOf", () => {
  it.each([
    ["/api/v1/namespaces/shop/pods/db-0/eviction", "pods/eviction"],
    ["/api/v1/namespaces/default/events", "events"],
    ["/api/v1/nodes/node-1", "nodes"],
    ["/api/v1/nodes/node-1/status", "nodes/status"],
    ["/api/v1/nodes", "nodes"],
    ["/api/v1/namespaces", "namespaces"],
    ["/api/v1/namespaces/shop", "namespaces"],
    ["/apis/mce-operator.io/v1alpha1/memoryerrorevents/n-b-1/status", "memoryerrorevents/status"],
    ["/apis/coordination.k8s.io/v1/namespaces/mce-system/leases/mce-operator", "leases"],
    ["/api/v1/pods?watch=true", "pods"],
  ])("%s is %s", (path, resource) => {
    expect(resourceOf(path)).toBe(resource);
  });
});
