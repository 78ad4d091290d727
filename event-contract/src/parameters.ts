// A request's query string or path parameters checked against a TypeBox schema: numbers parsed,
// defaults filled in, timestamps in canonical form, problems in FastAPI's `detail` form.
import type { TObject } from 'typebox'
import { Compile } from 'typebox/compile'
import { Value } from 'typebox/value'
import type { ValidationDetail } from './schema.js'
import { toDetails } from './details.js'
import { strictIntegers } from './config.js'
import { checkTimestamps, dateTimeFields, withoutDateTime } from './timestamp.js'
import type { ParseResult } from './validate.js'

const checkers = new WeakMap<TObject, (data: unknown, root: string) => ParseResult<unknown>>()

function checkerOf(schema: TObject) {
  const known = checkers.get(schema)
  if (known) return known
  const check = Compile(withoutDateTime(schema))
  const order = Object.keys(schema.properties)
  const times = dateTimeFields(schema)
  const checker = (data: unknown, root: string): ParseResult<unknown> => {
    const value = strictIntegers(
      schema,
      (data ?? {}) as Record<string, unknown>,
      Value.Convert(schema, Value.Default(schema, structuredClone(data ?? {}))) as Record<string, unknown>,
    )
    const ok = check.Check(value)
    const details: ValidationDetail[] = checkTimestamps(
      value,
      times,
      order,
      ok ? [] : toDetails(check.Errors(value), root),
      root,
    )
    return details.length === 0 ? { ok: true, value } : { ok: false, errors: details }
  }
  checkers.set(schema, checker)
  return checker
}

/** `data` (a parsed query string, or path parameters) as `schema` says, or why not, at `[root, name]`. */
export function parseParameters<T>(schema: TObject, data: unknown, root: 'query' | 'path'): ParseResult<T> {
  return checkerOf(schema)(data, root) as ParseResult<T>
}
