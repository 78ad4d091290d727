// The compose file's contract, checked point by point: the original's names, and only variables
// the services read. `npm run test:docker` runs it on a real engine.
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'
import { parse } from 'yaml'
import { ConfigSchema as ConsumerConfig } from '../consumer-service/src/config.js'
import { ConfigSchema as ProducerConfig } from '../producer-service/src/config.js'
import { ConfigSchema as QueryConfig } from '../query-service/src/config.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const compose = parse(readFileSync(`${root}docker-compose.yml`, 'utf8'))
const services = compose.services

describe('docker-compose.yml', () => {
  it('has the original service names and no version key; anything else is an optional profile', () => {
    const always = Object.keys(services).filter((name) => !services[name].profiles)
    expect(always.sort()).toEqual(['consumer-service', 'mysql', 'producer-service', 'query-service', 'rabbitmq'])
    expect(compose).not.toHaveProperty('version')
  })

  it('offers Redis for shared rate-limit counters as the redis profile', () => {
    expect(services.redis.profiles).toEqual(['redis'])
    expect(services['producer-service'].environment.RATE_LIMIT_REDIS_URL).toBe('${RATE_LIMIT_REDIS_URL:-}')
  })

  it('offers Prometheus, scraping the three services, as the monitoring profile', () => {
    expect(services.prometheus.profiles).toEqual(['monitoring'])
    const config = parse(readFileSync(`${root}monitoring/prometheus.yml`, 'utf8'))
    const targets = config.scrape_configs.flatMap((job: { static_configs: { targets: string[] }[] }) =>
      job.static_configs.flatMap((c) => c.targets),
    )
    expect(targets.sort()).toEqual(['consumer-service:8001', 'producer-service:8000', 'query-service:8002'])
  })

  it('runs RabbitMQ with the management plugin and a healthcheck', () => {
    expect(services.rabbitmq.image).toMatch(/^rabbitmq:.*management/)
    expect(services.rabbitmq.healthcheck.test).toBeDefined()
  })

  it('publishes RabbitMQ and MySQL, whose passwords are known, on 127.0.0.1 only, on movable ports', () => {
    expect(services.rabbitmq.ports).toEqual([
      '127.0.0.1:${RABBITMQ_HOST_PORT:-5672}:5672',
      '127.0.0.1:${RABBITMQ_MANAGEMENT_HOST_PORT:-15672}:15672',
    ])
    expect(services.mysql.ports).toEqual(['127.0.0.1:${MYSQL_HOST_PORT:-3306}:3306'])
  })

  it('runs MySQL 8.0 with the database, user, schema, a named volume and a healthcheck', () => {
    const mysql = services.mysql
    expect(mysql.image).toBe('mysql:8.0')
    expect(mysql.environment).toMatchObject({
      MYSQL_DATABASE: 'user_activity_db',
      MYSQL_USER: 'user',
      MYSQL_PASSWORD: 'user_password',
    })
    expect(mysql.volumes).toContain('./db/init.sql:/docker-entrypoint-initdb.d/init.sql:ro')
    const named = mysql.volumes.map((v: string) => v.split(':')[0]).filter((v: string) => !v.startsWith('.'))
    expect(named.length).toBe(1)
    expect(compose.volumes).toHaveProperty(named[0])
    expect(mysql.healthcheck.test).toBeDefined()
  })

  it.each([
    ['producer-service', '8000', 'PRODUCER_HOST_PORT', ProducerConfig, ['rabbitmq']],
    ['consumer-service', '8001', 'CONSUMER_HOST_PORT', ConsumerConfig, ['rabbitmq', 'mysql']],
    ['query-service', '8002', 'QUERY_HOST_PORT', QueryConfig, ['mysql']],
  ] as const)('builds and wires %s', (name, port, hostPort, schema, dependencies) => {
    const service = services[name]
    expect(service.build.context).toBe('.')
    expect(existsSync(`${root}${service.build.dockerfile}`)).toBe(true)
    expect(readFileSync(`${root}${service.build.dockerfile}`, 'utf8')).toMatch(
      new RegExp(`^FROM .* AS ${service.build.target}$`, 'm'),
    )
    expect(service.ports).toEqual([`\${${hostPort}:-${port}}:${port}`])
    expect(service.restart).toBe('unless-stopped')
    expect(service.healthcheck.test.join(' ')).toContain(`127.0.0.1:${port}/health`)
    for (const dependency of dependencies) {
      expect(service.depends_on[dependency]).toEqual({ condition: 'service_healthy' })
    }
    // Every variable given is one the service reads (or, TEST_*, its tests read).
    const known = Object.keys(schema.properties)
    const unknown = Object.keys(service.environment).filter((v) => !known.includes(v) && !v.startsWith('TEST_'))
    expect(unknown).toEqual([])
    if ((dependencies as readonly string[]).includes('rabbitmq'))
      expect(service.environment.RABBITMQ_HOST).toBe('rabbitmq')
  })

  it('keeps reading closed unless keys are set or QUERY_OPEN says so', () => {
    expect(services['query-service'].environment).toMatchObject({
      QUERY_API_KEYS: '${QUERY_API_KEYS:-}',
      QUERY_OPEN: '${QUERY_OPEN:-false}',
    })
  })

  it('points the consumer at the mysql service and the compose database', () => {
    expect(services['consumer-service'].environment).toMatchObject({
      MYSQL_HOST: 'mysql',
      MYSQL_DATABASE: 'user_activity_db',
      MYSQL_USER: 'user',
      MYSQL_PASSWORD: 'user_password',
      TEST_MYSQL_USER: 'root',
      TEST_MYSQL_PASSWORD: services.mysql.environment.MYSQL_ROOT_PASSWORD,
    })
  })
})
