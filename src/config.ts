/**
 * Configuration: command-line flags and RSVAULT_* environment variables, validated into one typed object.
 * Flags win over the environment, the environment over defaults. Invalid values raise ConfigError,
 * which the CLI prints as one line and exits with code 2.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { Cron } from 'croner';

export type ChunkStoreKind = 'fs' | 'blob' | 's3';

/** Where vault chunks and manifests live. Secrets (keys, connection strings) come only from env or files. */
export type ChunkStoreConfig =
  | { kind: 'fs'; /** Root of the vault stores; undefined = each vault's directory under <dataDir>/vaults (the embedded layout). */ dir?: string | undefined }
  | { kind: 'blob'; url?: string | undefined; container: string; accountName?: string | undefined; accountKey?: string | undefined; connectionString?: string | undefined }
  | { kind: 's3'; endpoint?: string | undefined; bucket: string; region: string; accessKeyId?: string | undefined; secretAccessKey?: string | undefined; forcePathStyle?: boolean | undefined };

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
export type Role = 'api' | 'worker' | 'scheduler';

export interface Config {
  /** Directory holding CA, keys, database, disks and chunk stores. */
  dataDir: string;
  /** HTTPS port (0 = pick a free one, for tests). */
  port: number;
  /** Addresses to listen on. */
  listen: string[];
  /** Database URL: a SQLite file path (default `<dataDir>/rsvault.db`) or `postgres://…`. */
  dbUrl: string;
  /** Key Vault data-plane host suffix: vaults live at https://{name}.{suffix}:{port}. */
  vaultHostSuffix: string;
  /** Blob data-plane host suffix: storage accounts serve blobs at https://{account}.{suffix}:{port}. */
  blobHostSuffix: string;
  logLevel: LogLevel;
  /**
   * What this process does (`--role api,worker,scheduler`; `all` = every role, the default): api = the HTTPS API and
   * portal; worker = runs queued jobs (backup, restore, retention/GC); scheduler = turns policies into due jobs.
   * Every process serves /healthz and /metrics.
   */
  roles: Role[];
  /** Access-token lifetime in seconds. */
  tokenLifetimeSec: number;
  /**
   * Server directories whose image files a principal may import as disks by path (`sourceUri` = a file path).
   * Importing by path reads a server file, so it is confined to these; default `<dataDir>/import`.
   */
  importDirs: string[];
  /**
   * On start, a policy's latest scheduled backup missed within this many hours (the server was down) runs once,
   * unless the item was protected or backed up after that slot. 0 = never.
   */
  scheduleCatchUpHours: number;
  /** Croner pattern (UTC, with seconds) of every vault's scheduled verify job; undefined = no scheduled verify. */
  verifySchedule: string | undefined;

  // ---- Key Vault URLs (issue #13 item 4) ----
  /**
   * The port clients reach the vault hosts on, put into every Key Vault URL rsvault hands out (vaultUri, kid, ADE
   * settings, recovery points, restore outputs); 443 = no port in the URLs. Undefined = the port the server listens on.
   */
  keyvaultPublicPort?: number | undefined;
  /** The chunk store of every vault (default fs: `<dataDir>/vaults/<uid>`). */
  chunkStore: ChunkStoreConfig;
  /** The second copy of GeoRedundant vaults (none: GeoRedundant vaults keep one copy, as LocallyRedundant). */
  secondaryStore: ChunkStoreConfig | undefined;
  /**
   * Token endpoint throttling: at most `tokenRateLimit` token requests per minute per source address and client id,
   * and at most `tokenFailureLimit` failed client-credential attempts per client id (and per source address) in
   * `tokenFailureWindowSec` seconds. Beyond either: 429 with Retry-After.
   */
  tokenRateLimit: number;
  tokenFailureLimit: number;
  tokenFailureWindowSec: number;
  /**
   * Test-only knobs: accepted only with RSVAULT_TEST_MODE=1 (a start-up error otherwise).
   * luksIterations: PBKDF2 count of the LUKS key slots rsvault writes (never below 1000);
   * clockOffsetMs: moves the scheduler's clock; importCheckDelayMs: a pause between a disk import's path check and its
   * use (lets a test race a symlink swap against the check).
   */
  test: TestKnobs;
}

