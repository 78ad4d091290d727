// The query service's Prometheus metrics (GET /metrics): requests by route and status, how long
// they took, and the 503s the database caused. Labels of small fixed sets only.
import client from 'prom-client'

export type QueryMetrics = ReturnType<typeof createQueryMetrics>

export function createQueryMetrics() {
  const registry = new client.Registry()
  client.collectDefaultMetrics({ register: registry })
  const registers = [registry]
  return {
    registry,
    requests: new client.Counter({
      name: 'query_http_requests_total',
      help: 'HTTP requests answered, by route and status',
      labelNames: ['route', 'status'] as const,
      registers,
    }),
    seconds: new client.Histogram({
      name: 'query_request_duration_seconds',
      help: 'Time to answer a read route, by route',
      labelNames: ['route'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    }),
    unavailable: new client.Counter({
      name: 'query_database_unavailable_total',
      help: 'Requests answered 503 because the database was down, slow or stopped a query at its bound',
      registers,
    }),
  }
}
