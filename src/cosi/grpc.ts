// gRPC transport for Omni: endpoint URL → channel (TLS/h2c, 32 MiB, keepalive) and typed grpc-js clients and
// service definitions built from protobuf-es service descriptors (shared by our clients and in-process servers).
import { isIP, type Socket } from 'node:net';
import { connect as tlsConnect, createSecureContext, rootCertificates, type SecureContext } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import {
  create,
  fromBinary,
  toBinary,
  type DescMessage,
  type DescMethod,
  type DescService,
  type MessageInitShape,
  type MessageShape,
} from '@bufbuild/protobuf';

/** Omni sends and accepts messages up to 32 MiB; grpc-js defaults to 4 MiB on receive. */
export const GRPC_MAX_MESSAGE_BYTES = 32 * 1024 * 1024;

/** Channel options mirroring the Go Omni client: 32 MiB messages, ping after 60 s idle, 20 s ping timeout. */
export const clientChannelOptions: grpc.ChannelOptions = {
  'grpc.max_receive_message_length': GRPC_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': GRPC_MAX_MESSAGE_BYTES,
  'grpc.keepalive_time_ms': 60_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.keepalive_permit_without_calls': 0,
};

/** Options for servers built on these descriptors (the in-process Omni): same message limit as Omni. */
export const serverChannelOptions: grpc.ServerOptions = {
  'grpc.max_receive_message_length': GRPC_MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': GRPC_MAX_MESSAGE_BYTES,
};

/** Where and how to reach Omni, derived from `--omni-api-endpoint`. */
export interface OmniEndpoint {
  /** grpc-js target, `host:port` (IPv6 hosts keep their brackets). */
  readonly target: string;
  /** Host name without brackets (TLS server name). */
  readonly host: string;
  readonly tls: boolean;
}

/**
 * Parses the Omni API endpoint URL like the Go client does:
 * https → TLS, default port 443; http and grpc → plaintext h2c, default port 80; any other scheme → plaintext,
 * no default port. Path, query and fragment are ignored (Omni has no path prefix support). A scheme is required.
 */
export function parseOmniEndpoint(endpoint: string): OmniEndpoint {
  const trimmed = endpoint.trim();
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(trimmed)) {
    throw new Error(
      `Omni API endpoint ${JSON.stringify(trimmed)} is not a URL with a scheme; use e.g. https://omni.example.com or http://127.0.0.1:8080`,
    );
  }
  let url: URL;
  try {
    url = new URL(trimmed);
  } catch {
    throw new Error(`Omni API endpoint ${JSON.stringify(trimmed)} is not a valid URL`);
  }
  if (url.hostname === '') throw new Error(`Omni API endpoint ${JSON.stringify(trimmed)} has no host`);
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  const tls = scheme === 'https';
  const defaultPort = scheme === 'https' ? '443' : scheme === 'http' || scheme === 'grpc' ? '80' : '';
  // WHATWG URL drops the port when it equals the scheme default (http:80, https:443): put it back.
  const port = url.port !== '' ? url.port : defaultPort;
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { target: port === '' ? url.hostname : `${url.hostname}:${port}`, host, tls };
}

export interface ChannelSettings {
  /** Skip TLS certificate verification (`--insecure-skip-verify`). */
  insecureSkipVerify?: boolean;
  /**
   * CA certificates (PEM) to trust in addition to Node's bundled CA list (what grpc-js trusts by default), e.g. the
   * private CA of an Omni behind an internal proxy (`omni.caFile`).
   */
  caCertificates?: Buffer | string;
  /**
   * Sent first in the `user-agent` header of every call (grpc-js appends its own token), e.g.
   * `omni-infra-provider-proxmox/1.2.3 instance/<id>`: tells two instances of the provider apart in Omni's logs.
   */
  userAgent?: string;
}

export function channelCredentials(endpoint: OmniEndpoint, settings: ChannelSettings = {}): grpc.ChannelCredentials {
  if (!endpoint.tls) return grpc.credentials.createInsecure();
  return new OmniTlsCredentials(endpoint.host, settings);
}

/**
 * The CAs an Omni certificate may chain to: `extra` (PEM, one or more certificates) on top of Node's bundled CA list;
 * undefined without `extra` (Node's defaults, what grpc-js uses).
 */
export function omniTrustedCas(extra: Buffer | string | undefined): string[] | undefined {
  const pem = extra === undefined ? '' : extra.toString();
  return pem.trim() === '' ? undefined : [...rootCertificates, pem];
}

type SecureConnector = ReturnType<grpc.ChannelCredentials['_createSecureConnector']>;
type SecureConnectResult = Awaited<ReturnType<SecureConnector['connect']>>;

/** Node's codes for a peer certificate that did not verify (chain, expiry, host name). */
const CERTIFICATE_ERROR = /CERT|SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY|ALTNAME/;

