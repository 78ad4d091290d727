// `npm run test:chaos`: the randomized fault soak. A seeded schedule of overlapping faults
// against private servers and four real service processes under load, then the promise checked
// as invariants. CHAOS_SECONDS (default 180), CHAOS_SEED (default random), CHAOS_FAULTS=a,b.
import { randomInt } from 'node:crypto'
import { expect, test } from 'vitest'
import { Cluster } from './cluster.js'
import { VOCABULARY } from './vocabulary.js'
import { checkInvariants, DRAIN_BOUND_MS } from './invariants.js'
import { Load } from './load.js'
import { drawSchedule, formatSchedule, play, type Played } from './schedule.js'

const seconds = Number(process.env.CHAOS_SECONDS || 180)
const seed = process.env.CHAOS_SEED ? Number(process.env.CHAOS_SEED) : randomInt(2 ** 31)
const only = (process.env.CHAOS_FAULTS ?? '')
  .split(',')
  .map((s) => s.trim())
  .filter(Boolean)
const unknown = only.filter((name) => !VOCABULARY.some((f) => f.name === name))
const vocabulary = only.length ? VOCABULARY.filter((f) => only.includes(f.name)) : VOCABULARY
/** Time the clients get, after the last heal, to have every event accepted. */
const RETRY_AFTER_HEAL_MS = 60_000

test(
  `fault soak: ${seconds} s, seed ${seed}`,
  async () => {
    if (!Number.isInteger(seed) || !(seconds > 0))
      throw new Error('CHAOS_SEED must be an integer, CHAOS_SECONDS a positive number')
    if (unknown.length)
      throw new Error(`unknown CHAOS_FAULTS ${unknown.join(', ')}; known: ${VOCABULARY.map((f) => f.name).join(', ')}`)
    const replay = `CHAOS_SEED=${seed} CHAOS_SECONDS=${seconds}${only.length ? ` CHAOS_FAULTS=${only.join(',')}` : ''} npm run test:chaos`
    console.log(
      `[chaos] seed ${seed}, ${seconds} s, faults: ${vocabulary.map((f) => f.name).join(', ')}\n[chaos] replay: ${replay}`,
    )
    const cluster = await Cluster.start()
    let played: Played[] = []
    try {
      const schedule = drawSchedule(seed, seconds, vocabulary, cluster)
      console.log(
        `[chaos] servers and services up in ${cluster.elapsed().toFixed(0)} s; ${schedule.length} faults drawn`,
      )
      const load = new Load(cluster)
      await load.start()
      const started = Date.now()
      cluster.t0 = started
      played = await play(schedule, cluster, started)
      await new Promise((r) => setTimeout(r, Math.max(0, started + seconds * 1000 - Date.now())))
      const healed = Date.now()
      console.log(`[chaos] every fault healed at ${cluster.elapsed().toFixed(0)} s; load stopping`)
      await load.stop(RETRY_AFTER_HEAL_MS)
      const verdict = await checkInvariants(cluster, load.record, healed)
      // A fault that could not be applied did not happen (noted); one that could not be healed leaves harm.
      const faultErrors = played
        .filter((p) => p.error?.includes('heal failed'))
        .map((p) => `schedule: ${p.entry.fault.name} ${p.entry.target}: ${p.error}`)
      for (const p of played.filter((p) => p.error && !p.error.includes('heal failed'))) {
        verdict.notes.push(`schedule: ${p.entry.fault.name} ${p.entry.target}: ${p.error}`)
      }
      const failures = [...faultErrors, ...verdict.failures]
      console.log(`[chaos] ${verdict.notes.join('\n[chaos] ')}`)
      if (failures.length) {
        const outputs = cluster.incidents
          .filter((i) => i.output)
          .map((i) => `--- ${i.service} at ${i.at.toFixed(1)} s: ${i.what}\n${i.output}`)
        console.log(
          `[chaos] FAILED, seed ${seed}; replay with: ${replay}\n[chaos] schedule:\n${formatSchedule(played)}\n` +
            `[chaos] failures:\n  ${failures.join('\n  ')}\n${outputs.join('\n')}`,
        )
      } else {
        console.log(`[chaos] passed, seed ${seed}, ${played.length} faults`)
      }
      expect(failures, `seed ${seed}: replay with ${replay}`).toEqual([])
    } finally {
      await cluster.stop()
    }
  },
  // The run, the retries after it, the drain, and the servers' start and stop.
  seconds * 1000 + RETRY_AFTER_HEAL_MS + DRAIN_BOUND_MS + 300_000,
)
