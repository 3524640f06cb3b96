/**
 * Throttling of credential endpoints.
 *
 * - `rateLimitConfig`: the per-route @fastify/rate-limit options (requests per window and key), for routes that
 *   anyone may call (the token endpoint). Register @fastify/rate-limit in the routes' scope first.
 * - `FailureThrottle`: counts failed credential attempts per key (a client id, a source address) in a fixed window;
 *   once a key reaches the limit, every attempt for it is refused until the window ends, *before* the credential is
 *   checked, so a guess made during the lock-out learns nothing (a right secret is refused as a wrong one is).
 */
import type { FastifyRequest } from 'fastify';
import type { RateLimitOptions } from '@fastify/rate-limit';

export interface ThrottleSettings {
  /** Requests per minute per source address and client id on the token endpoint. */
  requestsPerMinute: number;
  /** Failed attempts per key within `failureWindowSec`. */
  failureLimit: number;
  failureWindowSec: number;
}

export const DEFAULT_THROTTLE: ThrottleSettings = { requestsPerMinute: 600, failureLimit: 20, failureWindowSec: 300 };

/** @fastify/rate-limit route options: `max` per minute per key, checked after the body is parsed (keys may use it). */
export function rateLimitConfig(max: number, key: (req: FastifyRequest) => string, error: (retryAfterSec: number) => Error): RateLimitOptions {
  return {
    max,
    timeWindow: 60_000,
    hook: 'preHandler',
    keyGenerator: key,
    errorResponseBuilder: (_req, ctx) => error(Math.max(1, Math.ceil(ctx.ttl / 1000))),
  };
}

export class FailureThrottle {
  private readonly windows = new Map<string, { count: number; resetAt: number }>();
  constructor(
    private readonly limit: number,
    private readonly windowMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** Seconds until the first of `keys` that is locked out unlocks; 0 when none is. */
  retryAfter(keys: string[]): number {
    const t = this.now();
    let wait = 0;
    for (const k of keys) {
      const w = this.windows.get(k);
      if (!w) continue;
      if (w.resetAt <= t) this.windows.delete(k);
      else if (w.count >= this.limit) wait = Math.max(wait, Math.ceil((w.resetAt - t) / 1000));
    }
    return wait;
  }

  /** Counts one failure against each key. */
  fail(keys: string[]): void {
    const t = this.now();
    if (this.windows.size > 100_000) for (const [k, w] of this.windows) if (w.resetAt <= t) this.windows.delete(k);
    for (const k of keys) {
      const w = this.windows.get(k);
      if (!w || w.resetAt <= t) this.windows.set(k, { count: 1, resetAt: t + this.windowMs });
      else w.count++;
    }
  }
}