/**
 * TLS to Omni the way grpc-js's own SSL credentials do it (ALPN h2, verification against `ca` or Node's CA list,
 * host name check), with two differences: SNI is sent only for host names — RFC 6066 forbids IP addresses there, and
 * grpc-js always sets one, which makes Node print a DEP0123 warning for `https://<ip>` endpoints; it has no channel
 * option to leave it out — and a rejected certificate fails with a message that says so.
 */
class OmniTlsCredentials extends grpc.ChannelCredentials {
  readonly #host: string;
  readonly #secureContext: SecureContext;
  readonly #insecure: boolean;

  constructor(host: string, settings: ChannelSettings) {
    super();
    this.#host = host;
    this.#insecure = settings.insecureSkipVerify ?? false;
    const ca = omniTrustedCas(settings.caCertificates);
    this.#secureContext = createSecureContext(ca === undefined ? {} : { ca });
  }

  override _isSecure(): boolean {
    return true;
  }

  override _equals(other: grpc.ChannelCredentials): boolean {
    return other === this;
  }

  override _createSecureConnector(
    ...args: Parameters<grpc.ChannelCredentials['_createSecureConnector']>
  ): SecureConnector {
    const callCredentials = args[2] ?? grpc.credentials.createEmpty();
    return {
      connect: (socket: Socket) => this.#handshake(socket),
      waitForReady: () => Promise.resolve(),
      getCallCredentials: () => callCredentials,
      destroy: () => undefined,
    };
  }

  #handshake(socket: Socket): Promise<SecureConnectResult> {
    const host = this.#host;
    return new Promise((resolve, reject) => {
      const tlsSocket = tlsConnect(
        {
          socket,
          host,
          ...(isIP(host) === 0 ? { servername: host } : {}),
          secureContext: this.#secureContext,
          ALPNProtocols: ['h2'],
          rejectUnauthorized: !this.#insecure,
          ...(this.#insecure ? { checkServerIdentity: () => undefined } : {}),
        },
        () => {
          if (!this.#insecure && !tlsSocket.authorized) {
            reject(certificateError(host, tlsSocket.authorizationError));
            return;
          }
          resolve({ socket: tlsSocket, secure: true });
        },
      );
      tlsSocket.on('error', (err: Error & { code?: unknown }) => {
        reject(typeof err.code === 'string' && CERTIFICATE_ERROR.test(err.code) ? certificateError(host, err) : err);
      });
    });
  }
}

/** Codes of a chain that ends at a CA nobody configured (as opposed to an expired certificate or a wrong name). */
const UNKNOWN_ISSUER = /SELF_SIGNED|UNABLE_TO_GET_ISSUER|UNABLE_TO_VERIFY_LEAF/;

function certificateError(host: string, cause: unknown): Error {
  const e = cause as { message?: unknown; code?: unknown } | null;
  const message = typeof e?.message === 'string' ? e.message : String(cause);
  const code = typeof e?.code === 'string' ? e.code : 'ERR_TLS_CERT';
  const hint = UNKNOWN_ISSUER.test(code) ? '; if a private CA issued it, trust that CA with OMNI_CA_FILE (omni.caFile)' : '';
  return Object.assign(new Error(`the TLS certificate of Omni at ${host} was not accepted: ${message} (${code})${hint}`, { cause }), { code });
}

/** One HTTP/2 channel to Omni, shared by every service client. */
export interface OmniChannel {
  readonly endpoint: OmniEndpoint;
  readonly channel: grpc.Channel;
  close(): void;
}

export function openOmniChannel(endpointUrl: string, settings: ChannelSettings = {}): OmniChannel {
  const endpoint = parseOmniEndpoint(endpointUrl);
  const options: grpc.ChannelOptions = { ...clientChannelOptions };
  if (settings.userAgent !== undefined) options['grpc.primary_user_agent'] = settings.userAgent;
  const channel = new grpc.Channel(endpoint.target, channelCredentials(endpoint, settings), options);
  return { endpoint, channel, close: () => channel.close() };
}

/** Full gRPC method path, e.g. `/cosi.resource.State/Get`. */
export function methodPath(method: DescMethod): string {
  return `/${method.parent.typeName}/${method.name}`;
}

/** Per-call options. */
export interface RpcOptions {
  metadata?: grpc.Metadata;
  deadline?: grpc.Deadline;
  signal?: AbortSignal;
}

/** A server-streaming call: iterate it to receive messages; `cancel()` ends it (iteration then throws CANCELLED). */
export interface ServerStream<T> extends AsyncIterable<T> {
  cancel(): void;
}

