// Wiring of one Omni connection: channel from the endpoint URL, signing interceptor, the COSI State client and
// the management client (schematics, boot asset URLs), and an optional observer of every call's outcome.
import * as grpc from '@grpc/grpc-js';
import { ManagementService } from '../gen/omni/management/management_pb.js';
import { State } from '../gen/cosi/v1alpha1/state_pb.js';
import type { Logger } from '../log.js';
import { createServiceClient, openOmniChannel, type ChannelSettings, type OmniEndpoint, type ServiceClient } from './grpc.js';
import { signingInterceptor, type ServiceAccountKey } from './signing.js';
import { CosiState, type CosiStateOptions } from './state.js';

export interface OmniClientOptions extends ChannelSettings {
  /** `--omni-api-endpoint`, e.g. https://omni.example.com. */
  endpoint: string;
  /** Decoded service-account key; without it calls go out unsigned (Omni's local resource server only). */
  key?: ServiceAccountKey;
  /** Provider ID, sent as `providerid` on State calls. */
  providerId?: string;
  logger?: Logger;
  state?: Omit<CosiStateOptions, 'logger'>;
  /** Clock used for signature timestamps (tests). */
  now?: () => Date;
  /**
   * Told when each call ends (a stream when it closes): the full method path (`/cosi.resource.State/Get`), the
   * gRPC status code name (`OK`, `UNAVAILABLE`, ...) and the seconds since the call started. For metrics.
   */
  onRpc?: (method: string, code: string, seconds: number) => void;
}

export interface OmniClient {
  readonly endpoint: OmniEndpoint;
  readonly state: CosiState;
  readonly management: ServiceClient<typeof ManagementService>;
  close(): void;
}

export function connectOmni(opts: OmniClientOptions): OmniClient {
  const channel = openOmniChannel(opts.endpoint, opts);
  const signer = signingInterceptor(opts.key, {
    ...(opts.providerId !== undefined ? { providerId: opts.providerId } : {}),
    ...(opts.now !== undefined ? { now: opts.now } : {}),
    ...(opts.logger !== undefined ? { logger: opts.logger } : {}),
  });
  // The observer is outermost, so it also sees calls the signer refuses to start.
  const interceptors = opts.onRpc ? [rpcOutcomeInterceptor(opts.onRpc), signer] : [signer];
  const stateRpc = createServiceClient(State, { channel: channel.channel, interceptors });
  const management = createServiceClient(ManagementService, { channel: channel.channel, interceptors });
  const state = new CosiState(stateRpc, { ...opts.state, ...(opts.logger !== undefined ? { logger: opts.logger } : {}) });
  return {
    endpoint: channel.endpoint,
    state,
    management,
    close: () => {
      stateRpc.close();
      management.close();
      channel.close();
    },
  };
}

/** A grpc-js client interceptor reporting each call's method, final status code name and duration to `onRpc`. */
export function rpcOutcomeInterceptor(onRpc: (method: string, code: string, seconds: number) => void): grpc.Interceptor {
  return (options, nextCall) => {
    const method = options.method_definition.path;
    let started = 0;
    return new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        started = performance.now();
        next(metadata, {
          onReceiveStatus(status, nextStatus) {
            try {
              onRpc(method, grpcCodeName(status.code), (performance.now() - started) / 1000);
            } catch {
              // An observer must not change the call's result.
            }
            nextStatus(status);
          },
        });
      },
    });
  };
}

/** `UNAVAILABLE` for 14; the number itself for a code grpc-js does not name. */
export function grpcCodeName(code: number): string {
  const name = (grpc.status as unknown as Record<number, string | undefined>)[code];
  return typeof name === 'string' ? name : String(code);
}
