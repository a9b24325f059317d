import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { OmniImageService, isoCacheKey, schematicYaml } from '../../src/omni/images.js';
import type { ProvisionRequest } from '../../src/provision/step.js';
import { startOmniFixture, type OmniFixture } from './omni-fixture.js';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

function request(overrides: Partial<ProvisionRequest> = {}): ProvisionRequest {
  return {
    id: 'workers-abc123',
    talosVersion: '1.9.5',
    providerData: {} as ProvisionRequest['providerData'],
    extensions: ['siderolabs/iscsi-tools', 'siderolabs/qemu-guest-agent', 'siderolabs/drbd'],
    kernelArgs: ['net.ifnames=0', 'console=ttyS0'],
    metaValues: [{ key: 10, value: 'zone: a' }],
    ...overrides,
  };
}

async function withImages<T>(
  opts: Parameters<typeof startOmniFixture>[0],
  run: (f: OmniFixture, images: OmniImageService) => Promise<T>,
): Promise<T> {
  const f = await startOmniFixture(opts);
  try {
    return await run(f, new OmniImageService({ state: f.client.state, management: f.client.management }));
  } finally {
    await f.close();
  }
}

describe('schematic YAML', () => {
  it('adds qemu-guest-agent once, sorts extensions and kernel args, keeps meta, no connection params', () => {
    const doc = parseYaml(schematicYaml(request())) as Record<string, unknown>;
    expect(doc).toEqual({
      customization: {
        extraKernelArgs: ['console=ttyS0', 'net.ifnames=0'],
        meta: [{ key: 10, value: 'zone: a' }],
        systemExtensions: { officialExtensions: ['siderolabs/drbd', 'siderolabs/iscsi-tools', 'siderolabs/qemu-guest-agent'] },
      },
    });
    expect(schematicYaml(request())).not.toMatch(/siderolink|jointoken/);
  });

  it('a bare request still gets the guest agent and nothing else', () => {
    expect(parseYaml(schematicYaml({}))).toEqual({ customization: { systemExtensions: { officialExtensions: ['siderolabs/qemu-guest-agent'] } } });
  });
});

describe('ISO cache key', () => {
  it('is the sha256 of the URL the Go provider downloads (version verbatim)', () => {
    const id = 'a'.repeat(64);
    expect(isoCacheKey('factory.talos.dev', id, '1.9.5', 'amd64')).toBe(
      sha256(`https://factory.talos.dev/image/${id}/1.9.5/nocloud-amd64.iso`),
    );
    expect(isoCacheKey('factory.talos.dev', id, 'v1.9.5', 'amd64')).not.toBe(isoCacheKey('factory.talos.dev', id, '1.9.5', 'amd64'));
  });
});

describe('OmniImageService', () => {
  it('registers through CreateSchematicFromRaw with the Talos version and uses the ID Omni returns', async () => {
    await withImages({}, async (f, images) => {
      const id = await images.createSchematic(request());
      const stored = f.omni.factory.registry.get(id);
      expect(stored).toMatchObject({ via: 'omni', talosVersion: '1.9.5' });
      expect(stored?.yaml).toBe(schematicYaml(request()));
      expect(f.omni.factory.requests.filter((r) => r.method === 'POST')).toHaveLength(0);
    });
  });

  it('falls back to POST <factory>/schematics when Omni lacks CreateSchematicFromRaw (< 1.8)', async () => {
    await withImages({ capabilities: { createSchematicFromRaw: false } }, async (f, images) => {
      const id = await images.createSchematic(request());
      expect(f.omni.factory.registry.get(id)).toMatchObject({ via: 'factory' });
      await images.createSchematic(request({ extensions: [] }));
      // The capability is learned once: the second call goes straight to the factory.
      expect(f.omni.callCounts()['/management.ManagementService/CreateSchematicFromRaw']).toBe(1);
      expect(f.omni.factory.requests.filter((r) => r.method === 'POST' && r.path === '/schematics')).toHaveLength(2);
    });
  });

  it('asks Omni for the nocloud ISO URL (GetBootAssetURL) and keys the cache by factory host', async () => {
    await withImages({}, async (f, images) => {
      const id = await images.createSchematic(request());
      const img = await images.bootImage(id, '1.9.5', 'amd64');
      expect(img.url).toBe(`${f.omni.factoryUrl}/image/${id}/v1.9.5/nocloud-amd64.iso`);
      expect(img.cacheKey).toBe(sha256(`https://${new URL(f.omni.factoryUrl).host}/image/${id}/1.9.5/nocloud-amd64.iso`));
      const res = await fetch(img.url);
      expect(res.status).toBe(200);
    });
  });

  it('builds the URL from FeaturesConfig when GetBootAssetURL is unimplemented', async () => {
    await withImages({ capabilities: { getBootAssetUrl: false } }, async (f, images) => {
      const id = await images.createSchematic(request());
      const img = await images.bootImage(id, '1.10.0', 'arm64');
      expect(img.url).toBe(`${f.omni.factoryUrl}/image/${id}/v1.10.0/nocloud-arm64.iso`);
      expect(img.cacheKey).toBe(isoCacheKey(new URL(f.omni.factoryUrl).host, id, '1.10.0', 'arm64'));
    });
  });

  it('reports a factory rejection with its reason', async () => {
    await withImages({ capabilities: { createSchematicFromRaw: false } }, async (_f, images) => {
      const bad = { ...request(), metaValues: [{ key: 999, value: 'x' }] };
      await expect(images.createSchematic(bad)).rejects.toThrow(/rejected the schematic: HTTP 400/);
    });
  });
});
