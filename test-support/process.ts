// Runs a built service as a child process, the way its image or a user would start it.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'

export interface ServiceProcess {
  child: ChildProcess
  /** Resolves with the exit code (null when killed by a signal). */
  exited: Promise<number | null>
  /** Everything written to stdout and stderr so far. */
  output(): string
  /** SIGTERM (or `signal`), then the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export function spawnService(script: string, env: Record<string, string>, args: string[] = []): ServiceProcess {
  if (!existsSync(script)) throw new Error(`${script} is missing: run \`npm run build\` first`)
  const child = spawn(process.execPath, [script, ...args], {
    env: { PATH: process.env.PATH, LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout?.on('data', (chunk) => (output += chunk))
  child.stderr?.on('data', (chunk) => (output += chunk))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  return {
    child,
    exited,
    output: () => output,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/** A TCP port that is free now (the OS picks it). */
export async function freePort(): Promise<number> {
  const net = await import('node:net')
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** A process's resident set size in bytes (Linux), read from /proc. */
export function rssBytes(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status)?.[1]
  if (!kib) throw new Error(`no VmRSS for process ${pid}`)
  return Number(kib) * 1024
}

/**
 * Starts a service, sends SIGTERM the moment it logs `starting` (before it connects or listens),
 * and resolves with its exit code and output: a service must handle the signal from that line on.
 */
export async function terminatedAtStart(
  script: string,
  env: Record<string, string>,
): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  const proc = spawnService(script, { ...env, LOG_LEVEL: 'info' })
  const deadline = Date.now() + 20_000
  while (!proc.output().includes('"msg":"starting"') && proc.child.exitCode === null && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 1))
  }
  proc.child.kill('SIGTERM')
  const code = await Promise.race([proc.exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 10_000))])
  if (code === 'timeout') await proc.stop('SIGKILL')
  return { code: code === 'timeout' ? null : code, signal: proc.child.signalCode, output: proc.output() }
}

/** NODE_OPTIONS of a service's `npm start` (its heap cap), so that a test runs it as shipped. */
export function shippedNodeOptions(service: 'producer-service' | 'consumer-service' | 'query-service'): string {
  const pkg = JSON.parse(readFileSync(new URL(`../${service}/package.json`, import.meta.url), 'utf8')) as {
    scripts: { start: string }
  }
  return (pkg.scripts.start.match(/--max-(old|semi)-space-size=\d+/g) ?? []).join(' ')
}
