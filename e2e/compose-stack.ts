// A compose project on a real Docker engine, for the scripts that prove the Docker paths
// (docker-stack.ts, cluster-stack.ts): free host ports, a project name of its own, health,
// posting events and reading rows through the published ports, and teardown.
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import mysql, { type RowDataPacket } from 'mysql2/promise'
import { waitFor } from '../test-support/index.js'
import { freePort } from '../test-support/process.js'

export const root = fileURLToPath(new URL('..', import.meta.url))
const run = promisify(execFile)

/** Runs a command in the repository; its output streams through. Rejects on a non-zero exit. */
export function sh(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: root, env, stdio: 'inherit' })
    child.on('error', reject)
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`\`${command} ${args.join(' ')}\` exited ${code}`)),
    )
  })
}

/** Runs a command in the repository and returns what it printed. */
export async function output(command: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return (await run(command, args, { cwd: root, env, maxBuffer: 16 * 2 ** 20 })).stdout.trim()
}

/** `docker compose` when the plugin is there, else `docker-compose`. */
async function composeCommand(): Promise<string[]> {
  try {
    await output('docker', ['compose', 'version'])
    return ['docker', 'compose']
  } catch {
    return ['docker-compose']
  }
}

export function logStep(script: string) {
  return (text: string) => console.log(`[${script} ${new Date().toISOString().slice(11, 19)}] ${text}`)
}

export interface PostOutcome {
  status: number | 'error'
  eventIds: string[]
}

export class ComposeStack {
  readonly project = `uat_${randomBytes(3).toString('hex')}`
  ports: Record<string, number> = {}
  #env: NodeJS.ProcessEnv = process.env
  #command: string[] = []
  readonly #file: string | undefined

  /** `file`: a compose file other than docker-compose.yml. */
  constructor(file?: string) {
    this.#file = file
  }

  /** Picks free host ports for the *_HOST_PORT variables. */
  async prepare(): Promise<this> {
    for (const name of [
      'PRODUCER_HOST_PORT',
      'CONSUMER_HOST_PORT',
      'QUERY_HOST_PORT',
      'RABBITMQ_HOST_PORT',
      'RABBITMQ_MANAGEMENT_HOST_PORT',
      'MYSQL_HOST_PORT',
    ]) {
      this.ports[name] = await freePort()
    }
    this.#env = {
      ...process.env,
      ...Object.fromEntries(Object.entries(this.ports).map(([key, value]) => [key, String(value)])),
    }
    this.#command = await composeCommand()
    return this
  }

  get env(): NodeJS.ProcessEnv {
    return this.#env
  }

  get api(): string {
    return `http://127.0.0.1:${this.ports.PRODUCER_HOST_PORT}`
  }

  #args(args: string[]): [string, string[]] {
    const [bin, ...prefix] = this.#command
    return [bin as string, [...prefix, '-p', this.project, ...(this.#file ? ['-f', this.#file] : []), ...args]]
  }

  compose(...args: string[]): Promise<void> {
    return sh(...this.#args(args), this.#env)
  }

  composeOut(...args: string[]): Promise<string> {
    return output(...this.#args(args), this.#env)
  }

  /** The containers of a service (several when scaled). */
  async containersOf(service: string): Promise<string[]> {
    return (await this.composeOut('ps', '-q', service)).split('\n').filter(Boolean)
  }

  async health(container: string): Promise<string> {
    return output('docker', ['inspect', '--format', '{{if .State.Health}}{{.State.Health.Status}}{{end}}', container])
  }

  /** Waits until every container of `services` reports healthy. */
  async healthy(services: string[], timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        for (const service of services) {
          const containers = await this.containersOf(service)
          if (containers.length === 0) return false
          for (const container of containers) if ((await this.health(container)) !== 'healthy') return false
        }
        return true
      },
      { what: `${services.join(', ')} healthy`, timeoutMs, intervalMs: 1000 },
    )
  }

  /** POSTs to the producer; a batch when `events` is an array. */
  async post(events: object | object[]): Promise<PostOutcome> {
    const batch = Array.isArray(events)
    try {
      const res = await fetch(`${this.api}/api/v1/events/${batch ? 'batch' : 'track'}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(batch ? { batch: events } : events),
      })
      const body = (await res.json()) as { event_id?: string; event_ids?: string[] }
      return { status: res.status, eventIds: body.event_ids ?? (body.event_id ? [body.event_id] : []) }
    } catch {
      return { status: 'error', eventIds: [] }
    }
  }

  async #query(sql: string): Promise<RowDataPacket[]> {
    const connection = await mysql.createConnection({
      host: '127.0.0.1',
      port: this.ports.MYSQL_HOST_PORT,
      user: 'user',
      password: 'user_password',
      database: 'user_activity_db',
    })
    try {
      return (await connection.query<RowDataPacket[]>(sql))[0]
    } finally {
      await connection.end()
    }
  }

  /** Every event_id in the table, as many times as it is there. */
  async storedIds(): Promise<string[]> {
    return (await this.#query('SELECT event_id FROM user_activities')).map((row) => row.event_id as string)
  }

  /** The number of rows, cheaply (for polling a drain). */
  async storedCount(): Promise<number> {
    return Number((await this.#query('SELECT COUNT(*) AS n FROM user_activities'))[0]?.n)
  }

  /** Waits until every id in `accepted` is stored; returns how many are stored twice or more. */
  async settle(accepted: Set<string>, timeoutMs = 120_000): Promise<{ stored: number; duplicated: number }> {
    let ids: string[] = []
    await waitFor(
      async () => {
        ids = await this.storedIds()
        const stored = new Set(ids)
        return [...accepted].every((id) => stored.has(id))
      },
      { what: `${accepted.size} accepted events stored`, timeoutMs, intervalMs: 500 },
    )
    return { stored: ids.length, duplicated: ids.length - new Set(ids).size }
  }

  async down(): Promise<void> {
    // With the replica profile named, so that its containers and volume go too.
    await this.compose('--profile', 'replica', 'down', '-v', '--remove-orphans')
  }
}

/** An event of the scripts' own, varied by `i`. */
export function scriptEvent(i: number) {
  return {
    user_id: 1 + i,
    event_type: i % 3 === 0 ? 'login' : 'page_view',
    timestamp: new Date(Date.UTC(2026, 1, 20, 10) + i).toISOString(),
    metadata: { i },
  }
}
