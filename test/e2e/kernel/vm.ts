// One QEMU guest of the kernel tier: the prepared Debian kernel and initramfs under TCG, a shell in the
// guest reached over virtio-serial, the HMP monitor for machine checks, the host's root read-only and
// a writable scratch directory over 9p, and one network path: guest 10.0.2.100:PORT → 127.0.0.1:PORT.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";

export interface Prepared {
  package: string;
  version: string;
  release: string;
  kernel: string;
  initramfs: string;
  busybox: string;
}

/** What prepare.sh left for the tests. */
export function readPrepared(): Prepared {
  const cache = process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache");
  const file = join(cache, "mce-operator", "kernel", "prepared.json");
  try {
    return JSON.parse(readFileSync(file, "utf8")) as Prepared;
  } catch (error) {
    throw new Error(`${file}: ${error instanceof Error ? error.message : String(error)}; run bash test/e2e/kernel/prepare.sh first`, { cause: error });
  }
}

export interface VmOptions {
  /** The kernel, the initramfs, and the busybox QEMU runs for the guest's one network path. */
  prepared: Pick<Prepared, "kernel" | "initramfs" | "busybox">;
  /** A root disk (the real-node tier), booted with snapshot=on so the cached image is never written;
   * without one the guest runs from its initramfs and the host's root, read-only, over 9p. */
  disk?: string;
  cpus?: number;
  /** Reserve one 1 GiB hugepage too (needs 4 GiB of guest memory, as the others get). */
  gigantic: boolean;
  /** The apiserver's port on 127.0.0.1, reached from the guest at 10.0.2.100 on the same port. */
  apiserverPort: number;
  /** A reset boots the guest again (a warm reset keeps the machine-check banks), instead of ending QEMU. */
  reboot?: boolean;
  /** More kernel command-line arguments (mce=no_cmci, for corrected errors found by polling). */
  kernelArgs?: string[];
}

export interface ShellResult {
  code: number;
  output: string;
}

/** The guest address the apiserver answers at; it exists only inside QEMU. */
export const GUEST_APISERVER_IP = "10.0.2.100";

export class Vm {
  /** Host directory the guest sees at /shared (and the agent at /mnt). */
  readonly shared: string;
  readonly cpus: number;
  readonly #dir: string;
  readonly #qemu: ChildProcess;
  readonly #exited: Promise<number | null>;
  #control: Socket | undefined;
  #buffer = "";
  #nextID = 1;
  readonly #waiting = new Map<number, (result: ShellResult) => void>();
  #stderr = "";

