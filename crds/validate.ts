// Runtime validation and defaulting of custom resources against the schemas generated from crds/*.yaml,
// so a scenario file or a watched object is checked the way the API server checks it: the structural
// schema, nulls dropped as it drops them, and every CEL rule (x-kubernetes-validations) but the transition
// rules, each implemented below under its message, so both refuse the same objects.
import { hugepageHeadPfn, parsePfn, formatPfn, type HugepageSize } from "../kernel/pfn.ts";
import { goDurationMs } from "../runtime/duration.ts";
import { crdInfo } from "./generated.ts";
import type { CrdKind, DefaultedContainmentPolicy, MemoryErrorEvent, NodeMemoryHealth } from "./generated.ts";
import type { JsonSchema } from "./schema.ts";

export interface SchemaIssue {
  /** Path of the offending field, as kubectl prints it: spec.mappers[0].pid */
  path: string;
  message: string;
}

export class SchemaError extends Error {
  readonly issues: SchemaIssue[];
  constructor(where: string, issues: SchemaIssue[]) {
    super(`${where}: ${issues.map((i) => `${i.path}: ${i.message}`).join("; ")}`);
    this.name = "SchemaError";
    this.issues = issues;
  }
}

type Fields = Record<string, unknown>;
/** A duration field of at least `min`, or absent. */
const atLeast =
  (field: string, min: string) =>
  (self: Fields): boolean =>
    self[field] === undefined || (typeof self[field] === "string" && (goDurationMs(self[field]) ?? -1) >= (goDurationMs(min) ?? 0));
const labelKey = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;

/**
 * The CRDs' CEL rules in TypeScript, keyed by the rule's message (crds/validate.test.ts checks every rule
 * of crds/*.yaml has one). Rules on oldSelf (transition rules) need the stored object: the API server's.
 */
export const celRules: Readonly<Record<string, (self: Fields) => boolean>> = {
  "timeout must be at least 1s (a shorter wait gives the agent no time to report)": atLeast("timeout", "1s"),
  "backoff must be at least 1s (the operator never retries an eviction faster)": atLeast("backoff", "1s"),
  "deleteAfter is only meaningful with fallbackToDelete": (self) => self.deleteAfter === undefined || self.fallbackToDelete === true,
  "window must be at least 1m (a shorter window makes the per-window limits meaningless)": atLeast("window", "1m"),
  "window must be at least 1m (a shorter window counts no error twice and never escalates)": atLeast("window", "1m"),
  "window must be at least 1m (a shorter window silently disables the breaker)": atLeast("window", "1m"),
  "window must be at least 1h (the agent counts corrected errors per hour)": atLeast("window", "1h"),
  "cordonAfter must be greater than taintAfter (taint before cordon)": (self) =>
    self.cordonAfter === undefined || self.taintAfter === undefined || Number(self.cordonAfter) > Number(self.taintAfter),
  "cooldown must be at least 1s (without one, every error on a node may escalate it at once)": atLeast("cooldown", "1s"),
  "every key must be a label key (a qualified name, optionally prefixed by a DNS subdomain)": (self) => Object.keys(self).every((k) => labelKey.test(k)),
  "metadata.name must equal spec.nodeName": (self) => (self.metadata as Fields | undefined)?.name === (self.spec as Fields | undefined)?.nodeName,
  "free must not exceed total (free_hugepages counts pages of the pool)": (self) => Number(self.free) <= Number(self.total),
  "hugepage.headPfn must be the head of the hugepage that holds pfn (pfn rounded down to the hugepage size)": (self) => {
    const page = self.hugepage as { size: HugepageSize; headPfn: string } | undefined;
    return page === undefined || page.headPfn === formatPfn(hugepageHeadPfn(parsePfn(String(self.pfn)), page.size));
  },
};

const rfc3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

function typeIssue(schema: JsonSchema, value: unknown): string | undefined {
  switch (schema.type) {
    case "object":
      return isRecord(value) ? undefined : "expected an object";
    case "array":
      return Array.isArray(value) ? undefined : "expected a list";
    case "string":
      return typeof value === "string" ? undefined : "expected a string";
    case "boolean":
      return typeof value === "boolean" ? undefined : "expected true or false";
    case "integer":
      return Number.isSafeInteger(value) ? undefined : "expected an integer";
    case "number":
      return typeof value === "number" && Number.isFinite(value) ? undefined : "expected a number";
    default:
      return undefined;
  }
}

function checkValue(schema: JsonSchema, value: unknown, path: string, issues: SchemaIssue[], rules: boolean): void {
  const wrongType = typeIssue(schema, value);
  if (wrongType) {
    issues.push({ path, message: `${wrongType}, got ${JSON.stringify(value)}` });
    return;
  }
  if (schema.enum && !schema.enum.includes(value))
    issues.push({ path, message: `unsupported value ${JSON.stringify(value)}: expected one of ${schema.enum.map((e) => JSON.stringify(e)).join(", ")}` });
  if (typeof value === "string") checkString(schema, value, path, issues);
  if (typeof value === "number") {
    if (schema.minimum !== undefined && value < schema.minimum) issues.push({ path, message: `must be at least ${schema.minimum}, got ${value}` });
    if (schema.maximum !== undefined && value > schema.maximum) issues.push({ path, message: `must be at most ${schema.maximum}, got ${value}` });
  }
  if (Array.isArray(value)) checkList(schema, value, path, issues, rules);
  if (isRecord(value)) checkObject(schema, value, path, issues, rules);
}

