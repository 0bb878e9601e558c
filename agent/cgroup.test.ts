import { describe, expect, it } from "vitest";
import { containerIDOfStatus, podOfCgroupPath, podOfProcCgroup } from "./cgroup.ts";

const uid = "3f1c9a2e-8b7d-4c6e-9f0a-1b2c3d4e5f60";
const underscored = uid.replaceAll("-", "_");
const id = "a".repeat(60) + "b12c";

describe("podOfCgroupPath", () => {
  it.each([
    [
      "systemd, containerd, burstable",
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${underscored}.slice/cri-containerd-${id}.scope`,
      "Burstable",
      "containerd",
    ],
    [
      "systemd, CRI-O, besteffort",
      `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${underscored}.slice/crio-${id}.scope`,
      "BestEffort",
      "cri-o",
    ],
    ["systemd, Docker, guaranteed", `/kubepods.slice/kubepods-pod${underscored}.slice/docker-${id}.scope`, "Guaranteed", "docker"],
    ["cgroupfs, burstable", `/kubepods/burstable/pod${uid}/${id}`, "Burstable", "unknown"],
    ["cgroupfs, besteffort", `/kubepods/besteffort/pod${uid}/${id}`, "BestEffort", "unknown"],
    ["cgroupfs, guaranteed", `/kubepods/pod${uid}/${id}`, "Guaranteed", "unknown"],
    ["cgroupfs, CRI-O", `/kubepods/burstable/pod${uid}/crio-${id}`, "Burstable", "cri-o"],
    [
      "kind (kubelet in a nested slice)",
      `/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod${underscored}.slice/cri-containerd-${id}.scope`,
      "Burstable",
      "containerd",
    ],
  ])("%s", (_name, path, qos, runtime) => {
    expect(podOfCgroupPath(path)).toEqual({ podUID: uid, qos, containerID: id, runtime });
  });

  it.each([
    // The agent's container has its own cgroup namespace: another pod's path is relative to the agent's own
    // container cgroup (/kubepods/burstable/pod<agent>/<agent container> here), so kubepods is not in it.
    ["a guaranteed pod", `/../../../pod${uid}/${id}`],
    ["a burstable pod", `/../../pod${uid}/${id}`],
  ])("cgroupfs, read from inside a container's cgroup namespace: %s", (_name, path) => {
    expect(podOfCgroupPath(path)).toEqual({ podUID: uid, containerID: id, runtime: "unknown" });
  });

  it("gives the pod without a container for the pod's own cgroup and conmon", () => {
    expect(podOfCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${underscored}.slice`)).toEqual({ podUID: uid, qos: "Burstable" });
    expect(podOfCgroupPath(`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${underscored}.slice/crio-conmon-${id}.scope`)).toEqual({
      podUID: uid,
      qos: "Burstable",
    });
  });

  it.each([
    "/",
    "/system.slice/containerd.service",
    "/user.slice/user-1000.slice/session-3.scope",
    "/init.scope",
    `/podman/pod${uid}`,
    "/../..",
    `/../../system.slice/pod${uid}.scope`,
  ])("host process %s", (path) => {
    expect(podOfCgroupPath(path)).toBeUndefined();
  });
});

describe("podOfProcCgroup", () => {
  it("reads the cgroup v2 line", () => {
    expect(podOfProcCgroup(`0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${underscored}.slice/cri-containerd-${id}.scope\n`)?.podUID).toBe(
      uid,
    );
  });

  it("reads cgroup v1 hierarchies, skipping ones without the pod", () => {
    const text = [
      `12:pids:/kubepods/burstable/pod${uid}/${id}`,
      "11:rdma:/",
      `10:cpu,cpuacct:/kubepods/burstable/pod${uid}/${id}`,
      `1:name=systemd:/kubepods/burstable/pod${uid}/${id}`,
    ].join("\n");
    expect(podOfProcCgroup(`11:rdma:/\n${text}`)).toEqual({ podUID: uid, qos: "Burstable", containerID: id, runtime: "unknown" });
  });

  it("gives nothing for a host process", () => {
    expect(podOfProcCgroup("0::/system.slice/sshd.service\n")).toBeUndefined();
  });
});

describe("containerIDOfStatus", () => {
  it.each([`containerd://${id}`, `cri-o://${id}`, `docker://${id}`, id])("%s", (status) => {
    expect(containerIDOfStatus(status)).toBe(id);
  });
});
