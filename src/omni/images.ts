// The Omni side of Talos images: builds a request's image-factory schematic, registers it (through Omni, or the
// factory directly on Omni < 1.8) and resolves the nocloud ISO URL plus the Go-compatible ISO cache key.
import { createHash } from 'node:crypto';
import { stringify as yamlStringify } from 'yaml';
import type { ManagementService } from '../gen/omni/management/management_pb.js';
import { BootAssetURLRequest_BootAssetKind } from '../gen/omni/management/management_pb.js';
import type { ServiceClient } from '../cosi/grpc.js';
import { FEATURES_CONFIG_ID, FeaturesConfigKind } from '../cosi/resources.js';
import { isUnimplemented, type CosiState } from '../cosi/state.js';
import { silentLogger, type Logger } from '../log.js';
import type { BootImage, ImageService, ProvisionRequest } from '../provision/step.js';

/** Extension every Proxmox VM gets (guest agent: IPs, shutdown). */
export const QEMU_GUEST_AGENT_EXTENSION = 'siderolabs/qemu-guest-agent';
/** Where the Go provider downloads from, and the default when Omni names no factory. */
export const DEFAULT_IMAGE_FACTORY_URL = 'https://factory.talos.dev';

/** Registering a schematic or resolving a boot asset failed; the message is for the operator. */
export class ImageError extends Error {
  override readonly name = 'ImageError';
}

/**
 * The schematic YAML for a request, as the image factory reads it (strict keys): official extensions =
 * qemu-guest-agent + the request's (de-duplicated, sorted); kernel args = the request's (sorted); meta values as given.
 * Connection parameters are deliberately absent: the per-request join token travels in the NoCloud seed instead, so
 * one schematic (and one cached ISO) serves every request with the same customization.
 */
export function schematicYaml(request: Pick<ProvisionRequest, 'extensions' | 'kernelArgs' | 'metaValues'>): string {
  const extensions = [...new Set([...(request.extensions ?? []), QEMU_GUEST_AGENT_EXTENSION])].sort();
  const kernelArgs = [...(request.kernelArgs ?? [])].sort();
  const customization: Record<string, unknown> = {};
  if (kernelArgs.length > 0) customization.extraKernelArgs = kernelArgs;
  const meta = request.metaValues ?? [];
  if (meta.length > 0) customization.meta = meta.map((m) => ({ key: m.key, value: m.value }));
  customization.systemExtensions = { officialExtensions: extensions };
  return yamlStringify({ customization });
}

/** `1.9.5` → `v1.9.5`; the factory serves versions with a leading `v`. */
export function normalizeTalosVersion(version: string): string {
  return version.startsWith('v') ? version : `v${version}`;
}

/**
 * ISO cache key (file name on Proxmox without `.iso`): sha256 hex of the URL the Go provider downloads,
 * `https://<factory host>/image/<schematic>/<talos version as in the request>/nocloud-<arch>.iso`. The Go provider
 * hashes the version verbatim (no `v` added), so we do too: ISOs it already downloaded are found and reused.
 */
export function isoCacheKey(factoryHost: string, schematicId: string, talosVersion: string, arch: string): string {
  const url = `https://${factoryHost}/image/${schematicId}/${talosVersion}/nocloud-${arch}.iso`;
  return createHash('sha256').update(url, 'utf8').digest('hex');
}

export interface OmniImageServiceOptions {
  state: CosiState;
  management: ServiceClient<typeof ManagementService>;
  logger?: Logger;
  /** Used when Omni's FeaturesConfig names no image factory. Default https://factory.talos.dev. */
  defaultFactoryUrl?: string;
  /** Timeout of a direct factory POST /schematics. Default 10 s (as Go). */
  factoryTimeoutMs?: number;
  /** HTTP client for the direct factory path (tests may pass their own); default global fetch. */
  fetch?: typeof fetch;
  /** Called before registering a schematic (a write to Omni or the factory); throwing refuses it (lease fencing). */
  writeGuard?: (what: string) => void;
}

/** ImageService backed by Omni's management API, with the fallbacks older Omni releases need. */
export class OmniImageService implements ImageService {
  private readonly log: Logger;
  private readonly defaultFactoryUrl: string;
  private readonly fetchImpl: typeof fetch;
  private readonly factoryTimeoutMs: number;
  /** Sticky capability flags, learned from UNIMPLEMENTED answers. */
  private rawSchematicUnsupported = false;
  private bootAssetUrlUnsupported = false;

