// The Eviction API honours PodDisruptionBudgets: the path the operator takes
// to move pods off poisoned hugepages.
import type { V1Node } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  clients,
  createHugepageNode,
  createHugepagePod,
  createNamespace,
  createPdb,
  deleteNamespace,
  deleteNode,
  evictPod,
  waitFor,
  waitForPodGone,
  waitForPodRunning,
} from "./cluster/helpers.ts";

describe("evicting hugepage pods", () => {
  const c = clients();
  let namespace = "";
  let node: V1Node | undefined;

  beforeAll(async () => {
    namespace = await createNamespace(c, "evict");
    node = await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "128Mi" } });
  });

  afterAll(async () => {
    if (namespace !== "") await deleteNamespace(c, namespace);
    if (node?.metadata?.name) await deleteNode(c, node.metadata.name);
  });

  it("refuses with 429 when the pod's PDB allows no disruption", async () => {
    const labels = { app: "guarded" };
    const pod = await createHugepagePod(c, { namespace, labels, hugepages: { "hugepages-2Mi": "32Mi" } });
    const name = pod.metadata?.name ?? "";
    await waitForPodRunning(c, namespace, name);
    const pdb = await createPdb(c, { namespace, matchLabels: labels, minAvailable: 1 });
    const pdbName = pdb.metadata?.name ?? "";
    await waitFor(`PDB ${namespace}/${pdbName} to count the pod healthy`, async () => {
      const current = await c.policy.readNamespacedPodDisruptionBudget({ namespace, name: pdbName });
      return current.status?.currentHealthy === 1 && current.status;
    });

    expect(await evictPod(c, namespace, name)).toBe(429);

    const after = await c.core.readNamespacedPod({ namespace, name });
    expect(after.metadata?.deletionTimestamp).toBeUndefined();
    const status = (await c.policy.readNamespacedPodDisruptionBudget({ namespace, name: pdbName })).status;
    expect(status?.disruptionsAllowed).toBe(0);
  });

  it("evicts a pod no PDB covers, and the pod goes away", async () => {
    const pod = await createHugepagePod(c, { namespace, labels: { app: "free" }, hugepages: { "hugepages-2Mi": "32Mi" } });
    const name = pod.metadata?.name ?? "";
    await waitForPodRunning(c, namespace, name);

    expect(await evictPod(c, namespace, name)).toBe(201);

    await waitForPodGone(c, namespace, name);
  });
});
