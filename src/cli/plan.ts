// `plan`: what the provider would create for some provider data, using read-only Proxmox calls only.
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { nicNetworks, previewAddresses, renderNetworkConfig, staticNics } from '../provision/addresses.js';
import { nodeSnapshots, storageFacts } from '../provision/cluster.js';
import { PlacementError, ProviderDataError, VmPlanError } from '../provision/errors.js';
import { rankIsoStorages } from '../provision/isoStore.js';
import { pickNode, placementRequest } from '../provision/pickNode.js';
import { DiskStorageError, selectDiskStorages } from '../provision/diskStorages.js';
import { planVm } from '../provision/planVm.js';
import { haApiOf, haPlan } from '../provision/ha.js';
import { parseProviderData } from '../provision/providerData.js';
import { RequestRefused, validateRequest } from '../provision/validateRequest.js';
import { lowestFreeVmid, parseVmidRange } from '../provision/vmidRange.js';
import { poolForNewVm } from '../provision/pools.js';
import { isoCacheKey } from '../omni/images.js';
import { openProxmoxTarget } from './proxmoxTarget.js';
import { parseFlags, UsageError } from './usage.js';

const usage =
  'usage: omni-infra-provider-proxmox plan --provider-data FILE [--request-id ID] [--machine-request-set S] ' +
  '[--schematic ID --talos-version V] (--config-file F | --sim-fixture F) --json';

/** An unsatisfiable plan: exit 2, like bad input. */
class PlanError extends UsageError {}

export default async function plan(argv: string[]): Promise<number> {
  const { flags, positional } = parseFlags(argv, {
    strings: ['provider-data', 'request-id', 'machine-request-set', 'config-file', 'sim-fixture', 'schematic', 'talos-version'],
    booleans: ['json', 'help'],
  });
  if (flags.has('help')) {
    process.stdout.write(`${usage}\n`);
    return 0;
  }
  if (positional.length > 0) throw new UsageError(`unexpected argument "${positional[0]}"; ${usage}`);
  const dataFile = flags.get('provider-data');
  if (typeof dataFile !== 'string') throw new UsageError(`--provider-data is required; ${usage}`);
  let text: string;
  try {
    text = readFileSync(dataFile, 'utf8');
  } catch (err) {
    throw new UsageError(`--provider-data: cannot read ${dataFile}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  let data;
  try {
    data = parseProviderData(text);
  } catch (err) {
    if (err instanceof ProviderDataError) throw new UsageError(err.message);
    throw err;
  }
  const requestId = (flags.get('request-id') as string | undefined) ?? 'plan-request';
  const setId = flags.get('machine-request-set') as string | undefined;
  const schematic = flags.get('schematic') as string | undefined;
  const talosVersion = (flags.get('talos-version') as string | undefined) ?? 'v1.11.5';

  const target = await openProxmoxTarget(flags);
  try {
    let checked;
    try {
      checked = await validateRequest(target.pve, { id: requestId, machineRequestSetId: setId, talosVersion, providerData: data });
    } catch (err) {
      if (err instanceof RequestRefused) throw new PlanError(err.message);
      throw err;
    }
    const snapshots = await nodeSnapshots(target.pve, {
      setId,
      needPciMappings: data.pci_devices.length > 0,
      needUsbMappings: data.usb_devices.length > 0,
      bridges: checked.bridges,
    });
    let node: string;
    try {
      node = pickNode({ nodes: snapshots, request: placementRequest(requestId, data, setId) }).node;
    } catch (err) {
      if (err instanceof PlacementError) throw new PlanError(`node: ${err.message}`);
      throw err;
    }
    let storages;
    try {
      storages = selectDiskStorages(data, await storageFacts(target.pve, node), node);
    } catch (err) {
      if (err instanceof DiskStorageError) throw new PlanError(err.message);
      throw err;
    }
    const { primary, additional } = storages;
    const isoStorage = rankIsoStorages(await target.pve.storageList(node, { content: 'iso', enabled: true }))[0]?.storage;
    if (!isoStorage) throw new PlanError(`node: ${node} has no enabled, active storage that allows ISO images`);
    const isoName = schematic
      ? `${isoCacheKey('factory.talos.dev', schematic, talosVersion, 'amd64')}.iso`
      : 'talos-nocloud-amd64.iso';
    // The VMID the create would get now: the range's lowest free one, or Proxmox's nextid.
    const range = data.vmid_range === undefined ? undefined : parseVmidRange(data.vmid_range);
    let vmid: number;
    try {
      vmid = typeof range === 'object' ? await lowestFreeVmid(target.pve, range, new Map()) : await target.pve.nextId();
    } catch (err) {
      if (err instanceof ProviderDataError) throw new PlanError(err.message);
      throw err;
    }
    // Static addresses: the first of each pool (plan does not read Omni, where the daemon sees which are taken).
    const nics = staticNics(data);
    const addresses = previewAddresses(requestId, nics);
    const network: { dhcp: true } | { addresses: Array<{ nic: string; address: string; mac: string }>; note: string; networkConfig: string } =
      nics.length === 0
        ? { dhcp: true }
        : {
            addresses: addresses.map((a) => ({ nic: `net${a.nic}`, address: a.address, mac: a.mac })),
            note: 'the first address of each pool; the daemon skips addresses other requests hold',
            networkConfig: renderNetworkConfig(nicNetworks(nics, addresses)),
          };
    let params;
    try {
      params = planVm(data, {
        requestId,
        vmid,
        machineRequestSetId: setId,
        smbiosUuid: randomUUID(),
        isoVolid: `${isoStorage}:iso/${isoName}`,
        diskStorages: { primary, additional },
        pool: await poolForNewVm(target.pve, data, setId),
        nicMacs: Object.fromEntries(addresses.map((a) => [a.nic, a.mac])),
      });
    } catch (err) {
      if (err instanceof VmPlanError) throw new PlanError(err.message);
      throw err;
    }
    // The HA calls registerHA and syncHARules would make after the VM started (PVE 9 rules or PVE 8 groups).
    const haApi = data.ha ? await haApiOf(target.pve) : undefined;
    const ha = haApi ? { api: haApi, calls: haPlan(data, setId, haApi, vmid) } : undefined;
    const result = { node, storages, isoStorage, params, network, ...(ha ? { ha } : {}) };
    if (flags.has('json')) {
      process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    } else {
      process.stdout.write(`node: ${node}\ndisk storage: ${primary}${additional.length ? ` (+ ${additional.join(', ')})` : ''}\n`);
      process.stdout.write(`ISO storage: ${isoStorage}\ncreate parameters:\n`);
      for (const [k, v] of Object.entries(params)) process.stdout.write(`  ${k}: ${v}\n`);
      if (ha) {
        process.stdout.write(`HA calls (${ha.api === 'rules' ? 'Proxmox VE 9: HA rules' : 'Proxmox VE 8: HA groups'}):\n`);
        for (const c of ha.calls) {
          const args = Object.entries(c.params).map(([k, v]) => `${k}=${v}`).join(' ');
          process.stdout.write(`  ${c.method} ${c.path} ${args}\n`);
        }
      }
      if (!('dhcp' in network)) {
        process.stdout.write(`static addresses (${network.note}):\n`);
        for (const a of network.addresses) process.stdout.write(`  ${a.nic}: ${a.address} (MAC ${a.mac})\n`);
        process.stdout.write(`NoCloud network-config:\n${network.networkConfig.trimEnd().replace(/^/gm, '  ')}\n`);
      } else {
        process.stdout.write('network: DHCP on every NIC (no address_pool)\n');
      }
    }
    return 0;
  } finally {
    await target.close();
  }
}
