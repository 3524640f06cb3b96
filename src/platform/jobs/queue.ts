/**
 * Work queue. The interface is the shape pg-boss offers (send with a singleton key, work with a handler), so the
 * embedded implementation below can be replaced by pg-boss for scale-out without touching callers.
 *
 * Embedded implementation: a `platform_jobs` table with
 *   - a lease (`lease_until`) taken atomically by a compare-and-set UPDATE when a worker claims a row;
 *   - a heartbeat that extends the lease while the handler runs (a lost lease aborts the handler's signal);
 *   - retry: a handler that throws, or a worker that dies (its lease expires), puts the row back for another
 *     attempt until `retryLimit` is spent; then the row is `failed` and `onDead` hooks are told;
 *   - a unique key: `send` with a key that was already used returns undefined and enqueues nothing
 *     (one fire per scheduler slot, however many schedulers run).
 * Handlers must be idempotent: after a crash the same job runs again from its first step.
 *
 * The same table queue serves scale-out on PostgreSQL (several worker processes on one database): there a claim is
 * one `UPDATE … WHERE id = (SELECT … FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING *`, so concurrent workers never
 * contend for the same row; on SQLite (one writer) the compare-and-set UPDATE does the same. Why not pg-boss: its
 * v10 jobs have a fixed expiry and no heartbeat, so a dead worker's backup is noticed only after the longest
 * backup could take (or long backups get killed); here a lease renewed by heartbeat notices a dead worker within
 * one lease, and jobs keep one schema and one behaviour on both engines (the embedded default stays SQLite).
 */
import { sql, type Kysely } from 'kysely';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { isPostgres, type Db, type Migration } from '../db/index.js';

export interface SendOptions {
  /** At most one job ever exists with this key (pg-boss: singletonKey). */
  uniqueKey?: string | undefined;
  /** Not before this time (epoch ms). */
  startAfter?: number | undefined;
  /** Attempts after the first (default 2). */
  retryLimit?: number | undefined;
  /** Delay before a retry (default 1 s). */
  retryDelayMs?: number | undefined;
}

export interface JobContext<P> {
  id: string;
  name: string;
  payload: P;
  /** 1 on the first run, 2 on the first retry, ... */
  attempt: number;
  /** Aborted when the lease is lost or the queue stops. */
  signal: AbortSignal;
  /** Extends the lease now (also done automatically every heartbeat interval). */
  heartbeat(): Promise<void>;
}

export type JobHandler<P> = (ctx: JobContext<P>) => Promise<void>;

export interface DeadJob {
  id: string;
  name: string;
  payload: unknown;
  error: string;
}

export interface JobQueue {
  send<P>(name: string, payload: P, o?: SendOptions): Promise<string | undefined>;
  work<P>(name: string, handler: JobHandler<P>, o?: { concurrency?: number }): void;
  /** Called when a job has failed for good (retries spent, or its worker died too often). */
  onDead(hook: (job: DeadJob) => Promise<void>): void;
  start(): void;
  stop(timeoutMs?: number): Promise<void>;
}

export type QueueTables = {
  platform_jobs: {
    id: string;
    name: string;
    payload_json: string;
    state: string;
    unique_key: string | null;
    attempt: number;
    retry_limit: number;
    retry_delay_ms: number;
    run_after: number;
    lease_until: number | null;
    locked_by: string | null;
    last_error: string | null;
    created_at: number;
    updated_at: number;
  };
};

