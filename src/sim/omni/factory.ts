// The fake Talos image factory: a schematic registry (strict YAML, ID = sha256 of the received bytes) shared with
// Omni's CreateSchematicFromRaw, and an HTTP server on 127.0.0.1 for POST /schematics and GET /image/... downloads.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { parse as parseYaml } from 'yaml';
import { silentLogger, type Logger } from '../../log.js';

export interface StoredSchematic {
  id: string;
  yaml: string;
  /** Talos version named when it was created through Omni (empty otherwise). */
  talosVersion: string;
  via: 'factory' | 'omni';
}

const TOP_KEYS = new Set(['overlay', 'customization', 'owner']);
const CUSTOMIZATION_KEYS = new Set([
  'extraKernelArgs',
  'meta',
  'systemExtensions',
  'secureboot',
  'bootloader',
  'embeddedMachineConfiguration',
  'diskImage',
]);
const OVERLAY_KEYS = new Set(['image', 'name', 'options']);

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function checkKeys(where: string, value: unknown, allowed: Set<string>): void {
  if (value === undefined || value === null) return;
  if (!isRecord(value)) throw new Error(`${where}: expected a mapping`);
  for (const key of Object.keys(value)) {
    if (!allowed.has(key)) throw new Error(`${where}: field ${key} not found in type`);
  }
}

function checkStrings(where: string, value: unknown): void {
  if (value === undefined || value === null) return;
  if (!Array.isArray(value) || !value.every((v) => typeof v === 'string')) throw new Error(`${where}: expected a list of strings`);
}

/** Decodes a schematic strictly (unknown keys rejected, as the factory and Omni do). Throws with the reason. */
export function validateSchematicYaml(text: string): void {
  const doc: unknown = parseYaml(text, { uniqueKeys: true });
  if (doc === null || doc === undefined) return;
  checkKeys('schematic', doc, TOP_KEYS);
  const root = doc as Record<string, unknown>;
  checkKeys('overlay', root.overlay, OVERLAY_KEYS);
  checkKeys('customization', root.customization, CUSTOMIZATION_KEYS);
  const custom = isRecord(root.customization) ? root.customization : {};
  checkStrings('customization.extraKernelArgs', custom.extraKernelArgs);
  if (custom.systemExtensions !== undefined && custom.systemExtensions !== null) {
    checkKeys('customization.systemExtensions', custom.systemExtensions, new Set(['officialExtensions']));
    checkStrings('customization.systemExtensions.officialExtensions', (custom.systemExtensions as Record<string, unknown>).officialExtensions);
  }
  if (custom.meta !== undefined && custom.meta !== null) {
    if (!Array.isArray(custom.meta)) throw new Error('customization.meta: expected a list');
    for (const m of custom.meta) {
      checkKeys('customization.meta[]', m, new Set(['key', 'value']));
      const entry = m as Record<string, unknown>;
      if (typeof entry.key !== 'number' || !Number.isInteger(entry.key) || entry.key < 0 || entry.key > 255) {
        throw new Error('customization.meta[].key: expected an integer 0..255');
      }
      if (entry.value !== undefined && typeof entry.value !== 'string') throw new Error('customization.meta[].value: expected a string');
    }
  }
}

export class SchematicRegistry {
  private readonly byId = new Map<string, StoredSchematic>();

  /** Validates and stores a schematic; its ID is the SHA-256 hex of the received bytes. */
  register(raw: Uint8Array, via: StoredSchematic['via'], talosVersion = ''): StoredSchematic {
    const yaml = Buffer.from(raw).toString('utf8');
    validateSchematicYaml(yaml);
    const id = createHash('sha256').update(raw).digest('hex');
    const stored: StoredSchematic = { id, yaml, talosVersion, via };
    this.byId.set(id, stored);
    return stored;
  }

  get(id: string): StoredSchematic | undefined {
    return this.byId.get(id);
  }

  all(): StoredSchematic[] {
    return [...this.byId.values()];
  }
}

/** Deterministic stand-in for an image: the same path always yields the same bytes. */
export function imageBytes(path: string, size = 64 * 1024): Buffer {
  const out = Buffer.alloc(size);
  let block = createHash('sha256').update(path).digest();
  for (let off = 0; off < size; off += block.length) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

export interface FactoryRequest {
  method: string;
  path: string;
  status: number;
}

export interface ImageFactory {
  url: string;
  registry: SchematicRegistry;
  /** Every request served, in order (for assertions). */
  requests: FactoryRequest[];
  close(): Promise<void>;
}

export interface ImageFactoryOptions {
  registry?: SchematicRegistry;
  logger?: Logger;
  /** Size of served images in bytes (default 64 KiB). */
  imageSize?: number;
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Starts the fake factory on 127.0.0.1 (ephemeral port). */
export async function startImageFactory(opts: ImageFactoryOptions = {}): Promise<ImageFactory> {
  const registry = opts.registry ?? new SchematicRegistry();
  const logger = opts.logger ?? silentLogger;
  const requests: FactoryRequest[] = [];
  const imageSize = opts.imageSize ?? 64 * 1024;

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<number> => {
    const path = new URL(req.url ?? '/', 'http://factory').pathname;
    if (req.method === 'POST' && path === '/schematics') {
      const body = await readBody(req);
      try {
        const stored = registry.register(body, 'factory');
        res.writeHead(201, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: stored.id, schematic: stored.yaml }));
        return 201;
      } catch (err) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`invalid schematic: ${(err as Error).message}\n`);
        return 400;
      }
    }
    const image = /^\/image\/([0-9a-f]{64})\/([^/]+)\/([^/]+)$/.exec(path);
    if ((req.method === 'GET' || req.method === 'HEAD') && image) {
      const schematic = image[1] ?? '';
      if (!registry.get(schematic)) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('schematic not found\n');
        return 404;
      }
      const bytes = imageBytes(path, imageSize);
      res.writeHead(200, {
        'content-type': 'application/octet-stream',
        'content-length': String(bytes.length),
        'content-disposition': `attachment; filename="${image[3] ?? 'image'}"`,
      });
      res.end(req.method === 'HEAD' ? undefined : bytes);
      return 200;
    }
    res.writeHead(404, { 'content-type': 'text/plain' });
    res.end('not found\n');
    return 404;
  };

  const server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://factory').pathname;
    handle(req, res)
      .then((status) => {
        requests.push({ method: req.method ?? '', path, status });
        logger.debug({ method: req.method, path, status }, 'image factory request');
      })
      .catch((err: unknown) => {
        requests.push({ method: req.method ?? '', path, status: 500 });
        if (!res.headersSent) res.writeHead(500);
        res.end(String((err as Error).message));
      });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    registry,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
