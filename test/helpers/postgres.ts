/**
 * A throwaway PostgreSQL cluster for tests (interop-recipes.md §5): initdb into a temp dir (as the `postgres` user
 * when running as root, since initdb refuses root), start it on a free loopback port with fsync off, hand out one
 * database per test file, stop it (immediate) and remove the dir afterwards.
 *
 * `startPostgres()` starts a cluster (a test file's beforeAll); `testDatabaseUrl()` gives a fresh database in the
 * cluster the vitest global setup started for a project on PostgreSQL (RSVAULT_TEST_DB=postgres: the `postgres`
 * project, or by hand).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

export interface PgCluster {
  port: number;
  dir: string;
  /** postgres://postgres@127.0.0.1:port/<db> */
  url(db?: string): string;
  /** Creates a database with a unique name (prefix + random) and returns its URL. */
  createDatabase(prefix?: string): Promise<string>;
  stop(): Promise<void>;
}

export function pgBinDir(): string {
  if (process.env.RSVAULT_PG_BIN) return process.env.RSVAULT_PG_BIN;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(path.join(base, v, 'bin', 'initdb'))).sort((a, b) => Number(b) - Number(a)) : [];
  if (!versions.length) throw new Error('PostgreSQL server binaries not found under /usr/lib/postgresql (install the postgresql package: scripts/install-test-deps.sh)');
  return path.join(base, versions[0]!, 'bin');
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      s.close(() => resolve(typeof a === 'object' && a ? a.port : 0));
    });
  });
}

function asPostgres(args: string[]): string[] {
  return process.getuid?.() === 0 ? ['runuser', '-u', 'postgres', '--', ...args] : args;
}

function run(args: string[]): void {
  const [cmd, ...rest] = asPostgres(args);
  const r = spawnSync(cmd!, rest, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${args.join(' ')} failed (${r.status}): ${r.stderr || r.stdout}`);
}

export async function startPostgres(): Promise<PgCluster> {
  const bin = pgBinDir();
  const dir = mkdtempSync(path.join(os.tmpdir(), 'rsvault-pg-'));
  if (process.getuid?.() === 0) {
    const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
    chownSync(dir, uid, gid);
  }
  chmodSync(dir, 0o700);
  const data = path.join(dir, 'data');
  run([path.join(bin, 'initdb'), '-D', data, '-U', 'postgres', '-A', 'trust', '-E', 'UTF8', '--no-locale', '--no-sync']);
  let port = 0;
  for (let i = 0; ; i++) {
    port = await freePort();
    try {
      run([path.join(bin, 'pg_ctl'), '-D', data, '-l', path.join(dir, 'log'), '-w', '-t', '60', '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200`, 'start']);
      break;
    } catch (e) {
      if (i >= 3) throw e; // the port was taken between the probe and the start: try another
    }
  }
  const url = (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`;
  let stopped = false;
  return {
    port,
    dir,
    url,
    async createDatabase(prefix = 'rsvault_test') {
      const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
      const c = new pg.Client({ connectionString: url() });
      await c.connect();
      try {
        await c.query(`create database ${name}`);
      } finally {
        await c.end();
      }
      return url(name);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        run([path.join(bin, 'pg_ctl'), '-D', data, '-m', 'immediate', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}

/**
 * True when the server suites run on PostgreSQL: the `postgres` vitest project sets RSVAULT_TEST_DB=postgres in its
 * workers' env; it can also be set by hand for any selection (`RSVAULT_TEST_DB=postgres npx vitest run --project sqlite …`).
 */
export const testOnPostgres = (value = process.env.RSVAULT_TEST_DB): boolean => (value ?? '').toLowerCase() === 'postgres';

/**
 * A fresh database in the cluster the vitest global setup started for this project (test/helpers/pg-global-setup.ts
 * provides its base URL), or undefined when the suites run on SQLite.
 */
export async function testDatabaseUrl(prefix = 'rsvault_test'): Promise<string | undefined> {
  if (!testOnPostgres()) return undefined;
  const base = inject('rsvaultTestPgUrl');
  if (!base) throw new Error('RSVAULT_TEST_DB=postgres but no cluster was started (vitest globalSetup test/helpers/pg-global-setup.ts provides rsvaultTestPgUrl)');
  const name = `${prefix.replace(/[^a-z0-9_]/gi, '_').toLowerCase()}_${randomBytes(4).toString('hex')}`;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  try {
    await c.query(`create database ${name}`);
  } finally {
    await c.end();
  }
  return base.replace(/\/[^/]*$/, `/${name}`);
}
