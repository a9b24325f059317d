// A model of the upstream Go provider (commit 0d9fd58, internal/pkg/provider/provision.go, with go-proxmox v0.3.2),
// written from reading its source, for tests of the private state both providers share. It decodes the state the way
// Go's generated code does (fields 1-8 and 11 of emuspecs.MachineSpec, everything else skipped) and runs Go's steps
// and Deprovision against a Proxmox (the simulator) with the calls Go makes:
// - uploadISO: field 6 set → that task's status decides (running: retry; ok: done; failed: download again). Else
//   field 4 := sha256(<factory>/image/<schematic>/<version>/nocloud-amd64.iso) + ".iso" (bare), looked up on the
//   node's first enabled storage whose content includes "iso"; downloaded there if missing (field 6 := UPID).
// - syncVM: field 7 set → that task's status decides (running: retry; ok: done; else an error, forever). Else a new
//   VMID (nextid), `GET .../content/<storage>:iso/<field 4>` (an error stops the step), the create; fields 7 and 11
//   := the create's UPID and VMID.
// - startVM: field 8 set → that task decides. Else the VM at (field 5, field 11) must exist; go-proxmox CloudInit:
//   `user-data-<vmid>.iso` uploaded to the first ISO storage, tag `go-proxmox+cloud-init`, ide0 and boot set; start;
//   field 8 := UPID.
// - Deprovision: field 11 = 0 → nothing. Else GET the VM (gone → nothing), stop, go-proxmox Delete: if the VM has the
//   tag, `user-data-<vmid>.iso` on the first ISO storage is deleted first (go-proxmox v0.6+: on the first ISO storage
//   that has it, `deleteScansAllIsoStorages`); then DELETE the VM (no purge flags).
// Steps resume at the annotation (the last step that finished or asked for a retry) and run it again.
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import type { PveClient } from '../../src/proxmox/client.js';
import { isoCacheKey } from '../../src/omni/images.js';
import { buildNoCloudSeed } from '../../src/proxmox/nocloud.js';
import { parseUpid } from '../../src/proxmox/upid.js';

export const GO_STEPS = ['pickNode', 'createSchematic', 'uploadISO', 'syncVM', 'startVM'] as const;
export type GoStep = (typeof GO_STEPS)[number];

export interface GoSpec {
  uuid: string;
  schematic: string;
  talosVersion: string;
  volumeId: string;
  node: string;
  volumeUploadTask: string;
  vmCreateTask: string;
  vmStartTask: string;
  vmid: number;
}

export function emptyGoSpec(): GoSpec {
  return { uuid: '', schematic: '', talosVersion: '', volumeId: '', node: '', volumeUploadTask: '', vmCreateTask: '', vmStartTask: '', vmid: 0 };
}

const STRING_FIELDS: Record<number, keyof GoSpec> = {
  1: 'uuid',
  2: 'schematic',
  3: 'talosVersion',
  4: 'volumeId',
  5: 'node',
  6: 'volumeUploadTask',
  7: 'vmCreateTask',
  8: 'vmStartTask',
};

/** Decodes the stored bytes as Go's MachineSpec does: fields 1-8 (string) and 11 (int32); others skipped. */
export function goDecode(bytes: Uint8Array): GoSpec {
  const out = emptyGoSpec();
  const r = new BinaryReader(bytes);
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    const key = STRING_FIELDS[no];
    if (key && wt === WireType.LengthDelimited) (out as unknown as Record<string, string>)[key] = r.string();
    else if (no === 11 && wt === WireType.Varint) out.vmid = r.int32();
    else r.skip(wt);
  }
  return out;
}

/** Go's state written back (proto3: zero values omitted), for ours to decode with its own schema. */
export function goEncode(spec: GoSpec): Uint8Array {
  const w = new BinaryWriter();
  for (const [no, key] of Object.entries(STRING_FIELDS)) {
    const v = spec[key] as string;
    if (v) w.tag(Number(no), WireType.LengthDelimited).string(v);
  }
  if (spec.vmid) w.tag(11, WireType.Varint).int32(spec.vmid);
  return w.finish();
}

/** Why the Go provider cannot go on from a state (what it would fail with on every retry). */
export class GoStuck extends Error {}

const FACTORY = 'factory.talos.dev';
const TAG_CLOUD_INIT = 'go-proxmox+cloud-init';

