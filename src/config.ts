/**
 * Configuration: command-line flags and RSVAULT_* environment variables, validated into one typed object.
 * Flags win over the environment, the environment over defaults. Invalid values raise ConfigError,
 * which the CLI prints as one line and exits with code 2.
 */
import path from 'node:path';
import { Cron } from 'croner';

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
}

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

  return { dataDir, port, listen, dbUrl, vaultHostSuffix, blobHostSuffix, logLevel, roles: ROLES.filter((r) => roles.has(r)), tokenLifetimeSec: Number(lifetimeText), importDirs, scheduleCatchUpHours: Number(catchUpText), verifySchedule, keyvaultPublicPort };
}
