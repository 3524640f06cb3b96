import { describe, it, expect, afterEach, beforeAll, afterAll } from 'vitest';
import { openDatabase, migrate, type Database } from '../db/index.js';
import { startPostgres, type PgCluster } from '../../../test/helpers/postgres.js';
import { EmbeddedQueue, jobsMigrations } from './queue.js';
import { Scheduler, slotsBetween, nextSlot } from './scheduler.js';

// Every test runs on SQLite and on PostgreSQL (a throwaway cluster, one database per test).
let cluster: PgCluster | undefined;
beforeAll(async () => {
  cluster = await startPostgres();
});
afterAll(async () => {
  await cluster?.stop();
});

const dbs: Database[] = [];
const queues: EmbeddedQueue[] = [];
let engine: 'sqlite' | 'postgres' = 'sqlite';
async function fresh(): Promise<Database> {
  const d = openDatabase(engine === 'postgres' ? await cluster!.createDatabase('queue') : ':memory:');
  await migrate(d.db, jobsMigrations);
  dbs.push(d);
  return d;
}
function queue(d: Database, o: ConstructorParameters<typeof EmbeddedQueue>[1] = {}): EmbeddedQueue {
  const q = new EmbeddedQueue(d.db, { pollMs: 20, ...o });
  queues.push(q);
  return q;
}
const until = async (cond: () => Promise<boolean> | boolean, ms = 5000) => {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
};

afterEach(async () => {
  for (const q of queues.splice(0)) await q.stop(100);
  for (const d of dbs.splice(0)) await d.close();
});

describe.each(['sqlite', 'postgres'] as const)('%s', (eng) => {
beforeAll(() => {
  engine = eng;
});

describe('EmbeddedQueue', () => {
  it('delivers a job to its worker once and marks it completed', async () => {
    const d = await fresh();
    const q = queue(d);
    const seen: unknown[] = [];
    q.work<{ n: number }>('t', async (ctx) => {
      seen.push(ctx.payload.n);
    });
    q.start();
    const id = (await q.send('t', { n: 7 }))!;
    await until(async () => (await q.get(id))?.state === 'completed');
    expect(seen).toEqual([7]);
  });

  it('a unique key enqueues at most one job', async () => {
    const d = await fresh();
    const q = queue(d);
    expect(await q.send('t', {}, { uniqueKey: 'slot-1' })).toBeTypeOf('string');
    expect(await q.send('t', {}, { uniqueKey: 'slot-1' })).toBeUndefined();
    expect(await q.send('t', {}, { uniqueKey: 'slot-2' })).toBeTypeOf('string');
  });

  it('retries a failing handler, then fails for good and tells the dead-job hooks', async () => {
    const d = await fresh();
    const q = queue(d);
    const attempts: number[] = [];
    const dead: string[] = [];
    q.onDead(async (j) => void dead.push(j.error));
    q.work('t', async (ctx) => {
      attempts.push(ctx.attempt);
      throw new Error(`boom ${ctx.attempt}`);
    });
    q.start();
    const id = (await q.send('t', {}, { retryLimit: 2, retryDelayMs: 0 }))!;
    await until(async () => (await q.get(id))?.state === 'failed');
    expect(attempts).toEqual([1, 2, 3]);
    expect(dead).toEqual(['boom 3']);
  });

  it('a job whose worker died (lease expired, no heartbeat) is picked up again by another worker', async () => {
    const d = await fresh();
    let now = 1_000_000;
    // Worker A claims the job and "dies": its handler never finishes and its heartbeat never runs.
    const a = queue(d, { leaseMs: 1000, heartbeatMs: 1e9, now: () => now, workerId: 'A' });
    let aStarted = false;
    a.work('t', () => {
      aStarted = true;
      return new Promise<void>(() => undefined);
    });
    const id = (await a.send('t', { x: 1 }))!;
    await a.poll();
    expect(aStarted).toBe(true);
    expect((await a.get(id))?.locked_by).toBe('A');

    const b = queue(d, { leaseMs: 1000, now: () => now, workerId: 'B' });
    const runs: number[] = [];
    b.work('t', async (ctx) => void runs.push(ctx.attempt));
    await b.poll();
    expect(runs).toEqual([]); // the lease still holds
    now += 1500; // lease expired
    await b.poll();
    await until(async () => (await b.get(id))?.state === 'completed');
    expect(runs).toEqual([2]);
    expect((await b.get(id))?.locked_by).toBe('B');
  });

  it('the heartbeat keeps the lease of a long job; a lost lease aborts the handler', async () => {
    const d = await fresh();
    const q = queue(d, { leaseMs: 400, heartbeatMs: 50 });
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    q.work('t', async () => gate);
    q.start();
    const id = (await q.send('t', {}))!;
    await until(async () => (await q.get(id))?.state === 'active');
    const first = (await q.get(id))!.lease_until!;
    await new Promise((r) => setTimeout(r, 900)); // two leases long: still ours thanks to the heartbeat
    const row = (await q.get(id))!;
    expect(row.state).toBe('active');
    expect(row.attempt).toBe(1);
    expect(row.lease_until!).toBeGreaterThan(first);
    release();
    await until(async () => (await q.get(id))?.state === 'completed');

    // Steal the lease of a second job: its handler sees the abort.
    let aborted = false;
    q.work('u', (ctx) => new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => ((aborted = true), resolve()))));
    const id2 = (await q.send('u', {}))!;
    await until(async () => (await q.get(id2))?.state === 'active');
    await d.db.withTables<{ platform_jobs: { id: string; locked_by: string } }>().updateTable('platform_jobs').set({ locked_by: 'someone-else' }).where('id', '=', id2).execute();
    await until(() => aborted);
  });
});

