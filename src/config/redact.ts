// Printable view of a DaemonConfig: every secret replaced by "[redacted]", listen addresses as text, and where
// each value came from; for start-up logs and `config print`.
import { formatListenAddress } from '../ops/listen.js';
import type { DaemonConfig, SettingSource } from './load.js';
import type { SettingKey } from './settings.js';

export const REDACTED = '[redacted]';

export interface RedactedConfig {
  mode: 'demo' | 'live';
  configFile: string | null;
  omni?: { endpoint: string; serviceAccountKey: string; serviceAccountName: string; insecureSkipVerify: boolean; caFile?: string };
  proxmox?: {
    url: string;
    auth: { tokenId: string; tokenSecret: string } | { username: string; password: string; realm?: string };
    tls: { caFile?: string; fingerprint?: string; insecureSkipVerify?: boolean };
  };
  provider: {
    id: string;
    name: string;
    description: string;
    concurrency: number;
    tasksPerNode: number;
    tasksPerStorage: number;
    shutdownTimeoutSeconds: number;
    hostname: string;
    healthListen: string;
    logLevel: string;
    heartbeatIntervalSeconds: number;
    leaseDurationSeconds: number;
    leaseRenewDeadlineSeconds: number;
    leaseRetryPeriodSeconds: number;
  };
  housekeeping: DaemonConfig['housekeeping'];
  sources: Record<SettingKey, SettingSource>;
  warnings: string[];
}

export function redactConfig(cfg: DaemonConfig): RedactedConfig {
  const out: RedactedConfig = {
    mode: cfg.mode,
    configFile: cfg.configFile,
    provider: { ...cfg.provider, healthListen: formatListenAddress(cfg.provider.healthListen) },
    housekeeping: { ...cfg.housekeeping },
    sources: { ...cfg.sources },
    warnings: [...cfg.warnings],
  };
  if (cfg.mode === 'live') {
    out.omni = {
      endpoint: cfg.omni.endpoint,
      serviceAccountKey: REDACTED,
      serviceAccountName: cfg.omni.serviceAccountName,
      insecureSkipVerify: cfg.omni.insecureSkipVerify,
      ...(cfg.omni.caFile !== undefined ? { caFile: cfg.omni.caFile } : {}),
    };
    const a = cfg.proxmox.auth;
    const tls = cfg.proxmox.tls;
    out.proxmox = {
      url: cfg.proxmox.url,
      auth:
        'tokenId' in a
          ? { tokenId: a.tokenId, tokenSecret: REDACTED }
          : { username: a.username, password: REDACTED, ...(a.realm !== undefined ? { realm: a.realm } : {}) },
      tls: {
        ...(tls.caFile !== undefined ? { caFile: tls.caFile } : {}),
        ...(tls.fingerprint !== undefined ? { fingerprint: tls.fingerprint } : {}),
        ...(tls.insecureSkipVerify ? { insecureSkipVerify: true } : {}),
      },
    };
  }
  return out;
}
