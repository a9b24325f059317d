// Users, API tokens, ACLs, tickets and CSRF tokens: who the caller is and which privileges it holds on a path.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { SimClock } from './clock.js';
import { authError, permissionError, PveApiError } from './errors.js';
import type { SeededRandom } from '../rng.js';
import type { VersionProfile } from './version.js';

export const allPrivileges = [
  'VM.Allocate', 'VM.Audit', 'VM.Backup', 'VM.Clone', 'VM.Config.CDROM', 'VM.Config.CPU', 'VM.Config.Cloudinit',
  'VM.Config.Disk', 'VM.Config.HWType', 'VM.Config.Memory', 'VM.Config.Network', 'VM.Config.Options', 'VM.Console',
  'VM.GuestAgent.Audit', 'VM.GuestAgent.FileRead', 'VM.GuestAgent.FileWrite', 'VM.GuestAgent.FileSystemMgmt',
  'VM.GuestAgent.Unrestricted', 'VM.Migrate', 'VM.PowerMgmt', 'VM.Replicate', 'VM.Snapshot', 'VM.Snapshot.Rollback',
  'Sys.AccessNetwork', 'Sys.Audit', 'Sys.Console', 'Sys.Incoming', 'Sys.Modify', 'Sys.PowerMgmt', 'Sys.Syslog',
  'Datastore.Allocate', 'Datastore.AllocateSpace', 'Datastore.AllocateTemplate', 'Datastore.Audit',
  'SDN.Allocate', 'SDN.Audit', 'SDN.Use', 'Mapping.Audit', 'Mapping.Modify', 'Mapping.Use',
  'Pool.Allocate', 'Pool.Audit', 'Permissions.Modify', 'Realm.Allocate', 'Realm.AllocateUser', 'User.Modify', 'Group.Allocate',
] as const;

const vmPrivs = allPrivileges.filter((p) => p.startsWith('VM.'));

export const builtinRoles: Record<string, readonly string[]> = {
  Administrator: allPrivileges,
  NoAccess: [],
  PVEAuditor: ['VM.Audit', 'Sys.Audit', 'Datastore.Audit', 'SDN.Audit', 'Mapping.Audit', 'Pool.Audit'],
  PVEVMAdmin: vmPrivs,
  PVEVMUser: ['VM.Audit', 'VM.Console', 'VM.PowerMgmt', 'VM.Config.CDROM', 'VM.Config.Cloudinit', 'VM.Backup'],
  PVEDatastoreAdmin: ['Datastore.Allocate', 'Datastore.AllocateSpace', 'Datastore.AllocateTemplate', 'Datastore.Audit'],
  PVEDatastoreUser: ['Datastore.AllocateSpace', 'Datastore.Audit'],
  PVEMappingUser: ['Mapping.Audit', 'Mapping.Use'],
  PVESDNUser: ['SDN.Audit', 'SDN.Use'],
};

export interface SimUser {
  userid: string;
  password?: string;
  enabled: boolean;
}

export interface SimToken {
  /** `user@realm!name` */
  fullid: string;
  userid: string;
  secret: string;
  privsep: boolean;
  /** Unix seconds; 0 = never. */
  expire: number;
}

export interface AclEntry {
  path: string;
  /** A user id (`alice@pve`) or a token id (`alice@pve!ci`). */
  ugid: string;
  privs: string[];
  propagate: boolean;
}

/** The authenticated caller of one request. */
export interface Caller {
  /** `user@realm` or `user@realm!token` — what UPIDs carry. */
  authid: string;
  userid: string;
  tokenid?: string;
  via: 'ticket' | 'token';
}

export interface LoginResult {
  username: string;
  ticket: string;
  CSRFPreventionToken: string;
  clustername?: string;
  cap: Record<string, Record<string, number>>;
}

export interface AccessControlOptions {
  clock: SimClock;
  rng: SeededRandom;
  profile: () => VersionProfile;
  ticketLifetimeMs?: number;
}

