// Routes below /nodes/{node}/storage: status list, content list/get/delete, download-url and upload.
import { createHash } from 'node:crypto';
import { paramError, permissionError, serverError } from '../errors.js';
import type { Route, RouteContext } from '../routing.js';
import type { PveSim } from '../sim.js';
import { fileBasedTypes, type SimStorage } from '../state.js';
import { nodeSpec, storageSpec, vmidSpec, type ParamSpec } from '../validate.js';
import { storageStatus } from './views.js';

const contentSpec: ParamSpec = { type: 'string', optional: true, pattern: /^(images|rootdir|vztmpl|iso|backup|snippets|import)([,;\s]+(images|rootdir|vztmpl|iso|backup|snippets|import))*$/ };
const uploadContent = ['iso', 'vztmpl', 'import'];
const checksumAlgorithms = ['md5', 'sha1', 'sha224', 'sha256', 'sha384', 'sha512'];
const extensions: Record<string, RegExp> = {
  iso: /\.(iso|img)$/i,
  vztmpl: /\.tar\.(gz|xz|zst|bz2)$/i,
  import: /\.(ova|ovf|qcow2|raw|vmdk|img)$/i,
};

export const storageRoutes: Route[] = [
  {
    method: 'GET',
    pattern: '/nodes/{node}/storage',
    schema: {
      node: nodeSpec,
      content: contentSpec,
      enabled: { type: 'boolean', optional: true },
      storage: { ...storageSpec, optional: true },
      target: { ...nodeSpec, optional: true },
      format: { type: 'boolean', optional: true },
    },
    handler: ({ sim, caller, node, params }) => {
      const st = sim.state;
      const n = node!.name;
      const wantContent = params['content'] === undefined ? undefined : String(params['content']).split(/[,;\s]+/);
      const out: Record<string, unknown>[] = [];
      for (const s of st.storages.values()) {
        if (params['storage'] !== undefined && s.id !== params['storage']) continue;
        const path = `/storage/${s.id}`;
        if (!sim.access.has(caller, path, 'Datastore.Audit') && !sim.access.has(caller, path, 'Datastore.AllocateSpace')) continue;
        const enabled = st.enabledOn(s, n);
        if (wantContent && (!enabled || !wantContent.every((c) => s.content.has(c)))) continue;
        if (params['enabled'] === 1 && !enabled) continue;
        if (params['target'] !== undefined && !s.shared) continue;
        const active = st.activeOn(s, n);
        const u = active ? st.usage(s, n) : { total: 0, used: 0, avail: 0 };
        const entry: Record<string, unknown> = {
          storage: s.id,
          type: s.type,
          content: storageStatus(s).content,
          enabled: enabled ? 1 : 0,
          active: active ? 1 : 0,
          shared: s.shared ? 1 : 0,
          total: u.total,
          used: u.used,
          avail: u.avail,
        };
        if (active && u.total > 0) entry['used_fraction'] = u.used / u.total;
        out.push(entry);
      }
      return sim.order(out);
    },
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/storage/{storage}/content',
    schema: { node: nodeSpec, storage: storageSpec, content: contentSpec, vmid: { ...vmidSpec, optional: true } },
    handler: ({ sim, caller, node, params }) => {
      const n = node!.name;
      const s = sim.state.storageOn(String(params['storage']), n);
      sim.access.checkAny(caller, `/storage/${s.id}`, ['Datastore.Audit', 'Datastore.AllocateSpace']);
      if (!sim.state.activeOn(s, n)) throw serverError(`storage '${s.id}' is not online`);
      const out: Record<string, unknown>[] = [];
      for (const v of sim.state.volumeMap(s, n).values()) {
        if (params['content'] !== undefined && v.content !== params['content']) continue;
        if (params['vmid'] !== undefined && v.vmid !== params['vmid']) continue;
        const e: Record<string, unknown> = { volid: v.volid, content: v.content, format: v.format, size: v.size, ctime: v.ctime };
        if (v.vmid !== undefined) Object.assign(e, { vmid: v.vmid, used: v.size });
        out.push(e);
      }
      return sim.order(out);
    },
  },
  {
    method: 'GET',
    pattern: '/nodes/{node}/storage/{storage}/content/{volume*}',
    schema: { node: nodeSpec, storage: storageSpec, volume: { type: 'string' } },
    handler: ({ sim, caller, node, params }) => {
      const n = node!.name;
      const { s, name, volid } = resolveVolume(sim, n, String(params['storage']), String(params['volume']));
      const path = `/storage/${s.id}`;
      if (/^(iso|vztmpl)\//.test(name)) sim.access.checkAny(caller, path, ['Datastore.Audit', 'Datastore.AllocateSpace', 'Datastore.Allocate']);
      else sim.access.check(caller, path, 'Datastore.Allocate');
      const v = sim.state.volumeMap(s, n).get(name);
      if (!v) throw serverError(`volume_size_info on '${volid}' failed - no format`);
      return { path: sim.state.volumePath(s, name), size: v.size, used: v.size, format: v.format };
    },
  },
  {
    method: 'DELETE',
    pattern: '/nodes/{node}/storage/{storage}/content/{volume*}',
    schema: { node: nodeSpec, storage: storageSpec, volume: { type: 'string' }, delay: { type: 'integer', optional: true, minimum: 1, maximum: 30 } },
    handler: async ({ sim, caller, node, params }) => {
      const n = node!.name;
      const { s, name, volid } = resolveVolume(sim, n, String(params['storage']), String(params['volume']));
      sim.access.check(caller, `/storage/${s.id}`, 'Datastore.Allocate');
      const v = sim.state.volumeMap(s, n).get(name);
      const id = v?.vmid !== undefined ? `${v.vmid}@${s.id}` : s.id;
      const task = sim.taskBoard.start({
        node: n,
        type: 'imgdel',
        id,
        caller,
        work: (log) => {
          if (!sim.state.volumeMap(s, n).delete(name)) {
            throw new Error(`unable to delete '${sim.state.volumePath(s, name)}' - No such file or directory`);
          }
          log(`Removed volume '${volid}'`);
        },
      });
      const delay = params['delay'];
      if (delay !== undefined && (await waitForTask(sim, task.upid, n, Number(delay) * 1000))) return null;
      return task.upid;
    },
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/storage/{storage}/download-url',
    schema: {
      node: nodeSpec,
      storage: storageSpec,
      url: { type: 'string', pattern: /^https?:\/\/.*/ },
      content: { type: 'string', enum: uploadContent },
      filename: { type: 'string', maxLength: 255 },
      checksum: { type: 'string', optional: true },
      'checksum-algorithm': { type: 'string', optional: true, enum: checksumAlgorithms },
      compression: { type: 'string', optional: true, enum: ['zst', 'gz', 'lzo'] },
      'verify-certificates': { type: 'boolean', optional: true },
    },
    handler: (ctx) => download(ctx),
  },
  {
    method: 'POST',
    pattern: '/nodes/{node}/storage/{storage}/upload',
    upload: true,
    csrfExempt: true,
    schema: {
      node: nodeSpec,
      storage: storageSpec,
      content: { type: 'string', enum: uploadContent },
      filename: { type: 'string', maxLength: 255 },
      checksum: { type: 'string', optional: true },
      'checksum-algorithm': { type: 'string', optional: true, enum: checksumAlgorithms },
      tmpfilename: { type: 'string', optional: true },
    },
    handler: (ctx) => upload(ctx),
  },
];

function resolveVolume(sim: PveSim, node: string, sid: string, volume: string): { s: SimStorage; name: string; volid: string } {
  const parsed = sim.state.parseVolid(volume, sid);
  const s = sim.state.storageOn(parsed.sid, node);
  return { s, name: parsed.name, volid: `${s.id}:${parsed.name}` };
}

/** PVE's normalisation: the path is dropped and every character outside [A-Za-z0-9_.-] becomes `_`. */
function normaliseFilename(name: string): string {
  const base = name.split(/[\\/]/).pop() ?? '';
  return base.replace(/[^A-Za-z0-9_.-]/g, '_');
}

function checkChecksumPair(params: RouteContext['params']): void {
  const hasSum = params['checksum'] !== undefined;
  const hasAlg = params['checksum-algorithm'] !== undefined;
  if (hasSum && !hasAlg) throw paramError({ 'checksum-algorithm': "missing 'checksum-algorithm' for 'checksum'" });
  if (hasAlg && !hasSum) throw paramError({ checksum: "missing 'checksum' for 'checksum-algorithm'" });
}

function uploadTarget(sim: PveSim, node: string, sid: string, content: string, verb: 'download' | 'upload'): SimStorage {
  const s = sim.state.storageOn(sid, node);
  if (!s.content.has(content)) {
    throw serverError(
      verb === 'download' ? `storage '${sid}' is not configured for content-type '${content}'` : `storage '${sid}' does not support '${content}' content`,
    );
  }
  if (!fileBasedTypes.has(s.type)) throw serverError(`can't upload to storage type '${s.type}', not a file based storage!`);
  return s;
}

/** The bytes a fake download produces: deterministic per URL, so a test can compute their checksum. */
export function downloadedBytes(url: string, size: number): Buffer {
  const block = createHash('sha256').update(url).digest();
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += block.length) block.copy(out, i, 0, Math.min(block.length, size - i));
  return out;
}