export interface GoRunOptions {
  requestId: string;
  setId?: string;
  talosVersion: string;
  schematic: string;
  /** The node Go's pickNode would choose (it recomputes it every time it runs). */
  node: string;
  /** Waits for a task to end (the test's clock); returns its exit status. */
  waitTask: (upid: string) => Promise<string>;
  /**
   * go-proxmox v0.6.0 and later (the Go provider v0.3.0 pins 0.8.1): the VM delete looks for `user-data-<vmid>.iso` on
   * every enabled ISO storage of the node (in API order) and removes the first it finds. Default: v0.3.2 (0d9fd58),
   * only on the node's first ISO storage.
   */
  deleteScansAllIsoStorages?: boolean;
}

export class GoModel {
  constructor(
    private readonly pve: PveClient,
    private readonly opts: GoRunOptions,
  ) {}

  /** go-proxmox findStorageByContent("iso"): the first storage in the node's list, enabled, content containing "iso". */
  /**
   * Go (go-proxmox) takes the first ISO storage of the node's storage list, which PVE returns in hash order (the
   * simulator shuffles it too), so two calls can disagree when a node has two ISO storages: the Talos ISO downloaded
   * to one and looked for on the other, or a seed uploaded to one and deleted from the other (the seeds issue 12 found
   * on different storages). The model reads the list once per node and keeps its choice, so that its steps agree with
   * each other whatever order the simulator happens to draw; these tests are about the private state, not that bug.
   */
  async isoStorage(node: string): Promise<string> {
    const known = this.#isoStorages.get(node);
    if (known) return known;
    const list = await this.pve.storageList(node);
    const s = list.find((x) => x.enabled && x.content.includes('iso'));
    if (!s) throw new GoStuck('no ISO storage');
    this.#isoStorages.set(node, s.storage);
    return s.storage;
  }
  readonly #isoStorages = new Map<string, string>();