  constructor(private readonly opts: OmniImageServiceOptions) {
    this.log = opts.logger ?? silentLogger;
    this.defaultFactoryUrl = (opts.defaultFactoryUrl ?? DEFAULT_IMAGE_FACTORY_URL).replace(/\/+$/, '');
    this.fetchImpl = opts.fetch ?? fetch;
    this.factoryTimeoutMs = opts.factoryTimeoutMs ?? 10_000;
  }

  async createSchematic(request: ProvisionRequest): Promise<string> {
    const yaml = schematicYaml(request);
    this.opts.writeGuard?.('registering a schematic');
    if (!this.rawSchematicUnsupported) {
      try {
        const res = await this.opts.management.createSchematicFromRaw({
          rawSchematic: new TextEncoder().encode(yaml),
          talosVersion: request.talosVersion,
        });
        if (res.schematicId === '') throw new ImageError('Omni returned an empty schematic ID');
        return res.schematicId;
      } catch (err) {
        if (!isUnimplemented(err)) throw this.wrap('registering the schematic with Omni failed', err);
        this.rawSchematicUnsupported = true;
        this.log.info('Omni has no CreateSchematicFromRaw (Omni < 1.8); registering schematics with the image factory directly');
      }
    }
    return this.postToFactory(yaml);
  }

  async bootImage(schematicId: string, talosVersion: string, arch: 'amd64' | 'arm64'): Promise<BootImage> {
    if (!this.bootAssetUrlUnsupported) {
      try {
        // Proxmox cannot send request headers when it downloads, so ask for a URL that works on its own.
        const res = await this.opts.management.getBootAssetURL({
          talosVersion: normalizeTalosVersion(talosVersion),
          schematicId,
          standaloneUrl: true,
          bootAssetKind: BootAssetURLRequest_BootAssetKind.ISO,
          platform: 'nocloud',
          architecture: arch,
        });
        if (res.url === '') throw new ImageError('Omni returned an empty boot asset URL');
        const host = res.imageFactoryHost !== '' ? res.imageFactoryHost : new URL(res.url).host;
        return { url: res.url, cacheKey: isoCacheKey(host, schematicId, talosVersion, arch) };
      } catch (err) {
        if (!isUnimplemented(err)) throw this.wrap('resolving the Talos ISO URL with Omni failed', err);
        this.bootAssetUrlUnsupported = true;
        this.log.info('Omni has no GetBootAssetURL; building image factory URLs from FeaturesConfig');
      }
    }
    const base = await this.factoryBaseUrl();
    const url = `${base}/image/${schematicId}/${normalizeTalosVersion(talosVersion)}/nocloud-${arch}.iso`;
    return { url, cacheKey: isoCacheKey(new URL(base).host, schematicId, talosVersion, arch) };
  }

  /** FeaturesConfig.image_factory_base_url, else the default factory. */
  async factoryBaseUrl(): Promise<string> {
    try {
      const features = await this.opts.state.find(FeaturesConfigKind, FEATURES_CONFIG_ID);
      const configured = features?.spec.imageFactoryBaseUrl ?? '';
      if (configured !== '') return configured.replace(/\/+$/, '');
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cannot read Omni FeaturesConfig; using the default image factory');
    }
    return this.defaultFactoryUrl;
  }

  private async postToFactory(yaml: string): Promise<string> {
    const base = await this.factoryBaseUrl();
    let res: Response;
    try {
      res = await this.fetchImpl(`${base}/schematics`, {
        method: 'POST',
        headers: { 'content-type': 'application/yaml' },
        body: yaml,
        signal: AbortSignal.timeout(this.factoryTimeoutMs),
      });
    } catch (err) {
      throw new ImageError(`image factory ${base} is unreachable: ${(err as Error).message}`, { cause: err });
    }
    const text = await res.text();
    if (res.status !== 200 && res.status !== 201) {
      throw new ImageError(`image factory ${base} rejected the schematic: HTTP ${res.status}: ${text.trim().slice(0, 300)}`);
    }
    let id: unknown;
    try {
      id = (JSON.parse(text) as { id?: unknown }).id;
    } catch {
      id = undefined;
    }
    if (typeof id !== 'string' || id === '') throw new ImageError(`image factory ${base} answered without a schematic ID`);
    return id;
  }

  private wrap(what: string, err: unknown): Error {
    if (err instanceof ImageError) return err;
    const details = (err as { details?: unknown }).details;
    const message = typeof details === 'string' && details !== '' ? details : err instanceof Error ? err.message : String(err);
    return new ImageError(`${what}: ${message}`, { cause: err });
  }
}
