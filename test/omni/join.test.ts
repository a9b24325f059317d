import { describe, expect, it } from 'vitest';
import {
  buildConnectionParams,
  encodeJoinToken,
  goQueryEscape,
  joinModeFromDefinitions,
  readConnectionParams,
  siderolinkApiUrl,
} from '../../src/omni/join.js';
import { parseJoinToken, joinTokenValidFor } from '../../src/sim/omni/jointoken.js';
import { startOmniFixture } from './omni-fixture.js';

const PROVIDER_ONLY_V2 =
  'v2:eyJleHRyYV9kYXRhIjp7Im9tbmkuc2lkZXJvLmRldi9pbmZyYS1wcm92aWRlci1pZCI6InRlc3QifSwic2lnbmF0dXJlIjoiWTNpZ285V2xJSVZOWWpXZmgyWlg5NnpnWW5UQjlwWTI3ZEJaVnJwNDJMZz0ifQ==';
const WITH_REQUEST_V2 =
  'v2:eyJleHRyYV9kYXRhIjp7Im9tbmkuc2lkZXJvLmRldi9pbmZyYS1wcm92aWRlci1pZCI6InRlc3QiLCJvbW5pLnNpZGVyby5kZXYvbWFjaGluZS1yZXF1ZXN0IjoicmVxdWVzdDEifSwic2lnbmF0dXJlIjoiellrTFRwOUVIanlwTGxrZG1mZjV2Z1A1SERXRktUUXBGR281REp2TDV4MD0ifQ==';

describe('join tokens (Omni test vectors)', () => {
  it('encodes provider-only extra data', () => {
    expect(encodeJoinToken('abcd', 2, { 'omni.sidero.dev/infra-provider-id': 'test' })).toBe(PROVIDER_ONLY_V2);
  });

  it('encodes provider + request ID regardless of key insertion order', () => {
    expect(
      encodeJoinToken('abcd', 2, { 'omni.sidero.dev/machine-request': 'request1', 'omni.sidero.dev/infra-provider-id': 'test' }),
    ).toBe(WITH_REQUEST_V2);
    // v1 differs only in the prefix (same body and HMAC).
    expect(encodeJoinToken('abcd', 1, { 'omni.sidero.dev/infra-provider-id': 'test', 'omni.sidero.dev/machine-request': 'request1' })).toBe(
      `v1:${WITH_REQUEST_V2.slice(3)}`,
    );
  });

  it('leaves already-encoded tokens alone', () => {
    expect(encodeJoinToken(PROVIDER_ONLY_V2, 2, { x: 'y' })).toBe(PROVIDER_ONLY_V2);
  });

  it('produces tokens Omni accepts only with the right provider token', () => {
    const token = encodeJoinToken('s3cret', 2, { 'omni.sidero.dev/infra-provider-id': 'proxmox', 'omni.sidero.dev/machine-request': 'r<&>' });
    const parsed = parseJoinToken(token);
    expect(joinTokenValidFor(parsed, 's3cret')).toBe(true);
    expect(joinTokenValidFor(parsed, 'other')).toBe(false);
  });
});

