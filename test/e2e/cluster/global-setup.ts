// Vitest global setup for the e2e project: starts a fresh control plane for
// the run, or, with E2E_EXISTING_CLUSTER=1, uses the cluster in KUBECONFIG and
// starts nothing. Tests get the kubeconfig and kubectl through inject().
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { constants, tmpdir } from "node:os";
import { join } from "node:path";
import type { TestProject } from "vitest/node";
import { readState, startControlPlane, stopControlPlane, type ControlPlaneOptions } from "./control-plane.ts";
import { toolPath } from "./tools.ts";

declare module "vitest" {
  export interface ProvidedContext {
    kubeconfig: string;
    kubectl: string;
    /** The started control plane's directory (its PKI is under pki/); empty for an existing cluster. */
    clusterDir: string;
  }
}

/** The pinned kubectl when built, else the one on PATH (e.g. next to kind). */
function kubectlBinary(): string {
  try {
    return toolPath("kubectl");
  } catch {
    return "kubectl";
  }
}

export default function setup(project: TestProject): Promise<() => void> {
  return startCluster(project, {});
}

export async function startCluster(project: TestProject, options: ControlPlaneOptions): Promise<() => void> {
  if (process.env.E2E_EXISTING_CLUSTER === "1") {
    const kubeconfig = process.env.KUBECONFIG;
    if (kubeconfig === undefined || !existsSync(kubeconfig)) {
      throw new Error("E2E_EXISTING_CLUSTER=1 needs KUBECONFIG set to an existing kubeconfig file");
    }
    project.provide("kubeconfig", kubeconfig);
    project.provide("kubectl", kubectlBinary());
    project.provide("clusterDir", "");
    return () => undefined;
  }

  const dir = mkdtempSync(join(tmpdir(), "mce-e2e-"));
  // The state file, written as each component starts, says what to stop, so an
  // interrupted start-up is cleaned up too.
  const teardown = (): void => {
    const state = readState(dir);
    if (state) stopControlPlane(state);
    else rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    teardown();
    process.exit(128 + constants.signals[signal]);
  };
  const detach = (): void => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    process.off("exit", teardown);
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  process.once("exit", teardown);

  try {
    const state = await startControlPlane(dir, options);
    console.log(`e2e control plane ${state.kubernetesVersion} ready in ${(state.readyMs / 1000).toFixed(1)}s (${dir})`);
    project.provide("kubeconfig", state.kubeconfig);
    project.provide("kubectl", toolPath("kubectl"));
    project.provide("clusterDir", dir);
  } catch (error) {
    detach();
    teardown();
    throw error;
  }
  return () => {
    detach();
    teardown();
  };
}
