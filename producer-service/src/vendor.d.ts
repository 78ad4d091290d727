// The rate-limit plugin's Redis store, which the plugin exports without types.
declare module '@fastify/rate-limit/store/RedisStore.js' {
  import type { Redis } from 'ioredis'
  const RedisStore: new (continueExceeding: boolean, exponentialBackoff: boolean, redis: Redis) => unknown
  export default RedisStore
}