  private constructor(dir: string, qemu: ChildProcess, cpus: number) {
    this.cpus = cpus;
    this.#dir = dir;
    this.shared = join(dir, "shared");
    this.#qemu = qemu;
    qemu.stderr?.setEncoding("utf8").on("data", (chunk: string) => (this.#stderr += chunk));
    this.#exited = new Promise((resolve) => qemu.once("exit", resolve));
  }

  static async boot(options: VmOptions): Promise<Vm> {
    const dir = mkdtempSync(join(tmpdir(), "mce-kernel-vm-"));
    const shared = join(dir, "shared");
    mkdirSync(shared);
    const pages = ["hugepagesz=2M", "hugepages=32", ...(options.gigantic ? ["hugepagesz=1G", "hugepages=1"] : []), "default_hugepagesz=2M"];
    const port = options.apiserverPort;
    const args = [
      ...["-machine", "q35,accel=tcg", "-cpu", "qemu64,vendor=GenuineIntel,+pdpe1gb", "-m", "4096", "-smp", String(options.cpus ?? 1)],
      ...["-nodefaults", "-no-user-config", "-display", "none", ...(options.reboot === true ? [] : ["-no-reboot"])],
      ...["-serial", `file:${join(dir, "console.log")}`],
      ...["-kernel", options.prepared.kernel, "-initrd", options.prepared.initramfs],
      // mce=print_all: the kernel prints the detail of an SRAO machine check too, not just "events logged".
      ...["-append", ["console=ttyS0", "quiet", "panic=-1", "mce=print_all", ...pages, ...(options.kernelArgs ?? [])].join(" ")],
      ...["-monitor", `unix:${join(dir, "monitor.sock")},server=on,wait=off`],
      ...(options.disk === undefined
        ? ["-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"]
        : ["-drive", `file=${options.disk},if=virtio,format=raw,snapshot=on,cache=unsafe`]),
      ...["-virtfs", `local,path=${shared},mount_tag=shared,security_model=none,multidevs=remap`],
      // restrict=on: the guest reaches nothing but the guestfwd, which QEMU runs per connection.
      ...[
        "-netdev",
        `user,id=n0,restrict=on,guestfwd=tcp:${GUEST_APISERVER_IP}:${port}-cmd:${options.prepared.busybox} nc 127.0.0.1 ${port}`,
        "-device",
        "virtio-net-pci,netdev=n0",
      ],
      ...[
        "-device",
        "virtio-serial-pci",
        "-chardev",
        `socket,id=ctl,path=${join(dir, "control.sock")},server=on,wait=off`,
        "-device",
        "virtserialport,chardev=ctl,name=ctl",
      ],
    ];
    const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "ignore", "pipe"] });
    const vm = new Vm(dir, qemu, options.cpus ?? 1);
    await vm.#connect();
    // The first answer comes once init serves the port.
    await vm.sh("true", 120_000);
    return vm;
  }

  get console(): string {
    try {
      return readFileSync(join(this.#dir, "console.log"), "utf8");
    } catch {
      return "";
    }
  }

  async #connect(): Promise<void> {
    const path = join(this.#dir, "control.sock");
    for (let attempt = 0; ; attempt++) {
      try {
        this.#control = await new Promise<Socket>((resolve, reject) => {
          const socket = connect(path, () => {
            resolve(socket);
          });
          socket.once("error", reject);
        });
        break;
      } catch (error) {
        if (attempt > 100 || this.#qemu.exitCode !== null)
          throw new Error(`QEMU control socket: ${String(error)}; QEMU said: ${this.#stderr}`, { cause: error });
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    this.#control.setEncoding("utf8").on("data", (chunk: string) => {
      this.#buffer += chunk;
      const lines = this.#buffer.split("\n");
      this.#buffer = lines.pop() ?? "";
      for (const line of lines) {
        const [id, code, output] = line.split(" ");
        const done = this.#waiting.get(Number(id));
        this.#waiting.delete(Number(id));
        done?.({ code: Number(code), output: Buffer.from(output ?? "", "base64").toString("utf8") });
      }
    });
  }

  /** Runs a shell script in the guest; resolves with its exit code and output. */
  async sh(script: string, timeoutMs = 30_000): Promise<ShellResult> {
    const id = this.#nextID++;
    const control = this.#control;
    if (control === undefined) throw new Error("guest control channel not connected");
    const answered = new Promise<ShellResult>((resolve) => this.#waiting.set(id, resolve));
    // QEMU holds what is written until init opens the port.
    control.write(`${id} ${Buffer.from(script).toString("base64")}\n`);
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(new Error(`guest did not answer within ${timeoutMs / 1000}s: ${script}\nconsole:\n${this.console.slice(-3000)}\nQEMU:\n${this.#stderr}`));
      }, timeoutMs);
    });
    const died = this.#exited.then((code) => {
      throw new Error(`QEMU exited (${String(code)}) during: ${script}\nconsole:\n${this.console.slice(-3000)}\nQEMU:\n${this.#stderr}`);
    });
    try {
      return await Promise.race([answered, timeout, died]);
    } finally {
      clearTimeout(timer);
      this.#waiting.delete(id);
    }
  }

  /** Runs a script that must succeed; returns its output. */
  async run(script: string, timeoutMs?: number): Promise<string> {
    const result = await this.sh(script, timeoutMs);
    if (result.code !== 0) throw new Error(`guest: '${script}' exited ${result.code}: ${result.output}`);
    return result.output;
  }

  /** An HMP command on the QEMU monitor; resolves with what the monitor printed. */
  async monitor(command: string): Promise<string> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(join(this.#dir, "monitor.sock"), () => {
        resolve(s);
      });
      s.once("error", reject);
    });
    let text = "";
    socket.setEncoding("utf8");
    const prompt = async (): Promise<void> => {
      const start = text.length;
      await new Promise<void>((resolve) => {
        const check = (): void => {
          if (text.slice(start).includes("(qemu)")) {
            socket.off("data", onData);
            resolve();
          }
        };
        const onData = (chunk: string): void => {
          text += chunk;
          check();
        };
        socket.on("data", onData);
        check();
      });
    };
    await prompt();
    const before = text.length;
    socket.write(`${command}\n`);
    await prompt();
    socket.end();
    return text.slice(before).replace("(qemu)", "").replace(command, "").trim();
  }

  /** Powers the guest off (SIGKILL after 10 s) and removes its directory. */
  async stop(): Promise<void> {
    if (this.#qemu.exitCode === null) {
      this.#control?.write(`0 ${Buffer.from("poweroff -f").toString("base64")}\n`);
      const timer = setTimeout(() => this.#qemu.kill("SIGKILL"), 10_000);
      await this.#exited;
      clearTimeout(timer);
    }
    this.#control?.destroy();
    rmSync(this.#dir, { recursive: true, force: true });
  }
}
