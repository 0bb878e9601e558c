// The real node of the real-node tier: the Debian disk rootfs.sh made (containerd, runc, CNI plugins,
// the kubelet and kube-proxy, the tier's images already in containerd) booted in a QEMU guest, joined
// to the tier's control plane as a Node through the guest's only way out (10.0.2.100 → the host's
// loopback). Its kubelet and kube-proxy authenticate with client certificates of the cluster's CA, as
// kubeadm's would after TLS bootstrap.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { stringify } from "yaml";
import { client as clientCertificate, type KeyPair } from "../cluster/pki.ts";
import { clients, waitFor } from "../cluster/helpers.ts";
import { GUEST_APISERVER_IP, Vm } from "../kernel/vm.ts";

export interface BuiltImage {
  ref: string;
  id: string;
  tar: string;
  bytes: number;
}

export interface NodePrepared {
  kernel: string;
  release: string;
  initramfs: string;
  disk: string;
  images: Record<"operator" | "agent" | "pause" | "workload", BuiltImage>;
}

const cacheDir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "mce-operator");

/** What rootfs.sh left for the tests. */
export function readNodePrepared(): NodePrepared {
  const file = join(cacheDir, "node", "prepared.json");
  try {
    return JSON.parse(readFileSync(file, "utf8")) as NodePrepared;
  } catch (error) {
    throw new Error(`${file}: ${error instanceof Error ? error.message : String(error)}; run bash test/e2e/node/prepare.sh first`, { cause: error });
  }
}

/** The pod network of the node's bridge CNI (guest/10-pods.conflist). */
export const podCIDR = "10.88.0.0/24";
/** The node's address on QEMU's user network; nothing outside the guest ever dials it. */
export const nodeIP = "10.0.2.15";

/** A kubeconfig with everything inline, for a component in the guest. */
function guestKubeconfig(server: string, caCert: string, pair: KeyPair): string {
  const b64 = (path: string): string => readFileSync(path).toString("base64");
  return stringify({
    apiVersion: "v1",
    kind: "Config",
    clusters: [{ name: "mce-e2e", cluster: { server, "certificate-authority-data": b64(caCert) } }],
    users: [{ name: "node", user: { "client-certificate-data": b64(pair.cert), "client-key-data": b64(pair.key) } }],
    contexts: [{ name: "mce-e2e", context: { cluster: "mce-e2e", user: "node" } }],
    "current-context": "mce-e2e",
  });
}

export interface RealNodeOptions {
  name: string;
  /** The tier's control plane directory (its PKI signs the node's certificates). */
  clusterDir: string;
  /** The apiserver's port on 127.0.0.1, which the guest reaches at 10.0.2.100. */
  apiserverPort: number;
}

export class RealNode {
  readonly name: string;
  readonly vm: Vm;
  /** The guest's directory for the node's configuration and logs, as the host sees it. */
  readonly dir: string;

  private constructor(name: string, vm: Vm) {
    this.name = name;
    this.vm = vm;
    this.dir = join(vm.shared, "node");
  }

  static async boot(prepared: NodePrepared, options: RealNodeOptions): Promise<RealNode> {
    const vm = await Vm.boot({
      prepared: { kernel: prepared.kernel, initramfs: prepared.initramfs, busybox: "/bin/busybox" },
      disk: prepared.disk,
      cpus: 2,
      gigantic: false,
      apiserverPort: options.apiserverPort,
    });
    const node = new RealNode(options.name, vm);
    try {
      node.#writeConfiguration(options);
      await node.#start();
    } catch (error) {
      throw new Error(`${options.name}: ${error instanceof Error ? error.message : String(error)}\n${node.diagnostics()}`, { cause: error });
    }
    return node;
  }

