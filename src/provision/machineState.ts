// The provider's private per-request state (Omni resource `Machine.<providerId>.infraprovider.sidero.dev`).
// Field names mirror the Go provider's proto so a running deployment can be taken over; ours are marked.

export interface MachineState {
  /** SMBIOS UUID given to the VM; also the Talos machine UUID Omni sees. Go field 1. */
  uuid: string;
  /** Image factory schematic ID. Go field 2. */
  schematic: string;
  /** Talos version the ISO was built for. Go field 3. */
  talosVersion: string;
  /** Volume ID of the Talos ISO, e.g. `local:iso/<sha256>.iso`. Go field 4. */
  volumeId: string;
  /** Proxmox node the VM was placed on (where it was created; it may have migrated since). Go field 5. */
  node: string;
  /** UPID of the in-flight ISO download. Go field 6. */
  volumeUploadTask: string;
  /** UPID of the in-flight qmcreate task. Go field 7. */
  vmCreateTask: string;
  /** UPID of the in-flight qmstart task. Go field 8. */
  vmStartTask: string;
  /** VMID, set only once Proxmox confirmed the VM exists. 0 = none. Go field 11. */
  vmid: number;
  /** Ours: storage the Talos ISO and the seed live on (chosen once, then remembered). */
  isoStorage: string;
  /** Ours: volume ID of the NoCloud seed ISO. */
  seedVolume: string;
  /** Ours: stable key of the boot asset (GetBootAssetURL storage_key), when Omni gave one. */
  bootAssetKey: string;
}

export function emptyMachineState(): MachineState {
  return {
    uuid: '',
    schematic: '',
    talosVersion: '',
    volumeId: '',
    node: '',
    volumeUploadTask: '',
    vmCreateTask: '',
    vmStartTask: '',
    vmid: 0,
    isoStorage: '',
    seedVolume: '',
    bootAssetKey: '',
  };
}
