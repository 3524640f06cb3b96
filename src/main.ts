/**
 * Composition root: config → adapters → services → roles. The `rsvault` binary starts here: `serve` runs the
 * server assembled below; every other command is the CLI (which talks to a server over HTTPS only).
 */
import https from 'node:https';
import path from 'node:path';
import { existsSync } from 'node:fs';
import { ConfigError, loadChunkStoreConfig, loadConfig, type ChunkStoreConfig, type Config, type ConfigFlags } from './config.js';
import { createLogger, type Logger } from './platform/log.js';
import { createMetrics, registerQueueMetrics } from './platform/metrics.js';
import { openDatabase, migrate, ping, isPostgresUrl, redactDbUrl, type Database, type Migration, DatabaseConfigError } from './platform/db/index.js';
import { copyDatabase, MigrateDbError } from './platform/db/copy.js';
import { Locks, SharedLocks, lockMigrations } from './platform/db/locks.js';
import { platformMigrations, Settings } from './platform/db/kv.js';
import { createHttpApp, tuneServer } from './platform/http/app.js';
import { registerPortal } from './platform/http/static.js';
import { AsyncOperations } from './platform/http/async-ops.js';
import { registerAuth, TokenKeys, TokenService, armUnauthorized, RouteAuthorizationError } from './platform/auth/index.js';
import { initInstallation, writeFileAtomic } from './platform/install.js';
import { IdentityService, IdentityStore, identityMigrations, registerIdentityRoutes } from './identity/index.js';
import { ResourceService, ResourceStore, resourceMigrations, registerResourceRoutes, registerDeploymentRoutes, deploymentMigrations, failInterruptedDeployments } from './resources/index.js';
import { StorageService, StorageStore, storageMigrations, registerStorageRoutes, registerBlobPlane, parseBlobUrl, STORAGE_TYPE } from './storage/index.js';
import { KeyVaultServiceImpl, KeyVaultStore, VaultUrls, keyvaultMigrations, registerKeyVaultRoutes, registerKeyVaultDataRoutes, keyVaultChallenge } from './keyvault/index.js';
import { ComputeService, ComputeStore, computeMigrations, registerComputeRoutes, DISK_TYPE, VM_TYPE, CLASSIC_VM_TYPE } from './compute/index.js';
import { EmbeddedQueue, Scheduler, jobsMigrations, offsetClock } from './platform/jobs/index.js';
import { createRecovery, recoveryMigrations } from './recovery/index.js';
import { ChunkStores } from './platform/chunk-stores.js';
import { runCli, type CopyStoreFlags } from './cli/index.js';
import { copyStore } from './engine/index.js';

export interface RunningServer {
  port: number;
  urls: string[];
  close(): Promise<void>;
}

const MIGRATIONS: Migration[] = [...platformMigrations, ...lockMigrations, ...identityMigrations, ...resourceMigrations, ...keyvaultMigrations, ...computeMigrations, ...jobsMigrations, ...recoveryMigrations, ...deploymentMigrations, ...storageMigrations];

