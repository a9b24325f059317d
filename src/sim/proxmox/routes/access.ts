// Routes: ticket login (`POST /access/ticket`) and `GET /version`.
import type { Route } from '../routing.js';

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
    method: 'GET',
    pattern: '/version',
    schema: {},
    handler: ({ sim }) => ({ ...sim.profile.version }),
  },
];
