// DELETE /api/v1/users/{user_id}/events: erases a user. Records the erasure on the primary and
// answers 202 at once; the consumer removes the rows in chunks and drops the user's events still
// queued or held, and the read routes hide the user's rows from now on.
import type { FastifyInstance } from 'fastify'
import type { RowDataPacket } from 'mysql2'
import Type from 'typebox'
import { erasureTime, parseParameters, RECORD_ERASURE_SQL, type ValidationDetail } from 'event-contract'
import { ParameterError } from './errors.js'
import type { Reader } from './reader.js'
import { UnauthorizedSchema, UnavailableSchema, UserParams, ValidationErrorSchema } from './schemas.js'

export const ErasureSchema = Type.Object(
  {
    status: Type.Literal('accepted'),
    user_id: Type.Integer(),
    erased_before: Type.String({
      format: 'date-time',
      description: "Events the producer received up to this time (the database's clock) are erased",
    }),
  },
  { title: 'Erasure' },
)

export interface EraseRouteOptions {
  /** The primary: an erasure is a write, never sent to a replica. */
  writer: Reader
  guarded: Record<string, unknown>
}

export async function eraseRoute(app: FastifyInstance, { writer, guarded }: EraseRouteOptions): Promise<void> {
  app.delete(
    '/api/v1/users/:user_id/events',
    {
      config: guarded,
      schema: {
        summary: "Erase a user's events",
        description:
          'Needs an admin key. Answers at once; the stored rows go in the background, and events of the user ' +
          'that the producer received up to `erased_before` are never stored, even those still queued.',
        params: UserParams,
        security: [{ bearerAuth: [] }, { basicAuth: [] }, { apiKey: [] }],
        response: {
          202: ErasureSchema,
          400: ValidationErrorSchema,
          401: UnauthorizedSchema,
          403: Type.Object({ detail: Type.String() }, { title: 'Forbidden' }),
          503: UnavailableSchema,
        },
      },
    },
    async (request, reply) => {
      const params = parseParameters<{ user_id: number }>(UserParams, request.params, 'path')
      if (!params.ok) throw new ParameterError(params.errors as ValidationDetail[])
      const userId = params.value.user_id
      await writer.query(RECORD_ERASURE_SQL[0], [userId])
      const [row] = await writer.query<{ erased_before: string } & RowDataPacket>(RECORD_ERASURE_SQL[1], [userId])
      request.log.info({ userId, erasedBefore: row?.erased_before }, 'user erased')
      return reply
        .code(202)
        .send({ status: 'accepted', user_id: userId, erased_before: erasureTime(String(row?.erased_before)) })
    },
  )
}
