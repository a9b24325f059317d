// How a machine joins Omni: join tokens (with the request ID encoded), the SideroLink kernel args and the Talos join
// config documents, read from ProviderJoinConfig + SiderolinkAPIConfig (v2) or ConnectionParams (legacy Omni < 1.0).
import { createHmac } from 'node:crypto';
import type { CosiState } from '../cosi/state.js';
import {
  ConnectionParamsKind,
  LABEL_INFRA_PROVIDER_ID,
  LABEL_MACHINE_REQUEST,
  ProviderJoinConfigKind,
  ResourceDefinitionKind,
  SIDEROLINK_CONFIG_ID,
  SiderolinkAPIConfigKind,
} from '../cosi/resources.js';

/** v2: ProviderJoinConfig + SiderolinkAPIConfig and `v2:` tokens (Omni >= 1.0); legacy: ConnectionParams and `v1:`. */
export type JoinMode = 'v2' | 'legacy';

/** First address of SideroLink's default ULA prefix: where Omni listens inside the tunnel. */
export const SIDEROLINK_LISTEN_HOST = 'fdae:41e4:649b:9303::1';

/** What a provisioned machine needs to join Omni (the Go library's `provision.ConnectionParams`). Secret. */
export interface ConnectionParams {
  /** Talos multi-document machine config (SideroLinkConfig, EventSinkConfig, KmsgLogConfig). Carries the token. */
  joinConfig: string;
  /** `siderolink.api=…`, `talos.events.sink=…`, `talos.logging.kernel=…` in that order. Carries the token. */
  kernelArgs: string[];
  /** True when the token carries the request ID: it must not be baked into a (shared, cached) schematic. */
  customDataEncoded: boolean;
}

/** Reason the join parameters cannot be built; the message never contains a token. */
export class JoinConfigError extends Error {
  override readonly name = 'JoinConfigError';
}

/** Picks the mode from the IDs of `meta/ResourceDefinitions` (lower-cased type names). */
export function joinModeFromDefinitions(definitionIds: Iterable<string>): JoinMode {
  const wanted = ProviderJoinConfigKind.type.toLowerCase();
  for (const id of definitionIds) if (id.toLowerCase() === wanted) return 'v2';
  return 'legacy';
}

/** Lists the resource definitions and picks the join mode. */
export async function detectJoinMode(state: CosiState): Promise<JoinMode> {
  const defs = await state.list(ResourceDefinitionKind);
  return joinModeFromDefinitions(defs.map((d) => d.metadata.id));
}

/** Go's json.Marshal of a string map: keys sorted, no whitespace, `<`, `>`, `&`, U+2028/9 escaped. */
export function canonicalExtraData(data: Readonly<Record<string, string>>): string {
  const sorted: Record<string, string> = {};
  for (const key of Object.keys(data).sort()) sorted[key] = data[key] ?? '';
  return JSON.stringify(sorted)
    .replace(/</g, '\\u003c')
    .replace(/>/g, '\\u003e')
    .replace(/&/g, '\\u0026')
    .replace(/\u2028/g, '\\u2028')
    .replace(/\u2029/g, '\\u2029');
}

/**
 * Encodes a join token carrying `extraData`, signed with HMAC-SHA256 keyed by the plain token:
 * `v<version>:` + base64({"extra_data":…,"signature":…}). A token that already has a `v1:`/`v2:` prefix, or empty
 * extra data, is returned unchanged.
 */
export function encodeJoinToken(plainToken: string, version: 1 | 2, extraData: Readonly<Record<string, string>>): string {
  if (plainToken.startsWith('v1:') || plainToken.startsWith('v2:')) return plainToken;
  if (Object.keys(extraData).length === 0) return plainToken;
  const extra = canonicalExtraData(extraData);
  const signature = createHmac('sha256', plainToken).update(extra, 'utf8').digest('base64');
  const body = `{"extra_data":${extra},"signature":${JSON.stringify(signature)}}`;
  return `v${version}:${Buffer.from(body, 'utf8').toString('base64')}`;
}

/** Go's url.QueryEscape: unreserved characters stay, space becomes `+`, everything else is %XX (upper case). */
export function goQueryEscape(value: string): string {
  let out = '';
  for (const byte of Buffer.from(value, 'utf8')) {
    const ch = String.fromCharCode(byte);
    if (/[A-Za-z0-9\-_.~]/.test(ch)) out += ch;
    else if (ch === ' ') out += '+';
    else out += `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

function goQueryUnescape(value: string): string {
  try {
    return decodeURIComponent(value.replace(/\+/g, ' '));
  } catch {
    return value;
  }
}

/**
 * The SideroLink API URL: the advertised URL with `jointoken` (and `grpc_tunnel=true`) added and the whole query
 * re-encoded with keys sorted, as Go's url.Values.Encode does. The base URL is kept as written.
 */
export function siderolinkApiUrl(advertisedUrl: string, token: string, grpcTunnel: boolean): string {
  let rest = advertisedUrl;
  let fragment = '';
  const hash = rest.indexOf('#');
  if (hash >= 0) {
    fragment = rest.slice(hash);
    rest = rest.slice(0, hash);
  }
  let base = rest;
  let rawQuery = '';
  const q = rest.indexOf('?');
  if (q >= 0) {
    base = rest.slice(0, q);
    rawQuery = rest.slice(q + 1);
  }
  const values = new Map<string, string[]>();
  const add = (k: string, v: string) => values.set(k, [...(values.get(k) ?? []), v]);
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = eq >= 0 ? part.slice(0, eq) : part;
    const v = eq >= 0 ? part.slice(eq + 1) : '';
    add(goQueryUnescape(k), goQueryUnescape(v));
  }
  add('jointoken', token);
  if (grpcTunnel) add('grpc_tunnel', 'true');
  const query = [...values.keys()]
    .sort()
    .flatMap((k) => (values.get(k) ?? []).map((v) => `${goQueryEscape(k)}=${goQueryEscape(v)}`))
    .join('&');
  return `${base}?${query}${fragment}`;
}

/** YAML scalar as Go's yaml encoder writes these values: plain when safe, single-quoted otherwise. */
function yamlScalar(value: string): string {
  const plainSafe =
    value !== '' &&
    !/^[\s\-?:,[\]{}#&*!|>'"%@`]/.test(value) &&
    !/[\s]$/.test(value) &&
    !value.includes(': ') &&
    !value.includes(' #') &&
    !/^(true|false|yes|no|on|off|null|~|[-+]?[0-9.]+)$/i.test(value);
  return plainSafe ? value : `'${value.replace(/'/g, "''")}'`;
}