function download({ sim, caller, node, params }: RouteContext): string {
  const n = node!.name;
  const sid = String(params['storage']);
  const content = String(params['content']);
  sim.access.check(caller, `/storage/${sid}`, 'Datastore.AllocateTemplate');
  const viaNetwork = sim.profile.accessNetworkPrivilege && sim.access.has(caller, `/nodes/${n}`, 'Sys.AccessNetwork');
  if (!viaNetwork) {
    sim.access.check(caller, '/', 'Sys.Audit');
    if (!sim.access.has(caller, '/', 'Sys.Modify')) {
      throw sim.profile.accessNetworkPrivilege ? permissionError(`/nodes/${n}`, 'Sys.AccessNetwork') : permissionError('/', 'Sys.Modify');
    }
  }
  checkChecksumPair(params);
  const filename = normaliseFilename(String(params['filename']));
  if (!extensions[content]!.test(filename)) throw paramError({ filename: 'wrong file extension' });
  const s = uploadTarget(sim, n, sid, content, 'download');
  const url = String(params['url']);
  const name = `${content}/${filename}`;
  const path = sim.state.volumePath(s, name);
  const failure = sim.downloadFailures.shift();
  // PVE::Tools::download_file_from_url looks for the file when the worker starts (not when it ends): an existing file
  // fails it at once; two overlapping downloads of one file both pass, each writes its own temporary file and renames
  // it into place at its end, so both succeed and the later one replaces the earlier one's file.
  const existedAtStart = sim.state.volumeMap(s, n).has(name) && params['checksum'] === undefined;
  const task = sim.taskBoard.start({
    node: n,
    type: 'download',
    id: encodeTaskId(filename),
    caller,
    ...(existedAtStart ? { durationMs: 0 } : {}),
    work: (log) => {
      log(`downloading ${url} to ${path}`);
      if (existedAtStart) throw new Error(`refusing to override existing file '${path}'`);
      if (failure !== undefined) throw new Error(`download failed: ${failure}`);
      if (!sim.state.activeOn(s, n)) throw new Error(`download failed: storage '${sid}' is not online`);
      const size = sim.downloadSizeBytes;
      if (size > sim.state.usage(s, n).avail) throw new Error(`download failed: write error: No space left on device`);
      if (params['checksum'] !== undefined) {
        const got = createHash(String(params['checksum-algorithm'])).update(downloadedBytes(url, size)).digest('hex');
        const want = String(params['checksum']).toLowerCase();
        if (got !== want) throw new Error(`checksum mismatch: got '${got}' != expect '${want}'`);
        log(`calculating checksum...OK, checksum verified`);
      }
      sim.state.volumeMap(s, n).delete(name);
      sim.state.addVolume(s, n, { name, content, format: content === 'iso' ? 'iso' : 'raw', size, ctime: Math.floor(sim.clock.now() / 1000) });
      log(`download of '${url}' to '${path}' finished`);
    },
  });
  return task.upid;
}

