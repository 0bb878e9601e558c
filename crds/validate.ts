// Runtime validation and defaulting of custom resources against the schemas generated from crds/*.yaml,
// so a scenario file or a watched object is checked the way the API server checks its structural schema.
// CEL rules (x-kubernetes-validations) are the API server's to enforce; the few the model relies on are
// re-checked where the model reads them.
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

function checkValue(schema: JsonSchema, value: unknown, path: string, issues: SchemaIssue[]): void {
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
  if (Array.isArray(value)) checkList(schema, value, path, issues);
  if (isRecord(value)) checkObject(schema, value, path, issues);
}

function checkString(schema: JsonSchema, value: string, path: string, issues: SchemaIssue[]): void {
  if (schema.minLength !== undefined && value.length < schema.minLength) issues.push({ path, message: `must be at least ${schema.minLength} characters` });
  if (schema.maxLength !== undefined && value.length > schema.maxLength) issues.push({ path, message: `must be at most ${schema.maxLength} characters` });
  if (schema.pattern && !new RegExp(schema.pattern, "u").test(value))
    issues.push({ path, message: `${JSON.stringify(value)} does not match ${schema.pattern}` });
  if (schema.format === "date-time" && !rfc3339.test(value)) issues.push({ path, message: `${JSON.stringify(value)} is not an RFC 3339 date-time` });
}

function checkList(schema: JsonSchema, value: unknown[], path: string, issues: SchemaIssue[]): void {
  if (schema.maxItems !== undefined && value.length > schema.maxItems)
    issues.push({ path, message: `must have at most ${schema.maxItems} items, has ${value.length}` });
  value.forEach((item, i) => {
    if (schema.items) checkValue(schema.items, item, `${path}[${i}]`, issues);
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

function checkObject(schema: JsonSchema, value: Record<string, unknown>, path: string, issues: SchemaIssue[]): void {
  for (const key of schema.required ?? []) if (value[key] === undefined) issues.push({ path: join(path, key), message: "required value is missing" });
  const { properties, additionalProperties } = schema;
  for (const [key, sub] of Object.entries(value)) {
    const propSchema = properties?.[key] ?? (typeof additionalProperties === "object" ? additionalProperties : undefined);
    if (propSchema) checkValue(propSchema, sub, join(path, key), issues);
    else if (properties && additionalProperties !== true) issues.push({ path: join(path, key), message: "unknown field" });
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
  const out: Record<string, unknown> = { ...value };
  for (const [key, sub] of Object.entries(schema.properties)) {
    if (out[key] === undefined && sub.default !== undefined) out[key] = structuredClone(sub.default);
    if (out[key] !== undefined) out[key] = applyDefaults(sub, out[key]);
  }
  return out;
}

/** Every way `value` breaks `schema`, with paths relative to `path`. */
export function validateValue(schema: JsonSchema, value: unknown, path = ""): SchemaIssue[] {
  const issues: SchemaIssue[] = [];
  checkValue(schema, value, path, issues);
  return issues;
}

export function validateResource(kind: CrdKind, value: unknown): SchemaIssue[] {
  return validateValue(crdInfo[kind].schema, value);
}

interface KindTypes {
  ContainmentPolicy: DefaultedContainmentPolicy;
  MemoryErrorEvent: MemoryErrorEvent;
  NodeMemoryHealth: NodeMemoryHealth;
}

/** Defaults and validates a resource; throws a SchemaError naming `where` and every bad field. */
export function parseResource<K extends CrdKind>(kind: K, value: unknown, where: string): KindTypes[K] {
  const info = crdInfo[kind];
  const withKind = isRecord(value) ? { apiVersion: `${info.group}/${info.version}`, kind, ...value } : value;
  const defaulted = applyDefaults(info.schema, withKind);
  const issues = validateResource(kind, defaulted);
  if (isRecord(defaulted) && !isRecord(defaulted.metadata)) issues.push({ path: "metadata", message: "required value is missing" });
  else if (isRecord(defaulted) && isRecord(defaulted.metadata) && typeof defaulted.metadata.name !== "string")
    issues.push({ path: "metadata.name", message: "required value is missing" });
  if (issues.length > 0) throw new SchemaError(where, issues);
  return defaulted as KindTypes[K];
}
