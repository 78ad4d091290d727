// Runs a Dockerfile's instructions on the host, for a machine without a Docker engine, so that the
// commands the images run (install, build, start, healthcheck) are exercised as written. Each
// stage gets a directory standing in for the image's root file system; the host's Node.js and
// npm stand in for the base image. COPY, RUN, WORKDIR, ENV, HEALTHCHECK and CMD are honoured;
// USER and EXPOSE have no meaning here, and a RUN's cache mount is this machine's npm cache.
import { execFileSync } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'

interface Instruction {
  keyword: string
  flags: Record<string, string>
  args: string
}

interface Stage {
  name: string
  base: string
  instructions: Instruction[]
}

export interface HostImage {
  /** The directory standing in for `/`. */
  root: string
  /** The final WORKDIR, on the host. */
  workdir: string
  env: Record<string, string>
  cmd: string[]
  healthcheck: string[] | undefined
}

export function parseDockerfile(text: string): Stage[] {
  const stages: Stage[] = []
  const lines = text.replace(/\\\n/g, ' ').split('\n')
  for (const line of lines) {
    const trimmed = line.trim()
    if (trimmed === '' || trimmed.startsWith('#')) continue
    const [keyword = '', ...rest] = trimmed.split(/\s+/)
    let args = trimmed.slice(keyword.length).trim()
    const flags: Record<string, string> = {}
    for (const word of rest) {
      if (!word.startsWith('--')) break
      const [name = '', value = ''] = word.slice(2).split('=')
      flags[name] = value
      args = args.slice(word.length).trim()
    }
    const instruction = { keyword: keyword.toUpperCase(), flags, args }
    if (instruction.keyword === 'FROM') {
      const [base = '', as, name] = args.split(/\s+/)
      stages.push({ name: as?.toUpperCase() === 'AS' && name ? name : String(stages.length), base, instructions: [] })
    } else {
      const stage = stages.at(-1)
      if (!stage) throw new Error(`${instruction.keyword} before FROM`)
      stage.instructions.push(instruction)
    }
  }
  return stages
}

/** The stages `target` needs: its base and the sources of its COPY --from, recursively. */
function neededStages(stages: Stage[], target: string): Set<string> {
  const byName = new Map(stages.map((s) => [s.name, s]))
  const needed = new Set<string>()
  const visit = (name: string) => {
    const stage = byName.get(name)
    if (!stage || needed.has(name)) return
    needed.add(name)
    visit(stage.base)
    for (const i of stage.instructions) if (i.keyword === 'COPY' && i.flags.from) visit(i.flags.from)
  }
  visit(target)
  return needed
}

function ignoredBy(patterns: string[], relative: string): boolean {
  const parts = relative.split(path.sep)
  return patterns.some((pattern) => {
    if (pattern.startsWith('**/')) {
      const name = pattern.slice(3)
      return parts.some((part) => (name.startsWith('*') ? part.endsWith(name.slice(1)) : part === name))
    }
    return relative === pattern || relative.startsWith(`${pattern}/`)
  })
}

/**
 * Builds `target` of the Dockerfile into `outDir`, running every instruction on this machine,
 * and returns where it ended and what it would run.
 */
export function buildOnHost(dockerfile: string, target: string, context: string, outDir: string): HostImage {
  const stages = parseDockerfile(readFileSync(dockerfile, 'utf8'))
  const ignorePath = path.join(context, '.dockerignore')
  const ignore = existsSync(ignorePath)
    ? readFileSync(ignorePath, 'utf8')
        .split('\n')
        .map((l) => l.trim())
        .filter((l) => l && !l.startsWith('#'))
    : []
  const needed = neededStages(stages, target)
  const built = new Map<string, HostImage>()

  for (const stage of stages) {
    if (!needed.has(stage.name)) continue
    const root = path.join(outDir, stage.name)
    const parent = built.get(stage.base)
    if (parent) cpSync(parent.root, root, { recursive: true, verbatimSymlinks: true })
    else mkdirSync(root, { recursive: true })
    const image: HostImage = {
      root,
      workdir: parent ? path.join(root, path.relative(parent.root, parent.workdir)) : root,
      env: { ...parent?.env },
      cmd: [...(parent?.cmd ?? [])],
      healthcheck: parent?.healthcheck,
    }
    const inImage = (p: string) => (path.isAbsolute(p) ? path.join(root, p) : path.join(image.workdir, p))

    for (const { keyword, flags, args } of stage.instructions) {
      switch (keyword) {
        case 'WORKDIR':
          image.workdir = inImage(args)
          mkdirSync(image.workdir, { recursive: true })
          break
        case 'ENV': {
          const [name = '', ...value] = args.split(/[=\s]/)
          image.env[name] = value.join('=')
          break
        }
        case 'COPY': {
          const words = args.split(/\s+/)
          const dest = words.pop() as string
          const from = flags.from ? built.get(flags.from) : undefined
          if (flags.from && !from) throw new Error(`COPY --from=${flags.from}: no such stage built`)
          for (const source of words) {
            const src = from ? path.join(from.root, source) : path.join(context, source)
            // A directory's contents go into dest; a file goes into dest/ or becomes dest.
            const isDir = statSync(src).isDirectory()
            const into = !isDir && dest.endsWith('/') ? path.join(inImage(dest), path.basename(src)) : inImage(dest)
            mkdirSync(path.dirname(into), { recursive: true })
            cpSync(src, into, {
              recursive: true,
              verbatimSymlinks: true,
              filter: (file) => from !== undefined || !ignoredBy(ignore, path.relative(context, file)),
            })
          }
          break
        }
        case 'RUN':
          // An absolute path would reach outside the stand-in root, into this machine's own.
          if (/(^|[\s=:])\/(?!dev\/null)/.test(args)) throw new Error(`RUN with an absolute path: ${args}`)
          execFileSync('/bin/sh', ['-c', args], {
            cwd: image.workdir,
            env: { ...process.env, ...image.env },
            stdio: ['ignore', 'pipe', 'inherit'],
          })
          break
        case 'CMD':
          image.cmd = JSON.parse(args) as string[]
          break
        case 'HEALTHCHECK': {
          const command = args.replace(/^CMD\s+/, '')
          image.healthcheck = JSON.parse(command) as string[]
          break
        }
        case 'USER':
        case 'EXPOSE':
          break
        default:
          throw new Error(`${keyword} is not supported here`)
      }
    }
    built.set(stage.name, image)
  }
  const result = built.get(target)
  if (!result) throw new Error(`no stage named ${target}`)
  return result
}
