// Route table types and path matching shared by the simulator core and its route modules.
import type { Caller } from './auth.js';
import type { UploadBody } from './multipart.js';
import type { PveSim } from './sim.js';
import type { SimNode } from './state.js';
import type { CheckedParams, ParamSchema, Params, SchemaOptions } from './validate.js';

export interface RouteContext {
  sim: PveSim;
  caller: Caller;
  /** Validated parameters (path, query and body merged). */
  params: CheckedParams;
  /** The node the call was proxied to (`localhost` resolved). */
  node?: SimNode;
  upload?: UploadBody;
  method: string;
  path: string;
}

/** A handler result with an extra `total` next to `data` (task log). */
export class WithTotal {
  constructor(
    readonly data: unknown,
    readonly total: number,
  ) {}
}

export interface Route {
  method: 'GET' | 'POST' | 'PUT' | 'DELETE';
  /** Path below /api2/json with `{name}` segments; a trailing `{name*}` takes the rest (volume ids). */
  pattern: string;
  schema: ParamSchema;
  schemaOptions?: SchemaOptions;
  /** No authentication (ticket login, which does its own). */
  noAuth?: boolean;
  /** Ticket calls skip the CSRF check (upload). */
  csrfExempt?: boolean;
  /** multipart upload body. */
  upload?: boolean;
  handler: (ctx: RouteContext) => unknown;
  /** Served only when this holds (an API the simulated version lacks answers 501 like any unknown path). */
  available?: (sim: PveSim) => boolean;
}

export function matchRoute(pattern: string, segments: readonly string[]): Record<string, string> | undefined {
  const parts = pattern.split('/').filter(Boolean);
  const out: Record<string, string> = {};
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    const m = /^\{(\w+)(\*?)\}$/.exec(p);
    if (m?.[2] === '*') {
      if (i >= segments.length) return undefined;
      out[m[1]!] = segments.slice(i).join('/');
      return out;
    }
    const seg = segments[i];
    if (seg === undefined) return undefined;
    if (m) out[m[1]!] = seg;
    else if (p !== seg) return undefined;
  }
  return parts.length === segments.length ? out : undefined;
}

export type { Params };
