/**
 * First-start initialisation of the data directory, and its reuse on later starts:
 *   D/tls/ca.pem, ca.key (0600)             installation CA (critical nameConstraints: localhost, .localhost, loopback)
 *   D/tls/server.pem, server.key (0600)     server certificate: localhost, 127.0.0.1, ::1, *.{vault suffix}, *.{blob suffix}
 *   D/master.key (0600)                     32-byte master key (seals key material at rest)
 *   D/token-signing.sealed (0600)           RS256 signing key for access tokens, sealed with the master key
 * Files are written temp + fsync + rename so a crash never leaves half a key.
 */
import { chmodSync, closeSync, existsSync, fsyncSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, renameSync, rmSync, writeSync } from 'node:fs';
import path from 'node:path';
import { generateKeyPairSync, randomBytes, X509Certificate } from 'node:crypto';
import { generate } from 'selfsigned';
import { Sealer } from './crypto.js';
import { createConstrainedCa, hasNameConstraints, installationConstraints } from './x509.js';

export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): void {
  mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  const fd = openSync(tmp, 'w', mode);
  try {
    writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  chmodSync(tmp, mode);
  renameSync(tmp, file);
  const dfd = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dfd);
  } finally {
    closeSync(dfd);
  }
}

export interface Installation {
  caPath: string;
  tls: { key: string; cert: string; ca: string };
  sealer: Sealer;
  tokenSigningKeyPem: string;
  /** The CA predates the name constraints (an older installation): see README "Hardening" to regenerate it. */
  caUnconstrained: boolean;
}

/** DER of the nameConstraints OID 2.5.29.30. */
const NAME_CONSTRAINTS_OID = Buffer.from([0x06, 0x03, 0x55, 0x1d, 0x1e]);

function issuedBy(certPem: string, caPem: string): boolean {
  try {
    return new X509Certificate(certPem).verify(new X509Certificate(caPem).publicKey);
  } catch {
    return false;
  }
}

/**
 * Owner-only modes for what the data directory holds (an installation from before may have 0755 / 0644): the data
 * and TLS directories 0700; the SQLite database with its -wal/-shm, keys and credentials 0600; the vault chunk
 * stores and disk images (dirs 0700, files 0600).
 */
export function tightenModes(dataDir: string): void {
  const fix = (p: string, mode: number) => {
    try {
      const st = lstatSync(p);
      if (!st.isSymbolicLink() && (st.mode & 0o777) !== mode) chmodSync(p, mode);
    } catch {
      /* absent: nothing to fix */
    }
  };
  fix(dataDir, 0o700);
  fix(path.join(dataDir, 'tls'), 0o700);
  for (const f of ['master.key', 'token-signing.sealed', 'credentials.json', 'tls/ca.key', 'tls/server.key']) fix(path.join(dataDir, f), 0o600);
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    fix(dir, 0o700);
    for (const e of entries) {
      if (e.isDirectory()) walk(path.join(dir, e.name));
      else if (e.isFile()) fix(path.join(dir, e.name), 0o600);
    }
  };
  walk(path.join(dataDir, 'vaults'));
}

function sansFor(vaultSuffix: string, blobSuffix?: string): string[] {
  return ['DNS:localhost', 'IP:127.0.0.1', 'IP:::1', `DNS:*.${vaultSuffix}`, `DNS:${vaultSuffix}`, ...(blobSuffix ? [`DNS:*.${blobSuffix}`] : [])];
}

function certHasSans(certPem: string, wanted: string[]): boolean {
  const cert = new X509Certificate(certPem);
  const have = (cert.subjectAltName ?? '').split(',').map((s) => s.trim().replace(/^IP Address:/, 'IP:').replace(/^DNS:/, 'DNS:'));
  const norm = (s: string) => s.replace(/^IP:0:0:0:0:0:0:0:1$/i, 'IP:::1').toLowerCase();
  const set = new Set(have.map(norm));
  return wanted.every((w) => set.has(norm(w))) && new Date(cert.validTo).getTime() > Date.now() + 7 * 86400_000;
}