export async function startServer(config: Config, log: Logger = createLogger(config.logLevel)): Promise<RunningServer> {
  const install = await initInstallation(config.dataDir, config.vaultHostSuffix, config.blobHostSuffix);
  if (install.caUnconstrained) log.warn({ ca: install.caPath }, 'the installation CA predates name constraints (it could vouch for any host name); regenerate it as README "Hardening" describes');
  const database = openDatabase(config.dbUrl);
  const applied = await migrate(database.db, MIGRATIONS);
  if (applied.length) log.info({ migrations: applied }, 'database migrated');
  const settings = new Settings(database.db);
  const metrics = createMetrics();
  // Roles: api (HTTPS API + portal), worker (queued jobs), scheduler (policy slots). Several processes with the
  // worker/scheduler roles share one PostgreSQL: cluster-wide locks and the job queue live in it.
  const api = config.roles.includes('api');
  const worker = config.roles.includes('worker');
  const scheduling = config.roles.includes('scheduler');
  const cluster = database.dialect === 'postgres';
  const locks = new Locks(database.db);

  const identity = new IdentityService(new IdentityStore(database.db), settings);
  const boot = await identity.bootstrap();

  let port = config.port;
  // Every Key Vault URL handed out (vaultUri, kid/id, ADE settings, recovery points, restore outputs) is built here.
  const vaultUrls = new VaultUrls({ hostSuffix: config.vaultHostSuffix, publicPort: () => config.keyvaultPublicPort ?? port });
  const origins = () => [`https://localhost:${port}`, `https://127.0.0.1:${port}`, `https://[::1]:${port}`];
  const tokens = new TokenService(TokenKeys.fromPem(install.tokenSigningKeyPem), () => `https://localhost:${port}`, {
    arm: () => ['https://management.azure.com/', 'https://management.core.windows.net/', ...origins().map((o) => o + '/')],
    graph: () => ['https://graph.microsoft.com/', ...origins().map((o) => o + '/')],
    vault: () => [...new Set([vaultUrls.resource(), `https://${config.vaultHostSuffix}:${port}`, `https://${config.vaultHostSuffix}`])],
    storage: () => ['https://storage.azure.com/'],
  }, config.tokenLifetimeSec, () => identity.tenantId);

  const ops = new AsyncOperations(database.db, log);
  if (api) {
    const interrupted = await ops.failInterrupted();
    if (interrupted) log.warn({ interrupted }, 'operations interrupted by the previous shutdown were marked Failed');
  }
  const resources = new ResourceService(new ResourceStore(database.db), () => identity.subscriptionId, ops);

  const app = createHttpApp({ tls: install.tls, logger: log, metrics, vaultHostSuffix: config.vaultHostSuffix, blobHostSuffix: config.blobHostSuffix });
  const keyvault = new KeyVaultServiceImpl({
    store: new KeyVaultStore(database.db),
    sealer: install.sealer,
    resources,
    identity,
    urls: vaultUrls,
    issuer: (tid) => tokens.issuerFor(tid),
    log,
  });
  if (api) registerAuth(app, { tokens, authorizer: identity, challenge: { vault: keyVaultChallenge({ tenantId: () => identity.tenantId, port: () => port, vaultHostSuffix: config.vaultHostSuffix }) } });
  app.get('/metrics', { config: { plane: 'public' } }, async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  if (api) {
    registerIdentityRoutes(app, { identity, tokens, throttle: { requestsPerMinute: config.tokenRateLimit, failureLimit: config.tokenFailureLimit, failureWindowSec: config.tokenFailureWindowSec } });
    registerResourceRoutes(app, { resources, ops, checkAccess: (c, scope, action) => identity.checkAccess(c, scope, action) });
    registerKeyVaultRoutes(app, { keyvault, resources });
    registerKeyVaultDataRoutes(app, { keyvault });
  }
  // Compute: disks as image files under {dataDir}/disks; RSVAULT_LUKS_ITERATIONS forces low PBKDF2 counts (test mode only, ≥ 1000).
  const luksIter = config.test.luksIterations;
  // Storage accounts (restore targets) under {dataDir}/storage; template deployments create resources through the ARM routes.
  const storage = new StorageService(new StorageStore(database.db), resources, { dataDir: config.dataDir, sealer: install.sealer, blobHostSuffix: config.blobHostSuffix });
  resources.registerDeleter(STORAGE_TYPE, async (id) => void (await storage.deleteAccountById(id)));
  if (api) registerStorageRoutes(app, { storage, verifyBearer: (t) => tokens.verify(t, 'arm').catch(() => Promise.reject(armUnauthorized('The access token is invalid, expired, or not for the management plane.'))), checkAccess: (c, scope, action) => identity.checkAccess(c, scope, action) });
  // The blob data plane at https://{account}.{blob suffix}:{port} (Azure's addressing, for the Storage SDKs).
  if (api) registerBlobPlane(app, {
    storage,
    verifyStorageToken: (t) => tokens.verify(t, 'storage'),
    checkAccess: (c, scope, action) => identity.checkAccess(c, scope, action),
    authorizationUri: () => `https://localhost:${port}/${identity.tenantId}/oauth2/authorize`,
  });
  if (api) await failInterruptedDeployments(database.db);
  // Linked templates: only blobs this installation serves, read in-process (never an outbound request).
  const ownBlobUrl = (u: string) => {
    const b = parseBlobUrl(u, config.blobHostSuffix);
    const url = b ? new URL(u) : undefined;
    const host = url?.hostname.toLowerCase() ?? '';
    const ours = ['localhost', '127.0.0.1', '[::1]'].includes(host) || host.endsWith(`.${config.blobHostSuffix.toLowerCase()}`);
    return b && ours && Number(url!.port || 443) === port ? b : undefined;
  };
  if (api) registerDeploymentRoutes(app, { db: database.db, resources, ops, parseOwnBlobUrl: ownBlobUrl });
  // Disk imports from a blob URL are authorized for the requesting principal (RBAC read on the account, or a SAS).
  const compute = new ComputeService(new ComputeStore(database.db), resources, {
    dataDir: config.dataDir, sealer: install.sealer, luksIterations: luksIter, importDirs: config.importDirs, vaultUrls, keyvault, importCheckDelayMs: config.test.importCheckDelayMs,
    onImportChecked: (src) => log.warn({ src }, 'test mode: disk import path checked; pausing before use'),
    // Scale-out: a disk busy in another process (backup snapshot, restore, conversion) is waited for up to 30 s.
    diskLocks: cluster ? new SharedLocks(locks, { waitMs: 30_000 }) : undefined,
    resolveSourceUri: (u, caller) => storage.resolveBlobUrl(u, { caller, checkAccess: (c, scope, action) => identity.checkAccess(c, scope, action), target: 'properties.creationData.sourceUri' }),
  });
  if (api) {
    // Disk conversions (Azure Disk Encryption) run in the api role's async operations, failed above after a crash.
    const r = await compute.recoverInterrupted();
    if (r.leftovers || r.extensionsFailed) log.warn(r, 'disk conversions / VM extensions interrupted by the previous shutdown were rolled back / marked Failed');
  }
  resources.registerDeleter(VM_TYPE, async (id) => void (await compute.deleteVm(id)));
  resources.registerDeleter(DISK_TYPE, async (id) => {
    const d = await compute.getDisk(id);
    if (d?.managedBy) await compute.deleteVm(d.managedBy);
    await compute.deleteDisk(id);
  });
  resources.registerDeleter(CLASSIC_VM_TYPE, async (id) => void (await compute.deleteClassicVm(id)));
  if (api) registerComputeRoutes(app, { compute, ops, keyvault });
  // Recovery Services + the job queue and scheduler. RSVAULT_CLOCK_OFFSET_MS (test mode only) / RSVAULT_SCHEDULER_TICK_MS /
  // RSVAULT_RETENTION_CRON / RSVAULT_QUEUE_LEASE_MS move the scheduler's clock, cadence and job leases (tests).
  const clock = offsetClock(config.test.clockOffsetMs);
  const queueMetrics = registerQueueMetrics(metrics);
  const queue = new EmbeddedQueue(database.db, { log, leaseMs: Number(process.env.RSVAULT_QUEUE_LEASE_MS ?? '') || undefined, onOutcome: queueMetrics.outcome });
  queueMetrics.depth(() => queue.depth());
  const scheduler = new Scheduler(queue, { clock, tickMs: Number(process.env.RSVAULT_SCHEDULER_TICK_MS ?? '') || 15_000, log });
  // Vault chunk stores: fs | Azure Blob | S3 (+ the secondary of GeoRedundant vaults), from --chunk-store & co.
  const chunkStores = new ChunkStores(config.chunkStore, config.secondaryStore);
  log.info({ chunkStore: chunkStores.describe() }, 'vault chunk stores');
  if (!config.secondaryStore) log.info('no secondary chunk store configured: GeoRedundant vaults keep a single copy (--secondary-chunk-store)');
  const recovery = createRecovery({ db: database.db, resources, identity, keyvault, compute, storage, ops, queue, sealer: install.sealer, dataDir: config.dataDir, log, clock, chunkStores, locks });
  if (api) {
    recovery.registerRoutes(app);
    await recovery.recoverApi();
  }
  // Health per role: which roles this process runs, whether the database (and with it the queue) answers.
  app.get('/healthz', { config: { plane: 'public' } }, async (_req, reply) => {
    const t0 = Date.now();
    const db = await ping(database.db).then(() => ({ ok: true }), (e: unknown) => ({ ok: false, error: (e as Error).message }));
    const depth = db.ok ? await queue.depth().catch(() => undefined) : undefined;
    const body = {
      status: db.ok ? 'ok' : 'unavailable',
      roles: config.roles,
      db: { dialect: database.dialect, ...db, latencyMs: Date.now() - t0 },
      queue: { kind: cluster ? 'postgres' : 'embedded', ok: depth !== undefined, working: worker, ...(depth ? { depth } : {}) },
    };
    return reply.code(db.ok ? 200 : 503).send(body);
  });
  if (api) await registerPortal(app, { config: () => ({ tenantId: identity.tenantId }) });
  await app.ready();

  // Listen: the first address through Fastify, the others as extra HTTPS servers sharing its router.
  const [first, ...rest] = config.listen;
  await app.listen({ host: first!, port });
  const addr = app.server.address();
  if (addr && typeof addr === 'object') port = addr.port;
  const extra: https.Server[] = [];
  for (const host of rest) {
    const srv = tuneServer(https.createServer({ key: install.tls.key, cert: install.tls.cert }, (req, res) => app.routing(req, res)));
    try {
      await new Promise<void>((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(port, host, () => resolve());
      });
      extra.push(srv);
    } catch (e) {
      log.warn({ host, err: (e as Error).message }, 'could not listen on address; continuing without it');
    }
  }

  // Roles start once this process listens (a process that cannot listen must not touch shared jobs).
  if (worker) {
    // Embedded (SQLite: this is the only process): jobs the previous process left active are re-run now, not after
    // their lease. On PostgreSQL other live workers may own them: their leases expire on their own if they died.
    if (!cluster) {
      const orphans = await queue.releaseOrphans();
      if (orphans) log.warn({ orphans }, 'queued jobs interrupted by the previous shutdown run again');
    }
    recovery.startWorkers(queue);
    queue.start();
  }
  if (scheduling) {
    recovery.addSchedules(scheduler, process.env.RSVAULT_RETENTION_CRON || undefined, config.scheduleCatchUpHours * 3_600_000, config.verifySchedule);
    scheduler.start();
  }
  // credentials.json: written at first start (the only time the admin secret is known in clear).
  const credPath = path.join(config.dataDir, 'credentials.json');
  const endpoints = {
    resourceManager: `https://localhost:${port}/`,
    activeDirectory: `https://localhost:${port}`,
    activeDirectoryAdfs: `https://localhost:${port}/adfs`,
    keyVaultDnsSuffix: `.${new URL(vaultUrls.resource()).host}`,
    microsoftGraph: `https://localhost:${port}/`,
    portal: `https://localhost:${port}/`,
  };
  if (boot.admin) {
    writeFileAtomic(
      credPath,
      JSON.stringify({ tenantId: boot.tenantId, subscriptionId: boot.subscriptionId, clientId: boot.admin.clientId, clientSecret: boot.admin.clientSecret, objectId: boot.admin.objectId, caPath: install.caPath, endpoints }, null, 2) + '\n',
    );
  } else if (api && existsSync(credPath)) {
    // Keep endpoints current (the port may differ between starts); the secret stays as written.
    const { readFileSync } = await import('node:fs');
    const cur = JSON.parse(readFileSync(credPath, 'utf8')) as Record<string, unknown>;
    writeFileAtomic(credPath, JSON.stringify({ ...cur, caPath: install.caPath, endpoints }, null, 2) + '\n');
  }

  const urls = [`https://localhost:${port}/`];
  let closing: Promise<void> | undefined;
  return {
    port,
    urls,
    close() {
      closing ??= (async () => {
        await Promise.all(extra.map((s) => new Promise<void>((r) => s.close(() => r()))));
        await app.close();
        await scheduler.stop();
        await queue.stop();
        locks.stopAll();
        await ops.drain();
        await database.close();
      })();
      return closing;
    },
  };
}

async function serve(flags: ConfigFlags): Promise<void> {
  let config: Config;
  try {
    config = loadConfig(flags);
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`rsvault: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const log = createLogger(config.logLevel, process.stderr);
  let server: RunningServer;
  try {
    server = await startServer(config, log);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (e instanceof DatabaseConfigError || e instanceof ConfigError || e instanceof RouteAuthorizationError) {
      process.stderr.write(`rsvault: ${err.message}\n`);
      process.exit(2);
    }
    if (err.code === 'EADDRINUSE' || err.code === 'EACCES') {
      process.stderr.write(`rsvault: cannot listen on port ${config.port}: ${err.code === 'EADDRINUSE' ? 'address already in use' : 'permission denied'} (use --port)\n`);
      process.exit(2);
    }
    throw e;
  }
  const out = process.stdout;
  out.write(`rsvault listening on https://localhost:${server.port}/ (port ${server.port})\n`);
  out.write(`  ARM endpoint:       https://localhost:${server.port}/\n`);
  out.write(`  token authority:    https://localhost:${server.port}  (ADFS style: https://localhost:${server.port}/adfs)\n`);
  const kvPort = config.keyvaultPublicPort ?? server.port;
  out.write(`  Key Vault hosts:    https://{name}.${config.vaultHostSuffix}${kvPort === 443 ? '' : `:${kvPort}`}/\n`);
  out.write(`  Storage blob hosts: https://{account}.${config.blobHostSuffix}:${server.port}/\n`);
  out.write(`  CA certificate:     ${path.join(config.dataDir, 'tls', 'ca.pem')}\n`);
  out.write(`  credentials:        ${path.join(config.dataDir, 'credentials.json')}\n`);
  out.write(`  data directory:     ${config.dataDir}\n`);

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down: no new requests; finishing in-flight work');
    server
      .close()
      .then(() => {
        log.info('stopped cleanly');
        process.exit(0);
      })
      .catch((e: unknown) => {
        log.error({ err: e }, 'error during shutdown');
        process.exit(1);
      });
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
}

/** `rsvault admin copy-store`: copies every vault's store (chunks, fossils, manifests) to another store, verified. */
async function adminCopyStore(flags: CopyStoreFlags): Promise<void> {
  let config: Config;
  let target: ChunkStoreConfig;
  try {
    config = loadConfig(flags);
    target = loadChunkStoreConfig(flags.to, process.env, 'RSVAULT_TARGET_', {
      fsDir: flags.toDir, blobUrl: flags.toBlobUrl, blobContainer: flags.toBlobContainer, s3Endpoint: flags.toS3Endpoint, s3Bucket: flags.toS3Bucket, s3Region: flags.toS3Region,
    });
    if (target.kind === 'fs' && !target.dir) throw new ConfigError('an fs target needs a directory: --to-dir or RSVAULT_TARGET_FS_DIR');
    if (JSON.stringify(target) === JSON.stringify(config.chunkStore)) throw new ConfigError('the target is the configured chunk store itself');
  } catch (e) {
    if (e instanceof ConfigError) {
      process.stderr.write(`rsvault: ${e.message}\n`);
      process.exit(2);
    }
    throw e;
  }
  const stores = new ChunkStores(config.chunkStore, undefined);
  const targets = new ChunkStores(target, undefined);
  const uids = flags.vault ?? (await stores.vaultsIn(config.chunkStore, config.dataDir));
  let failed = 0;
  const total = { vaults: 0, chunks: 0, fossils: 0, meta: 0, bytes: 0 };
  for (const uid of uids) {
    const localDir = path.join(config.dataDir, 'vaults', uid);
    try {
      const src = await stores.openOne(config.chunkStore, uid, localDir);
      const dst = await targets.openOne(target, uid, localDir);
      const st = await copyStore(src, dst, { verify: flags.verify });
      total.vaults++;
      total.chunks += st.chunks;
      total.fossils += st.fossils;
      total.meta += st.meta;
      total.bytes += st.bytes;
      process.stdout.write(`${JSON.stringify({ vault: uid, ...st, verified: flags.verify })}\n`);
    } catch (e) {
      failed++;
      process.stderr.write(`rsvault: copying vault ${uid} failed: ${(e as Error).message}\n`);
    }
  }
  process.stdout.write(`${JSON.stringify({ from: stores.describe(), to: targets.describe(), ...total, failed })}\n`);
  process.exit(failed ? 1 : 0);
}

process.on('unhandledRejection', (e) => {
  process.stderr.write(`rsvault: unhandled rejection: ${(e as Error)?.stack ?? String(e)}\n`);
});

/** `rsvault admin migrate-db --from sqlite:… --to postgres://…` (see platform/db/copy.ts). */
async function migrateDb(o: { from: string; to: string }): Promise<void> {
  const fail = (msg: string): never => {
    process.stderr.write(`rsvault: ${msg}\n`);
    process.exit(2);
  };
  if (isPostgresUrl(o.from) || !existsSync(o.from)) fail(`--from '${redactDbUrl(o.from)}' is not an existing SQLite database file`);
  if (!isPostgresUrl(o.to)) fail(`--to '${redactDbUrl(o.to)}' is not a postgres:// URL`);
  let from: Database | undefined;
  let to: Database | undefined;
  try {
    from = openDatabase(o.from);
    to = openDatabase(o.to);
    await migrate(from.db, MIGRATIONS);
    await migrate(to.db, MIGRATIONS);
    const r = await copyDatabase(from, to);
    for (const t of r.tables) process.stdout.write(`${t.name}\t${t.rows}\n`);
    process.stdout.write(`copied ${r.tables.reduce((a, t) => a + t.rows, 0)} rows in ${r.tables.length} tables to ${redactDbUrl(o.to)}\n`);
  } catch (e) {
    if (e instanceof MigrateDbError || e instanceof DatabaseConfigError) fail(e.message);
    fail(`migrate-db failed: ${(e as Error).message.replaceAll(o.to, redactDbUrl(o.to))}`);
  } finally {
    await from?.close();
    await to?.close();
  }
}

await runCli(process.argv, { serve, adminCopyStore, migrateDb });
