/**
 * The last subscription Owner across API processes: two IdentityService instances, each on its own connection to
 * one SQLite file (what two `rsvault serve` processes sharing a database are), remove the last two Owner
 * assignments at the same time. Exactly one succeeds; the other gets 409 LastOwnerCannotBeRemoved. The same for
 * deleting the two Owner principals. Real SQLite (WAL, as the server opens it), no mocks.
 */
import { describe, it, expect, afterEach } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrate, openDatabase, type Database } from '../platform/db/index.js';
import { platformMigrations, Settings } from '../platform/db/kv.js';
import { identityMigrations, IdentityStore } from './store.js';
import { IdentityService } from './service.js';

const dirs: string[] = [];
const dbs: Database[] = [];
afterEach(async () => {
  for (const d of dbs.splice(0)) await d.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** Two services on two connections to one fresh database, bootstrapped, with a second Owner besides the admin. */
async function twoProcesses() {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rsv-owner-'));
  dirs.push(dir);
  const file = path.join(dir, 'meta.db');
  const a = openDatabase(file);
  dbs.push(a);
  await migrate(a.db, [...platformMigrations, ...identityMigrations]);
  const b = openDatabase(file);
  dbs.push(b);
  const sa = new IdentityService(new IdentityStore(a.db), new Settings(a.db));
  const sb = new IdentityService(new IdentityStore(b.db), new Settings(b.db));
  const boot = await sa.bootstrap();
  await sb.bootstrap();
  const scope = `/subscriptions/${boot.subscriptionId}`;
  // Two Owners that are not the (built-in, undeletable) bootstrap admin; the admin's own Owner assignment goes.
  const p1 = await sa.createServicePrincipal('owner-1');
  const p2 = await sa.createServicePrincipal('owner-2');
  await sa.assignRole({ principalId: p1.principal.objectId, role: 'Owner', scope });
  await sa.assignRole({ principalId: p2.principal.objectId, role: 'Owner', scope });
  const adminRa = (await sa.listAssignments({ scope, principalId: boot.admin!.objectId }))[0]!;
  await sa.deleteAssignment(scope, adminRa.name);
  const owners = (await sa.listAssignments({ scope })).filter((x) => x.scope === scope);
  expect(owners).toHaveLength(2);
  return { sa, sb, scope, owners, p1: p1.principal.objectId, p2: p2.principal.objectId };
}

const outcome = (p: Promise<unknown>) => p.then(() => 'ok', (e: { code?: string }) => e.code ?? String(e));

describe('last Owner, two processes on one database', () => {
  it('concurrent deletes of the last two Owner assignments: exactly one succeeds', async () => {
    for (let round = 0; round < 5; round++) {
      const { sa, sb, scope, owners } = await twoProcesses();
      const results = await Promise.all([outcome(sa.deleteAssignment(scope, owners[0]!.name)), outcome(sb.deleteAssignment(scope, owners[1]!.name))]);
      expect(results.sort(), `round ${round}`).toEqual(['LastOwnerCannotBeRemoved', 'ok']);
      expect((await sa.listAssignments({ scope })).filter((x) => x.scope === scope)).toHaveLength(1);
    }
  });

  it('concurrent deletes of the two Owner principals: exactly one succeeds, the other keeps its assignment', async () => {
    for (let round = 0; round < 5; round++) {
      const { sa, sb, scope, p1, p2 } = await twoProcesses();
      const results = await Promise.all([outcome(sa.deletePrincipal(p1)), outcome(sb.deletePrincipal(p2))]);
      expect(results.sort(), `round ${round}`).toEqual(['LastOwnerCannotBeRemoved', 'ok']);
      const left = (await sa.listAssignments({ scope })).filter((x) => x.scope === scope);
      expect(left).toHaveLength(1);
      expect(await sa.principal(left[0]!.principalId)).toBeDefined();
    }
  });

  it('an assignment that is not the last Owner goes; a missing one is reported as absent', async () => {
    const { sa, scope, owners } = await twoProcesses();
    expect(await sa.deleteAssignment(scope, owners[0]!.name)).toMatchObject({ name: owners[0]!.name });
    expect(await sa.deleteAssignment(scope, owners[0]!.name)).toBeUndefined();
    await expect(sa.deleteAssignment(scope, owners[1]!.name)).rejects.toMatchObject({ status: 409, code: 'LastOwnerCannotBeRemoved' });
  });
});
