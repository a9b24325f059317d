// Wiring of one Omni connection: channel from the endpoint URL, signing interceptor, the COSI State client and
// the management client (schematics, boot asset URLs).
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
  const interceptors = [signer];
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