  async #taskOk(upid: string): Promise<'ok' | 'running' | string> {
    const st = await this.pve.taskStatus(upid);
    if (st.status === 'running') return 'running';
    return st.exitstatus === 'OK' ? 'ok' : (st.exitstatus ?? 'unknown');
  }

  /** Runs Go's steps from `from` (inclusive) through `until` (inclusive); resolves with the last step run. */
  async run(spec: GoSpec, from: GoStep, until: GoStep = 'startVM'): Promise<GoSpec> {
    for (const step of GO_STEPS.slice(GO_STEPS.indexOf(from), GO_STEPS.indexOf(until) + 1)) {
      for (let i = 0; ; i++) {
        if (i > 50) throw new GoStuck(`${step}: still retrying`);
        const r = await this.#step(step, spec);
        if (r === 'done') break;
      }
    }
    return spec;
  }

  async #step(step: GoStep, s: GoSpec): Promise<'done' | 'retry'> {
    const o = this.opts;
    switch (step) {
      case 'pickNode':
        s.node = o.node;
        return 'done';
      case 'createSchematic':
        s.schematic = o.schematic;
        return 'done';
      case 'uploadISO': {
        if (s.volumeUploadTask) {
          const st = await this.#taskOk(s.volumeUploadTask);
          if (st === 'running') {
            await o.waitTask(s.volumeUploadTask);
            return 'retry';
          }
          if (st === 'ok') return 'done';
          // (Go: a status other than "stopped" is returned as an error; the simulator's failures read as stopped.)
        }
        s.talosVersion = o.talosVersion;
        const name = `${isoCacheKey(FACTORY, s.schematic, o.talosVersion, 'amd64')}.iso`;
        s.volumeId = name;
        const storage = await this.isoStorage(s.node);
        const content = await this.pve.storageContent(s.node, storage, { content: 'iso' });
        if (content.some((c) => c.volid === `${storage}:iso/${name}`)) return 'done';
        const url = `https://${FACTORY}/image/${s.schematic}/${o.talosVersion}/nocloud-amd64.iso`;
        s.volumeUploadTask = await this.pve.downloadUrl(s.node, storage, { url, filename: name, content: 'iso' });
        return 'retry';
      }
      case 'syncVM': {
        if (s.vmCreateTask) {
          const st = await this.#taskOk(s.vmCreateTask);
          if (st === 'running') {
            await o.waitTask(s.vmCreateTask);
            return 'retry';
          }
          if (st !== 'ok') throw new GoStuck(`syncVM: create task ${s.vmCreateTask}: ${st}`);
          return 'done';
        }
        if (!s.uuid) s.uuid = crypto.randomUUID();
        const vmid = await this.pve.nextId();
        const storage = await this.isoStorage(s.node);
        try {
          await this.pve.volumeInfo(s.node, storage, `${storage}:iso/${s.volumeId}`);
        } catch (err) {
          throw new GoStuck(`syncVM: ISO ${storage}:iso/${s.volumeId}: ${err instanceof Error ? err.message : String(err)}`);
        }
        const upid = await this.pve.createVm(s.node, {
          vmid,
          smbios1: `uuid=${s.uuid}`,
          name: o.requestId,
          cdrom: `${storage}:iso/${s.volumeId}`,
          cpu: 'x86-64-v2-AES',
          cores: 2,
          sockets: 1,
          memory: 4096,
          scsi0: 'local-lvm:20',
          scsihw: 'virtio-scsi-single',
          onboot: 1,
          net0: 'virtio,bridge=vmbr0,firewall=1',
          agent: 'enabled=true',
          ...(o.setId ? { tags: `machine-request.${o.setId}` } : {}),
        });
        s.vmCreateTask = upid;
        s.vmid = vmid;
        return 'retry';
      }
      case 'startVM': {
        if (s.vmStartTask) {
          const st = await this.#taskOk(s.vmStartTask);
          if (st === 'running') {
            await o.waitTask(s.vmStartTask);
            return 'retry';
          }
          if (st !== 'ok') throw new GoStuck(`startVM: start task: ${st}`);
          return 'done';
        }
        let config;
        try {
          config = await this.pve.vmConfig(s.node, s.vmid);
        } catch (err) {
          throw new GoStuck(`startVM: VM ${s.vmid} on ${s.node}: ${err instanceof Error ? err.message : String(err)}`);
        }
        const storage = await this.isoStorage(s.node);
        const name = `user-data-${s.vmid}.iso`;
        const data = buildNoCloudSeed({ userData: 'join', instanceId: s.uuid, hostname: o.requestId });
        await o.waitTask(await this.pve.uploadFile(s.node, storage, { filename: name, content: 'iso', data }));
        const tags = String(config.tags ?? '');
        if (!tags.split(/[;, ]/).includes(TAG_CLOUD_INIT)) {
          await this.pve.setVmConfig(s.node, s.vmid, { tags: tags ? `${tags};${TAG_CLOUD_INIT}` : TAG_CLOUD_INIT });
        }
        await this.pve.setVmConfig(s.node, s.vmid, { ide0: `${storage}:iso/${name},media=cdrom`, boot: `${String(config.boot ?? '')};ide0` });
        s.vmStartTask = await this.pve.startVm(s.node, s.vmid);
        return 'retry';
      }
    }
  }

  /** Go's Deprovision (go-proxmox Stop, then Delete with its cloud-init ISO clean-up). */
  async deprovision(s: GoSpec): Promise<void> {
    if (s.vmid === 0) return;
    let config;
    try {
      config = await this.pve.vmConfig(s.node, s.vmid);
    } catch (err) {
      if (/does not exist/.test(err instanceof Error ? err.message : String(err))) return;
      throw err;
    }
    await this.opts.waitTask(await this.pve.stopVm(s.node, s.vmid));
    if (String(config.tags ?? '').split(';').includes(TAG_CLOUD_INIT)) {
      const storages = this.opts.deleteScansAllIsoStorages
        ? (await this.pve.storageList(s.node)).filter((x) => x.enabled && x.content.includes('iso')).map((x) => x.storage)
        : [await this.isoStorage(s.node)];
      for (const storage of storages) {
        const volid = `${storage}:iso/user-data-${s.vmid}.iso`;
        const content = await this.pve.storageContent(s.node, storage, { content: 'iso' });
        if (!content.some((c) => c.volid === volid)) continue;
        const upid = await this.pve.deleteVolume(s.node, storage, volid);
        if (upid) await this.opts.waitTask(upid);
        break;
      }
    }
    await this.opts.waitTask(await this.pve.deleteVm(s.node, s.vmid, {}));
  }
}

/** Whether field 7 names the create of VM `vmid` on `node`. */
export function namesCreateOf(upid: string, vmid: number, node: string): boolean {
  try {
    const u = parseUpid(upid);
    return u.type === 'qmcreate' && u.id === String(vmid) && u.node === node;
  } catch {
    return false;
  }
}
