/**
 * Cluster-wide locks as lease rows in the metadata database (`platform_locks`), so that several rsvault processes
 * sharing one PostgreSQL (or one SQLite file) exclude each other: GC of a vault, work on a disk, ...
 *
 * A lock is a row (name, token, owner, expires_at). Taking it is one upsert that succeeds only when the row is
 * absent or its lease has expired; the holder renews the lease every ttl/3 while it works, and deletes the row
 * (by its token) when done. A holder that dies stops renewing: its lease expires after `ttlMs` and the next taker
 * gets the lock. A holder whose renewal finds the row gone or taken (it stalled longer than the lease) sees its
 * `lost` signal abort, and must stop touching what the lock protects. The same code runs on SQLite and PostgreSQL
 * (`insert … on conflict … do update … where`); leases assume the nodes' clocks agree within a fraction of ttlMs.
 */
import type { Kysely } from 'kysely';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import type { Db, Migration } from './index.js';

type LockTables = {
  platform_locks: { name: string; token: string; owner: string; acquired_at: number; expires_at: number };
};

export const lockMigrations: Migration[] = [
  {
    name: '0011_platform_locks',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('platform_locks')
        .addColumn('name', 'text', (c) => c.primaryKey())
        .addColumn('token', 'text', (c) => c.notNull())
        .addColumn('owner', 'text', (c) => c.notNull())
        .addColumn('acquired_at', 'bigint', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
];

export interface Lease {
  readonly name: string;
  readonly token: string;
  /** Aborted when the lease was lost (expired and taken by another holder, or deleted). */
  readonly lost: AbortSignal;
  release(): Promise<void>;
}

export interface AcquireOptions {
  /** Lease length (default the Locks' ttlMs). */
  ttlMs?: number;
  /** Give up after this long (default: wait until `signal` aborts). */
  waitMs?: number;
  /** Poll interval while waiting (default 200 ms). */
  pollMs?: number;
  signal?: AbortSignal;
}

export class LockTimeoutError extends Error {
  override name = 'LockTimeoutError';
  constructor(readonly lock: string, readonly holder: string | undefined) {
    super(`lock '${lock}' is held${holder ? ` by ${holder}` : ''}`);
  }
}

export interface LocksOptions {
  /** Default lease length (default 30 s). */
  ttlMs?: number;
  /** Shown as the holder (default host:pid). */
  owner?: string;
  now?: () => number;
}

export class Locks {
  private readonly db: Kysely<LockTables>;
  readonly ttlMs: number;
  readonly owner: string;
  private readonly now: () => number;
  private readonly held = new Set<{ stop(): void }>();

  constructor(db: Db, o: LocksOptions = {}) {
    this.db = db.withTables<LockTables>();
    this.ttlMs = o.ttlMs ?? 30_000;
    this.owner = o.owner ?? `${os.hostname()}:${process.pid}`;
    this.now = o.now ?? Date.now;
  }

  /** Takes the lock if it is free (or its lease expired); undefined when someone else holds it. */
  async tryAcquire(name: string, ttlMs = this.ttlMs): Promise<Lease | undefined> {
    const token = randomUUID();
    const t = this.now();
    const res = await this.db
      .insertInto('platform_locks')
      .values({ name, token, owner: this.owner, acquired_at: t, expires_at: t + ttlMs })
      .onConflict((oc) =>
        oc
          .column('name')
          .doUpdateSet({ token, owner: this.owner, acquired_at: t, expires_at: t + ttlMs })
          .where('platform_locks.expires_at', '<', t),
      )
      .executeTakeFirst();
    if (Number(res.numInsertedOrUpdatedRows ?? 0n) !== 1) return undefined;
    return this.lease(name, token, ttlMs);
  }

  /** Waits for the lock (polling); throws LockTimeoutError after `waitMs`, or the signal's reason when aborted. */
  async acquire(name: string, o: AcquireOptions = {}): Promise<Lease> {
    const end = o.waitMs === undefined ? Infinity : this.now() + o.waitMs;
    for (;;) {
      o.signal?.throwIfAborted();
      const l = await this.tryAcquire(name, o.ttlMs);
      if (l) return l;
      if (this.now() >= end) throw new LockTimeoutError(name, await this.holder(name));
      await new Promise((r) => setTimeout(r, o.pollMs ?? 200));
    }
  }

  /** Runs `fn` holding the lock (waiting for it first); `fn` gets the lease's `lost` signal. */
  async withLock<T>(name: string, fn: (lost: AbortSignal) => Promise<T>, o: AcquireOptions = {}): Promise<T> {
    const l = await this.acquire(name, o);
    try {
      return await fn(l.lost);
    } finally {
      await l.release();
    }
  }

  /** Who holds a lock now (undefined when free or expired). */
  async holder(name: string): Promise<string | undefined> {
    const r = await this.db.selectFrom('platform_locks').select(['owner', 'expires_at']).where('name', '=', name).executeTakeFirst();
    return r && r.expires_at >= this.now() ? r.owner : undefined;
  }

  /** Stops renewing every lease of this process (shutdown); the rows expire on their own. */
  stopAll(): void {
    for (const h of this.held) h.stop();
    this.held.clear();
  }

  private lease(name: string, token: string, ttlMs: number): Lease {
    const ac = new AbortController();
    const renew = async () => {
      const t = this.now();
      const r = await this.db.updateTable('platform_locks').set({ expires_at: t + ttlMs }).where('name', '=', name).where('token', '=', token).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1 && !ac.signal.aborted) ac.abort(new Error(`lock '${name}' lost`));
    };
    const timer = setInterval(() => void renew().catch(() => undefined), Math.max(50, Math.floor(ttlMs / 3)));
    timer.unref();
    const h = { stop: () => clearInterval(timer) };
    this.held.add(h);
    let released = false;
    return {
      name,
      token,
      lost: ac.signal,
      release: async () => {
        if (released) return;
        released = true;
        h.stop();
        this.held.delete(h);
        await this.db.deleteFrom('platform_locks').where('name', '=', name).where('token', '=', token).execute();
      },
    };
  }
}

/**
 * Process-shared holds on cluster locks: the first `hold(name)` of this process takes the lease (waiting for other
 * processes to let go), later holds of the same name in this process share it (a reference count), the last
 * release gives it back. Work inside one process is serialised by its own means (e.g. a per-disk promise chain and
 * copy-on-write hooks); the lease keeps other processes out. Embedded mode simply has no SharedLocks.
 */
export class SharedLocks {
  private readonly holds = new Map<string, { count: number; lease: Promise<Lease> }>();

  constructor(private readonly locks: Locks, private readonly o: { waitMs?: number } = {}) {}

  async hold(name: string, o: { waitMs?: number; signal?: AbortSignal } = {}): Promise<() => Promise<void>> {
    let h = this.holds.get(name);
    if (!h) {
      h = { count: 0, lease: this.locks.acquire(name, { waitMs: o.waitMs ?? this.o.waitMs, signal: o.signal }) };
      this.holds.set(name, h);
      h.lease.catch(() => {
        if (this.holds.get(name) === h) this.holds.delete(name);
      });
    }
    h.count++;
    const mine = h;
    try {
      await mine.lease;
    } catch (e) {
      mine.count--;
      throw e;
    }
    let released = false;
    return async () => {
      if (released) return;
      released = true;
      if (--mine.count > 0) return;
      if (this.holds.get(name) === mine) this.holds.delete(name);
      await (await mine.lease).release();
    };
  }
}
