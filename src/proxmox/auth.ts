// Proxmox authentication: API-token headers, or a ticket session (login, CSRF token, proactive renewal,
// re-login after a 401) shared by all concurrent calls. Secrets never leave this module except in request headers.
import type { Logger } from '../log.js';
import { silentLogger } from '../log.js';
import { PveConfigError } from './errors.js';
import type { TicketResponse } from './types.js';

export interface PveTokenCredentials {
  /** `user@realm!tokenname` */
  tokenId: string;
  tokenSecret: string;
}

export interface PvePasswordCredentials {
  /** `user@realm`, or `user` together with `realm`. */
  username: string;
  password: string;
  realm?: string;
}

export type PveCredentials = PveTokenCredentials | PvePasswordCredentials;

export interface Authorization {
  headers: Record<string, string>;
  /** Identifies the session used, so a 401 invalidates only that session (not a newer one). */
  generation: number;
}

export interface PveAuthenticator {
  readonly kind: 'token' | 'ticket';
  /** Who we are, for logs (never secret). */
  readonly principal: string;
  /** The headers that authenticate a request with `method`. */
  authorize(method: string): Promise<Authorization>;
  /**
   * Reports a 401 for a request authorized with `generation`. Returns true when authenticating again can help
   * (ticket sessions), so the caller may retry once.
   */
  unauthorized(generation: number): boolean;
}

export function isTokenCredentials(c: PveCredentials): c is PveTokenCredentials {
  return 'tokenId' in c;
}

const TOKEN_ID_RE = /^[^\s@!:=]+@[^\s@!:=]+![A-Za-z][A-Za-z0-9._-]*$/;

/** Stateless API-token authentication (`Authorization: PVEAPIToken=user@realm!name=secret`). */
export class TokenAuthenticator implements PveAuthenticator {
  readonly kind = 'token' as const;
  readonly principal: string;
  readonly #header: string;

  constructor(creds: PveTokenCredentials) {
    if (!TOKEN_ID_RE.test(creds.tokenId)) {
      throw new PveConfigError(
        `proxmox token id ${JSON.stringify(creds.tokenId)} must look like user@realm!tokenname (e.g. omni@pve!provider)`,
      );
    }
    if (creds.tokenSecret === '' || /[\s\u0000-\u001f]/.test(creds.tokenSecret)) {
      throw new PveConfigError('proxmox token secret must be non-empty and contain no whitespace or control characters');
    }
    this.principal = creds.tokenId;
    this.#header = `PVEAPIToken=${creds.tokenId}=${creds.tokenSecret}`;
  }

  authorize(): Promise<Authorization> {
    return Promise.resolve({ headers: { authorization: this.#header }, generation: 0 });
  }

  unauthorized(): boolean {
    return false;
  }
}

/** Performs `POST /access/ticket` without any session (supplied by the client). */
export type TicketLogin = (params: { username: string; password: string }) => Promise<TicketResponse>;

export interface TicketAuthenticatorOptions {
  logger?: Logger;
  /** Clock, for tests. */
  now?: () => number;
  /** Renew the ticket once it is this old (default 90 min; PVE tickets live 2 h). */
  renewAfterMs?: number;
  /** Tickets older than this are never used or renewed, a fresh login is made (default 115 min). */
  maxAgeMs?: number;
}

interface TicketSession {
  username: string;
  ticket: string;
  csrf: string;
  obtainedAt: number;
  generation: number;
}

/** Ticket session from username + password, shared by all concurrent calls of one client. */
export class TicketAuthenticator implements PveAuthenticator {
  readonly kind = 'ticket' as const;
  readonly principal: string;
  readonly #password: string;
  readonly #login: TicketLogin;
  readonly #log: Logger;
  readonly #now: () => number;
  readonly #renewAfterMs: number;
  readonly #maxAgeMs: number;
  #session: TicketSession | undefined;
  #pending: Promise<TicketSession> | undefined;
  #generation = 0;

  constructor(creds: PvePasswordCredentials, login: TicketLogin, opts: TicketAuthenticatorOptions = {}) {
    if (creds.username.trim() === '') throw new PveConfigError('proxmox username must not be empty');
    // Send either user@realm, or user plus realm - never both (PVE would append the realm a second time).
    this.principal =
      creds.realm && !creds.username.includes('@') ? `${creds.username}@${creds.realm}` : creds.username;
    this.#password = creds.password;
    this.#login = login;
    this.#log = opts.logger ?? silentLogger;
    this.#now = opts.now ?? Date.now;
    this.#renewAfterMs = opts.renewAfterMs ?? 90 * 60_000;
    this.#maxAgeMs = opts.maxAgeMs ?? 115 * 60_000;
  }

  async authorize(method: string): Promise<Authorization> {
    const s = await this.#current();
    const headers: Record<string, string> = { cookie: `PVEAuthCookie=${s.ticket}` };
    if (method !== 'GET' && method !== 'HEAD') headers.csrfpreventiontoken = s.csrf;
    return { headers, generation: s.generation };
  }

  unauthorized(generation: number): boolean {
    if (this.#session && this.#session.generation === generation) {
      this.#log.info({ user: this.principal }, 'proxmox rejected the ticket (401); logging in again');
      this.#session = undefined;
    }
    return true;
  }

  #current(): Promise<TicketSession> {
    if (this.#pending) return this.#pending;
    const s = this.#session;
    const age = s ? this.#now() - s.obtainedAt : Infinity;
    if (s && age < this.#renewAfterMs) return Promise.resolve(s);
    const p = (s && age < this.#maxAgeMs ? this.#renew(s) : this.#freshLogin()).finally(() => {
      if (this.#pending === p) this.#pending = undefined;
    });
    this.#pending = p;
    return p;
  }

  async #freshLogin(): Promise<TicketSession> {
    const r = await this.#login({ username: this.principal, password: this.#password });
    this.#log.debug({ user: r.username }, 'proxmox ticket obtained');
    return this.#store(r);
  }

  async #renew(s: TicketSession): Promise<TicketSession> {
    try {
      const r = await this.#login({ username: s.username, password: s.ticket });
      this.#log.debug({ user: r.username }, 'proxmox ticket renewed');
      return this.#store(r);
    } catch (err) {
      this.#log.info({ user: this.principal, err: (err as Error).message }, 'proxmox ticket renewal failed; logging in');
      return this.#freshLogin();
    }
  }

  #store(r: TicketResponse): TicketSession {
    const s: TicketSession = {
      username: r.username,
      ticket: r.ticket,
      csrf: r.CSRFPreventionToken,
      obtainedAt: this.#now(),
      generation: ++this.#generation,
    };
    this.#session = s;
    return s;
  }
}
