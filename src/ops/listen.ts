// Listen addresses for the operational HTTP endpoint: parsing `:8080`, `127.0.0.1:9090`, `[::1]:8080` or `off`.

export interface ListenAddress {
  /** Interface to bind; undefined binds every interface (IPv4 and IPv6 where available). */
  host: string | undefined;
  /** TCP port; 0 asks the OS for a free one (tests). */
  port: number;
}

/** Why a listen address was rejected; the message says what is accepted. */
export class ListenAddressError extends Error {
  override readonly name = 'ListenAddressError';
}

/**
 * Parses a listen address. Returns null for `off` (endpoint disabled). Accepted forms: `:PORT`, `PORT`,
 * `HOST:PORT`, `[IPV6]:PORT`.
 */
export function parseListenAddress(text: string): ListenAddress | null {
  const s = text.trim();
  if (s.toLowerCase() === 'off') return null;
  let host: string | undefined;
  let portText: string;
  if (/^\d+$/.test(s)) {
    portText = s;
  } else if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close === -1 || s[close + 1] !== ':') throw invalid(text);
    host = s.slice(1, close);
    portText = s.slice(close + 2);
    if (!host.includes(':')) throw invalid(text);
  } else {
    const colon = s.lastIndexOf(':');
    if (colon === -1 || s.indexOf(':') !== colon) throw invalid(text);
    host = s.slice(0, colon) || undefined;
    portText = s.slice(colon + 1);
    if (host !== undefined && !/^[A-Za-z0-9.-]+$/.test(host)) throw invalid(text);
  }
  if (!/^\d{1,5}$/.test(portText)) throw invalid(text);
  const port = Number(portText);
  if (port > 65535) throw invalid(text);
  return { host, port };
}

/** Formats an address the way parseListenAddress reads it. */
export function formatListenAddress(addr: ListenAddress | null): string {
  if (addr === null) return 'off';
  if (addr.host === undefined) return `:${addr.port}`;
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`;
}

function invalid(text: string): ListenAddressError {
  return new ListenAddressError(
    `listen address ${JSON.stringify(text)} is not valid; use ":8080", "127.0.0.1:8080", "[::1]:8080" or "off"`,
  );
}