export class AccessControl {
  readonly users = new Map<string, SimUser>();
  readonly tokens = new Map<string, SimToken>();
  acl: AclEntry[] = [];
  readonly roles = new Map<string, ReadonlySet<string>>();
  ticketLifetimeMs: number;
  /** The next N ticket calls with a valid CSRF token are still rejected (fault). */
  csrfRejections = 0;
  private key: Buffer;

  constructor(private readonly opts: AccessControlOptions) {
    this.ticketLifetimeMs = opts.ticketLifetimeMs ?? 2 * 3600_000;
    this.key = opts.rng.bytes(32);
    for (const [name, privs] of Object.entries(builtinRoles)) this.roles.set(name, new Set(privs));
  }

  addUser(u: SimUser): void {
    this.users.set(u.userid, u);
  }

  addToken(t: SimToken): void {
    this.tokens.set(t.fullid, t);
  }

  /** Expands roles and privileges into one ACL entry. Unknown role or privilege names are a fixture error. */
  grant(path: string, ugid: string, opts: { roles?: readonly string[]; privs?: readonly string[]; propagate?: boolean }): void {
    const privs = new Set<string>();
    for (const r of opts.roles ?? []) {
      const role = this.roles.get(r);
      if (!role) throw new Error(`unknown role '${r}'`);
      for (const p of role) privs.add(p);
    }
    for (const p of opts.privs ?? []) {
      if (!(allPrivileges as readonly string[]).includes(p)) throw new Error(`unknown privilege '${p}'`);
      privs.add(p);
    }
    this.acl.push({ path: normalizeAclPath(path), ugid, privs: [...privs], propagate: opts.propagate ?? true });
  }

  /** Removes every ACL entry of `ugid` (optionally only on `path`). */
  revokeAll(ugid: string, path?: string): void {
    this.acl = this.acl.filter((e) => !(e.ugid === ugid && (path === undefined || e.path === normalizeAclPath(path))));
  }

  // ---- tickets ----

  login(username: string, password: string, realm?: string): LoginResult {
    const userid = realm ? `${username}@${realm}` : username;
    const user = this.users.get(userid);
    const ok =
      user !== undefined &&
      user.enabled &&
      ((user.password !== undefined && safeEqual(user.password, password)) || this.verifyTicket(password) === userid);
    if (!ok) throw new PveApiError(401, 'authentication failure');
    return {
      username: userid,
      ticket: this.issueTicket(userid),
      CSRFPreventionToken: this.csrfToken(userid),
      cap: this.capabilities(userid),
    };
  }

  issueTicket(userid: string, atMs = this.opts.clock.now()): string {
    const ts = hex8(Math.floor(atMs / 1000));
    const plain = `PVE:${userid}:${ts}`;
    return `${plain}::${this.sign(plain)}`;
  }

  csrfToken(userid: string, atMs = this.opts.clock.now()): string {
    const ts = hex8(Math.floor(atMs / 1000));
    return `${ts}:${this.sign(`csrf:${ts}:${userid}`).slice(0, 43)}`;
  }

  /**
   * Every ticket and CSRF token issued so far stops being valid, whatever its age (the cluster's auth key was
   * rotated). Lets tests expire tickets at a chosen moment instead of after a lifetime of simulated time.
   */
  revokeTickets(): void {
    this.key = this.opts.rng.bytes(32);
  }

  /** Returns the ticket's user when its signature holds and it is within its lifetime; otherwise undefined. */
  verifyTicket(ticket: string): string | undefined {
    const m = /^PVE:([^:\s]+):([0-9A-F]{8})::(.+)$/.exec(ticket);
    if (!m) return undefined;
    const [, userid, ts, sig] = m as unknown as [string, string, string, string];
    if (!safeEqual(sig, this.sign(`PVE:${userid}:${ts}`))) return undefined;
    return this.withinLifetime(ts) ? userid : undefined;
  }