export async function initInstallation(dataDir: string, vaultSuffix: string, blobSuffix?: string): Promise<Installation> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const tlsDir = path.join(dataDir, 'tls');
  mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
  tightenModes(dataDir);

  // Master key.
  const masterPath = path.join(dataDir, 'master.key');
  if (!existsSync(masterPath)) writeFileAtomic(masterPath, randomBytes(32).toString('base64') + '\n');
  const master = Buffer.from(readFileSync(masterPath, 'utf8').trim(), 'base64');
  if (master.length !== 32) throw new Error(`${masterPath} is not a 32-byte base64 key`);
  const keyId = Sealer.keyIdOf(master);
  const sealer = new Sealer(keyId, { [keyId]: master });

  // Installation CA: constrained (critical nameConstraints) to localhost, .localhost, the vault suffix and loopback.
  // A CA from before the constraints is kept (clients trust it) and reported; a constrained CA whose constraints no
  // longer cover the vault suffix is replaced, since it could not vouch for the new names anyway.
  const caPath = path.join(tlsDir, 'ca.pem');
  const caKeyPath = path.join(tlsDir, 'ca.key');
  const constraints = installationConstraints(vaultSuffix, blobSuffix);
  let caUnconstrained = false;
  if (existsSync(caPath) && existsSync(caKeyPath)) {
    const raw = new X509Certificate(readFileSync(caPath, 'utf8')).raw;
    const constrained = raw.indexOf(NAME_CONSTRAINTS_OID) >= 0;
    if (!constrained) caUnconstrained = true;
    else if (!hasNameConstraints(raw, constraints)) rmSync(caPath);
  }
  if (!existsSync(caPath) || !existsSync(caKeyPath)) {
    const now = new Date();
    const ca = createConstrainedCa({
      commonName: 'rsvault installation CA',
      organization: 'rsvault',
      notBefore: new Date(now.getTime() - 3600_000),
      notAfter: new Date(now.getTime() + 10 * 365 * 86400_000),
      constraints,
    });
    writeFileAtomic(caKeyPath, ca.key);
    writeFileAtomic(caPath, ca.cert, 0o644);
  }
  const caPem = readFileSync(caPath, 'utf8');
  const caKey = readFileSync(caKeyPath, 'utf8');

  // Server certificate (reissued when the wanted names change or it nears expiry).
  const certPath = path.join(tlsDir, 'server.pem');
  const keyPath = path.join(tlsDir, 'server.key');
  const sans = sansFor(vaultSuffix, blobSuffix);
  if (!existsSync(certPath) || !existsSync(keyPath) || !certHasSans(readFileSync(certPath, 'utf8'), sans) || !issuedBy(readFileSync(certPath, 'utf8'), caPem)) {
    const now = new Date();
    const server = await generate([{ name: 'commonName', value: 'localhost' }], {
      keySize: 2048,
      algorithm: 'sha256',
      notBeforeDate: new Date(now.getTime() - 3600_000),
      notAfterDate: new Date(now.getTime() + 397 * 86400_000),
      ca: { key: caKey, cert: caPem },
      extensions: [
        { name: 'basicConstraints', cA: false },
        { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
        { name: 'extKeyUsage', serverAuth: true },
        {
          name: 'subjectAltName',
          altNames: sans.map((s) => (s.startsWith('IP:') ? { type: 7 as const, ip: s.slice(3) } : { type: 2 as const, value: s.slice(4) })),
        },
      ],
    });
    writeFileAtomic(keyPath, server.private);
    writeFileAtomic(certPath, server.cert, 0o644);
  }

  // Token signing key, sealed at rest.
  const signingPath = path.join(dataDir, 'token-signing.sealed');
  if (!existsSync(signingPath)) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const pem = privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
    writeFileAtomic(signingPath, sealer.sealText(pem, 'token-signing-key') + '\n');
  }
  const tokenSigningKeyPem = sealer.openText(readFileSync(signingPath, 'utf8').trim(), 'token-signing-key');

  return { caPath, caUnconstrained, tls: { key: readFileSync(keyPath, 'utf8'), cert: readFileSync(certPath, 'utf8'), ca: caPem }, sealer, tokenSigningKeyPem };
}
