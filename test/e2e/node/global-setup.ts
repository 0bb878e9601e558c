// Vitest global setup for the real-node tier: a fresh control plane whose `kubernetes` Service points
// at 10.0.2.100, the address at which the guest reaches the host's apiserver, so pods on the real node
// use in-cluster configuration as on any cluster.
import type { TestProject } from "vitest/node";
import { startCluster } from "../cluster/global-setup.ts";
import { GUEST_APISERVER_IP } from "../kernel/vm.ts";

export default function setup(project: TestProject): Promise<() => void> {
  return startCluster(project, { advertiseAddress: GUEST_APISERVER_IP });
}