export interface TestKnobs {
  enabled: boolean;
  luksIterations?: number | undefined;
  clockOffsetMs: number;
  importCheckDelayMs: number;
}

/** The LUKS PBKDF2 floor: no knob may go below it. */
export const MIN_LUKS_ITERATIONS = 1000;

/** Sundays 03:00 UTC. */
export const DEFAULT_VERIFY_SCHEDULE = '0 0 3 * * 0';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export interface ConfigFlags {
  dataDir?: string | undefined;
  port?: string | number | undefined;
  listen?: string | undefined;
  dbUrl?: string | undefined;
  vaultHostSuffix?: string | undefined;
  blobHostSuffix?: string | undefined;
  logLevel?: string | undefined;
  role?: string | undefined;
  importDirs?: string | undefined;
  scheduleCatchUpHours?: string | number | undefined;
  verifySchedule?: string | undefined;
  keyvaultHostSuffix?: string | undefined;
  keyvaultPublicPort?: string | number | undefined;
  chunkStore?: string | undefined;
  secondaryChunkStore?: string | undefined;
  blobUrl?: string | undefined;
  blobContainer?: string | undefined;
  s3Endpoint?: string | undefined;
  s3Bucket?: string | undefined;
  s3Region?: string | undefined;
  tokenRateLimit?: string | number | undefined;
  tokenFailureLimit?: string | number | undefined;
}

const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];
const ROLES: readonly Role[] = ['api', 'worker', 'scheduler'];

function pick(flag: string | number | undefined, env: string | undefined): string | undefined {
  if (flag !== undefined && flag !== '') return String(flag);
  if (env !== undefined && env !== '') return env;
  return undefined;
}

