/** Cluster-wide lease locks on both engines: two "processes" (two Locks on separate connections) exclude each other. */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { openDatabase, migrate, type Database } from './index.js';
import { Locks, LockTimeoutError, lockMigrations } from './locks.js';
import { startPostgres, type PgCluster } from '../../../test/helpers/postgres.js';

let cluster: PgCluster | undefined;
let tmp: string;
beforeAll(async () => {
  cluster = await startPostgres();
  tmp = mkdtempSync(path.join(os.tmpdir(), 'rsv-locks-'));
});
afterAll(async () => {
  await cluster?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

describe.each(['sqlite', 'postgres'] as const)('%s', (engine) => {
  let a: Database;
  let b: Database;
  beforeAll(async () => {
    // Two connections to one database, as two rsvault processes have.
    const url = engine === 'postgres' ? await cluster!.createDatabase('locks') : path.join(tmp, 'locks.db');
    a = openDatabase(url);
    await migrate(a.db, lockMigrations);
    b = openDatabase(url);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
  });

  it('one holder at a time; released locks are free again; waiting takers get it after the release', async () => {
    const la = new Locks(a.db, { owner: 'A' });
    const lb = new Locks(b.db, { owner: 'B' });
    const l1 = await la.tryAcquire('gc:v1');
    expect(l1).toBeDefined();
    expect(await lb.tryAcquire('gc:v1')).toBeUndefined();
    expect(await lb.holder('gc:v1')).toBe('A');
    expect(await lb.tryAcquire('gc:v2')).toBeDefined(); // another name is independent
    await expect(lb.acquire('gc:v1', { waitMs: 300, pollMs: 50 })).rejects.toBeInstanceOf(LockTimeoutError);
    const waiting = lb.acquire('gc:v1', { pollMs: 30 });
    await new Promise((r) => setTimeout(r, 150));
    await l1!.release();
    const l2 = await waiting;
    expect(await la.holder('gc:v1')).toBe('B');
    await l2.release();
    lb.stopAll();
  });

  it('many concurrent takers: exactly one wins', async () => {
    const ls = [new Locks(a.db, { owner: 'A' }), new Locks(b.db, { owner: 'B' })];
    const got = await Promise.all(Array.from({ length: 10 }, (_, i) => ls[i % 2]!.tryAcquire('disk:d1')));
    expect(got.filter(Boolean)).toHaveLength(1);
    await got.find(Boolean)!.release();
  });

  it('a dead holder (no renewal) loses the lock when its lease expires; a stalled holder sees `lost`', async () => {
    const la = new Locks(a.db, { owner: 'A', ttlMs: 300 });
    const lb = new Locks(b.db, { owner: 'B', ttlMs: 300 });
    const dead = await la.tryAcquire('disk:d2');
    la.stopAll(); // the process "dies": no more renewals
    expect(await lb.tryAcquire('disk:d2')).toBeUndefined();
    const taken = await lb.acquire('disk:d2', { waitMs: 3000, pollMs: 50 });
    expect(await la.holder('disk:d2')).toBe('B');
    // The renewal of the old holder now finds the row taken: its lease reports lost.
    const la2 = new Locks(a.db, { owner: 'A2', ttlMs: 150 });
    const l = await la2.acquire('disk:d3');
    await b.db.withTables<{ platform_locks: { name: string; token: string } }>().updateTable('platform_locks').set({ token: 'stolen' }).where('name', '=', 'disk:d3').execute();
    await new Promise<void>((resolve) => (l.lost.aborted ? resolve() : l.lost.addEventListener('abort', () => resolve())));
    expect(l.lost.aborted).toBe(true);
    await dead!.release(); // a late release of a lost lease deletes nothing of the new holder's
    expect(await la.holder('disk:d2')).toBe('B');
    await taken.release();
    la2.stopAll();
    lb.stopAll();
  });
});

describe('SharedLocks', () => {
  it('holds of one process share the lease; another process waits until the last one is released', async () => {
    const url = path.join(tmp, 'shared.db');
    const a = openDatabase(url);
    await migrate(a.db, lockMigrations);
    const b = openDatabase(url);
    try {
      const { SharedLocks } = await import('./locks.js');
      const pa = new SharedLocks(new Locks(a.db, { owner: 'A' }));
      const pb = new SharedLocks(new Locks(b.db, { owner: 'B' }), { waitMs: 200 });
      const r1 = await pa.hold('disk:x');
      const r2 = await pa.hold('disk:x'); // same process: no wait
      await expect(pb.hold('disk:x')).rejects.toBeInstanceOf(LockTimeoutError);
      await r1();
      await expect(pb.hold('disk:x')).rejects.toBeInstanceOf(LockTimeoutError);
      await r2();
      const rb = await pb.hold('disk:x');
      await rb();
    } finally {
      await a.close();
      await b.close();
    }
  });
});
