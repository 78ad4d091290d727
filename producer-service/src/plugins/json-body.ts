// The body parsers: JSON only, parsed safely. Fastify's own JSON parser, except that it says why
// a body with a prototype-poisoning key (`__proto__`, `constructor.prototype`) is refused
// instead of calling it malformed JSON; without a text/plain parser the rest is a 415.
import { errorCodes, type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import secureJson from 'secure-json-parse'
import { EventValidationError } from '../errors.js'

export interface JsonBodyOptions {
  /** Told each body's size, decompressed (for a histogram). */
  onBodyBytes?: (bytes: number) => void
}

async function jsonBody(app: FastifyInstance, { onBodyBytes }: JsonBodyOptions): Promise<void> {
  app.removeContentTypeParser('text/plain')
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    if (body.length === 0) return done(new errorCodes.FST_ERR_CTP_EMPTY_JSON_BODY(), undefined)
    onBodyBytes?.(Buffer.byteLength(body))
    try {
      done(null, secureJson.parse(body, { protoAction: 'error', constructorAction: 'error' }))
    } catch (err) {
      if (!(err instanceof SyntaxError) || !/prototype property/.test(err.message)) {
        return done(new errorCodes.FST_ERR_CTP_INVALID_JSON_BODY(), undefined)
      }
      done(
        new EventValidationError([
          {
            loc: ['body'],
            msg: 'Value error, object keys "__proto__" and "constructor" with "prototype" are not allowed',
            type: 'value_error',
          },
        ]),
        undefined,
      )
    }
  })
}

export default fp(jsonBody, { name: 'json-body', fastify: '5.x' })
