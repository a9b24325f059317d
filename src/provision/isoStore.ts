// ISO volumes on Proxmox storage: choosing the ISO storage, downloading the Talos ISO once per (storage, file),
// uploading and removing NoCloud seeds.
import { createHash } from 'node:crypto';
import type { Logger } from '../log.js';
import { STEP_READ_MS, type PveClient } from '../proxmox/client.js';
import { isNotFound, PveTaskError } from '../proxmox/errors.js';
import type { TaskResult } from '../proxmox/tasks.js';
import { parseUpid } from '../proxmox/upid.js';
import type { StorageEntry } from '../proxmox/types.js';
import { StepFailure } from './step.js';
import { storageSlot, TaskSlots } from './taskSlots.js';

/** Waits for a task; `fresh`: it was started just before (its duration may be learned, see TaskDurations). */
type WaitTask = (upid: string, signal?: AbortSignal, fresh?: boolean) => Promise<TaskResult>;

/** Deterministic ISO storage preference: shared first (usable from every node), then by name. */
export function rankIsoStorages(list: readonly StorageEntry[]): StorageEntry[] {
  return list
    .filter((s) => s.enabled && s.active && s.content.split(',').map((c) => c.trim()).includes('iso'))
    .sort((a, b) => Number(b.shared) - Number(a.shared) || (a.storage < b.storage ? -1 : a.storage > b.storage ? 1 : 0));
}

/** `local:iso/x.iso` → `{ storage: 'local', name: 'x.iso' }`; undefined for anything but an ISO volume ID. */
export function parseIsoVolid(volid: string): { storage: string; name: string } | undefined {
  const m = /^([^:]+):iso\/(.+)$/.exec(volid);
  return m ? { storage: m[1]!, name: m[2]! } : undefined;
}

/** `local:iso/x.iso` → `x.iso`; a bare name is returned as is. */
export function isoFileName(volid: string): string {
  return parseIsoVolid(volid)?.name ?? volid;
}

/**
 * The NoCloud seed name of VM `vmid` as go-proxmox's `CloudInit` gives it (`user-data-<vmid>.iso`; the Go provider
 * uploads it to the node's first ISO storage, attaches it to ide0 and tags the VM `GO_SEED_TAG`). Ours has the same
 * name, so that go-proxmox's VM delete removes it too (see ProxmoxProvisioner's startVm).
 */
export function goSeedFileName(vmid: number): string {
  return `user-data-${vmid}.iso`;
}

/**
 * The VM tag go-proxmox's `CloudInit` adds; its `VirtualMachine.Delete` then removes `user-data-<vmid>.iso` before it
 * deletes the VM (go-proxmox v0.3.2 `virtual_machine.go` `deleteCloudInitISO`: on the node's first ISO storage in API
 * order; from v0.6.0 on every enabled ISO storage of the node).
 */
export const GO_SEED_TAG = 'go-proxmox+cloud-init';

export interface DownloadOptions {
  node: string;
  storage: string;
  url: string;
  filename: string;
  attempts: number;
  log: Logger;
  signal?: AbortSignal | undefined;
  /** Before each download-url call this one starts (write-ahead record); a rejection stops the download. */
  onStarting?: () => Promise<void>;
  /** The download task's UPID, as soon as Proxmox answered. */
  onStarted?: (upid: string) => Promise<void>;
}

export class IsoStore {
  /** In-flight downloads by storage (+ node for local storage) and file name. */
  readonly #downloads = new Map<string, Promise<string>>();
  /** The node whose API we talk to (see #uploadNode). */
  #entryNode: Promise<string | undefined> | undefined;

  constructor(
    private readonly pve: PveClient,
    private readonly wait: WaitTask,
    /** Slots per Proxmox write (downloads per storage, uploads and removals per node). */
    private readonly slots: TaskSlots = new TaskSlots(),
  ) {}

  async chooseIsoStorage(node: string): Promise<string> {
    const list = await this.pve.storageList(node, { content: 'iso', enabled: true, maxAgeMs: STEP_READ_MS });
    const best = rankIsoStorages(list)[0];
    if (!best) {
      const seen = list.map((s) => `${s.storage} (content=${s.content}, ${s.active ? 'active' : 'inactive'})`).join(', ');
      throw new StepFailure(
        `uploadISO: node ${node} has no enabled, active storage that allows ISO images${seen ? `; storages: ${seen}` : ''}`,
      );
    }
    return best.storage;
  }

  /** The first ISO storage of `node` (our preference order) that holds `filename`, if any. */
  async findIso(node: string, filename: string): Promise<string | undefined> {
    for (const s of rankIsoStorages(await this.pve.storageList(node, { content: 'iso', enabled: true, maxAgeMs: STEP_READ_MS }))) {
      if (await this.#hasVolume(node, s.storage, `${s.storage}:iso/${filename}`).catch(() => false)) return s.storage;
    }
    return undefined;
  }

  async #hasVolume(node: string, storage: string, volid: string): Promise<boolean> {
    const content = await this.pve.storageContent(node, storage, { content: 'iso' });
    return content.some((c) => c.volid === volid);
  }

