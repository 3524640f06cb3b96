/**
 * Recovery Services slice: vaults, policies, protection of encrypted VMs, backup jobs, recovery points,
 * retention and scheduled backups. The only file other slices (and main.ts) import.
 */
import type { FastifyInstance } from 'fastify';
import type { JobQueue, Scheduler } from '../platform/jobs/index.js';
import { RecoveryService, QUEUE_BACKUP, QUEUE_RESTORE, QUEUE_RETENTION, QUEUE_SCHEDULED, type RecoveryDeps } from './service.js';
import { Protection } from './backup.js';
import { Restore } from './restore.js';
import { RecoveryStore } from './store.js';
import { registerRecoveryRoutes } from './routes.js';
import { registerIntegrityRoutes } from './integrity-routes.js';
import { VaultIntegrity, QUEUE_VERIFY, QUEUE_VERIFY_SCHEDULED } from './verify-job.js';
import { registerEncryptionConfigRoutes } from './encryption-config.js';
import { VAULT_TYPE } from './model.js';

export { recoveryMigrations, RecoveryStore } from './store.js';
export { RecoveryService, type RecoveryDeps } from './service.js';
export { Protection } from './backup.js';
export { Restore } from './restore.js';
export { VaultIntegrity, DEFAULT_VERIFY_CRON } from './verify-job.js';
export { validatePolicy, scheduleCron, scheduledExpiry, nextScheduledRun } from './policy.js';

export interface RecoveryModule {
  service: RecoveryService;
  protection: Protection;
  restore: Restore;
  integrity: VaultIntegrity;
  registerRoutes(app: FastifyInstance): void;
  /** Queue workers (role worker) and schedule sources (role scheduler). */
  startWorkers(queue: JobQueue): void;
  /**
   * `catchUpMs`: how far back a policy's latest missed slot still runs when the scheduler starts (0 = never).
   * `verifyCron`: when every vault's Verify job runs (undefined = never).
   */
  addSchedules(scheduler: Scheduler, retentionCron?: string, catchUpMs?: number, verifyCron?: string): void;
  /** API role start-up: jobs of in-process operations interrupted by the previous shutdown fail with a code. */
  recoverApi(): Promise<void>;
}

export function createRecovery(deps: Omit<RecoveryDeps, 'store'> & { store?: RecoveryStore; db?: ConstructorParameters<typeof RecoveryStore>[0] }): RecoveryModule {
  const store = deps.store ?? new RecoveryStore(deps.db!);
  const service = new RecoveryService({ ...deps, store });
  const protection = new Protection(service);
  const restore = new Restore(service);
  const integrity = new VaultIntegrity(service);
  deps.resources.registerDeleter(VAULT_TYPE, async (id) => {
    const v = await service.db.selectFrom('recovery_vaults').selectAll().where('id_norm', '=', id.toLowerCase()).executeTakeFirst();
    if (v) await service.deleteVault(v, true);
  });
  return {
    service,
    protection,
    restore,
    integrity,
    registerRoutes(app) {
      registerRecoveryRoutes(app, { recovery: service, protection, restore, ops: deps.ops });
      registerIntegrityRoutes(app, { recovery: service, integrity });
      registerEncryptionConfigRoutes(app, service);
    },
    startWorkers(queue) {
      void protection.cleanStaleSnapshots().then(
        (n) => (n ? deps.log.warn({ removed: n }, 'snapshot side files left by interrupted backups were removed') : undefined),
        (e: unknown) => deps.log.warn({ err: e }, 'could not remove the snapshot side files of interrupted backups'),
      );
      void restore.cleanLeftovers().catch((e: unknown) => deps.log.warn({ err: e }, 'could not remove the leftovers of interrupted restores'));
      void protection.recoverInterrupted({ api: false, worker: true }).then(
        (r) => (r.failed || r.resumed ? deps.log.warn(r, 'recovery jobs interrupted by the previous shutdown were failed or resumed') : undefined),
        (e: unknown) => deps.log.error({ err: e }, 'could not recover interrupted recovery jobs'),
      );
      queue.work<{ jobId: string }>(QUEUE_BACKUP, (ctx) => protection.runBackup(ctx), { concurrency: 2 });
      queue.work<{ key: string; slot: string }>(QUEUE_SCHEDULED, (ctx) => protection.scheduled(ctx.payload), { concurrency: 2 });
      queue.work<{ jobId: string }>(QUEUE_RESTORE, (ctx) => restore.runQueued(ctx), { concurrency: 2 });
      queue.work(QUEUE_RETENTION, async () => void (await protection.retention()), { concurrency: 1 });
      queue.work<{ jobId: string }>(QUEUE_VERIFY, (ctx) => integrity.runVerify(ctx), { concurrency: 1 });
      queue.work<{ key: string; slot: string }>(QUEUE_VERIFY_SCHEDULED, (ctx) => integrity.scheduled(ctx.payload), { concurrency: 1 });
      queue.onDead(async (j) => {
        if (j.name === QUEUE_BACKUP) await protection.deadBackup((j.payload as { jobId: string }).jobId, j.error);
        if (j.name === QUEUE_VERIFY) await integrity.deadVerify((j.payload as { jobId: string }).jobId, j.error);
        if (j.name === QUEUE_RESTORE) await restore.deadRestore((j.payload as { jobId: string }).jobId);
      });
    },
    async recoverApi() {
      const r = await protection.recoverInterrupted({ api: true, worker: false });
      if (r.failed) deps.log.warn(r, 'recovery jobs interrupted by the previous shutdown were failed');
    },
    addSchedules(scheduler, retentionCron = '0 */15 * * * *', catchUpMs = 0, verifyCron) {
      scheduler.add(service.policySource(catchUpMs));
      if (verifyCron) scheduler.add(integrity.scheduleSource(verifyCron));
      scheduler.add({ name: 'recovery-retention', queue: QUEUE_RETENTION, entries: async () => [{ key: 'all', cron: retentionCron }] });
    },
  };
}
