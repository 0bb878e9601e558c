// Which pod and container a process belongs to, from its /proc/PID/cgroup path as the kubelet names
// cgroups: systemd driver `kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid with _>.slice/
// cri-containerd-<id>.scope` (crio-, docker- for the other runtimes), cgroupfs driver
// `/kubepods/burstable/pod<uid>/<id>`; guaranteed pods sit directly under kubepods. Read from inside a
// container (the agent's pod has its own cgroup namespace), the path is relative to the reader's own
// cgroup: `/../../pod<uid>/<id>`, with no kubepods in it (seen on containerd 1.6 and the kubelet's cgroupfs
// driver in the real-node tier).

export type QosClass = "Guaranteed" | "Burstable" | "BestEffort";
export type Runtime = "containerd" | "cri-o" | "docker" | "unknown";

export interface PodCgroup {
  podUID: string;
  /** Absent when the path does not say (one relative to the reader's cgroup namespace). */
  qos?: QosClass | undefined;
  /** Absent for the pod's own cgroup (pause, conmon) rather than a container's. */
  containerID?: string | undefined;
  runtime?: Runtime | undefined;
}

const SYSTEMD_POD = /^(?:[a-z]+-)?kubepods(?:-(burstable|besteffort))?-pod([0-9a-f_]{32,36})\.slice$/;
const CGROUPFS_POD = /^pod([0-9a-f-]{32,36})$/;
const SCOPE = /^(cri-containerd|crio|docker)-([0-9a-f]{12,64})\.scope$/;
const BARE_ID = /^([0-9a-f]{64})$/;
// cgroupfs with CRI-O names the container `crio-<id>`.
const CGROUPFS_CRIO = /^crio-([0-9a-f]{64})$/;

const RUNTIME: Record<string, Runtime> = { "cri-containerd": "containerd", crio: "cri-o", docker: "docker" };

function qosOf(level: string | undefined): QosClass {
  return level === "burstable" ? "Burstable" : level === "besteffort" ? "BestEffort" : "Guaranteed";
}

/** The pod of one cgroup path; undefined for host processes. */
export function podOfCgroupPath(path: string): PodCgroup | undefined {
  const parts = path.split("/").filter((part) => part !== "");
  for (const [i, part] of parts.entries()) {
    const systemd = SYSTEMD_POD.exec(part);
    if (systemd !== null) return withContainer({ podUID: (systemd[2] ?? "").replaceAll("_", "-"), qos: qosOf(systemd[1]) }, parts[i + 1]);
    const cgroupfs = CGROUPFS_POD.exec(part);
    if (cgroupfs !== null && (parts.slice(0, i).includes("kubepods") || parts[0] === "..")) {
      const level = parts[i - 1];
      const qos = level === ".." ? undefined : qosOf(level === "kubepods" ? undefined : level);
      return withContainer({ podUID: cgroupfs[1] ?? "", ...(qos !== undefined && { qos }) }, parts[i + 1]);
    }
  }
  return undefined;
}

function withContainer(pod: PodCgroup, child: string | undefined): PodCgroup {
  if (child === undefined) return pod;
  const scope = SCOPE.exec(child);
  if (scope !== null) return { ...pod, containerID: scope[2], runtime: RUNTIME[scope[1] ?? ""] ?? "unknown" };
  const crio = CGROUPFS_CRIO.exec(child);
  if (crio !== null) return { ...pod, containerID: crio[1], runtime: "cri-o" };
  const bare = BARE_ID.exec(child);
  // containerd and Docker both name it by the bare id under cgroupfs.
  if (bare !== null) return { ...pod, containerID: bare[1], runtime: "unknown" };
  return pod;
}

/**
 * The pod of a /proc/PID/cgroup file: the cgroup v2 line (`0::/...`) or, on v1, the first
 * hierarchy whose path names a pod (all v1 controllers carry the same kubelet path).
 */
export function podOfProcCgroup(text: string): PodCgroup | undefined {
  const paths = text
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1));
  for (const path of paths) {
    const pod = podOfCgroupPath(path);
    if (pod !== undefined) return pod;
  }
  return undefined;
}

/** The id in a pod status containerID (`containerd://<id>`, `cri-o://<id>`, `docker://<id>`). */
export function containerIDOfStatus(containerID: string): string {
  const at = containerID.indexOf("://");
  return at < 0 ? containerID : containerID.slice(at + 3);
}
