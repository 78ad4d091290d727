// What every service answers for a path it does not serve, as FastAPI does: 404, or 405 with
// Allow when the path is served with other methods.
const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/** The answer for `url` (its path and query) on an app that knows its routes (a Fastify instance). */
export function unknownRoute(
  app: { hasRoute(route: { method: (typeof HTTP_METHODS)[number]; url: string }): boolean },
  url: string,
): { statusCode: 404 | 405; allow?: string; body: { detail: string } } {
  const path = url.split('?')[0] as string
  const allowed = HTTP_METHODS.filter((method) => app.hasRoute({ method, url: path }))
  if (allowed.length === 0) return { statusCode: 404, body: { detail: 'Not Found' } }
  return { statusCode: 405, allow: allowed.join(', '), body: { detail: 'Method Not Allowed' } }
}
