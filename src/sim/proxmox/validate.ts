// Parameter schema checks with Proxmox's JSONSchema wording (type, range, length, enum, pattern, format).
import { paramError } from './errors.js';

export type ParamValue = string | number | boolean;
export type Params = Record<string, ParamValue>;

/** Returns an error text (without the `invalid format - ` prefix) or undefined when the value is fine. */
export type FormatCheck = (value: string, key: string) => string | undefined;

export interface ParamSpec {
  type: 'string' | 'integer' | 'boolean' | 'number';
  optional?: boolean;
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  enum?: readonly string[];
  pattern?: RegExp;
  format?: FormatCheck;
}

export type ParamSchema = Readonly<Record<string, ParamSpec>>;

export interface SchemaOptions {
  /** Keys matched by a pattern (e.g. scsi0..scsi30) and their spec. */
  patternProperties?: ReadonlyArray<readonly [RegExp, ParamSpec]>;
  additionalProperties?: boolean;
}

/** Validated values: integers and booleans become numbers (booleans 0/1), everything else strings. */
export type CheckedParams = Record<string, string | number>;

export function checkParams(schema: ParamSchema, params: Params, opts: SchemaOptions = {}): CheckedParams {
  const errors: Record<string, string> = {};
  const out: CheckedParams = {};
  for (const [key, spec] of Object.entries(schema)) {
    if (params[key] === undefined && !spec.optional) errors[key] = 'property is missing and it is not optional';
  }
  for (const [key, value] of Object.entries(params)) {
    const spec = schema[key] ?? opts.patternProperties?.find(([re]) => re.test(key))?.[1];
    if (!spec) {
      if (!opts.additionalProperties) {
        errors[key] = 'property is not defined in schema and the schema does not allow additional properties';
      } else {
        out[key] = String(value);
      }
      continue;
    }
    const result = checkValue(spec, value, key);
    if (typeof result === 'object') errors[key] = result.error;
    else out[key] = result;
  }
  if (Object.keys(errors).length > 0) throw paramError(errors);
  return out;
}

/** pve-common JSONSchema.pm `is_integer` / `is_number`. */
const INTEGER_RE = /^[+-]?\d+$/;
const NUMBER_RE = /^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$/;

/**
 * One value, in the order pve-common's check_prop checks a scalar: type, then format, pattern, maxLength, range
 * (for anything numeric) and enum, stopping at the first problem.
 */
export function checkValue(spec: ParamSpec, value: ParamValue, key = ''): string | number | { error: string } {
  const text = typeof value === 'boolean' ? (value ? '1' : '0') : String(value);
  switch (spec.type) {
    case 'boolean':
      if (typeof value === 'boolean') return value ? 1 : 0;
      if (text === '1' || text === '0') return Number(text);
      return { error: `type check ('boolean') failed - got '${text}'` };
    case 'integer':
      if (typeof value === 'boolean' || !INTEGER_RE.test(text)) return { error: `type check ('integer') failed - got '${text}'` };
      break;
    case 'number':
      if (typeof value === 'boolean' || !NUMBER_RE.test(text)) return { error: `type check ('number') failed - got '${text}'` };
      break;
    case 'string':
      break;
  }
  const formatError = spec.format?.(text, key);
  if (formatError) return { error: `invalid format - ${formatError}` };
  if (spec.pattern && !spec.pattern.test(text)) return { error: 'value does not match the regex pattern' };
  if (spec.maxLength !== undefined && [...text].length > spec.maxLength) {
    return { error: `value may only be ${spec.maxLength} characters long` };
  }
  if (NUMBER_RE.test(text)) {
    const n = Number(text);
    if (spec.maximum !== undefined && n > spec.maximum) return { error: `value must have a maximum value of ${spec.maximum}` };
    if (spec.minimum !== undefined && n < spec.minimum) return { error: `value must have a minimum value of ${spec.minimum}` };
  }
  if (spec.enum && !spec.enum.includes(text)) {
    return { error: `value '${text}' does not have a value in the enumeration '${spec.enum.join(', ')}'` };
  }
  return spec.type === 'integer' ? Number(text) : text;
}

// ---- formats Proxmox registers (pve-common JSONSchema.pm), restated ----

const vmidRe = /^[1-9][0-9]{2,8}$/;
const nodeRe = /^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$/;
const storageIdRe = /^[a-z][a-z0-9\-_.]*[a-z0-9]$/i;
const dnsLabel = '[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?';
const dnsNameRe = new RegExp(`^(${dnsLabel}\\.)*${dnsLabel}$`);
const tagRe = /^[a-z0-9_][a-z0-9_\-+.]*$/i;

export const formatChecks = {
  vmid: (v: string) => (vmidRe.test(v) ? undefined : 'value does not look like a valid VM ID'),
  node: (v: string) => (nodeRe.test(v) ? undefined : 'value does not look like a valid node name'),
  storageId: (v: string) => (storageIdRe.test(v) ? undefined : `storage ID '${v}' contains illegal characters`),
  dnsName: (v: string) => (dnsNameRe.test(v) ? undefined : 'value does not look like a valid DNS name'),
  tagList: (v: string) => {
    const tags = splitTagList(v);
    return tags.every((t) => tagRe.test(t)) ? undefined : 'invalid characters in tag';
  },
} satisfies Record<string, FormatCheck>;

/** Tags may be separated by `;`, `,` or whitespace. */
export function splitTagList(v: string): string[] {
  return v.split(/[;,\s]+/).filter((t) => t.length > 0);
}

export const vmidSpec: ParamSpec = { type: 'integer', format: formatChecks.vmid, minimum: 100, maximum: 999_999_999 };
export const nodeSpec: ParamSpec = { type: 'string', format: formatChecks.node };
export const storageSpec: ParamSpec = { type: 'string', format: formatChecks.storageId };