  private verifyCsrf(token: string, userid: string): boolean {
    const m = /^([0-9A-F]{8}):(\S+)$/.exec(token);
    if (!m) return false;
    const [, ts, sig] = m as unknown as [string, string, string];
    return safeEqual(sig, this.sign(`csrf:${ts}:${userid}`).slice(0, 43)) && this.withinLifetime(ts);
  }

  private withinLifetime(tsHex: string): boolean {
    const ageMs = this.opts.clock.now() - parseInt(tsHex, 16) * 1000;
    return ageMs >= -300_000 && ageMs <= this.ticketLifetimeMs;
  }

  private sign(text: string): string {
    return createHmac('sha256', this.key).update(text).digest('base64');
  }

  private capabilities(userid: string): Record<string, Record<string, number>> {
    const flags = (prefix: string) =>
      Object.fromEntries(
        [...this.privileges({ authid: userid, userid, via: 'ticket' }, '/')].filter((p) => p.startsWith(prefix)).map((p) => [p, 1]),
      );
    return { vms: flags('VM.'), storage: flags('Datastore.'), nodes: flags('Sys.'), mapping: flags('Mapping.'), sdn: flags('SDN.') };
  }

  // ---- request authentication ----

  /**
   * Authenticates a request from its headers. `csrfExempt` is true for GET and for the upload endpoint.
   * Throws 401 with the text the active version profile uses.
   */
  authenticate(headers: Readonly<Record<string, string | undefined>>, method: string, csrfExempt: boolean): Caller {
    const unified = this.opts.profile().unifiedAuthFailure;
    const fail = (detail: string) => authError(unified ? 'Authentication failed!' : detail);
    const authz = headers['authorization'];
    if (authz !== undefined && /^PVEAPIToken[= ]/.test(authz)) {
      const m = /^PVEAPIToken[= ]([^!\s]+)!([^=\s]+)=(\S+)$/.exec(authz.trim());
      if (!m) throw fail('invalid token value!');
      const [, userid, tokenName, rawSecret] = m as unknown as [string, string, string, string];
      const secret = safeDecode(rawSecret);
      const fullid = `${userid}!${tokenName}`;
      const token = this.tokens.get(fullid);
      const user = this.users.get(userid);
      if (!user || !user.enabled) throw fail('user account disabled or expired.');
      if (!token) throw fail(`no such token '${tokenName}' for user '${userid}'`);
      if (token.expire !== 0 && token.expire * 1000 <= this.opts.clock.now()) throw fail(`token '${tokenName}' access expired`);
      if (!safeEqual(token.secret, secret)) throw fail('invalid token value!');
      return { authid: fullid, userid, tokenid: tokenName, via: 'token' };
    }
    let ticket: string | undefined;
    const cookie = headers['cookie'];
    if (cookie) {
      for (const part of cookie.split(';')) {
        const [k, ...rest] = part.trim().split('=');
        if (k === 'PVEAuthCookie') ticket = safeDecode(rest.join('='));
      }
    }
    if (ticket === undefined && authz !== undefined && authz.startsWith('PVEAuthCookie=')) {
      ticket = safeDecode(authz.slice('PVEAuthCookie='.length));
    }
    if (ticket === undefined || ticket === '') throw authError('No ticket');
    const userid = this.verifyTicket(ticket);
    const user = userid === undefined ? undefined : this.users.get(userid);
    if (userid === undefined || !user || !user.enabled) throw fail('permission denied - invalid PVE ticket');
    if (method !== 'GET' && !csrfExempt) {
      const csrf = headers['csrfpreventiontoken'];
      if (csrf === undefined || !this.verifyCsrf(csrf, userid) || this.csrfRejections > 0) {
        if (this.csrfRejections > 0) this.csrfRejections--;
        throw authError('Permission denied - invalid csrf token');
      }
    }
    return { authid: userid, userid, via: 'ticket' };
  }

  // ---- privileges ----

  /** root@pam (and its tokens without privilege separation) holds every privilege everywhere. */
  privileges(caller: Caller, path: string): ReadonlySet<string> {
    return new Set(this.effectivePrivileges(caller.authid, path).keys());
  }