type ClientMethod<M> = M extends { methodKind: 'unary'; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? (request: MessageInitShape<I>, options?: RpcOptions) => Promise<MessageShape<O>>
  : M extends { methodKind: 'server_streaming'; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? (request: MessageInitShape<I>, options?: RpcOptions) => ServerStream<MessageShape<O>>
    : never;

/** A typed client of a protobuf-es service: one function per RPC, named by the RPC's local name (`get`, `list`, …). */
export type ServiceClient<S extends DescService> = {
  readonly [K in keyof S['method']]: ClientMethod<S['method'][K]>;
} & { close(): void };

type HandlerFor<M> = M extends { methodKind: 'unary'; input: infer I extends DescMessage; output: infer O extends DescMessage }
  ? grpc.handleUnaryCall<MessageShape<I>, MessageShape<O>>
  : M extends { methodKind: 'server_streaming'; input: infer I extends DescMessage; output: infer O extends DescMessage }
    ? grpc.handleServerStreamingCall<MessageShape<I>, MessageShape<O>>
    : never;

/** grpc-js handlers for a protobuf-es service, keyed by the RPC's local name. */
export type ServiceHandlers<S extends DescService> = {
  [K in keyof S['method']]: HandlerFor<S['method'][K]>;
};

function serializerFor(schema: DescMessage): (value: MessageShape<DescMessage>) => Buffer {
  return (value) => Buffer.from(toBinary(schema, value));
}

function deserializerFor(schema: DescMessage): (bytes: Buffer) => MessageShape<DescMessage> {
  return (bytes) => fromBinary(schema, bytes);
}

/** The grpc-js service definition of a protobuf-es service (binary protobuf on the wire), for `server.addService`. */
export function grpcServiceDefinition(service: DescService): grpc.ServiceDefinition {
  const definition: Record<string, grpc.MethodDefinition<MessageShape<DescMessage>, MessageShape<DescMessage>>> = {};
  for (const method of service.methods) {
    definition[method.localName] = {
      path: methodPath(method),
      originalName: method.name,
      requestStream: method.methodKind === 'client_streaming' || method.methodKind === 'bidi_streaming',
      responseStream: method.methodKind === 'server_streaming' || method.methodKind === 'bidi_streaming',
      requestSerialize: serializerFor(method.input),
      requestDeserialize: deserializerFor(method.input),
      responseSerialize: serializerFor(method.output),
      responseDeserialize: deserializerFor(method.output),
    };
  }
  return definition;
}

/** Registers typed handlers of a protobuf-es service on a grpc-js server. */
export function addServiceHandlers<S extends DescService>(
  server: grpc.Server,
  service: S,
  handlers: ServiceHandlers<S>,
): void {
  server.addService(grpcServiceDefinition(service), handlers as unknown as grpc.UntypedServiceImplementation);
}

export interface ServiceClientSettings {
  channel: grpc.Channel;
  interceptors?: grpc.Interceptor[];
}

function callOptions(options: RpcOptions | undefined): grpc.CallOptions {
  const result: grpc.CallOptions = {};
  if (options?.deadline !== undefined) result.deadline = options.deadline;
  return result;
}

/** Builds a typed client of `service` over an existing channel (see `openOmniChannel`). */
export function createServiceClient<S extends DescService>(service: S, settings: ServiceClientSettings): ServiceClient<S> {
  const client = new grpc.Client('unused:0', grpc.credentials.createInsecure(), {
    channelOverride: settings.channel,
    interceptors: settings.interceptors ?? [],
  });
  // grpc-js's Client.close() would shut the shared channel down for every other client on it; the channel's
  // owner (openOmniChannel's close) ends it instead, so closing a service client only drops our reference.
  const methods: Record<string, unknown> = { close: () => undefined };
  for (const method of service.methods) {
    const path = methodPath(method);
    const serialize = serializerFor(method.input);
    const deserialize = deserializerFor(method.output);
    const build = (init: unknown) => create(method.input, init as MessageInitShape<DescMessage>);
    if (method.methodKind === 'unary') {
      methods[method.localName] = (request: unknown, options?: RpcOptions) =>
        new Promise((resolve, reject) => {
          const call = client.makeUnaryRequest(
            path,
            serialize,
            deserialize,
            build(request),
            options?.metadata ?? new grpc.Metadata(),
            callOptions(options),
            (err, value) => (err ? reject(err) : resolve(value)),
          );
          options?.signal?.addEventListener('abort', () => call.cancel(), { once: true });
        });
    } else if (method.methodKind === 'server_streaming') {
      methods[method.localName] = (request: unknown, options?: RpcOptions): ServerStream<unknown> => {
        const call = client.makeServerStreamRequest(
          path,
          serialize,
          deserialize,
          build(request),
          options?.metadata ?? new grpc.Metadata(),
          callOptions(options),
        );
        options?.signal?.addEventListener('abort', () => call.cancel(), { once: true });
        return {
          cancel: () => call.cancel(),
          [Symbol.asyncIterator]: () => call[Symbol.asyncIterator]() as AsyncIterator<unknown>,
        };
      };
    }
  }
  return methods as ServiceClient<S>;
}

/** Narrow check for grpc-js errors (status code + details). */
export function isServiceError(err: unknown): err is grpc.ServiceError {
  return typeof err === 'object' && err !== null && 'code' in err && typeof (err as { code: unknown }).code === 'number';
}
