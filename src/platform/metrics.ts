/** Prometheus metrics (prom-client): one registry per process, served on /metrics. */
import { Registry, collectDefaultMetrics, Counter, Gauge, Histogram } from 'prom-client';

export interface Metrics {
  registry: Registry;
  httpRequests: Counter<'method' | 'route' | 'status'>;
  httpDuration: Histogram<'method' | 'route'>;
}

export function createMetrics(): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'rsvault_' });
  const httpRequests = new Counter({
    name: 'rsvault_http_requests_total',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [registry],
  });
  const httpDuration = new Histogram({
    name: 'rsvault_http_request_duration_seconds',
    help: 'HTTP request duration',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  return { registry, httpRequests, httpDuration };
}

/**
 * Job queue metrics: `rsvault_queue_jobs{queue,state}` (created = waiting, active = running; read from the database
 * at scrape time, so every process reports the cluster-wide depth) and `rsvault_job_outcomes_total{queue,outcome}`
 * (completed, retried, failed, lease_expired) counted by the process that saw them.
 */
export function registerQueueMetrics(m: Metrics) {
  let source: (() => Promise<{ name: string; state: string; n: number }[]>) | undefined;
  new Gauge({
    name: 'rsvault_queue_jobs',
    help: 'Queued jobs by queue and state (created = waiting, active = running), cluster-wide',
    labelNames: ['queue', 'state'] as const,
    registers: [m.registry],
    async collect() {
      this.reset();
      const rows = await (source?.() ?? Promise.resolve([])).catch(() => []);
      for (const r of rows) this.set({ queue: r.name, state: r.state }, r.n);
    },
  });
  const outcomes = new Counter({
    name: 'rsvault_job_outcomes_total',
    help: 'Job outcomes seen by this process: completed, retried, failed (for good), lease_expired (its worker died)',
    labelNames: ['queue', 'outcome'] as const,
    registers: [m.registry],
  });
  return {
    depth(fn: () => Promise<{ name: string; state: string; n: number }[]>) {
      source = fn;
    },
    outcome(queue: string, outcome: string) {
      outcomes.inc({ queue, outcome });
    },
  };
}
