// Who may read: a read key (QUERY_API_KEYS) or an admin key on every read route, in the three
// forms the producer takes, checked in constant time. Never open by accident: without keys the
// read routes answer 401, unless QUERY_OPEN opens them on purpose. Erasing takes an admin key
// (ADMIN_API_KEYS), always: QUERY_OPEN never opens it, and a read key is 403 there.
import type { FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { KeyRing, presentedKey } from 'event-contract'
import type { Access } from '../config.js'
import { ForbiddenError, UnauthorizedError } from '../errors.js'

/** The route config of a route that needs a read key. */
export const READ_ROUTE = { access: 'read' } as const
/** The route config of a route that needs an admin key. */
export const ADMIN_ROUTE = { access: 'admin' } as const

/** The hook of admin routes: an admin key, whatever QUERY_OPEN says. */
function adminCheck(app: FastifyInstance, access: Access): void {
  const admins = new KeyRing(access.adminKeys)
  const readers = new KeyRing(access.readKeys)
  app.addHook('onRequest', async (request) => {
    if ((request.routeOptions.config as { access?: string }).access !== ADMIN_ROUTE.access) return
    if (admins.size === 0) {
      throw new UnauthorizedError('Erasure is not set up: the operator must set ADMIN_API_KEYS')
    }
    const key = presentedKey(request.headers)
    if (key === undefined) throw new UnauthorizedError('An admin key is required')
    if (admins.holds(key)) return
    if (readers.holds(key))
      throw new ForbiddenError('A read key cannot erase: an admin key (ADMIN_API_KEYS) is required')
    throw new UnauthorizedError('The key is not an admin key')
  })
}

async function readKeys(app: FastifyInstance, access: Access): Promise<void> {
  adminCheck(app, access)
  const readers = new KeyRing([...access.readKeys, ...access.adminKeys])
  if (access.open) {
    app.log.warn("QUERY_OPEN=true: anyone who can reach this service can read every user's events")
    return
  }
  if (readers.size === 0) {
    app.log.warn(
      'no read keys: the read routes answer 401. Set QUERY_API_KEYS (or QUERY_API_KEYS_FILE) to keys of ' +
        'your own, or QUERY_OPEN=true to open them on purpose',
    )
  } else {
    app.log.info({ keys: new KeyRing(access.readKeys).fingerprints }, 'reading requires a read key')
  }
  app.addHook('onRequest', async (request) => {
    if ((request.routeOptions.config as { access?: string }).access !== READ_ROUTE.access) return
    if (readers.size === 0) {
      throw new UnauthorizedError('Reading is not set up: the operator must set QUERY_API_KEYS (or QUERY_OPEN=true)')
    }
    const key = presentedKey(request.headers)
    if (key === undefined) throw new UnauthorizedError('A read key is required')
    // A write key (API_KEYS) is not here: it ships inside apps and must never read.
    if (!readers.holds(key)) throw new UnauthorizedError('The key is not a read key')
  })
}

export default fp(readKeys, { name: 'read-keys', fastify: '5.x' })
