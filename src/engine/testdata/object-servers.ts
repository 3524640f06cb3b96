/**
 * Local object-storage servers for tests and the bench: Azurite (Azure Blob) and s3rver (S3),
 * both from node_modules, each started as its own process on a free loopback port with a temp
 * directory, and stopped (process killed, directory removed) by `stop()`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);

/** Azurite's well-known development account (public, documented by Microsoft). */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY = 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';
/** s3rver accepts these (its defaults). */
export const S3RVER_KEY_ID = 'S3RVER';
export const S3RVER_SECRET = 'S3RVER';

export interface LocalServer {
  /** Azurite: the blob service URL (…/devstoreaccount1); s3rver: the endpoint. */
  url: string;
  dir: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function start(what: string, script: string, args: (port: number, dir: string) => string[], url: (port: number) => string): Promise<LocalServer> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), `rsvault-${what}-`));
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const child = spawn(process.execPath, [script, ...args(port, dir)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
    try {
      await waitForPort(port, child, what);
    } catch (err) {
      child.kill('SIGKILL');
      if (attempt < 2) continue; // the port was taken between the probe and the start
      await fsp.rm(dir, { recursive: true, force: true });
      throw new Error(`${(err as Error).message}: ${stderr}`, { cause: err });
    }
    const exited = new Promise<void>((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', () => resolve())));
    return {
      url: url(port),
      dir,
      stop: async () => {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(timer);
        await fsp.rm(dir, { recursive: true, force: true });
      },
    };
  }
}

/** Azurite's blob service. `inMemory` keeps blobs in the process (default); else under a temp dir. */
export function startAzurite(options: { inMemory?: boolean } = {}): Promise<LocalServer> {
  const script = path.join(path.dirname(require.resolve('azurite/package.json')), 'dist/src/blob/main.js');
  return start(
    'azurite',
    script,
    (port, dir) => ['--blobHost', '127.0.0.1', '--blobPort', String(port), ...(options.inMemory === false ? ['--location', dir] : ['--inMemoryPersistence']), '--skipApiVersionCheck', '--loose', '--disableTelemetry', '--silent'],
    (port) => `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`,
  );
}

/** s3rver (files under a temp dir), with atomic PUTs as S3 has them (s3rver-atomic.mjs). */
export function startS3rver(): Promise<LocalServer> {
  const script = fileURLToPath(new URL('./s3rver-atomic.mjs', import.meta.url));
  return start('s3rver', script, (port, dir) => ['-d', dir, '-a', '127.0.0.1', '-p', String(port), '--silent'], (port) => `http://127.0.0.1:${port}`);
}
