// TypeBox's validation errors in FastAPI's `detail` form: a `loc`, a message and a type per
// problem, one per location.
import type { TLocalizedValidationError } from 'typebox/error'
import type { ValidationDetail } from './schema.js'

/** `root` starts each `loc`: `body`, or `query` and `path` for a request's parameters. */
export function toDetails(errors: TLocalizedValidationError[], root = 'body'): ValidationDetail[] {
  const details: ValidationDetail[] = []
  const seen = new Set<string>()
  const add = (detail: ValidationDetail) => {
    const key = detail.loc.join('\u0000')
    if (seen.has(key)) return
    seen.add(key)
    details.push(detail)
  }
  for (const error of errors) {
    const loc = [root, ...error.instancePath.split('/').slice(1).map(unescapePointer)]
    if (error.keyword === 'required') {
      for (const name of error.params.requiredProperties) {
        add({ loc: [...loc, name], msg: 'Field required', type: 'missing' })
      }
      continue
    }
    const detail = describe(error, loc.length === 1)
    if (detail) add({ loc, ...detail })
  }
  return details
}

function unescapePointer(segment: string): string {
  return segment.replaceAll('~1', '/').replaceAll('~0', '~')
}

function describe(error: TLocalizedValidationError, isRoot: boolean): Omit<ValidationDetail, 'loc'> | undefined {
  switch (error.keyword) {
    case 'type':
      if (isRoot) {
        return {
          msg: 'Input should be a valid dictionary or object to extract fields from',
          type: 'model_attributes_type',
        }
      }
      return typeDetail(error.params.type)
    case 'minimum':
      return { msg: `Input should be greater than or equal to ${error.params.limit}`, type: 'greater_than_equal' }
    case 'maximum':
      return { msg: `Input should be less than or equal to ${error.params.limit}`, type: 'less_than_equal' }
    case 'minLength':
      return {
        msg: `String should have at least ${error.params.limit} character${error.params.limit === 1 ? '' : 's'}`,
        type: 'string_too_short',
      }
    case 'maxLength':
      return { msg: `String should have at most ${error.params.limit} characters`, type: 'string_too_long' }
    case 'pattern':
      return { msg: 'String should not contain control characters', type: 'string_pattern_mismatch' }
    case 'format':
      return error.params.format === 'uuid'
        ? { msg: 'Input should be a valid UUID', type: 'uuid_parsing' }
        : {
            msg: 'Input should be a valid datetime: ISO 8601 date and time, a real calendar date, year 1000 to 9999',
            type: 'datetime_from_date_parsing',
          }
    case 'anyOf':
      return undefined // the branch errors (first: "should be an object") say it better
    default:
      return { msg: error.message, type: 'value_error' }
  }
}

function typeDetail(expected: string | string[]): Omit<ValidationDetail, 'loc'> | undefined {
  switch (expected) {
    case 'integer':
    case 'number':
      return { msg: 'Input should be a valid integer', type: 'int_type' }
    case 'string':
      return { msg: 'Input should be a valid string', type: 'string_type' }
    case 'object':
      return { msg: 'Input should be a valid dictionary', type: 'dict_type' }
    case 'null':
      return undefined // the other branch of `object | null` already reported
    default:
      return { msg: `Input should be of type ${String(expected)}`, type: 'type_error' }
  }
}