export const jobsMigrations: Migration[] = [
  {
    name: '0010_platform_jobs',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('platform_jobs')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('payload_json', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('unique_key', 'text', (c) => c.unique())
        .addColumn('attempt', 'integer', (c) => c.notNull())
        .addColumn('retry_limit', 'integer', (c) => c.notNull())
        .addColumn('retry_delay_ms', 'integer', (c) => c.notNull())
        .addColumn('run_after', 'bigint', (c) => c.notNull())
        .addColumn('lease_until', 'bigint')
        .addColumn('locked_by', 'text')
        .addColumn('last_error', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('platform_jobs_due').on('platform_jobs').columns(['state', 'run_after']).execute();
    },
  },
];

export interface EmbeddedQueueOptions {
  /** How long a claimed job stays owned without a heartbeat (default 30 s). */
  leaseMs?: number;
  /** Heartbeat interval (default leaseMs / 3). */
  heartbeatMs?: number;
  /** Poll interval when idle (default 500 ms). */
  pollMs?: number;
  now?: () => number;
  workerId?: string;
  log?: { warn(o: object, msg: string): void; error(o: object, msg: string): void };
  /** Told of every job outcome (metrics): completed, retried, failed (for good), lease_expired (worker died). */
  onOutcome?: (name: string, outcome: JobOutcome) => void;
}

const LEASE_EXPIRED = 'the worker of the previous attempt stopped responding (lease expired)';

export type JobOutcome = 'completed' | 'retried' | 'failed' | 'lease_expired';

interface Worker {
  handler: JobHandler<unknown>;
  concurrency: number;
  running: number;
}

export class EmbeddedQueue implements JobQueue {
  private readonly db: Kysely<QueueTables>;
  private readonly workers = new Map<string, Worker>();
  private readonly deadHooks: ((job: DeadJob) => Promise<void>)[] = [];
  private readonly inflight = new Set<Promise<void>>();
  private readonly controllers = new Set<AbortController>();
  private timer: NodeJS.Timeout | undefined;
  private started = false;
  private polling = false;
  private repoll = false;
  readonly leaseMs: number;
  readonly heartbeatMs: number;
  readonly pollMs: number;
  readonly workerId: string;
  private readonly now: () => number;
  private readonly pg: boolean;

  constructor(db: Db, private readonly o: EmbeddedQueueOptions = {}) {
    this.db = db.withTables<QueueTables>();
    this.pg = isPostgres(db);
    this.leaseMs = o.leaseMs ?? 30_000;
    this.heartbeatMs = o.heartbeatMs ?? Math.max(50, Math.floor(this.leaseMs / 3));
    this.pollMs = o.pollMs ?? 500;
    this.now = o.now ?? Date.now;
    // host:pid:random — an operator (or a test) can tell which process holds a job.
    this.workerId = o.workerId ?? `${os.hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  }

  async send<P>(name: string, payload: P, o: SendOptions = {}): Promise<string | undefined> {
    const id = randomUUID();
    const t = this.now();
    const res = await this.db
      .insertInto('platform_jobs')
      .values({
        id,
        name,
        payload_json: JSON.stringify(payload ?? null),
        state: 'created',
        unique_key: o.uniqueKey ?? null,
        attempt: 0,
        retry_limit: o.retryLimit ?? 2,
        retry_delay_ms: o.retryDelayMs ?? 1000,
        run_after: o.startAfter ?? t,
        lease_until: null,
        locked_by: null,
        last_error: null,
        created_at: t,
        updated_at: t,
      })
      .onConflict((oc) => oc.column('unique_key').doNothing())
      .executeTakeFirst();
    if (Number(res.numInsertedOrUpdatedRows ?? 0n) === 0) return undefined;
    this.kick();
    return id;
  }

  work<P>(name: string, handler: JobHandler<P>, o: { concurrency?: number } = {}): void {
    this.workers.set(name, { handler: handler as JobHandler<unknown>, concurrency: o.concurrency ?? 2, running: 0 });
    this.kick();
  }

  onDead(hook: (job: DeadJob) => Promise<void>): void {
    this.deadHooks.push(hook);
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.timer = setInterval(() => this.kick(), this.pollMs);
    this.timer.unref();
    this.kick();
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    this.started = false;
    if (this.timer) clearInterval(this.timer);
    const all = Promise.allSettled([...this.inflight]);
    const t = new Promise<void>((r) => setTimeout(r, timeoutMs).unref());
    await Promise.race([all, t]);
    // Handlers still running past the timeout lose their lease when the process ends and run again later.
    for (const c of this.controllers) c.abort(new Error('queue stopped'));
  }

  /** Runs one claim-and-dispatch pass (tests call it to step deterministically). */
  async poll(): Promise<void> {
    if (this.polling) {
      this.repoll = true;
      return;
    }
    this.polling = true;
    try {
      do {
        this.repoll = false;
        await this.expireDead();
        for (const [name, w] of this.workers) {
          while (w.running < w.concurrency) {
            const job = await this.claim(name);
            if (!job) break;
            this.dispatch(job, w);
          }
        }
      } while (this.repoll);
    } finally {
      this.polling = false;
    }
  }

  /** Jobs per name and state (metrics: queue depth). */
  async depth(): Promise<{ name: string; state: string; n: number }[]> {
    const rows = await this.db
      .selectFrom('platform_jobs')
      .select(['name', 'state', (eb) => eb.fn.countAll<number>().as('n')])
      .where('state', 'in', ['created', 'active'])
      .groupBy(['name', 'state'])
      .execute();
    return rows.map((r) => ({ name: r.name, state: r.state, n: Number(r.n) }));
  }

  /**
   * Embedded mode start-up (one process owns the SQLite file): every active job belonged to the process that died,
   * so its lease ends now instead of after leaseMs. Never call this with other live workers on the same database.
   */
  async releaseOrphans(): Promise<number> {
    const r = await this.db.updateTable('platform_jobs').set({ lease_until: 0 }).where('state', '=', 'active').executeTakeFirst();
    return Number(r.numUpdatedRows);
  }

  /** Current row of a job (tests, diagnostics). */
  async get(id: string): Promise<QueueTables['platform_jobs'] | undefined> {
    return this.db.selectFrom('platform_jobs').selectAll().where('id', '=', id).executeTakeFirst();
  }

  private kick(): void {
    if (!this.started) return;
    void this.poll().catch((e: unknown) => this.o.log?.error({ err: e }, 'job queue poll failed'));
  }

  /** Jobs whose worker died (lease expired) and have no attempts left are failed for good. */
  private async expireDead(): Promise<void> {
    const t = this.now();
    const dead = await this.db
      .selectFrom('platform_jobs')
      .selectAll()
      .where('state', '=', 'active')
      .where('lease_until', '<', t)
      .whereRef('attempt', '>', (eb) => eb.ref('retry_limit'))
      .execute();
    for (const r of dead) {
      const err = `the worker running this job stopped responding (lease expired) ${r.attempt} time(s)`;
      const upd = await this.db
        .updateTable('platform_jobs')
        .set({ state: 'failed', last_error: err, lease_until: null, locked_by: null, updated_at: t })
        .where('id', '=', r.id)
        .where('state', '=', 'active')
        .where('lease_until', '<', t)
        .executeTakeFirst();
      if (Number(upd.numUpdatedRows) === 1) {
        this.o.onOutcome?.(r.name, 'failed');
        await this.tellDead({ id: r.id, name: r.name, payload: JSON.parse(r.payload_json), error: err });
      }
    }
  }

  private async claim(name: string): Promise<QueueTables['platform_jobs'] | undefined> {
    if (this.pg) return this.claimSkipLocked(name);
    for (let i = 0; i < 5; i++) {
      const t = this.now();
      const cand = await this.db
        .selectFrom('platform_jobs')
        .selectAll()
        .where('name', '=', name)
        .where((eb) =>
          eb.or([
            eb.and([eb('state', '=', 'created'), eb('run_after', '<=', t)]),
            eb.and([eb('state', '=', 'active'), eb('lease_until', '<', t), eb('attempt', '<=', eb.ref('retry_limit'))]),
          ]),
        )
        .orderBy('run_after')
        .limit(1)
        .executeTakeFirst();
      if (!cand) return undefined;
      // Compare-and-set on the fields we read: only one claimer wins.
      const upd = await this.db
        .updateTable('platform_jobs')
        .set({ state: 'active', attempt: cand.attempt + 1, lease_until: t + this.leaseMs, locked_by: this.workerId, updated_at: t })
        .where('id', '=', cand.id)
        .where('state', '=', cand.state)
        .where('attempt', '=', cand.attempt)
        .executeTakeFirst();
      if (Number(upd.numUpdatedRows) === 1 && cand.state === 'active') this.o.onOutcome?.(name, 'lease_expired');
      if (Number(upd.numUpdatedRows) === 1) return { ...cand, state: 'active', attempt: cand.attempt + 1, lease_until: t + this.leaseMs, locked_by: this.workerId };
    }
    return undefined;
  }

  /** PostgreSQL: claim the oldest due row nobody else is claiming right now, in one statement. */
  private async claimSkipLocked(name: string): Promise<QueueTables['platform_jobs'] | undefined> {
    const t = this.now();
    const row = await this.db
      .updateTable('platform_jobs')
      .set((eb) => ({
        state: 'active', attempt: eb('attempt', '+', 1), lease_until: t + this.leaseMs, locked_by: this.workerId, updated_at: t,
        last_error: sql<string | null>`case when state = 'active' then ${LEASE_EXPIRED} else last_error end`,
      }))
      .where('id', '=', (eb) =>
        eb
          .selectFrom('platform_jobs')
          .select('id')
          .where('name', '=', name)
          .where((w) =>
            w.or([
              w.and([w('state', '=', 'created'), w('run_after', '<=', t)]),
              w.and([w('state', '=', 'active'), w('lease_until', '<', t), w('attempt', '<=', w.ref('retry_limit'))]),
            ]),
          )
          .orderBy('run_after')
          .limit(1)
          .modifyEnd(sql`for update skip locked`),
      )
      .returningAll()
      .executeTakeFirst();
    if (row?.last_error === LEASE_EXPIRED) this.o.onOutcome?.(name, 'lease_expired');
    return row;
  }

  private dispatch(job: QueueTables['platform_jobs'], w: Worker): void {
    w.running++;
    const ac = new AbortController();
    this.controllers.add(ac);
    const heartbeat = async () => {
      const t = this.now();
      const upd = await this.db
        .updateTable('platform_jobs')
        .set({ lease_until: t + this.leaseMs, updated_at: t })
        .where('id', '=', job.id)
        .where('locked_by', '=', this.workerId)
        .where('state', '=', 'active')
        .where('attempt', '=', job.attempt)
        .executeTakeFirst();
      if (Number(upd.numUpdatedRows) !== 1 && !ac.signal.aborted) ac.abort(new Error('lease lost'));
    };
    const hb = setInterval(() => void heartbeat().catch(() => undefined), this.heartbeatMs);
    hb.unref();
    const p = (async () => {
      let error: unknown;
      try {
        await w.handler({ id: job.id, name: job.name, payload: JSON.parse(job.payload_json), attempt: job.attempt, signal: ac.signal, heartbeat });
      } catch (e) {
        error = e;
      } finally {
        clearInterval(hb);
      }
      if (ac.signal.aborted && (ac.signal.reason as Error | undefined)?.message === 'lease lost') return; // another worker owns it now
      const t = this.now();
      const mine = (set: Partial<QueueTables['platform_jobs']>) =>
        this.db.updateTable('platform_jobs').set(set).where('id', '=', job.id).where('locked_by', '=', this.workerId).where('attempt', '=', job.attempt);
      if (error === undefined) {
        await mine({ state: 'completed', lease_until: null, updated_at: t }).execute();
        this.o.onOutcome?.(job.name, 'completed');
        return;
      }
      const msg = (error as Error)?.message ?? String(error);
      if (job.attempt <= job.retry_limit) {
        await mine({ state: 'created', run_after: t + job.retry_delay_ms, lease_until: null, locked_by: null, last_error: msg, updated_at: t }).execute();
        this.o.log?.warn({ job: job.id, name: job.name, attempt: job.attempt, err: msg }, 'job failed; will retry');
        this.o.onOutcome?.(job.name, 'retried');
      } else {
        await mine({ state: 'failed', lease_until: null, last_error: msg, updated_at: t }).execute();
        this.o.onOutcome?.(job.name, 'failed');
        await this.tellDead({ id: job.id, name: job.name, payload: JSON.parse(job.payload_json), error: msg });
      }
    })()
      .catch((e: unknown) => this.o.log?.error({ err: e, job: job.id }, 'job bookkeeping failed'))
      .finally(() => {
        w.running--;
        this.controllers.delete(ac);
        this.inflight.delete(p);
        this.kick();
      });
    this.inflight.add(p);
  }

  private async tellDead(job: DeadJob): Promise<void> {
    for (const h of this.deadHooks) {
      try {
        await h(job);
      } catch (e) {
        this.o.log?.error({ err: e, job: job.id }, 'dead-job hook failed');
      }
    }
  }
}
