// Every error the query service answers with, each with its code and HTTP status (@fastify/error).
import createError from '@fastify/error'
import type { ValidationDetail } from 'event-contract'

export const INVALID_PARAMETERS_MESSAGE = 'Invalid request parameters'

/** A path or query parameter that is not valid: 400 with FastAPI's `detail` entries. */
export class ParameterError extends createError('ERR_INVALID_PARAMETERS', INVALID_PARAMETERS_MESSAGE, 400) {
  constructor(readonly details: ValidationDetail[]) {
    super()
  }
}

/** A request without a key that may read: 401 with WWW-Authenticate. */
export class UnauthorizedError extends createError('ERR_UNAUTHORIZED', '%s', 401) {
  constructor(reason: string) {
    super(reason)
  }
}

/** A key that may read but not erase: 403. */
export class ForbiddenError extends createError('ERR_FORBIDDEN', '%s', 403) {
  constructor(reason: string) {
    super(reason)
  }
}

/** One parameter's problem, as a ParameterError. */
export function parameterError(loc: (string | number)[], msg: string, type = 'value_error'): ParameterError {
  return new ParameterError([{ loc, msg, type }])
}
