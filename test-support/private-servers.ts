// Private RabbitMQ, MariaDB and Redis servers on free loopback ports, for tests that break them.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import amqp, { type ChannelModel } from 'amqplib'
import mysql from 'mysql2/promise'
import { waitFor, type Address } from './index.js'
import { freePort } from './process.js'

/** The first of `candidates` that exists, or an error that says what to install. */
function binary(candidates: string[], install: string): string {
  const found = candidates.find((path) => existsSync(path))
  if (!found) throw new Error(`${candidates.join(' or ')} not found: install ${install}`)
  return found
}

function onPath(name: string): string[] {
  return (process.env.PATH ?? '').split(':').map((dir) => join(dir, name))
}

/** Runs a command with a bound; rejects with its output on a non-zero exit. */
export function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env, timeoutMs = 30_000) {
  return new Promise<string>((resolve, reject) => {
    execFile(file, args, { env, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${file} ${args.join(' ')}: ${err.message}\n${stdout}${stderr}`))
      else resolve(stdout)
    })
  })
}

/** A server process we own: its child, its temp directory, and a bounded stop. */
abstract class PrivateServer {
  readonly dir = mkdtempSync(join(tmpdir(), 'chaos-'))
  child: ChildProcess | undefined
  log = ''
  address: Address = { host: '127.0.0.1', port: 0 }

  protected launch(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
    const child = spawn(file, args, { env, cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] })
    // Only the tail matters when a start fails.
    const keep = (chunk: Buffer) => (this.log = (this.log + chunk.toString()).slice(-4000))
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    this.child = child
  }

  get alive(): boolean {
    return !!this.child && this.child.exitCode === null && this.child.signalCode === null
  }

  /** SIGCONT first (a stalled server ignores SIGTERM until it runs), then SIGTERM, then SIGKILL. */
  async stop(): Promise<void> {
    const child = this.child
    if (child && this.alive) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGCONT')
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(timer)
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}

/** A RabbitMQ node of its own (no plugins), controlled with `ctl` (rabbitmqctl -n node). */
export class PrivateRabbit extends PrivateServer {
  readonly node = `chaos-${randomBytes(4).toString('hex')}@localhost`
  readonly #sbin = binary(
    ['/usr/lib/rabbitmq/bin/rabbitmq-server', ...onPath('rabbitmq-server')],
    'rabbitmq-server (apt-get install rabbitmq-server)',
  )
  readonly #ctl = binary(
    ['/usr/lib/rabbitmq/bin/rabbitmqctl', ...onPath('rabbitmqctl')],
    'rabbitmqctl (apt-get install rabbitmq-server)',
  )

  #env(): NodeJS.ProcessEnv {
    // HOME holds the node's Erlang cookie, which the CLI must share.
    return { PATH: process.env.PATH, HOME: this.dir, LANG: 'C.UTF-8' }
  }

  static async start(): Promise<PrivateRabbit> {
    const server = new PrivateRabbit()
    try {
      await server.#start()
    } catch (err) {
      await server.stop()
      throw err
    }
    return server
  }

  async #start(): Promise<void> {
    this.address = { host: '127.0.0.1', port: await freePort() }
    const distPort = await freePort()
    // The listener in the config file only: RABBITMQ_NODE_PORT as well would open it twice (eaddrinuse).
    writeFileSync(
      join(this.dir, 'rabbitmq.conf'),
      `loopback_users = none\nlisteners.tcp.1 = 127.0.0.1:${this.address.port}\n`,
    )
    writeFileSync(join(this.dir, 'enabled_plugins'), '[].\n')
    writeFileSync(join(this.dir, 'rabbitmq-env.conf'), '')
    this.launch(this.#sbin, [], {
      ...this.#env(),
      RABBITMQ_NODENAME: this.node,
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_CONFIG_FILE: join(this.dir, 'rabbitmq.conf'),
      RABBITMQ_CONF_ENV_FILE: join(this.dir, 'rabbitmq-env.conf'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(this.dir, 'enabled_plugins'),
      RABBITMQ_MNESIA_BASE: join(this.dir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(this.dir, 'log'),
      RABBITMQ_PID_FILE: join(this.dir, 'rabbit.pid'),
      ERL_EPMD_ADDRESS: '127.0.0.1',
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    })
    await this.waitReady(90_000)
  }

  /** Until an AMQP connection opens (rabbitmqctl await_startup fails while the node boots). */
  async waitReady(timeoutMs: number): Promise<void> {
    await waitFor(
      async () => {
        if (!this.alive) throw new Error(`rabbitmq-server exited: ${this.log}`)
        const connection = await this.connect()
        await connection.close()
        return true
      },
      { timeoutMs, intervalMs: 500, what: `private RabbitMQ ${this.node} on port ${this.address.port}` },
    )
  }

  ctl(...args: string[]): Promise<string> {
    return run(this.#ctl, ['-n', this.node, ...args], this.#env())
  }

  connect(): Promise<ChannelModel> {
    return amqp.connect({ hostname: '127.0.0.1', port: this.address.port, username: 'guest', password: 'guest' })
  }

  override async stop(): Promise<void> {
    if (this.alive) {
      await this.ctl('stop').catch(() => {
        // the node is wedged or gone: the signals below end it
      })
    }
    await super.stop()
  }
}

/** A MariaDB server of its own, with database `chaos` and a user `svc` without SUPER. */
export class PrivateMariadb extends PrivateServer {
  readonly database = 'chaos'
  readonly user = { user: 'svc', password: 'svc-password' }

  /** `bufferPoolSize`: InnoDB's buffer pool (512M unless given), as `--innodb-buffer-pool-size` takes it. */
  static async start({ bufferPoolSize = '512M' }: { bufferPoolSize?: string } = {}): Promise<PrivateMariadb> {
    const server = new PrivateMariadb()
    try {
      await server.#start(bufferPoolSize)
    } catch (err) {
      await server.stop()
      throw err
    }
    return server
  }

  async #start(bufferPoolSize: string): Promise<void> {
    const install = 'mariadb-server (apt-get install mariadb-server)'
    const installDb = binary([...onPath('mariadb-install-db'), ...onPath('mysql_install_db')], install)
    const mariadbd = binary(['/usr/sbin/mariadbd', ...onPath('mariadbd'), '/usr/sbin/mysqld'], install)
    const datadir = join(this.dir, 'data')
    await run(
      installDb,
      [
        '--no-defaults',
        `--datadir=${datadir}`,
        '--user=root',
        '--auth-root-authentication-method=normal',
        '--skip-test-db',
      ],
      process.env,
      120_000,
    )
    this.address = { host: '127.0.0.1', port: await freePort() }
    this.launch(mariadbd, [
      '--no-defaults',
      `--datadir=${datadir}`,
      `--port=${this.address.port}`,
      '--bind-address=127.0.0.1',
      `--socket=${join(this.dir, 'mysqld.sock')}`,
      `--pid-file=${join(this.dir, 'mysqld.pid')}`,
      '--user=root',
      '--skip-name-resolve',
      // A 30-minute soak stores about 2,000,000 rows: its merges and final checks need the pages in memory.
      `--innodb-buffer-pool-size=${bufferPoolSize}`,
      `--log-error=${join(this.dir, 'error.log')}`,
    ])
    await waitFor(
      async () => {
        if (!this.alive) throw new Error(`mariadbd exited: ${this.log}`)
        await this.sql('SELECT 1')
        return true
      },
      { timeoutMs: 60_000, intervalMs: 250, what: `private MariaDB on port ${this.address.port}` },
    )
    await this.sql(`CREATE DATABASE ${this.database} CHARACTER SET utf8mb4`)
    await this.sql(`CREATE USER '${this.user.user}'@'%' IDENTIFIED BY '${this.user.password}'`)
    await this.sql(`GRANT ALL ON ${this.database}.* TO '${this.user.user}'@'%'`)
  }

  /** A root session (autocommit on, whatever the server's default is made); the caller ends it. */
  async connect(): Promise<mysql.Connection> {
    const connection = await mysql.createConnection({
      host: '127.0.0.1',
      port: this.address.port,
      user: 'root',
      password: '',
      connectTimeout: 5000,
      timezone: 'Z',
    })
    await connection.query({ sql: 'SET SESSION autocommit = 1', timeout: 10_000 })
    return connection
  }

  /** One statement as root, on a connection of its own (bounded: `timeoutMs`). */
  async sql<T = unknown>(statement: string, values: unknown[] = [], timeoutMs = 60_000): Promise<T> {
    const connection = await this.connect()
    try {
      const [rows] = await connection.query({ sql: statement, values, timeout: timeoutMs })
      return rows as T
    } finally {
      await connection.end()
    }
  }
}

/** A Redis of its own, nothing saved. */
export class PrivateRedis extends PrivateServer {
  static async start(): Promise<PrivateRedis> {
    const server = new PrivateRedis()
    try {
      server.address = { host: '127.0.0.1', port: await freePort() }
      const redis = binary(onPath('redis-server'), 'redis-server (apt-get install redis-server)')
      server.launch(redis, [
        '--port',
        String(server.address.port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        'no',
      ])
      await waitFor(() => server.log.includes('Ready to accept connections'), {
        timeoutMs: 20_000,
        what: `private Redis on port ${server.address.port}`,
      })
    } catch (err) {
      await server.stop()
      throw err
    }
    return server
  }

  get url(): string {
    return `redis://127.0.0.1:${this.address.port}`
  }
}
