// Generates crds/generated.ts (TypeScript types and the schemas the runtime validator uses) from the
// CRD YAML files, which are the single source of truth. `--check` fails when the file has drifted.
import { readFileSync, readdirSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { isDeepStrictEqual } from "node:util";
import { parse } from "yaml";
import type { CrdInfo, JsonSchema } from "./schema.ts";

const crdDir = dirname(fileURLToPath(import.meta.url));
const outFile = join(crdDir, "generated.ts");

interface CrdDocument {
  spec: {
    group: string;
    names: { kind: string; plural: string };
    versions: { name: string; storage: boolean; schema: { openAPIV3Schema: JsonSchema } }[];
  };
}

export function loadCrds(dir = crdDir): CrdInfo[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".yaml"))
    .sort()
    .map((f) => {
      const doc = parse(readFileSync(join(dir, f), "utf8")) as CrdDocument;
      const version = doc.spec.versions.find((v) => v.storage);
      if (!version) throw new Error(`${f}: no storage version`);
      return {
        kind: doc.spec.names.kind,
        plural: doc.spec.names.plural,
        group: doc.spec.group,
        version: version.name,
        schema: version.schema.openAPIV3Schema,
      };
    });
}

const pascal = (s: string): string => s.charAt(0).toUpperCase() + s.slice(1);
const singular = (s: string): string => (s.endsWith("ies") ? `${s.slice(0, -3)}y` : s.endsWith("s") ? s.slice(0, -1) : s);

/** Whether a schema or anything below it has a default. */
const hasDefaults = (schema: JsonSchema): boolean =>
  schema.default !== undefined ||
  Object.values(schema.properties ?? {}).some(hasDefaults) ||
  (schema.items !== undefined && hasDefaults(schema.items)) ||
  (typeof schema.additionalProperties === "object" && hasDefaults(schema.additionalProperties));

class TypeWriter {
  private readonly out: string[] = [];
  private readonly named: { name: string; schema: JsonSchema; defaulted: boolean }[] = [];

  /**
   * Emits an interface for an object schema, reusing an earlier one with the same shape. `defaulted`
   * types are what a reader holds after the API server (or crds/validate.ts) applied the defaults: a
   * field with a default is never missing there.
   */
  objectType(name: string, schema: JsonSchema, defaulted = false): string {
    const withDefaults = defaulted && hasDefaults(schema);
    const same = this.named.find((n) => n.defaulted === withDefaults && isDeepStrictEqual(n.schema, schema));
    if (same) return same.name;
    if (withDefaults && !name.startsWith("Defaulted")) name = `Defaulted${name}`;
    this.named.push({ name, schema, defaulted: withDefaults });
    const required = new Set([
      ...(schema.required ?? []),
      ...(withDefaults ? Object.keys(schema.properties ?? {}).filter((p) => schema.properties?.[p]?.default !== undefined) : []),
    ]);
    const lines = Object.entries(schema.properties ?? {}).map(([prop, sub]) => {
      const doc = sub.description ? `  /** ${sub.description.replaceAll("*/", "* /")} */\n` : "";
      const optional = required.has(prop) ? "" : "?";
      return `${doc}  ${prop}${optional}: ${this.typeOf(name + pascal(prop), sub, withDefaults)};`;
    });
    const doc = schema.description ? `/** ${schema.description.replaceAll("*/", "* /")} */\n` : "";
    this.out.push(`${doc}export interface ${name} {\n${lines.join("\n")}\n}\n`);
    return name;
  }

  typeOf(name: string, schema: JsonSchema, defaulted = false): string {
    if (schema.enum) return schema.enum.map((v) => JSON.stringify(v)).join(" | ");
    switch (schema.type) {
      case "string":
        return "string";
      case "integer":
      case "number":
        return "number";
      case "boolean":
        return "boolean";
      case "array":
        return `${this.typeOf(singular(name), schema.items ?? {}, defaulted)}[]`;
      case "object":
        if (schema.properties) return this.objectType(name, schema, defaulted);
        if (typeof schema.additionalProperties === "object") return `Record<string, ${this.typeOf(name, schema.additionalProperties, defaulted)}>`;
        return "Record<string, unknown>";
      default:
        return "unknown";
    }
  }

  text(): string {
    return this.out.join("\n");
  }
}

export function generate(crds: CrdInfo[]): string {
  const writer = new TypeWriter();
  const kinds: string[] = [];
  for (const crd of crds) {
    const { properties = {} } = crd.schema;
    const spec = properties.spec ? writer.typeOf(`${crd.kind}Spec`, properties.spec) : "never";
    const status = properties.status ? writer.typeOf(`${crd.kind}Status`, properties.status) : "never";
    kinds.push(
      `/** ${crd.schema.description ?? crd.kind} */\nexport interface ${crd.kind} {\n` +
        `  apiVersion: "${crd.group}/${crd.version}";\n  kind: "${crd.kind}";\n  metadata: ObjectMeta;\n` +
        `  spec: ${spec};\n  status?: ${status};\n}\n`,
    );
    if (properties.spec && hasDefaults(properties.spec)) {
      const defaulted = writer.typeOf(`${crd.kind}Spec`, properties.spec, true);
      kinds.push(
        `/** A ${crd.kind} with the CRD's defaults applied. */\nexport type Defaulted${crd.kind} = Omit<${crd.kind}, "spec"> & { spec: ${defaulted} };\n`,
      );
    }
  }
  const infos = Object.fromEntries(crds.map((c) => [c.kind, c]));
  return [
    "// Generated by crds/gen.ts from crds/*.yaml. Do not edit: change the YAML and run `npm run gen:crds`.",
    'import type { CrdInfo } from "./schema.ts";\n',
    "/** The metadata fields this project reads and writes. */",
    "export interface ObjectMeta {\n  name: string;\n  uid?: string;\n  resourceVersion?: string;\n  generation?: number;\n" +
      "  creationTimestamp?: string;\n  labels?: Record<string, string>;\n  annotations?: Record<string, string>;\n}\n",
    writer.text(),
    kinds.join("\n"),
    `export type CrdKind = ${crds.map((c) => JSON.stringify(c.kind)).join(" | ")};\n`,
    `export const crdInfo: Record<CrdKind, CrdInfo> = ${JSON.stringify(infos, null, 2)};\n`,
  ].join("\n");
}

if (import.meta.main) {
  const text = generate(loadCrds());
  if (process.argv.includes("--check")) {
    if (readFileSync(outFile, "utf8") !== text) {
      console.error("crds/generated.ts has drifted from crds/*.yaml: run `npm run gen:crds` and commit the result");
      process.exit(1);
    }
    console.log("crds/generated.ts matches crds/*.yaml");
  } else {
    writeFileSync(outFile, text);
    console.log(`wrote ${outFile}`);
  }
}