  /**
   * The privileges a user or token (`user@realm[!name]`) holds on `path`, each with PVE's propagate flag
   * (1: also inherited below `path`). root@pam holds everything with 1; a token without privilege separation
   * holds its user's; a privsep token the intersection, flagged 1 only where both flags are 1. Unknown: nothing.
   */
  effectivePrivileges(authid: string, path: string): Map<string, 0 | 1> {
    if (authid === 'root@pam') return new Map(allPrivileges.map((p) => [p, 1]));
    const bang = authid.indexOf('!');
    if (bang < 0) return this.users.has(authid) ? this.aclPrivileges(authid, path) : new Map();
    const token = this.tokens.get(authid);
    if (!token) return new Map();
    const userPrivs = this.effectivePrivileges(token.userid, path);
    if (!token.privsep) return userPrivs;
    const tokenPrivs = this.aclPrivileges(authid, path);
    const out = new Map<string, 0 | 1>();
    for (const [p, flag] of tokenPrivs) {
      const userFlag = userPrivs.get(p);
      if (userFlag !== undefined) out.set(p, userFlag && flag ? 1 : 0);
    }
    return out;
  }

  /**
   * `GET /access/permissions` without `path`: every path PVE lists by default (`/`, `/access`, `/access/groups`,
   * `/nodes`, `/pool`, `/sdn`, `/storage`, `/vms`) plus every path that has an ACL, where `authid` holds something.
   */
  permissionTree(authid: string): Record<string, Record<string, 0 | 1>> {
    const paths = new Set(['/', '/access', '/access/groups', '/nodes', '/pool', '/sdn', '/storage', '/vms']);
    for (const e of this.acl) paths.add(e.path);
    const out: Record<string, Record<string, 0 | 1>> = {};
    for (const path of [...paths].sort()) {
      const privs = this.effectivePrivileges(authid, path);
      if (privs.size > 0) out[path] = Object.fromEntries([...privs].sort(([a], [b]) => a.localeCompare(b)));
    }
    return out;
  }

  has(caller: Caller, path: string, priv: string): boolean {
    return this.privileges(caller, path).has(priv);
  }

  /** 403 unless the caller holds `priv` on `path`. */
  check(caller: Caller, path: string, priv: string): void {
    if (!this.has(caller, path, priv)) throw permissionError(path, priv);
  }

  /** 403 unless the caller holds at least one of `privs` on `path`. */
  checkAny(caller: Caller, path: string, privs: readonly string[]): void {
    const held = this.privileges(caller, path);
    if (!privs.some((p) => held.has(p))) throw permissionError(path, privs.join('|'));
  }

  /**
   * PVE's inheritance: walking from `/` down, an ACL on a deeper path replaces what was inherited. Privileges that
   * arrive from above are propagated (1); those set on `path` itself carry the entry's propagate flag.
   */
  private aclPrivileges(ugid: string, path: string): Map<string, 0 | 1> {
    const target = normalizeAclPath(path);
    const parts = target.split('/').filter(Boolean);
    const prefixes = ['/', ...parts.map((_, i) => '/' + parts.slice(0, i + 1).join('/'))];
    let current = new Map<string, 0 | 1>();
    for (const prefix of prefixes) {
      const entries = this.acl.filter((e) => e.ugid === ugid && e.path === prefix && (e.propagate || prefix === target));
      if (entries.length === 0) continue;
      current = new Map();
      for (const e of entries) {
        const flag: 0 | 1 = prefix !== target || e.propagate ? 1 : 0;
        for (const p of e.privs) current.set(p, current.get(p) === 1 ? 1 : flag);
      }
    }
    return current;
  }
}

function normalizeAclPath(path: string): string {
  const p = '/' + path.split('/').filter(Boolean).join('/');
  return p;
}

function hex8(n: number): string {
  return n.toString(16).toUpperCase().padStart(8, '0');
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