  /**
   * Returns the volume ID of `filename` on `storage`, downloading it first if it is not there yet. When this call
   * starts a download (not when it joins one in flight), `onStarting` runs before each `download-url` call (a
   * rejection means the call is not made) and `onStarted` with its UPID as soon as Proxmox answered.
   */
  async ensureDownloaded(opts: DownloadOptions): Promise<string> {
    const volid = `${opts.storage}:iso/${opts.filename}`;
    if (await this.#hasVolume(opts.node, opts.storage, volid)) return volid;
    const shared = (await this.pve.storageList(opts.node, { content: 'iso' })).find((s) => s.storage === opts.storage)?.shared;
    const key = `${shared ? '' : opts.node}/${opts.storage}/${opts.filename}`;
    let inFlight = this.#downloads.get(key);
    if (!inFlight) {
      inFlight = this.#download(opts, volid, shared === true).finally(() => this.#downloads.delete(key));
      this.#downloads.set(key, inFlight);
    } else {
      opts.log.info({ storage: opts.storage }, 'Talos ISO download already in flight; waiting for it');
    }
    return inFlight;
  }

  async #download(opts: DownloadOptions, volid: string, shared: boolean): Promise<string> {
    let last: unknown;
    for (let attempt = 1; attempt <= opts.attempts; attempt++) {
      opts.log.info({ node: opts.node, storage: opts.storage, volume: volid, attempt }, 'downloading Talos ISO');
      try {
        // A download occupies its storage's download slot, not the node's: it is long and network-bound, and must not
        // hold back the node's quick tasks.
        const release = await this.slots.acquire({ storages: [storageSlot(opts.node, opts.storage, shared, 'download')] }, opts.signal);
        try {
          await opts.onStarting?.();
          const upid = await this.pve.downloadUrl(opts.node, opts.storage, { url: opts.url, filename: opts.filename, content: 'iso' });
          await opts.onStarted?.(upid);
          await this.wait(upid, opts.signal, true);
        } finally {
          release();
        }
        return volid;
      } catch (err) {
        // Someone else (another provider instance, an earlier run) finished the same file meanwhile.
        if (err instanceof PveTaskError && /refusing to override existing file/i.test(err.exitstatus)) return volid;
        if (!(err instanceof PveTaskError) || err.vanished) throw err;
        last = err;
        opts.log.warn({ attempt, exitstatus: err.exitstatus }, 'Talos ISO download failed');
        if (await this.#hasVolume(opts.node, opts.storage, volid)) return volid;
      }
    }
    const msg = last instanceof PveTaskError ? last.exitstatus : String(last);
    throw new StepFailure(`uploadISO: downloading the Talos ISO to ${opts.storage} failed ${opts.attempts} times: ${msg}`, {
      cause: last,
    });
  }

  /**
   * Uploads a seed ISO (replacing an older one of the same name) and returns its volume ID. `onStarted` gets the
   * upload task's UPID as soon as Proxmox answered, before the wait for it.
   */
  async uploadSeed(opts: {
    node: string;
    storage: string;
    filename: string;
    data: Buffer;
    signal?: AbortSignal | undefined;
    onStarted?: (upid: string) => Promise<void>;
  }): Promise<string> {
    const volid = `${opts.storage}:iso/${opts.filename}`;
    const checksum = createHash('sha256').update(opts.data).digest('hex');
    await this.slots.run(
      { node: await this.#uploadNode(opts.node) },
      async () => {
        const upid = await this.pve.uploadFile(opts.node, opts.storage, {
          filename: opts.filename,
          content: 'iso',
          data: opts.data,
          checksum,
          checksumAlgorithm: 'sha256',
        });
        this.#entryNode = Promise.resolve(parseUpid(upid).node);
        await opts.onStarted?.(upid);
        await this.wait(upid, opts.signal, true);
      },
      opts.signal,
    );
    return volid;
  }

  /**
   * The node an upload occupies. PVE runs an upload's worker (`imgcopy`) on the node that received the HTTP request
   * and copies the file to the target node from there (pve-storage `src/PVE/API2/Storage/Status.pm`, `upload`: `scp`
   * to `{node}` when it is not the local node), so every seed upload loads the node our API URL points at, whatever
   * node the VM is on. That node is the one `GET /cluster/status` marks `local` (asked once), corrected by the node
   * an upload's UPID names; the target node when neither is known.
   */
  async #uploadNode(target: string): Promise<string> {
    this.#entryNode ??= this.pve.clusterStatus().then(
      (list) => list.find((e) => e.type === 'node' && e.local)?.name,
      () => undefined,
    );
    return (await this.#entryNode) ?? target;
  }

  /**
   * Removes seed ISOs by name; a file (or storage) that does not exist is fine. Throws when the storage cannot be
   * listed or a file could not be removed (after trying every name): a teardown must be retried then, not release the
   * request while its seed is still on the storage. Returns the volume IDs it removed.
   */
  async removeSeeds(opts: { nodeHint: string; storage: string; names: string[]; log: Logger }): Promise<string[]> {
    const removed: string[] = [];
    if (!opts.storage || !opts.nodeHint) return removed;
    let content;
    try {
      content = await this.pve.storageContent(opts.nodeHint, opts.storage, { content: 'iso' });
    } catch (err) {
      if (isNotFound(err)) return removed;
      throw new Error(`listing ISO storage ${opts.storage} on node ${opts.nodeHint} to remove the seed failed: ${errorText(err)}`, { cause: err });
    }
    const failed: string[] = [];
    for (const name of opts.names) {
      const volid = `${opts.storage}:iso/${name}`;
      if (!content.some((c) => c.volid === volid)) continue;
      try {
        await this.slots.run({ node: opts.nodeHint }, async () => {
          const upid = await this.pve.deleteVolume(opts.nodeHint, opts.storage, volid);
          if (upid) await this.wait(upid, undefined, true);
        });
        opts.log.info({ volume: volid }, 'seed ISO removed');
        removed.push(volid);
      } catch (err) {
        if (isNotFound(err)) continue;
        opts.log.warn({ volume: volid, err: errorText(err) }, 'could not remove seed ISO');
        failed.push(`${volid}: ${errorText(err)}`);
      }
    }
    if (failed.length > 0) throw new Error(`could not remove seed ISO ${failed.join('; ')}`);
    return removed;
  }
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
