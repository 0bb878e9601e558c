// Where build-tools.sh put the pinned binaries: one cache directory per
// component and version, so several checkouts and versions can share it.
import { existsSync, readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

export interface Versions {
  kubernetes: string;
  etcd: string;
  kwok: string;
  helm: string;
  /** Not a cluster tool: bench/peer.ts's peer, built only by `build-tools.sh node-problem-detector`. */
  nodeProblemDetector: string;
}

export type Tool = "etcd" | "kube-apiserver" | "kube-controller-manager" | "kube-scheduler" | "kubectl" | "kwok" | "helm" | "node-problem-detector";

const versionsFile = new URL("versions", import.meta.url);

export function readVersions(): Versions {
  const pins = new Map<string, string>();
  for (const line of readFileSync(versionsFile, "utf8").split("\n")) {
    const match = /^([A-Z_]+)=(\S+)$/.exec(line.trim());
    if (match?.[1] !== undefined && match[2] !== undefined) pins.set(match[1], match[2]);
  }
  const pin = (key: string): string => {
    const value = pins.get(key);
    if (value === undefined) throw new Error(`${key} is missing from ${versionsFile.pathname}`);
    return value;
  };
  return {
    kubernetes: pin("KUBERNETES_VERSION"),
    etcd: pin("ETCD_VERSION"),
    kwok: pin("KWOK_VERSION"),
    helm: pin("HELM_VERSION"),
    nodeProblemDetector: pin("NODE_PROBLEM_DETECTOR_VERSION"),
  };
}

export function toolsDir(): string {
  return join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mce-operator", "tools");
}

const component: Record<Tool, keyof Versions> = {
  etcd: "etcd",
  "kube-apiserver": "kubernetes",
  "kube-controller-manager": "kubernetes",
  "kube-scheduler": "kubernetes",
  kubectl: "kubernetes",
  kwok: "kwok",
  helm: "helm",
  "node-problem-detector": "nodeProblemDetector",
};

/** The cache directory's name of each component, before `-<version>`: as build-tools.sh names it. */
const directory: Record<keyof Versions, string> = {
  kubernetes: "kubernetes",
  etcd: "etcd",
  kwok: "kwok",
  helm: "helm",
  nodeProblemDetector: "node-problem-detector",
};

/** The command that builds a component's tools. */
const buildCommand = (name: keyof Versions): string =>
  name === "nodeProblemDetector" ? "bash test/e2e/cluster/build-tools.sh node-problem-detector" : "npm run build:k8s";

/** Absolute path of a built tool; throws with the command that builds it. */
export function toolPath(tool: Tool, versions: Versions = readVersions()): string {
  const name = component[tool];
  const path = join(toolsDir(), `${directory[name]}-${versions[name]}`, "bin", tool);
  if (!existsSync(path)) throw new Error(`${tool} is not built (${path}): run \`${buildCommand(name)}\``);
  return path;
}

/** The default kwok stages build-tools.sh keeps next to the kwok binary. */
export function kwokStagesPath(versions: Versions = readVersions()): string {
  const path = join(toolsDir(), `kwok-${versions.kwok}`, "stages.yaml");
  if (!existsSync(path)) throw new Error(`kwok stages are missing (${path}): run \`npm run build:k8s\``);
  return path;
}

/** NPD's stock kernel monitor for its filelog plugin, which build-tools.sh keeps next to its binary. */
export function nodeProblemDetectorConfigPath(versions: Versions = readVersions()): string {
  const path = join(toolsDir(), `${directory.nodeProblemDetector}-${versions.nodeProblemDetector}`, "kernel-monitor-filelog.json");
  if (!existsSync(path)) throw new Error(`NPD's kernel monitor config is missing (${path}): run \`${buildCommand("nodeProblemDetector")}\``);
  return path;
}
