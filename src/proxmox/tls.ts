// TLS trust for Proxmox connections: system CAs, a custom CA (file or PEM), a SHA-256 certificate pin, or
// (discouraged) no verification; packaged as an undici connector.
import { readFileSync } from 'node:fs';
import type { TLSSocket } from 'node:tls';
import { buildConnector } from 'undici';
import { PveConfigError } from './errors.js';

export interface PveTlsOptions {
  /** Path of a PEM file with the CA(s) to trust instead of the system CAs (e.g. /etc/pve/pve-root-ca.pem). */
  caFile?: string;
  /** PEM text of the CA(s) to trust instead of the system CAs. */
  caPem?: string;
  /**
   * SHA-256 fingerprint of the server certificate ("AA:BB:...", case and colons optional). When set, the connection
   * is accepted if and only if the peer certificate has this fingerprint; chain and host name are not checked, so a
   * self-signed certificate works.
   */
  fingerprint?: string;
  /** Accept any certificate. Kept for compatibility with the Go provider's config; logs a warning. */
  insecureSkipVerify?: boolean;
}

export type PveTlsMode = 'system' | 'ca' | 'fingerprint' | 'insecure';

/** Error code of a connection refused because the server certificate did not match the pinned fingerprint. */
export const TLS_PIN_MISMATCH = 'PVE_TLS_PIN_MISMATCH';

/** Normalises a SHA-256 fingerprint to upper-case, colon-separated hex; throws PveConfigError if it is not one. */
export function normalizeFingerprint(fp: string): string {
  const hex = fp.replace(/[\s:]/g, '').toUpperCase();
  if (!/^[0-9A-F]{64}$/.test(hex)) {
    throw new PveConfigError('tls fingerprint must be a SHA-256 fingerprint: 32 hex bytes, optionally colon-separated');
  }
  return hex.match(/../g)!.join(':');
}

export function tlsMode(opts: PveTlsOptions | undefined): PveTlsMode {
  if (opts?.fingerprint) return 'fingerprint';
  if (opts?.caFile || opts?.caPem) return 'ca';
  if (opts?.insecureSkipVerify) return 'insecure';
  return 'system';
}

export interface PveConnectorOptions {
  /** TCP/TLS connect timeout. */
  connectTimeoutMs?: number;
}

/** Builds the undici connector enforcing the configured trust. Reads `caFile` synchronously. */
export function buildPveConnector(opts: PveTlsOptions | undefined, copts: PveConnectorOptions = {}): buildConnector.connector {
  const mode = tlsMode(opts);
  const base = { timeout: copts.connectTimeoutMs ?? 10_000 };

  if (mode === 'fingerprint') {
    const want = normalizeFingerprint(opts!.fingerprint!);
    // Sessions are not cached so that every connection presents (and is checked against) the certificate.
    const inner = buildConnector({ ...base, rejectUnauthorized: false, maxCachedSessions: 0 });
    return (options, callback) => {
      inner(options, (err, socket) => {
        if (err || !socket) {
          callback(err ?? new Error('connect failed'), null);
          return;
        }
        if (options.protocol !== 'https:') {
          callback(null, socket);
          return;
        }
        const cert = (socket as TLSSocket).getPeerCertificate();
        const got = cert && typeof cert.fingerprint256 === 'string' ? cert.fingerprint256.toUpperCase() : '';
        if (got !== want) {
          socket.destroy();
          const e = new Error(
            `server certificate fingerprint ${got || '(none)'} does not match the pinned fingerprint ${want}`,
          ) as Error & { code: string };
          e.code = TLS_PIN_MISMATCH;
          callback(e, null);
          return;
        }
        callback(null, socket);
      });
    };
  }

  if (mode === 'ca') {
    let ca = opts?.caPem ?? '';
    if (opts?.caFile) {
      try {
        ca = `${ca}\n${readFileSync(opts.caFile, 'utf8')}`;
      } catch (e) {
        throw new PveConfigError(`cannot read tls CA file ${opts.caFile}: ${(e as Error).message}`);
      }
    }
    if (!ca.includes('-----BEGIN CERTIFICATE-----')) {
      throw new PveConfigError('tls CA must contain at least one PEM certificate (-----BEGIN CERTIFICATE-----)');
    }
    return buildConnector({ ...base, ca, rejectUnauthorized: true });
  }

  if (mode === 'insecure') return buildConnector({ ...base, rejectUnauthorized: false });
  return buildConnector({ ...base, rejectUnauthorized: true });
}