describe('kernel args and join config', () => {
  const params = {
    joinToken: 'abcd',
    apiUrl: 'https://127.0.0.1:8099',
    eventsPort: 8091,
    logsPort: 8092,
    tokenVersion: 2 as const,
    grpcTunnel: true,
    extraData: { 'omni.sidero.dev/infra-provider-id': 'test', 'omni.sidero.dev/machine-request': 'request1' },
  };
  const escapedToken = WITH_REQUEST_V2.replace(/:/g, '%3A').replace(/=/g, '%3D');

  it('matches the Omni vector for provider test + request1 with the tunnel on', () => {
    const c = buildConnectionParams(params, true);
    expect(c.kernelArgs).toEqual([
      `siderolink.api=https://127.0.0.1:8099?grpc_tunnel=true&jointoken=${escapedToken}`,
      'talos.events.sink=[fdae:41e4:649b:9303::1]:8091',
      'talos.logging.kernel=tcp://[fdae:41e4:649b:9303::1]:8092',
    ]);
    expect(c.customDataEncoded).toBe(true);
  });

  it('renders the three Talos documents byte for byte like Omni', () => {
    const c = buildConnectionParams({ ...params, grpcTunnel: false }, true);
    expect(c.joinConfig).toBe(
      'apiVersion: v1alpha1\n' +
        'kind: SideroLinkConfig\n' +
        `apiUrl: https://127.0.0.1:8099?jointoken=${escapedToken}\n` +
        '---\n' +
        'apiVersion: v1alpha1\n' +
        'kind: EventSinkConfig\n' +
        "endpoint: '[fdae:41e4:649b:9303::1]:8091'\n" +
        '---\n' +
        'apiVersion: v1alpha1\n' +
        'kind: KmsgLogConfig\n' +
        'name: omni-kmsg\n' +
        'url: tcp://[fdae:41e4:649b:9303::1]:8092\n',
    );
  });

  it('keeps and re-sorts existing query parameters, Go-escaped', () => {
    expect(siderolinkApiUrl('grpc://omni.example:8090/?z=1&a=b c', 'abcd', false)).toBe('grpc://omni.example:8090/?a=b+c&jointoken=abcd&z=1');
    expect(goQueryEscape('a:b=c+d/e')).toBe('a%3Ab%3Dc%2Bd%2Fe');
  });

  it('refuses missing ports, URL or token without echoing the token', () => {
    expect(() => buildConnectionParams({ ...params, logsPort: 0 }, true)).toThrow(/logs_port/);
    expect(() => buildConnectionParams({ ...params, eventsPort: 0 }, true)).toThrow(/events_port/);
    expect(() => buildConnectionParams({ ...params, apiUrl: '' }, true)).toThrow(/URL/);
    expect(() => buildConnectionParams({ ...params, joinToken: '' }, true)).toThrow(/empty join token/);
  });
});

describe('join mode and reading from Omni', () => {
  it('picks v2 when ProviderJoinConfigs is defined', () => {
    expect(joinModeFromDefinitions(['machinerequests.omni.sidero.dev', 'providerjoinconfigs.omni.sidero.dev'])).toBe('v2');
    expect(joinModeFromDefinitions(['machinerequests.omni.sidero.dev'])).toBe('legacy');
  });

  it('v2: token is signed with the provider join token and names the request', async () => {
    const f = await startOmniFixture();
    try {
      const c = await readConnectionParams(f.client.state, { providerId: 'proxmox', mode: 'v2', requestId: 'set-abc123', grpcTunnel: false });
      const api = c.kernelArgs[0] ?? '';
      expect(api.startsWith('siderolink.api=https://127.0.0.1:8099?jointoken=v2%3A')).toBe(true);
      const token = decodeURIComponent(api.slice(api.indexOf('jointoken=') + 'jointoken='.length));
      const parsed = parseJoinToken(token);
      expect(parsed.extraData).toEqual({ 'omni.sidero.dev/infra-provider-id': 'proxmox', 'omni.sidero.dev/machine-request': 'set-abc123' });
      expect(joinTokenValidFor(parsed, f.omni.controllers.providerJoinToken)).toBe(true);
      // Omni registers a machine presenting this token against the request.
      const reg = f.omni.controllers.machineJoins('11111111-2222-3333-4444-555555555555', token);
      expect(reg.metadata.labels['omni.sidero.dev/machine-request']).toBe('set-abc123');
    } finally {
      await f.close();
    }
  });

  it('legacy: ConnectionParams and a v1 token', async () => {
    const f = await startOmniFixture({ legacy: true });
    try {
      const c = await readConnectionParams(f.client.state, { providerId: 'proxmox', mode: 'legacy', requestId: 'r1', grpcTunnel: true });
      expect(c.kernelArgs[0]).toMatch(/^siderolink\.api=https:\/\/127\.0\.0\.1:8099\?grpc_tunnel=true&jointoken=v1%3A/);
      expect(c.joinConfig).toContain('kind: SideroLinkConfig');
    } finally {
      await f.close();
    }
  });
});
