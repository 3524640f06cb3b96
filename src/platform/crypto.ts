/**
 * Sealing of key material at rest with the installation master key (AES-256-GCM, random 96-bit nonce per
 * record, associated data binding the record to its purpose). Format of a sealed record (base64 text):
 *   "v1." + keyId + "." + base64(nonce(12) | tag(16) | ciphertext)
 * The key id names the master key generation, so a future rotation can unseal old records.
 */
import { createCipheriv, createDecipheriv, randomBytes, scrypt as scryptCb, timingSafeEqual, createHash } from 'node:crypto';
import { promisify } from 'node:util';

const scrypt = promisify(scryptCb) as (pw: string | Buffer, salt: Buffer, keylen: number, opts: object) => Promise<Buffer>;

export class SealError extends Error {
  override name = 'SealError';
}

export class Sealer {
  private readonly keys: Map<string, Buffer>;
  constructor(
    private readonly currentKeyId: string,
    keys: Record<string, Buffer>,
  ) {
    this.keys = new Map(Object.entries(keys));
    const k = this.keys.get(currentKeyId);
    if (!k || k.length !== 32) throw new SealError('master key must be 32 bytes');
  }

  /** Key id of the current master key: short fingerprint, never the key itself. */
  static keyIdOf(key: Buffer): string {
    return createHash('sha256').update('rsvault-master-key-id').update(key).digest('hex').slice(0, 12);
  }

  seal(plaintext: Buffer, purpose: string): string {
    const key = this.keys.get(this.currentKeyId)!;
    const nonce = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', key, nonce);
    c.setAAD(Buffer.from(purpose, 'utf8'));
    const ct = Buffer.concat([c.update(plaintext), c.final()]);
    return `v1.${this.currentKeyId}.${Buffer.concat([nonce, c.getAuthTag(), ct]).toString('base64')}`;
  }

  open(sealed: string, purpose: string): Buffer {
    const m = /^v1\.([0-9a-f]+)\.([A-Za-z0-9+/=]+)$/.exec(sealed);
    if (!m) throw new SealError('not a sealed record');
    const key = this.keys.get(m[1]!);
    if (!key) throw new SealError('sealed with an unknown master key');
    const raw = Buffer.from(m[2]!, 'base64');
    if (raw.length < 28) throw new SealError('sealed record too short');
    const d = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(purpose, 'utf8'));
    d.setAuthTag(raw.subarray(12, 28));
    try {
      return Buffer.concat([d.update(raw.subarray(28)), d.final()]);
    } catch {
      throw new SealError('sealed record failed authentication');
    }
  }

  sealText(text: string, purpose: string): string {
    return this.seal(Buffer.from(text, 'utf8'), purpose);
  }
  openText(sealed: string, purpose: string): string {
    return this.open(sealed, purpose).toString('utf8');
  }
}

/** Password / client-secret hashing: scrypt (N=16384, r=8, p=1), self-describing string. */
export async function hashSecret(secret: string): Promise<string> {
  const salt = randomBytes(16);
  const dk = await scrypt(secret, salt, 32, { N: 16384, r: 8, p: 1 });
  return `scrypt$16384$8$1$${salt.toString('base64')}$${dk.toString('base64')}`;
}

export async function verifySecret(secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$');
  if (parts.length !== 6 || parts[0] !== 'scrypt') return false;
  const [, n, r, p, saltB64, dkB64] = parts as [string, string, string, string, string, string];
  const expected = Buffer.from(dkB64, 'base64');
  const dk = await scrypt(secret, Buffer.from(saltB64, 'base64'), expected.length, { N: Number(n), r: Number(r), p: Number(p) });
  return dk.length === expected.length && timingSafeEqual(dk, expected);
}

/**
 * A random secret in the shape Azure uses for client secrets (40 chars, URL-safe). Never starts
 * with '-': `az login -p -abc…` (argparse) takes such a value for an option and fails with
 * "expected one argument" — seen in CI with 1 secret in 64.
 */
export function newClientSecret(): string {
  for (;;) {
    const s = randomBytes(30).toString('base64url');
    if (!s.startsWith('-')) return s;
  }
}
