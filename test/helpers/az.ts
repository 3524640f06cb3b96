/**
 * The Debian az 2.45 harness shared by the az test files: an isolated AZURE_CONFIG_DIR with the test server's CA
 * bundle, an ADFS-style custom cloud pointing at the test server, a service-principal login, and a process runner.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import type { TestServer } from './server.js';

const HERE = path.dirname(new URL(import.meta.url).pathname);

/** Whether `az` is on PATH. */
export const AZ_INSTALLED = spawnSync('which', ['az']).status === 0;

/**
 * The az compute api-version shim (../shared/tools/az-compute-shim beside the checkout; a worktree under /work/wt
 * has it one level further up), or $RSVAULT_AZ_SHIM. Undefined when none exists.
 */
export const SHIM: string | undefined = [
  process.env.RSVAULT_AZ_SHIM ?? '',
  path.resolve(HERE, '..', '..', '..', 'shared', 'tools', 'az-compute-shim'),
  path.resolve(HERE, '..', '..', '..', '..', 'shared', 'tools', 'az-compute-shim'),
].find((p) => p && existsSync(p));

export interface AzResult {
  code: number | null;
  out: string;
  err: string;
  json: unknown;
}

export interface AzSession {
  /** Runs `az … --only-show-errors`; `shim` puts the compute shim on PYTHONPATH for this call. */
  az(args: string[], o?: { shim?: boolean }): Promise<AzResult>;
  /** `az` that must exit 0 (a vitest assertion naming the command and its stderr). */
  ok(args: string[], o?: { shim?: boolean }): Promise<AzResult>;
  /** The variables given to every az process (config dir, CA bundle, output settings). */
  env: Record<string, string>;
  /** The session's own temp directory (holds ca.pem and azconfig/; tests may put files in it). */
  dir: string;
  /** Removes the temp directory. */
  close(): void;
}

export interface AzSessionOptions {
  /** Register the cloud with `--suffix-storage-endpoint localhost:{port}` (for `az storage …`). */
  storageSuffix?: boolean;
  /** Also set SSL_CERT_FILE to the CA bundle (az's own urllib reads, e.g. `--template-uri`, `--source file://`). */
  sslCertFile?: boolean;
  /** Put the compute shim on PYTHONPATH for every call (and fail at start when it is missing). */
  shimAlways?: boolean;
  /** Fail at start when the compute shim is missing (files that use `{ shim: true }`). */
  requireShim?: boolean;
  /** The custom cloud's name. */
  cloudName?: string;
  /** mkdtemp prefix of the session directory. */
  prefix?: string;
}

/** Starts an isolated, logged-in az session against `s`. */
export async function azSession(s: TestServer, opts: AzSessionOptions = {}): Promise<AzSession> {
  if (!AZ_INSTALLED) throw new Error('`az` is not installed: run `sudo bash scripts/install-test-deps.sh` (Debian package azure-cli)');
  if ((opts.shimAlways || opts.requireShim) && !SHIM) throw new Error('the az compute shim (../shared/tools/az-compute-shim) was not found: set RSVAULT_AZ_SHIM');
  const dir = mkdtempSync(path.join(os.tmpdir(), opts.prefix ?? 'rsv-az-'));
  const bundle = path.join(dir, 'ca.pem');
  writeFileSync(bundle, s.ca);
  const env: Record<string, string> = {
    AZURE_CONFIG_DIR: path.join(dir, 'azconfig'),
    REQUESTS_CA_BUNDLE: bundle,
    ...(opts.sslCertFile ? { SSL_CERT_FILE: bundle } : {}),
    AZURE_CORE_COLLECT_TELEMETRY: 'false',
    AZURE_EXTENSION_USE_DYNAMIC_INSTALL: 'no',
    AZURE_CORE_ERROR_RECOMMENDATION: 'off',
    AZURE_CORE_NO_COLOR: '1',
    AZURE_CORE_OUTPUT: 'json',
  };

  const az = (args: string[], o: { shim?: boolean } = {}): Promise<AzResult> => {
    const shim = opts.shimAlways || o.shim;
    if (shim && !SHIM) return Promise.reject(new Error('the az compute shim (../shared/tools/az-compute-shim) was not found: set RSVAULT_AZ_SHIM'));
    return new Promise((resolve) => {
      const p = spawn('az', [...args, '--only-show-errors'], { env: { ...process.env, ...env, ...(shim ? { PYTHONPATH: SHIM } : {}) }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      p.stdout.on('data', (d: Buffer) => (out += d.toString()));
      p.stderr.on('data', (d: Buffer) => (err += d.toString()));
      p.on('exit', (code) => {
        let json: unknown;
        try {
          json = out.trim() ? JSON.parse(out) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ code, out, err, json });
      });
    });
  };
  const ok = async (args: string[], o: { shim?: boolean } = {}): Promise<AzResult> => {
    const r = await az(args, o);
    expect(r.code, `az ${args.join(' ')}\n${r.err}`).toBe(0);
    return r;
  };
  const close = () => rmSync(dir, { recursive: true, force: true });

  try {
    const o = s.origin;
    const cloud = opts.cloudName ?? 'RsvaultLocal';
    const reg = await az([
      'cloud', 'register', '-n', cloud,
      '--endpoint-resource-manager', `${o}/`,
      '--endpoint-active-directory', `${o}/adfs`,
      '--endpoint-active-directory-resource-id', 'https://management.core.windows.net/',
      '--endpoint-active-directory-graph-resource-id', `${o}/`,
      '--suffix-keyvault-dns', `.vault.localhost:${s.port}`,
      ...(opts.storageSuffix ? ['--suffix-storage-endpoint', `localhost:${s.port}`] : []),
    ]);
    if (reg.code !== 0) throw new Error(`cloud register: ${reg.err}`);
    await az(['cloud', 'update', '-n', cloud, '--cloud-config', JSON.stringify({ endpoints: { microsoftGraphResourceId: `${o}/` } })]);
    await az(['cloud', 'set', '-n', cloud]);
    const login = await az(['login', '--service-principal', '-u', s.creds.clientId, `--password=${s.creds.clientSecret}`, '--tenant', s.creds.tenantId]);
    if (login.code !== 0) throw new Error(`az login: ${login.err}`);
  } catch (e) {
    close();
    throw e;
  }
  return { az, ok, env, dir, close };
}