export interface JoinParameters {
  /** Plain join token (ProviderJoinConfig.join_token or ConnectionParams.join_token). */
  joinToken: string;
  /** SiderolinkAPIConfig.machine_api_advertised_url or ConnectionParams.api_endpoint. */
  apiUrl: string;
  eventsPort: number;
  logsPort: number;
  tokenVersion: 1 | 2;
  grpcTunnel: boolean;
  /** Extra data encoded into the token (provider ID, request ID). */
  extraData: Readonly<Record<string, string>>;
}

/** Builds kernel args and join config from already-read parameters. Throws JoinConfigError on missing values. */
export function buildConnectionParams(p: JoinParameters, customDataEncoded: boolean): ConnectionParams {
  if (!p.logsPort) throw new JoinConfigError('Omni has no SideroLink log server port configured (logs_port is 0)');
  if (!p.eventsPort) throw new JoinConfigError('Omni has no SideroLink event sink port configured (events_port is 0)');
  if (p.apiUrl === '') throw new JoinConfigError('Omni has no SideroLink machine API URL configured');
  if (p.joinToken === '') throw new JoinConfigError('Omni returned an empty join token for this provider');
  const token = encodeJoinToken(p.joinToken, p.tokenVersion, p.extraData);
  const apiUrl = siderolinkApiUrl(p.apiUrl, token, p.grpcTunnel);
  const eventSink = `[${SIDEROLINK_LISTEN_HOST}]:${p.eventsPort}`;
  const kmsgUrl = `tcp://[${SIDEROLINK_LISTEN_HOST}]:${p.logsPort}`;
  const joinConfig = [
    `apiVersion: v1alpha1\nkind: SideroLinkConfig\napiUrl: ${yamlScalar(apiUrl)}\n`,
    `apiVersion: v1alpha1\nkind: EventSinkConfig\nendpoint: ${yamlScalar(eventSink)}\n`,
    `apiVersion: v1alpha1\nkind: KmsgLogConfig\nname: omni-kmsg\nurl: ${yamlScalar(kmsgUrl)}\n`,
  ].join('---\n');
  return {
    joinConfig,
    kernelArgs: [`siderolink.api=${apiUrl}`, `talos.events.sink=${eventSink}`, `talos.logging.kernel=${kmsgUrl}`],
    customDataEncoded,
  };
}

export interface ConnectionParamsRequest {
  providerId: string;
  mode: JoinMode;
  /** MachineRequest ID; encoded into the token when `encodeRequestIds` is on. */
  requestId: string;
  /** MachineRequest.grpc_tunnel == ENABLED. */
  grpcTunnel: boolean;
  /** `WithEncodeRequestIDsIntoTokens` (the Proxmox provider turns it on). Default true. */
  encodeRequestIds?: boolean;
}

/** Reads Omni's join inputs for the mode and builds the request's connection parameters. */
export async function readConnectionParams(state: CosiState, req: ConnectionParamsRequest): Promise<ConnectionParams> {
  const encode = req.encodeRequestIds ?? true;
  const extraData: Record<string, string> = { [LABEL_INFRA_PROVIDER_ID]: req.providerId };
  if (encode) extraData[LABEL_MACHINE_REQUEST] = req.requestId;
  let params: JoinParameters;
  if (req.mode === 'v2') {
    const [joinConfig, apiConfig] = await Promise.all([
      state.get(ProviderJoinConfigKind, req.providerId),
      state.get(SiderolinkAPIConfigKind, SIDEROLINK_CONFIG_ID),
    ]);
    params = {
      joinToken: joinConfig.spec.joinToken,
      apiUrl: apiConfig.spec.machineApiAdvertisedUrl,
      eventsPort: apiConfig.spec.eventsPort,
      logsPort: apiConfig.spec.logsPort,
      tokenVersion: 2,
      grpcTunnel: req.grpcTunnel,
      extraData,
    };
  } else {
    const cp = await state.get(ConnectionParamsKind, SIDEROLINK_CONFIG_ID);
    params = {
      joinToken: cp.spec.joinToken,
      apiUrl: cp.spec.apiEndpoint,
      eventsPort: cp.spec.eventsPort,
      logsPort: cp.spec.logsPort,
      tokenVersion: 1,
      grpcTunnel: req.grpcTunnel,
      extraData,
    };
  }
  return buildConnectionParams(params, encode);
}
