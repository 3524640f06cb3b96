/**
 * Starts the real `rsvault serve` binary (compiled dist, as users run it) on a free port in a temp data dir,
 * and hands tests what a user would have: the port, credentials.json, the CA, and a logged-in admin client.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RsvaultClient } from '../../src/client/index.js';
import { testDatabaseUrl } from './postgres.js';
import { openDatabase, type Database } from '../../src/platform/db/index.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = path.join(ROOT, 'bin', 'rsvault.js');

export interface Credentials {
  tenantId: string;
  subscriptionId: string;
  clientId: string;
  clientSecret: string;
  objectId: string;
  caPath: string;
  endpoints: Record<string, string>;
}

export interface TestServer {
  port: number;
  origin: string;
  dataDir: string;
  /** The server's metadata database: its PostgreSQL URL (RSVAULT_TEST_DB=postgres) or its SQLite file. */
  dbUrl: string;
  creds: Credentials;
  ca: Buffer;
  /** Admin (Owner on the subscription) client. */
  client: RsvaultClient;
  proc: ChildProcess;
  output: () => string;
  /** SIGTERM and wait; returns the exit code. */
  stop(opts?: { keepData?: boolean }): Promise<number | null>;
  clientFor(clientId: string, clientSecret: string): RsvaultClient;
}

const pgUrls = new Map<string, string>();

export async function startTestServer(opts: { dataDir?: string; env?: Record<string, string>; args?: string[] } = {}): Promise<TestServer> {
  const dataDir = opts.dataDir ?? mkdtempSync(path.join(os.tmpdir(), 'rsvault-test-'));
  // RSVAULT_TEST_DB=postgres: the same suites on PostgreSQL, one fresh database per server data dir (a restart of
  // the same data dir reuses it, as a real installation does).
  const args = [...(opts.args ?? [])];
  let dbUrl = opts.env?.RSVAULT_DB_URL ?? (args.includes('--db-url') ? args[args.indexOf('--db-url') + 1]! : path.join(dataDir, 'rsvault.db'));
  if (!args.includes('--db-url') && !opts.env?.RSVAULT_DB_URL) {
    const url = pgUrls.get(dataDir) ?? (await testDatabaseUrl());
    if (url) {
      pgUrls.set(dataDir, url);
      args.push('--db-url', url);
      dbUrl = url;
    }
  }
  const proc = spawn(process.execPath, [BIN, 'serve', '--data-dir', dataDir, '--port', '0', '--log-level', 'warn', ...args], {
    // Tests import disk images they write under the system temp dir: allow it as an import directory. Test mode lets
    // suites use the test-only knobs (RSVAULT_LUKS_ITERATIONS, RSVAULT_CLOCK_OFFSET_MS); a suite may unset it ('').
    env: { ...process.env, RSVAULT_IMPORT_DIRS: os.tmpdir(), RSVAULT_TEST_MODE: '1', ...(opts.env ?? {}) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`server did not start in 60 s:\n${out}`)), 60_000);
    const check = () => {
      const m = /listening on https:\/\/localhost:(\d+)\//.exec(out);
      if (m) {
        clearTimeout(t);
        resolve(Number(m[1]));
      }
    };
    proc.stdout!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`server exited with ${code}:\n${out}`));
    });
  });
  const creds = JSON.parse(readFileSync(path.join(dataDir, 'credentials.json'), 'utf8')) as Credentials;
  const ca = readFileSync(creds.caPath);
  const origin = `https://localhost:${port}`;
  const clientFor = (clientId: string, clientSecret: string) => new RsvaultClient({ server: origin, ca, credentials: { tenantId: creds.tenantId, clientId, clientSecret } });
  const client = clientFor(creds.clientId, creds.clientSecret);
  return {
    port,
    origin,
    dataDir,
    dbUrl,
    creds,
    ca,
    client,
    proc,
    output: () => out,
    clientFor,
    async stop(o = {}) {
      client.close();
      const code = await new Promise<number | null>((resolve) => {
        if (proc.exitCode !== null || proc.signalCode !== null) return resolve(proc.exitCode); // exited, or killed by a signal
        proc.once('exit', (c) => resolve(c));
        proc.kill('SIGTERM');
      });
      if (!o.keepData && !opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
      return code;
    },
  };
}

/**
 * Opens a test server's own metadata database beside the running server (SQLite file or PostgreSQL database alike),
 * for suites that change rows behind the server's back; write portable SQL with Kysely's `sql` tag. Close it after.
 */
export function openServerDb(s: Pick<TestServer, 'dbUrl'>): Database {
  return openDatabase(s.dbUrl, { poolSize: 1 });
}

/** Runs the `rsvault` CLI binary with an isolated config dir; resolves with its exit code and output. */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('exit', (code) => resolve({ code, stdout, stderr }));
  });
}