export function loadConfig(flags: ConfigFlags = {}, env: NodeJS.ProcessEnv = process.env): Config {
  const dataDir = path.resolve(pick(flags.dataDir, env.RSVAULT_DATA_DIR) ?? './.rsvault');

  const portText = pick(flags.port, env.RSVAULT_PORT) ?? '8443';
  if (!/^\d+$/.test(portText) || Number(portText) > 65535) {
    throw new ConfigError(`invalid port '${portText}': expected an integer 0-65535 (--port or RSVAULT_PORT)`);
  }
  const port = Number(portText);

  const listenText = pick(flags.listen, env.RSVAULT_LISTEN) ?? '127.0.0.1,::1';
  const listen = listenText.split(',').map((s) => s.trim()).filter(Boolean);
  for (const addr of listen) {
    if (!/^[0-9.]+$|^[0-9a-fA-F:]+$|^localhost$/.test(addr)) {
      throw new ConfigError(`invalid listen address '${addr}': expected IPv4, IPv6 or localhost (--listen or RSVAULT_LISTEN)`);
    }
  }
  if (listen.length === 0) throw new ConfigError('no listen address given (--listen or RSVAULT_LISTEN)');

  const dbUrl = pick(flags.dbUrl, env.RSVAULT_DB_URL) ?? path.join(dataDir, 'rsvault.db');
  if (/^[a-z]+:\/\//i.test(dbUrl) && !/^postgres(ql)?:\/\//i.test(dbUrl)) {
    throw new ConfigError(`invalid database URL scheme in '${dbUrl.replace(/\/\/[^@/]*@/, '//***@')}': use a SQLite file path or postgres://`);
  }

  // Key Vault hosts: --keyvault-host-suffix (alias --vault-host-suffix) and the public port put into vault URLs.
  const vaultHostSuffix = (pick(flags.keyvaultHostSuffix ?? flags.vaultHostSuffix, env.RSVAULT_KEYVAULT_HOST_SUFFIX ?? env.RSVAULT_VAULT_HOST_SUFFIX) ?? 'vault.localhost').replace(/^\./, '');
  if (!/^[a-z0-9-]+(\.[a-z0-9-]+)*$/i.test(vaultHostSuffix)) {
    throw new ConfigError(`invalid Key Vault host suffix '${vaultHostSuffix}' (--keyvault-host-suffix or RSVAULT_KEYVAULT_HOST_SUFFIX)`);
  }
  const publicPortText = pick(flags.keyvaultPublicPort, env.RSVAULT_KEYVAULT_PUBLIC_PORT);
  if (publicPortText !== undefined && (!/^\d+$/.test(publicPortText) || Number(publicPortText) < 1 || Number(publicPortText) > 65535)) {
    throw new ConfigError(`invalid Key Vault public port '${publicPortText}': expected an integer 1-65535 (--keyvault-public-port or RSVAULT_KEYVAULT_PUBLIC_PORT)`);
  }
  const keyvaultPublicPort = publicPortText === undefined ? undefined : Number(publicPortText);

  const blobHostSuffix = (pick(flags.blobHostSuffix, env.RSVAULT_BLOB_HOST_SUFFIX) ?? 'blob.localhost').replace(/^\./, '');
  if (!/^[a-z0-9-]+(\.[a-z0-9-]+)*$/i.test(blobHostSuffix) || blobHostSuffix.toLowerCase() === vaultHostSuffix.toLowerCase()) {
    throw new ConfigError(`invalid blob host suffix '${blobHostSuffix}' (--blob-host-suffix or RSVAULT_BLOB_HOST_SUFFIX; not the Key Vault suffix)`);
  }

  const logLevel = (pick(flags.logLevel, env.RSVAULT_LOG_LEVEL) ?? 'info') as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`invalid log level '${logLevel}': one of ${LOG_LEVELS.join(', ')}`);
  }
  const roleText = pick(flags.role, env.RSVAULT_ROLE) ?? 'all';
  const roles = new Set<Role>();
  for (const r of roleText.split(',').map((x) => x.trim().toLowerCase()).filter(Boolean)) {
    if (r === 'all') ROLES.forEach((x) => roles.add(x));
    else if ((ROLES as readonly string[]).includes(r)) roles.add(r as Role);
    else throw new ConfigError(`invalid role '${r}': all, or a comma-separated list of ${ROLES.join(', ')} (--role or RSVAULT_ROLE)`);
  }
  if (roles.size === 0) throw new ConfigError('no role given (--role or RSVAULT_ROLE): all, or api, worker, scheduler');

  const lifetimeText = env.RSVAULT_TOKEN_LIFETIME_SEC ?? '3600';
  if (!/^\d+$/.test(lifetimeText) || Number(lifetimeText) < 60) {
    throw new ConfigError(`invalid RSVAULT_TOKEN_LIFETIME_SEC '${lifetimeText}': an integer of at least 60`);
  }

  const importText = pick(flags.importDirs, env.RSVAULT_IMPORT_DIRS);
  const importDirs = importText ? importText.split(/[,:]/).map((s) => s.trim()).filter(Boolean) : [path.join(dataDir, 'import')];
  for (const d of importDirs) {
    if (!path.isAbsolute(d)) throw new ConfigError(`invalid import directory '${d}': use an absolute path (--import-dirs or RSVAULT_IMPORT_DIRS)`);
  }

  const catchUpText = pick(flags.scheduleCatchUpHours, env.RSVAULT_SCHEDULE_CATCHUP_HOURS) ?? '168';
  if (!/^\d+$/.test(catchUpText) || Number(catchUpText) > 24 * 366) {
    throw new ConfigError(`invalid schedule catch-up '${catchUpText}': whole hours, 0-8784 (--schedule-catch-up-hours or RSVAULT_SCHEDULE_CATCHUP_HOURS)`);
  }

  const verifyText = pick(flags.verifySchedule, env.RSVAULT_VERIFY_SCHEDULE) ?? DEFAULT_VERIFY_SCHEDULE;
  let verifySchedule: string | undefined = verifyText;
  if (verifyText.toLowerCase() === 'off') verifySchedule = undefined;
  else {
    try {
      new Cron(verifyText, { timezone: 'UTC', paused: true }).stop();
    } catch (e) {
      throw new ConfigError(`invalid verify schedule '${verifyText}': a cron pattern (UTC, optional seconds field) or 'off' (--verify-schedule or RSVAULT_VERIFY_SCHEDULE): ${(e as Error).message}`);
    }
  }

  const chunkStore = loadChunkStoreConfig(pick(flags.chunkStore, env.RSVAULT_CHUNK_STORE) ?? 'fs', env, 'RSVAULT_', { blobUrl: flags.blobUrl, blobContainer: flags.blobContainer, s3Endpoint: flags.s3Endpoint, s3Bucket: flags.s3Bucket, s3Region: flags.s3Region });
  const secondaryKind = pick(flags.secondaryChunkStore, env.RSVAULT_SECONDARY_CHUNK_STORE) ?? 'none';
  let secondaryStore: ChunkStoreConfig | undefined;
  if (secondaryKind !== 'none') {
    secondaryStore = loadChunkStoreConfig(secondaryKind, env, 'RSVAULT_SECONDARY_', {});
    if (secondaryStore.kind === 'fs' && !secondaryStore.dir) secondaryStore = { kind: 'fs', dir: path.join(dataDir, 'secondary') };
    if (JSON.stringify(secondaryStore) === JSON.stringify(chunkStore)) throw new ConfigError('the secondary chunk store is the primary one: give it another location (RSVAULT_SECONDARY_*)');
  }

  const intIn = (text: string, min: number, max: number, what: string): number => {
    if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) throw new ConfigError(`invalid ${what} '${text}': an integer ${min}-${max}`);
    return Number(text);
  };
  const tokenRateLimit = intIn(pick(flags.tokenRateLimit, env.RSVAULT_TOKEN_RATE_LIMIT) ?? '600', 1, 1_000_000, 'token rate limit (--token-rate-limit or RSVAULT_TOKEN_RATE_LIMIT)');
  const tokenFailureLimit = intIn(pick(flags.tokenFailureLimit, env.RSVAULT_TOKEN_FAILURE_LIMIT) ?? '20', 1, 1_000_000, 'token failure limit (--token-failure-limit or RSVAULT_TOKEN_FAILURE_LIMIT)');
  const tokenFailureWindowSec = intIn(env.RSVAULT_TOKEN_FAILURE_WINDOW_SEC ?? '300', 1, 86_400, 'RSVAULT_TOKEN_FAILURE_WINDOW_SEC');

  return {
    dataDir, port, listen, dbUrl, vaultHostSuffix, blobHostSuffix, logLevel, roles: ROLES.filter((r) => roles.has(r)), tokenLifetimeSec: Number(lifetimeText), importDirs, scheduleCatchUpHours: Number(catchUpText), verifySchedule, keyvaultPublicPort, chunkStore, secondaryStore,
    tokenRateLimit, tokenFailureLimit, tokenFailureWindowSec, test: testKnobs(env),
  };
}

