// Routes: ticket login (`POST /access/ticket`), effective permissions (`GET /access/permissions`), `GET /version`.
import type { Route } from '../routing.js';

/** PVE's `userid_or_token_regex`: `user@realm` with an optional `!tokenname`. */
const useridOrTokenPattern = /^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+(?:![A-Za-z][A-Za-z0-9.\-_]+)?$/;

export const accessRoutes: Route[] = [
  {
    method: 'POST',
    pattern: '/access/ticket',
    noAuth: true,
    schema: {
      username: { type: 'string', maxLength: 64 },
      password: { type: 'string' },
      realm: { type: 'string', optional: true, maxLength: 32 },
      otp: { type: 'string', optional: true },
      'tfa-challenge': { type: 'string', optional: true },
      path: { type: 'string', optional: true },
      privs: { type: 'string', optional: true },
      'new-format': { type: 'boolean', optional: true },
    },
    handler: async ({ sim, params }) => {
      try {
        const realm = params['realm'];
        return sim.access.login(String(params['username']), String(params['password']), realm === undefined ? undefined : String(realm));
      } catch (err) {
        await sim.clock.sleep(sim.authFailDelayMs);
        throw err;
      }
    },
  },
  {
    // Anyone may read their own permissions and those of their own tokens; others need Sys.Audit on /access.
    // Values are propagate flags; a privilege is held when its key is present.
    method: 'GET',
    pattern: '/access/permissions',
    schema: {
      userid: { type: 'string', optional: true, pattern: useridOrTokenPattern },
      path: { type: 'string', optional: true },
    },
    handler: ({ sim, caller, params }) => {
      const userid = params['userid'] === undefined ? caller.authid : String(params['userid']);
      const bang = userid.indexOf('!');
      const ownToken = bang >= 0 && userid.slice(0, bang) === caller.authid;
      if (userid !== caller.authid && !ownToken) sim.access.check(caller, '/access', 'Sys.Audit');
      const path = params['path'];
      if (path !== undefined && path !== '') {
        const privs = sim.access.effectivePrivileges(userid, String(path));
        return { [String(path)]: Object.fromEntries([...privs].sort(([a], [b]) => a.localeCompare(b))) };
      }
      return sim.access.permissionTree(userid);
    },
  },
  {
    method: 'GET',
    pattern: '/version',
    schema: {},
    handler: ({ sim }) => ({ ...sim.profile.version }),
  },
];