describe('Scheduler', () => {
  it('computes cron slots in UTC', () => {
    const t0 = Date.parse('2026-01-01T09:10:00Z');
    expect(slotsBetween('0 30 9 * * *', t0, t0 + 86_400_000).map((t) => new Date(t).toISOString())).toEqual(['2026-01-01T09:30:00.000Z']);
    expect(new Date(nextSlot('0 0 10 * * 1', t0)!).toISOString()).toBe('2026-01-05T10:00:00.000Z'); // next Monday
  });

  it('fires a slot once with an injected clock, even with two schedulers on one queue', async () => {
    const d = await fresh();
    const q = queue(d);
    const got: unknown[] = [];
    q.work('fire', async (ctx) => void got.push(ctx.payload));
    q.start();
    let now = Date.parse('2026-03-01T11:59:30Z');
    const clock = { now: () => now };
    const src = { name: 'policy', queue: 'fire', entries: async () => [{ key: 'item1', cron: '0 0 12 * * *' }] };
    const s1 = new Scheduler(q, { clock });
    const s2 = new Scheduler(q, { clock });
    s1.add(src);
    s2.add(src);
    expect(await s1.tick()).toBe(0); // nothing due yet
    now += 20_000;
    expect(await s1.tick()).toBe(0);
    now += 20_000; // 12:00:10: the slot passed
    expect(await s1.tick()).toBe(1);
    expect(await s2.tick()).toBe(0); // same slot: the unique key holds
    now += 60_000;
    expect(await s1.tick()).toBe(0);
    await until(() => got.length === 1);
    expect(got[0]).toEqual({ key: 'item1', slot: '2026-03-01T12:00:00.000Z' });
  });

  it('catch-up: the latest slot missed while down fires once on the first tick, not one before notBefore, not twice', async () => {
    const d = await fresh();
    const q = queue(d);
    const got: Array<Record<string, unknown>> = [];
    q.work('fire', async (ctx) => void got.push(ctx.payload as Record<string, unknown>));
    q.start();
    // Down from 11:00 to 15:30 on day 2: daily slots at 12:00 (missed) and 14:00 (missed, protected only at 13:00 for item2).
    const now = Date.parse('2026-03-02T15:30:00Z');
    const clock = { now: () => now };
    const entries = async (): Promise<Array<{ key: string; cron: string; notBefore?: number }>> => [
      { key: 'item1', cron: '0 0 12 * * *' },
      { key: 'item2', cron: '0 0 12 * * *', notBefore: Date.parse('2026-03-02T13:00:00Z') },
      { key: 'item3', cron: '0 0 14 * * *', notBefore: Date.parse('2026-03-02T13:00:00Z') },
    ];
    const catchUp = new Scheduler(q, { clock });
    catchUp.add({ name: 'policy', queue: 'fire', entries, catchUpMs: 7 * 86_400_000 });
    const noCatchUp = new Scheduler(q, { clock });
    noCatchUp.add({ name: 'other', queue: 'fire', entries });
    expect(await noCatchUp.tick()).toBe(0); // without catch-up a restart skips what it missed
    expect(await catchUp.tick()).toBe(2); // item1's 12:00 of today (only the latest) and item3's 14:00; not item2
    const again = new Scheduler(q, { clock });
    again.add({ name: 'policy', queue: 'fire', entries, catchUpMs: 7 * 86_400_000 });
    expect(await again.tick()).toBe(0); // a second restart: the unique keys hold
    await until(() => got.length === 2);
    expect(got.map((p) => `${String(p.key)} ${String(p.slot)}`).sort()).toEqual(['item1 2026-03-02T12:00:00.000Z', 'item3 2026-03-02T14:00:00.000Z']);
  });

  it('notBefore never holds back a slot that comes due while the scheduler runs', async () => {
    const d = await fresh();
    const q = queue(d);
    q.start();
    let now = Date.parse('2026-03-02T11:59:50Z');
    const clock = { now: () => now };
    const s1 = new Scheduler(q, { clock });
    // Backed up on demand 5 s after the 12:00 slot, before the scheduler's next tick.
    s1.add({ name: 'policy', queue: 'fire', catchUpMs: 86_400_000, entries: async () => [{ key: 'item1', cron: '0 0 12 * * *', notBefore: Date.parse('2026-03-02T12:00:05Z') }] });
    expect(await s1.tick()).toBe(0);
    now += 20_000;
    expect(await s1.tick()).toBe(1);
  });
});
});