/** A secret from `<NAME>` or the file named by `<NAME>_FILE` (trailing newline dropped). Never echoed in errors. */
function secret(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const direct = env[name];
  if (direct) return direct;
  const file = env[`${name}_FILE`];
  if (!file) return undefined;
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw new ConfigError(`cannot read ${name}_FILE (${(e as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/**
 * One chunk store's settings: `kind` fs|blob|s3 and `<prefix>FS_DIR`, `<prefix>BLOB_*`, `<prefix>S3_*` variables
 * (prefix RSVAULT_ for the primary, RSVAULT_SECONDARY_ for the secondary, RSVAULT_TARGET_ for `admin copy-store`).
 */
export function loadChunkStoreConfig(
  kind: string,
  env: NodeJS.ProcessEnv,
  prefix: string,
  flags: { blobUrl?: string | undefined; blobContainer?: string | undefined; s3Endpoint?: string | undefined; s3Bucket?: string | undefined; s3Region?: string | undefined; fsDir?: string | undefined },
): ChunkStoreConfig {
  const what = prefix === 'RSVAULT_' ? 'chunk store' : `${prefix.slice(8, -1).toLowerCase()} chunk store`;
  if (kind === 'fs') {
    const dir = pick(flags.fsDir, env[`${prefix}FS_DIR`]);
    if (dir !== undefined && !path.isAbsolute(dir)) throw new ConfigError(`invalid ${what} directory '${dir}': use an absolute path (${prefix}FS_DIR)`);
    return { kind: 'fs', dir };
  }
  if (kind === 'blob') {
    const connectionString = secret(env, `${prefix}BLOB_CONNECTION_STRING`);
    const url = pick(flags.blobUrl, env[`${prefix}BLOB_URL`]);
    const container = pick(flags.blobContainer, env[`${prefix}BLOB_CONTAINER`]) ?? 'rsvault';
    if (!/^[a-z0-9](?!.*--)[a-z0-9-]{1,61}[a-z0-9]$/.test(container)) throw new ConfigError(`invalid ${what} container '${container}': 3-63 lowercase letters, digits and single hyphens (${prefix}BLOB_CONTAINER)`);
    if (!connectionString && !url) throw new ConfigError(`the ${what} is Azure Blob but has no address: set ${prefix}BLOB_URL (with ${prefix}BLOB_ACCOUNT_KEY or a SAS) or ${prefix}BLOB_CONNECTION_STRING`);
    if (url && !/^https?:\/\/[^\s]+$/.test(url)) throw new ConfigError(`invalid ${what} URL: expected http(s)://… (${prefix}BLOB_URL)`);
    return { kind: 'blob', url, container, accountName: env[`${prefix}BLOB_ACCOUNT_NAME`] || undefined, accountKey: secret(env, `${prefix}BLOB_ACCOUNT_KEY`), connectionString };
  }
  if (kind === 's3') {
    const bucket = pick(flags.s3Bucket, env[`${prefix}S3_BUCKET`]);
    if (!bucket || !/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError(`invalid or missing ${what} bucket '${bucket ?? ''}': 3-63 lowercase letters, digits, dots and hyphens (${prefix}S3_BUCKET)`);
    const endpoint = pick(flags.s3Endpoint, env[`${prefix}S3_ENDPOINT`]);
    if (endpoint && !/^https?:\/\/[^\s]+$/.test(endpoint)) throw new ConfigError(`invalid ${what} endpoint: expected http(s)://… (${prefix}S3_ENDPOINT)`);
    const ps = env[`${prefix}S3_FORCE_PATH_STYLE`];
    return {
      kind: 's3', bucket, endpoint, region: pick(flags.s3Region, env[`${prefix}S3_REGION`]) ?? 'us-east-1',
      accessKeyId: env[`${prefix}S3_ACCESS_KEY_ID`] || undefined, secretAccessKey: secret(env, `${prefix}S3_SECRET_ACCESS_KEY`),
      forcePathStyle: ps === undefined || ps === '' ? undefined : ps === 'true' || ps === '1',
    };
  }
  throw new ConfigError(`invalid ${what} '${kind}': one of fs, blob, s3${prefix === 'RSVAULT_' ? '' : ', none'}`);
}

/** Test-only knobs: refused unless RSVAULT_TEST_MODE=1, so a production server can never run with them. */
export function testKnobs(env: NodeJS.ProcessEnv): TestKnobs {
  const enabled = env.RSVAULT_TEST_MODE === '1';
  const knob = (name: string): string | undefined => {
    const v = env[name];
    if (v === undefined || v === '') return undefined;
    if (!enabled) throw new ConfigError(`${name} is a test-only setting: it is refused unless RSVAULT_TEST_MODE=1 is set too`);
    return v;
  };
  const luksText = knob('RSVAULT_LUKS_ITERATIONS');
  if (luksText !== undefined && (!/^\d+$/.test(luksText) || Number(luksText) < MIN_LUKS_ITERATIONS)) {
    throw new ConfigError(`invalid RSVAULT_LUKS_ITERATIONS '${luksText}': an integer of at least ${MIN_LUKS_ITERATIONS}`);
  }
  const offsetText = knob('RSVAULT_CLOCK_OFFSET_MS');
  if (offsetText !== undefined && !/^-?\d+$/.test(offsetText)) throw new ConfigError(`invalid RSVAULT_CLOCK_OFFSET_MS '${offsetText}': an integer (milliseconds)`);
  const delayText = knob('RSVAULT_TEST_IMPORT_CHECK_DELAY_MS');
  if (delayText !== undefined && !/^\d+$/.test(delayText)) throw new ConfigError(`invalid RSVAULT_TEST_IMPORT_CHECK_DELAY_MS '${delayText}': an integer (milliseconds)`);
  return {
    enabled,
    luksIterations: luksText !== undefined ? Number(luksText) : undefined,
    clockOffsetMs: offsetText !== undefined ? Number(offsetText) : 0,
    importCheckDelayMs: delayText !== undefined ? Number(delayText) : 0,
  };
}
