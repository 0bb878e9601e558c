// kube-scheduler places hugepage pods by the capacity KWOK nodes advertise:
// the behaviour the operator's capacity quarantine relies on.
import type { CoreV1Event, V1Node } from "@kubernetes/client-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clients, createHugepageNode, createHugepagePod, createNamespace, deleteNamespace, deleteNode, waitFor, waitForPodRunning } from "./cluster/helpers.ts";

describe("scheduling hugepage pods", () => {
  const c = clients();
  let namespace = "";
  let roomy: V1Node | undefined;
  let full: V1Node | undefined;

  beforeAll(async () => {
    namespace = await createNamespace(c, "sched");
    roomy = await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "64Mi", "hugepages-1Gi": "2Gi" } });
    full = await createHugepageNode(c, { hugepages: { "hugepages-2Mi": "16Mi", "hugepages-1Gi": "0" } });
  });

  afterAll(async () => {
    if (namespace !== "") await deleteNamespace(c, namespace);
    for (const node of [roomy, full]) if (node?.metadata?.name) await deleteNode(c, node.metadata.name);
  });

  it("places a pod requesting hugepages-2Mi on the node with room, where it becomes Running", async () => {
    const pod = await createHugepagePod(c, { namespace, hugepages: { "hugepages-2Mi": "32Mi" } });
    const running = await waitForPodRunning(c, namespace, pod.metadata?.name ?? "");

    expect(running.spec?.nodeName).toBe(roomy?.metadata?.name);
    const scheduled = running.status?.conditions?.find((cond) => cond.type === "PodScheduled");
    expect(scheduled?.status).toBe("True");
  });

  it("leaves a pod asking for more hugepages-2Mi than any node has Pending, with the scheduler's reason", async () => {
    const pod = await createHugepagePod(c, { namespace, hugepages: { "hugepages-2Mi": "64Gi" } });
    const name = pod.metadata?.name ?? "";

    const condition = await waitFor(`PodScheduled=False on ${namespace}/${name}`, async () => {
      const current = await c.core.readNamespacedPod({ namespace, name });
      return current.status?.conditions?.find((cond) => cond.type === "PodScheduled" && cond.status === "False");
    });
    expect(condition.reason).toBe("Unschedulable");
    expect(condition.message).toContain("Insufficient hugepages-2Mi");

    const event = await waitFor<CoreV1Event>(`FailedScheduling event for ${namespace}/${name}`, async () => {
      const events = await c.core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${name}` });
      return events.items.find((e) => e.reason === "FailedScheduling");
    });
    expect(event.message).toContain("Insufficient hugepages-2Mi");

    const current = await c.core.readNamespacedPod({ namespace, name });
    expect(current.status?.phase).toBe("Pending");
    expect(current.spec?.nodeName).toBeUndefined();
  });
});
