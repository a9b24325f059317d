// Cross-check: the provider's own signer (src/cosi/signing.ts) and the in-process Omni's verifier were written
// independently; a call signed by one must pass the other, and a skewed client clock must not.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createServiceClient, isServiceError, openOmniChannel, type OmniChannel } from '../../src/cosi/grpc.js';
import { decodeServiceAccountKey, signingInterceptor } from '../../src/cosi/signing.js';
import { State } from '../../src/gen/cosi/v1alpha1/state_pb.js';
import { ManagementService } from '../../src/gen/omni/management/management_pb.js';
import { NS, TYPES } from '../../src/sim/omni/resources.js';
import { startInProcessOmni, type InProcessOmni } from '../../src/sim/omni/server.js';

describe('provider signer against the in-process Omni', () => {
  let omni: InProcessOmni;
  let keyString = '';
  const channels: OmniChannel[] = [];
  // One channel per test: closing a service client also closes the channel it runs on.
  const newChannel = () => {
    const channel = openOmniChannel(omni.endpoint);
    channels.push(channel);
    return channel;
  };

  beforeAll(async () => {
    omni = await startInProcessOmni({ providerId: 'proxmox' });
    keyString = await omni.createProviderKey('proxmox');
  });

  afterAll(async () => {
    for (const channel of channels) channel.close();
    await omni.close();
  });

  it('accepts State and Management calls signed by the provider interceptor', async () => {
    const key = await decodeServiceAccountKey(keyString, { providerId: 'proxmox' });
    const interceptors = [signingInterceptor(key, { providerId: 'proxmox' })];
    const channel = newChannel();
    const state = createServiceClient(State, { channel: channel.channel, interceptors });
    const mgmt = createServiceClient(ManagementService, { channel: channel.channel, interceptors });
    try {
      const res = await state.get({ namespace: NS.infraProvider, type: TYPES.providerJoinConfig, id: 'proxmox' });
      expect(res.resource?.metadata?.id).toBe('proxmox');
      const ids: string[] = [];
      for await (const item of state.list({ namespace: NS.meta, type: TYPES.resourceDefinition })) ids.push(item.resource?.metadata?.id ?? '');
      expect(ids.length).toBeGreaterThan(5);
      const schematic = await mgmt.createSchematicFromRaw({ rawSchematic: new TextEncoder().encode('customization: {}\n') });
      expect(schematic.schematicId).toMatch(/^[0-9a-f]{64}$/);
    } finally {
      state.close();
      mgmt.close();
    }
  });

  it('rejects calls from a client whose clock is ten minutes behind', async () => {
    const key = await decodeServiceAccountKey(keyString, { providerId: 'proxmox' });
    const late = () => new Date(Date.now() - 10 * 60 * 1000);
    const state = createServiceClient(State, { channel: newChannel().channel, interceptors: [signingInterceptor(key, { now: late })] });
    try {
      const err = await state.get({ namespace: NS.infraProvider, type: TYPES.infraProvider, id: 'proxmox' }).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(isServiceError(err) && err.code).toBe(grpc.status.UNAUTHENTICATED);
    } finally {
      state.close();
    }
  });
});