function checkString(schema: JsonSchema, value: string, path: string, issues: SchemaIssue[]): void {
  if (schema.minLength !== undefined && value.length < schema.minLength) issues.push({ path, message: `must be at least ${schema.minLength} characters` });
  if (schema.maxLength !== undefined && value.length > schema.maxLength) issues.push({ path, message: `must be at most ${schema.maxLength} characters` });
  if (schema.pattern && !new RegExp(schema.pattern, "u").test(value))
    issues.push({ path, message: `${JSON.stringify(value)} does not match ${schema.pattern}` });
  if (schema.format === "date-time" && !rfc3339.test(value)) issues.push({ path, message: `${JSON.stringify(value)} is not an RFC 3339 date-time` });
}

function checkList(schema: JsonSchema, value: unknown[], path: string, issues: SchemaIssue[], rules: boolean): void {
  if (schema.maxItems !== undefined && value.length > schema.maxItems)
    issues.push({ path, message: `must have at most ${schema.maxItems} items, has ${value.length}` });
  value.forEach((item, i) => {
    if (schema.items) checkValue(schema.items, item, `${path}[${i}]`, issues, rules);
  });
  const listType = schema["x-kubernetes-list-type"];
  if (listType !== "map" && listType !== "set") return;
  const keyOf = (item: unknown): string =>
    listType === "set" ? JSON.stringify(item) : JSON.stringify((schema["x-kubernetes-list-map-keys"] ?? []).map((k) => (isRecord(item) ? item[k] : undefined)));
  const seen = new Set<string>();
  value.forEach((item, i) => {
    const key = keyOf(item);
    if (seen.has(key)) issues.push({ path: `${path}[${i}]`, message: `duplicate entry ${key}` });
    seen.add(key);
  });
}

function checkObject(schema: JsonSchema, value: Record<string, unknown>, path: string, issues: SchemaIssue[], rules: boolean): void {
  const before = issues.length;
  // The API server drops null fields (none is nullable) before it validates: null is absent.
  for (const key of schema.required ?? []) if (value[key] == null) issues.push({ path: join(path, key), message: "required value is missing" });
  const { properties, additionalProperties, maxProperties } = schema;
  if (maxProperties !== undefined && Object.keys(value).length > maxProperties)
    issues.push({ path, message: `must have at most ${maxProperties} entries, has ${Object.keys(value).length}` });
  for (const [key, sub] of Object.entries(value)) {
    if (sub === null) continue;
    const propSchema = properties?.[key] ?? (typeof additionalProperties === "object" ? additionalProperties : undefined);
    if (propSchema) checkValue(propSchema, sub, join(path, key), issues, rules);
    else if (properties && additionalProperties !== true) issues.push({ path: join(path, key), message: "unknown field" });
  }
  // Like the API server, rules run on an object whose fields are valid.
  if (!rules || issues.length > before) return;
  for (const { rule, message = rule } of schema["x-kubernetes-validations"] ?? []) {
    if (rule.includes("oldSelf")) continue;
    const holds = celRules[message];
    if (holds === undefined) throw new Error(`crds/validate.ts: no implementation of the CRD rule "${message}"`);
    if (!holds(value)) issues.push({ path, message });
  }
}

/** Words cut to a field's maxLength, marked as cut, so a long reason never makes the API server refuse a write. */
export function clip(text: string, maxLength: number): string {
  return text.length <= maxLength ? text : `${text.slice(0, maxLength - 1)}…`;
}

/** Fills in schema defaults the way the API server does, returning a new value. */
export function applyDefaults(schema: JsonSchema, value: unknown): unknown {
  if (Array.isArray(value)) return schema.items ? value.map((v) => applyDefaults(schema.items ?? {}, v)) : value;
  if (!isRecord(value) || !schema.properties) return value;
  const out: Record<string, unknown> = Object.fromEntries(Object.entries(value).filter(([, v]) => v !== null));
  for (const [key, sub] of Object.entries(schema.properties)) {
    if (out[key] === undefined && sub.default !== undefined) out[key] = structuredClone(sub.default);
    if (out[key] !== undefined) out[key] = applyDefaults(sub, out[key]);
  }
  return out;
}

export interface ValidateOptions {
  /**
   * Run the CEL rules too (the default). The operator's watch cache leaves them out: the API server
   * admitted the stored object, a rule added since must not drop it, and the model floors what it relies on.
   */
  celRules?: boolean;
}

/** Every way `value` breaks `schema`, with paths relative to `path`. */
export function validateValue(schema: JsonSchema, value: unknown, path = "", { celRules = true }: ValidateOptions = {}): SchemaIssue[] {
  const issues: SchemaIssue[] = [];
  checkValue(schema, value, path, issues, celRules);
  return issues;
}

export function validateResource(kind: CrdKind, value: unknown, options: ValidateOptions = {}): SchemaIssue[] {
  return validateValue(crdInfo[kind].schema, value, "", options);
}

interface KindTypes {
  ContainmentPolicy: DefaultedContainmentPolicy;
  MemoryErrorEvent: MemoryErrorEvent;
  NodeMemoryHealth: NodeMemoryHealth;
}

/** Defaults and validates a resource; throws a SchemaError naming `where` and every bad field. */
export function parseResource<K extends CrdKind>(kind: K, value: unknown, where: string, options: ValidateOptions = {}): KindTypes[K] {
  const info = crdInfo[kind];
  const withKind = isRecord(value) ? { apiVersion: `${info.group}/${info.version}`, kind, ...value } : value;
  const defaulted = applyDefaults(info.schema, withKind);
  const issues = validateResource(kind, defaulted, options);
  if (isRecord(defaulted) && !isRecord(defaulted.metadata)) issues.push({ path: "metadata", message: "required value is missing" });
  else if (isRecord(defaulted) && isRecord(defaulted.metadata) && typeof defaulted.metadata.name !== "string")
    issues.push({ path: "metadata.name", message: "required value is missing" });
  if (issues.length > 0) throw new SchemaError(where, issues);
  return defaulted as KindTypes[K];
}
