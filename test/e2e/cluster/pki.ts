// A throwaway PKI for one cluster, made with the openssl CLI (node:crypto
// cannot issue X.509 certificates): a CA, one serving certificate for every
// component on loopback, a client certificate per identity, and the
// service-account signing key pair.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export interface KeyPair {
  cert: string;
  key: string;
}

export interface Pki {
  dir: string;
  ca: KeyPair;
  /** Serves kube-apiserver, kube-controller-manager and kube-scheduler. */
  serving: KeyPair;
  admin: KeyPair;
  controllerManager: KeyPair;
  scheduler: KeyPair;
  serviceAccount: { publicKey: string; privateKey: string };
}

/** Names the apiserver answers to: loopback, and the in-cluster service names. */
export const servingNames = {
  dns: ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"],
  ips: ["127.0.0.1", "10.0.0.1", "10.0.2.100"],
};

const days = "30";
const ecKey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];

function openssl(args: string[]): void {
  execFileSync("openssl", args, { stdio: ["ignore", "ignore", "pipe"] });
}

// The system openssl.cnf would add CA:TRUE to every certificate `req -x509`
// makes; an empty config leaves exactly the extensions asked for.
function writeConfig(dir: string): string {
  const path = join(dir, "openssl.cnf");
  writeFileSync(path, "[req]\ndistinguished_name = dn\n[dn]\n");
  return path;
}

function issue(dir: string, ca: KeyPair, name: string, subject: string, extensions: string[]): KeyPair {
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  openssl([
    "req",
    "-config",
    join(dir, "openssl.cnf"),
    "-x509",
    ...ecKey,
    "-days",
    days,
    "-subj",
    subject,
    "-CA",
    ca.cert,
    "-CAkey",
    ca.key,
    "-keyout",
    pair.key,
    "-out",
    pair.cert,
    ...["basicConstraints=critical,CA:FALSE", ...extensions].flatMap((ext) => ["-addext", ext]),
  ]);
  return pair;
}

/** A client certificate signed by the cluster's CA (e.g. a kubelet's: `/O=system:nodes/CN=system:node:NAME`). */
export function client(dir: string, ca: KeyPair, name: string, subject: string): KeyPair {
  return issue(dir, ca, name, subject, ["keyUsage=critical,digitalSignature", "extendedKeyUsage=clientAuth"]);
}

export function createPki(dir: string): Pki {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const ca = { cert: join(dir, "ca.crt"), key: join(dir, "ca.key") };
  openssl([
    "req",
    "-config",
    writeConfig(dir),
    "-x509",
    ...ecKey,
    "-days",
    days,
    "-subj",
    "/CN=mce-e2e-ca",
    "-keyout",
    ca.key,
    "-out",
    ca.cert,
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
  ]);
  const san = [...servingNames.dns.map((n) => `DNS:${n}`), ...servingNames.ips.map((ip) => `IP:${ip}`)];
  const serving = issue(dir, ca, "serving", "/CN=kube-apiserver", [
    `subjectAltName=${san.join(",")}`,
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth",
  ]);
  const serviceAccount = { privateKey: join(dir, "sa.key"), publicKey: join(dir, "sa.pub") };
  openssl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", serviceAccount.privateKey]);
  openssl(["pkey", "-in", serviceAccount.privateKey, "-pubout", "-out", serviceAccount.publicKey]);
  return {
    dir,
    ca,
    serving,
    // The identities RBAC's bootstrap policy already grants the right roles to.
    admin: client(dir, ca, "admin", "/O=system:masters/CN=mce-e2e-admin"),
    controllerManager: client(dir, ca, "controller-manager", "/CN=system:kube-controller-manager"),
    scheduler: client(dir, ca, "scheduler", "/CN=system:kube-scheduler"),
    serviceAccount,
  };
}