  #writeConfiguration(options: RealNodeOptions): void {
    mkdirSync(this.dir, { recursive: true });
    const pki = join(options.clusterDir, "pki");
    const ca: KeyPair = { cert: join(pki, "ca.crt"), key: join(pki, "ca.key") };
    const server = `https://${GUEST_APISERVER_IP}:${options.apiserverPort}`;
    const kubelet = clientCertificate(pki, ca, `kubelet-${this.name}`, `/O=system:nodes/CN=system:node:${this.name}`);
    const proxy = clientCertificate(pki, ca, "kube-proxy", "/CN=system:kube-proxy");
    const write = (name: string, text: string): void => {
      writeFileSync(join(this.dir, name), text, { mode: 0o600 });
    };
    write("ca.crt", readFileSync(ca.cert, "utf8"));
    write("kubelet.kubeconfig", guestKubeconfig(server, ca.cert, kubelet));
    write("kube-proxy.kubeconfig", guestKubeconfig(server, ca.cert, proxy));
    write(
      "kubelet.yaml",
      stringify({
        apiVersion: "kubelet.config.k8s.io/v1beta1",
        kind: "KubeletConfiguration",
        authentication: { anonymous: { enabled: false }, webhook: { enabled: false }, x509: { clientCAFile: "/shared/node/ca.crt" } },
        authorization: { mode: "AlwaysAllow" },
        // No systemd in the guest: cgroupfs, as containerd's runc is told (guest/containerd.toml).
        cgroupDriver: "cgroupfs",
        containerRuntimeEndpoint: "unix:///run/containerd/containerd.sock",
        failSwapOn: false,
        resolvConf: "/etc/resolv.conf",
        clusterDomain: "cluster.local",
        // The disk is small and holds the images already: never collect them, evict only when it is full.
        imageGCHighThresholdPercent: 100,
        imageGCLowThresholdPercent: 99,
        evictionHard: { "memory.available": "100Mi", "nodefs.available": "2%", "imagefs.available": "2%" },
        serializeImagePulls: false,
      }),
    );
    write(
      "kube-proxy.yaml",
      stringify({
        apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
        kind: "KubeProxyConfiguration",
        clientConnection: { kubeconfig: "/shared/node/kube-proxy.kubeconfig" },
        mode: "iptables",
        clusterCIDR: podCIDR,
        hostnameOverride: this.name,
        // Leave the guest kernel's conntrack table as it is.
        conntrack: { maxPerCore: 0 },
        metricsBindAddress: "127.0.0.1:10249",
        healthzBindAddress: "127.0.0.1:10256",
      }),
    );
  }

  async #start(): Promise<void> {
    const log = (name: string): string => `/shared/node/${name}.log`;
    await this.vm.run(
      [
        `(containerd >${log("containerd")} 2>&1 &)`,
        "i=0; until ctr version >/dev/null 2>&1; do i=$((i+1)); [ $i -gt 120 ] && { echo containerd did not answer in 60s; exit 1; }; sleep 0.5; done",
        `(kube-proxy --config=/shared/node/kube-proxy.yaml >${log("kube-proxy")} 2>&1 &)`,
        `(kubelet --config=/shared/node/kubelet.yaml --kubeconfig=/shared/node/kubelet.kubeconfig --hostname-override=${this.name} --node-ip=${nodeIP} >${log("kubelet")} 2>&1 &)`,
      ].join("\n"),
      90_000,
    );
    const { core } = clients();
    await waitFor(
      `node ${this.name} Ready`,
      async () => {
        try {
          const node = await core.readNode({ name: this.name });
          return node.status?.conditions?.find((c) => c.type === "Ready" && c.status === "True") !== undefined ? node : undefined;
        } catch {
          return undefined;
        }
      },
      { timeoutMs: 240_000, intervalMs: 1000 },
      () => this.#tail("kubelet", 20),
    );
  }

  #tail(component: string, lines: number): string {
    try {
      return readFileSync(join(this.dir, `${component}.log`), "utf8")
        .trimEnd()
        .split("\n")
        .slice(-lines)
        .join("\n");
    } catch {
      return `(no ${component}.log)`;
    }
  }

  /** The last lines of every component's log and of the console, for a failure's message. */
  diagnostics(): string {
    const parts = ["containerd", "kube-proxy", "kubelet"].map((c) => `--- ${c}:\n${this.#tail(c, 15)}`);
    return [...parts, `--- console:\n${this.vm.console.slice(-1500)}`].join("\n");
  }

  /** A container's log as the kubelet keeps it (/var/log/pods), read in the guest. */
  async containerLog(namespace: string, pod: string, container: string): Promise<string> {
    return this.vm.run(`cat /var/log/pods/${namespace}_${pod}_*/${container}/*.log 2>/dev/null || true`);
  }

  async stop(): Promise<void> {
    await this.vm.stop();
  }
}
