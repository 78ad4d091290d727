// The fault schedule: drawn from a seed (so that a failing run can be replayed), then played.
import type { Cluster } from './cluster.js'
import type { Fault } from './faults.js'

export interface Entry {
  at: number
  fault: Fault
  target: string
  seconds: number
  param: number
}

export interface Played {
  entry: Entry
  appliedAt?: number
  healedAt?: number
  error?: string
}

/** mulberry32: a small seeded PRNG, enough to make a schedule reproducible. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/**
 * Faults start every 1 to 5 s and overlap; two on one resource never do. Each heals by
 * `seconds`, so the end of the run is fault-free.
 */
export function drawSchedule(seed: number, seconds: number, vocabulary: Fault[], cluster: Cluster): Entry[] {
  const random = prng(seed)
  const busyUntil = new Map<string, number>()
  const entries: Entry[] = []
  for (let at = 2 + random() * 3; at < seconds - 3 && entries.length < 10_000; at += 1 + random() * 4) {
    for (let attempt = 0; attempt < 10; attempt++) {
      const fault = vocabulary[Math.floor(random() * vocabulary.length)]!
      const targets = fault.targets(cluster)
      const target = targets[Math.floor(random() * targets.length)]!
      const [min, max] = fault.seconds
      const length = Math.min(min + random() * (max - min), seconds - at)
      const param = random()
      const resource = fault.resource(target)
      if ((busyUntil.get(resource) ?? 0) > at) continue
      busyUntil.set(resource, at + length + 1)
      entries.push({ at: round(at), fault, target, seconds: round(length), param })
      break
    }
  }
  return entries
}

const round = (n: number) => Math.round(n * 10) / 10

/**
 * Plays the schedule against the cluster; resolves once every fault is healed. A fault's apply
 * waits for the heal before it on the same resource (a replay may outlast its slot).
 */
export async function play(entries: Entry[], cluster: Cluster, started = Date.now()): Promise<Played[]> {
  const chains = new Map<string, Promise<void>>()
  const played: Played[] = entries.map((entry) => ({ entry }))
  const sleepUntil = (second: number) =>
    new Promise((r) => setTimeout(r, Math.max(0, started + second * 1000 - Date.now())))
  const log = (what: string, p: Played, detail?: string) =>
    console.log(
      `[chaos ${cluster.elapsed().toFixed(1)}s] ${what} ${p.entry.fault.name} ${p.entry.target}${detail ? ` (${detail})` : ''}${p.error ? `: ${p.error}` : ''}`,
    )
  await Promise.all(
    played.map(async (p) => {
      const { at, fault, target, seconds, param } = p.entry
      const resource = fault.resource(target)
      await sleepUntil(at)
      const before = chains.get(resource) ?? Promise.resolve()
      const run = before.then(async () => {
        let state: unknown
        try {
          state = await fault.apply(cluster, target, param)
          p.appliedAt = cluster.elapsed()
          cluster.applied.add(`${fault.name} ${target}`)
          log('apply', p)
        } catch (err) {
          p.error = `apply failed: ${(err as Error).message.split('\n')[0]}`
          log('apply', p)
        }
        await sleepUntil(at + seconds)
        try {
          const detail = await fault.heal(cluster, target, state)
          p.healedAt = cluster.elapsed()
          cluster.applied.delete(`${fault.name} ${target}`)
          log('heal', p, detail || undefined)
        } catch (err) {
          p.error = `${p.error ?? ''} heal failed: ${(err as Error).message.split('\n')[0]}`.trim()
          log('heal', p)
        }
      })
      chains.set(resource, run)
      await run
    }),
  )
  return played
}

export function formatSchedule(played: Played[]): string {
  const lines = played.map(({ entry, appliedAt, healedAt, error }) => {
    const when = `${entry.at.toFixed(1).padStart(6)}s`
    const ran =
      appliedAt === undefined ? '' : ` (applied ${appliedAt.toFixed(1)}s, healed ${healedAt?.toFixed(1) ?? '-'}s)`
    return `${when}  ${entry.fault.name.padEnd(20)} ${entry.target.padEnd(20)} ${entry.seconds.toFixed(1).padStart(5)}s${ran}${error ? `  ${error}` : ''}`
  })
  return ['  time  fault                target               length', ...lines].join('\n')
}
