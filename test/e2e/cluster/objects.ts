// Installs the project's CRDs through the REST client and waits until the API server serves them.
import { readFileSync, readdirSync } from "node:fs";
import { parse } from "yaml";
import { ApiError } from "../../../runtime/api.ts";
import type { KubeRest } from "../../../operator/kube/rest.ts";

interface Crd {
  metadata: { name: string };
  spec: { group: string; names: { plural: string }; versions: { name: string }[] };
  status?: { conditions?: { type: string; status: string }[] };
}

export async function applyCrdFiles(rest: KubeRest, dir = "crds"): Promise<void> {
  const files = readdirSync(dir).filter((f) => f.endsWith(".yaml"));
  for (const f of files) {
    const crd = parse(readFileSync(`${dir}/${f}`, "utf8")) as Crd;
    await rest
      .request("PATCH", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`, {
        query: { fieldManager: "mce-e2e", force: true },
        patch: "apply",
        body: crd,
      })
      .catch((e: unknown) => {
        throw e instanceof ApiError ? new Error(`${dir}/${f}: ${e.message}`) : e;
      });
    for (let i = 0; ; i++) {
      const got = await rest.request<Crd>("GET", `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${crd.metadata.name}`);
      const established = got.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
      // Established comes before the storage serves lists (429 "storage is (re)initializing").
      if (
        established &&
        (await rest.request("GET", `/apis/${crd.spec.group}/${crd.spec.versions[0]?.name ?? ""}/${crd.spec.names.plural}`, { query: { limit: 1 } }).then(
          () => true,
          () => false,
        ))
      )
        break;
      if (i > 100) throw new Error(`${crd.metadata.name} not Established after 10 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