function upload({ sim, caller, node, params, upload }: RouteContext): string {
  const target = node!.name;
  const sid = String(params['storage']);
  const content = String(params['content']);
  sim.access.check(caller, `/storage/${sid}`, 'Datastore.AllocateTemplate');
  checkChecksumPair(params);
  const filename = normaliseFilename(String(params['filename']));
  if (!extensions[content]!.test(filename)) throw paramError({ filename: 'wrong file extension' });
  const s = uploadTarget(sim, target, sid, content, 'upload');
  const data = upload!.data;
  const name = `${content}/${filename}`;
  const path = sim.state.volumePath(s, name);
  // The worker runs on the node that received the request; it copies the file to {node} when they differ.
  const task = sim.taskBoard.start({
    node: sim.state.entryNode,
    type: 'imgcopy',
    id: '',
    caller,
    work: (log) => {
      log(`starting file import from: /var/tmp/pveupload-${sim.rng.hex(16)}`);
      if (params['checksum'] !== undefined) {
        const got = createHash(String(params['checksum-algorithm'])).update(data).digest('hex');
        const want = String(params['checksum']).toLowerCase();
        if (got !== want) throw new Error(`checksum mismatch: got '${got}' != expect '${want}'`);
        log('calculating checksum...OK, checksum verified');
      }
      const existing = sim.state.volumeMap(s, target).get(name)?.size ?? 0;
      if (data.length - existing > sim.state.usage(s, target).avail) throw new Error('import failed: No space left on device');
      if (target !== sim.state.entryNode) log(`target node: ${target}`);
      log(`target file: ${path}`);
      log(`file size is: ${data.length}`);
      sim.state.volumeMap(s, target).delete(name);
      sim.state.addVolume(s, target, { name, content, format: content === 'iso' ? 'iso' : 'raw', size: data.length, ctime: Math.floor(sim.clock.now() / 1000), data });
      log('finished file import successfully');
    },
  });
  return task.upid;
}

/** `:`, `%` and non-printable characters percent-encoded, as PVE does for task ids. */
function encodeTaskId(s: string): string {
  return s.replace(/[:%\x00-\x1f\x7f-\xff]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'));
}

/**
 * Waits up to `maxMs` (simulated) for a task; true when it ended OK in time. With a manual clock the task is
 * completed early instead of waiting, when its remaining time fits.
 */
export async function waitForTask(sim: PveSim, upid: string, node: string, maxMs: number): Promise<boolean> {
  const t = sim.taskBoard.find(node, upid);
  if (!t) return false;
  const remaining = t.dueAtMs - sim.clock.now();
  if (remaining > maxMs) return false;
  if ('advance' in sim.clock) t.dueAtMs = sim.clock.now();
  else await sim.clock.sleep(remaining + 1);
  sim.tick();
  return t.status === 'stopped' && (t.exitstatus === 'OK' || /^WARNINGS: \d+$/.test(t.exitstatus ?? ''));
}
