// A token bound to a scheduled pod names the pod and its node: what lets an
// admission policy tie each agent to its own node.
import type { V1Node } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clients,
  createHugepageNode,
  createHugepagePod,
  createNamespace,
  deleteNamespace,
  deleteNode,
  jwtClaims,
  podBoundToken,
  waitForPodRunning,
} from "./cluster/helpers.ts";

describe("pod-bound service-account tokens", () => {
  const c = clients();
  let namespace = "";
  let node: V1Node | undefined;

  beforeAll(async () => {
    namespace = await createNamespace(c, "token");
    node = await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "64Mi" } });
  });

  afterAll(async () => {
    if (namespace !== "") await deleteNamespace(c, namespace);
    if (node?.metadata?.name) await deleteNode(c, node.metadata.name);
  });

  it("carries the pod and its node", async () => {
    const nodeName = node?.metadata?.name ?? "";
    const created = await createHugepagePod(c, { namespace, nodeName, hugepages: { "hugepages-2Mi": "2Mi" } });
    const pod = await waitForPodRunning(c, namespace, created.metadata?.name ?? "");

    const claims = jwtClaims(await podBoundToken(c, pod));

    expect(claims.sub).toBe(`system:serviceaccount:${namespace}:default`);
    expect(claims["kubernetes.io"]).toMatchObject({
      namespace,
      pod: { name: pod.metadata?.name, uid: pod.metadata?.uid },
      node: { name: nodeName, uid: node?.metadata?.uid },
    });
  });
});
