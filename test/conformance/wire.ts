// Helpers shared by the conformance tests: raw signed gRPC clients of a server under test, call outcomes, and the
// normalised "observations" whose equality between upstream and the in-process Omni is the point of the suite.
import * as grpc from '@grpc/grpc-js';
import { expect } from 'vitest';
import type { Resource as WireResource } from '../../src/gen/cosi/v1alpha1/resource_pb.js';
import { EventType, State, type Event } from '../../src/gen/cosi/v1alpha1/state_pb.js';
import { ManagementService } from '../../src/gen/omni/management/management_pb.js';
import { createServiceClient, isServiceError, openOmniChannel, type ServiceClient } from '../../src/cosi/grpc.js';
import { decodeServiceAccountKey, signingInterceptor } from '../../src/cosi/signing.js';
import type { ServerName } from './servers.js';

export interface RawClient {
  state: ServiceClient<typeof State>;
  management: ServiceClient<typeof ManagementService>;
  close(): void;
}

export interface RawClientOptions {
  /** Client clock for the signature timestamp (skew tests). */
  now?: () => Date;
  /** Extra interceptors run after signing (tamper tests). */
  after?: grpc.Interceptor[];
  unsigned?: boolean;
  providerId?: string;
}

export async function rawClient(endpoint: string, keyString: string, opts: RawClientOptions = {}): Promise<RawClient> {
  const key = opts.unsigned ? undefined : await decodeServiceAccountKey(keyString);
  const channel = openOmniChannel(endpoint);
  const signer = signingInterceptor(key, { providerId: opts.providerId ?? 'proxmox', ...(opts.now ? { now: opts.now } : {}) });
  // grpc-js runs interceptors outermost-first: the signer must see the call before the tamperers do.
  const interceptors = [signer, ...(opts.after ?? [])];
  const state = createServiceClient(State, { channel: channel.channel, interceptors });
  const management = createServiceClient(ManagementService, { channel: channel.channel, interceptors });
  return { state, management, close: () => channel.close() };
}

export type Outcome<T> = { ok: true; value: T } | { ok: false; code: string; message: string };

/** Runs a call and reports its result or its gRPC status (code name + message). */
export async function outcome<T>(run: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await run() };
  } catch (err) {
    if (isServiceError(err)) return { ok: false, code: grpc.status[err.code] ?? String(err.code), message: err.details };
    throw err;
  }
}

/** Just the status of an outcome (no value), for comparing refusals. */
export function statusOf(o: Outcome<unknown>): { ok: boolean; code?: string; message?: string } {
  return o.ok ? { ok: true } : { ok: false, code: o.code, message: o.message };
}

const REGISTERED_TYPE = /\.(omni|system)\.sidero\.dev$|\.meta\.cosi\.dev$/;

/**
 * The parts of a resource both servers must agree on. Timestamps are compared by presence and order only; the
 * yaml_spec only for types the server does not know (Omni re-renders YAML for its own types: documented difference).
 */
export function resourceView(r: WireResource | undefined): Record<string, unknown> | undefined {
  if (!r) return undefined;
  const md = r.metadata;
  const created = md?.created ? Number(md.created.seconds) * 1e9 + md.created.nanos : undefined;
  const updated = md?.updated ? Number(md.updated.seconds) * 1e9 + md.updated.nanos : undefined;
  return {
    namespace: md?.namespace,
    type: md?.type,
    id: md?.id,
    version: md?.version,
    owner: md?.owner,
    phase: md?.phase,
    finalizers: [...(md?.finalizers ?? [])],
    labels: { ...(md?.labels ?? {}) },
    annotations: { ...(md?.annotations ?? {}) },
    hasCreated: created !== undefined && created > 0,
    updated:
      updated === undefined ? 'absent' : updated === 0 ? 'epoch' : created !== undefined && updated >= created ? 'at-or-after-created' : 'before-created',
    protoSpec: Buffer.from(r.spec?.protoSpec ?? new Uint8Array()).toString('hex'),
    yamlSpec: REGISTERED_TYPE.test(md?.type ?? '') ? '(server-rendered)' : r.spec?.yamlSpec,
  };
}

export function eventView(e: Event): Record<string, unknown> {
  return {
    type: EventType[e.eventType],
    id: e.resource?.metadata?.id,
    version: e.resource?.metadata?.version,
    phase: e.resource?.metadata?.phase,
    oldVersion: e.old?.metadata?.version,
    hasBookmark: e.bookmark !== undefined && e.bookmark.length > 0,
    error: e.error,
  };
}

/** Observations per scenario and server; the final comparison asserts upstream == in-process for each. */
export class Observations {
  private readonly byKey = new Map<string, Partial<Record<ServerName, unknown>>>();

  record(server: ServerName, key: string, value: unknown): void {
    const entry = this.byKey.get(key) ?? {};
    entry[server] = JSON.parse(JSON.stringify(value ?? null)) as unknown;
    this.byKey.set(key, entry);
  }

  /** Soft-asserts every key observed on both servers; returns how many were compared. */
  compare(): number {
    let compared = 0;
    for (const [key, entry] of this.byKey) {
      if (!('upstream' in entry) || !('in-process' in entry)) continue;
      compared++;
      expect.soft(entry['in-process'], `in-process answer differs from upstream for: ${key}`).toEqual(entry.upstream);
    }
    return compared;
  }
}
