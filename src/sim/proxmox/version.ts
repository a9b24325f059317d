// Version profiles: the few behaviours that differ between the PVE releases a client must support.

export type VersionProfileName = 'pve8.0' | 'pve8.4' | 'pve9';

export interface VersionProfile {
  name: VersionProfileName;
  /** pve-http-server >= 5.2.0 puts the error text in a `message` field of the JSON body. */
  messageField: boolean;
  /** Largest accepted non-upload request body. */
  bodyLimitBytes: number;
  /** pve-manager >= 9.1.5 answers every bad ticket/token with `Authentication failed!`. */
  unifiedAuthFailure: boolean;
  /** access-control >= 8.1.2 accepts Sys.AccessNetwork for download-url. */
  accessNetworkPrivilege: boolean;
  version: { version: string; release: string; repoid: string };
}

export const versionProfiles: Record<VersionProfileName, VersionProfile> = {
  'pve8.0': {
    name: 'pve8.0',
    messageField: false,
    bodyLimitBytes: 64 * 1024,
    unifiedAuthFailure: false,
    accessNetworkPrivilege: false,
    version: { version: '8.0.4', release: '8.0', repoid: 'd258a813cfa6b390' },
  },
  'pve8.4': {
    name: 'pve8.4',
    messageField: true,
    bodyLimitBytes: 512 * 1024,
    unifiedAuthFailure: false,
    accessNetworkPrivilege: true,
    version: { version: '8.4.1', release: '8.4', repoid: '2a5fa54a8503f96d' },
  },
  pve9: {
    name: 'pve9',
    messageField: true,
    bodyLimitBytes: 512 * 1024,
    unifiedAuthFailure: true,
    accessNetworkPrivilege: true,
    version: { version: '9.1.5', release: '9.1', repoid: '3e07a8a1c1b5a6f2' },
  },
};
