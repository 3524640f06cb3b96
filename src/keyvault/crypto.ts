/** RSA operations of the data plane (node:crypto): key generation, JWK import, OAEP/OAEP-256/RSA1_5, RS256/384/512. */
import { constants, createHash, createHmac, createPrivateKey, createPublicKey, generateKeyPair, privateDecrypt, privateEncrypt, publicDecrypt, publicEncrypt, type KeyObject } from 'node:crypto';
import { promisify } from 'node:util';
import type { EncryptionAlgorithm } from './model.js';

const genKeyPair = promisify(generateKeyPair);

export async function generateRsa(bits: number, publicExponent: number): Promise<{ privateDer: Buffer; n: string; e: string }> {
  const { privateKey } = await genKeyPair('rsa', { modulusLength: bits, publicExponent });
  return exportRsa(privateKey);
}

export function exportRsa(privateKey: KeyObject): { privateDer: Buffer; n: string; e: string } {
  const jwk = privateKey.export({ format: 'jwk' });
  return { privateDer: privateKey.export({ type: 'pkcs8', format: 'der' }), n: String(jwk.n), e: String(jwk.e) };
}

/** Imports an RSA private JWK (fields already re-encoded as base64url). Throws on a malformed key. */
export function importRsaJwk(jwk: Record<string, string>): KeyObject {
  return createPrivateKey({ key: { kty: 'RSA', ...jwk }, format: 'jwk' });
}

export const privateKeyOf = (der: Buffer): KeyObject => createPrivateKey({ key: der, format: 'der', type: 'pkcs8' });
export const publicKeyOf = (n: string, e: string): KeyObject => createPublicKey({ key: { kty: 'RSA', n, e }, format: 'jwk' });

export class CryptoInputError extends Error {}

export function rsaEncrypt(pub: KeyObject, alg: EncryptionAlgorithm, data: Buffer): Buffer {
  try {
    if (alg === 'RSA1_5') return publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_PADDING }, data);
    return publicEncrypt({ key: pub, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP-256' ? 'sha256' : 'sha1' }, data);
  } catch (e) {
    throw new CryptoInputError(`the value cannot be encrypted with ${alg} by this key (${(e as Error).message}); it is probably too long for one RSA block`);
  }
}

export function rsaDecrypt(priv: KeyObject, alg: EncryptionAlgorithm, data: Buffer): Buffer {
  let raw: Buffer;
  try {
    if (alg !== 'RSA1_5') return privateDecrypt({ key: priv, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP-256' ? 'sha256' : 'sha1' }, data);
    // Node 20 refuses RSA_PKCS1_PADDING in privateDecrypt (CVE-2023-46809): decrypt raw and unpad ourselves. Only a
    // ciphertext of the wrong length or not below the modulus fails here (both visible from the public key alone).
    raw = privateDecrypt({ key: priv, padding: constants.RSA_NO_PADDING }, data);
  } catch {
    throw new CryptoInputError(`the value cannot be decrypted with ${alg} by this key version (wrong key, wrong algorithm or corrupted value)`);
  }
  return unpadPkcs1Implicit(raw, data, priv);
}

/**
 * EME-PKCS1-v1_5 unpadding with implicit rejection (as OpenSSL 3.2+ and draft-irtf-cfrg-rsa-guidance): a ciphertext
 * whose padding is bad yields a pseudo-random message derived from the private key and the ciphertext (the same one
 * for the same ciphertext, of a length in the same range) instead of an error, so callers cannot tell bad padding
 * from good and the decrypt operation is no padding oracle. Both results are always computed and one is selected
 * with masks; the padding scan touches every byte whatever it finds.
 */
export function unpadPkcs1Implicit(raw: Buffer, ciphertext: Buffer, priv: KeyObject): Buffer {
  const k = raw.length;
  const d = Buffer.from(String(priv.export({ format: 'jwk' }).d ?? ''), 'base64url');
  const kdk = createHmac('sha256', createHash('sha256').update(d).digest()).update(ciphertext).digest();
  const prf = (label: string, bytes: number): Buffer => {
    const out: Buffer[] = [];
    for (let i = 0; out.length * 32 < bytes; i++) out.push(createHmac('sha256', kdk).update(Buffer.from([i >> 8, i & 0xff])).update(label).update(Buffer.from([bytes >> 8, bytes & 0xff])).digest());
    return Buffer.concat(out).subarray(0, bytes);
  };
  const synthetic = prf('message', k);
  const maxLen = k - 11; // a message needs 0x00 0x02, ≥ 8 padding bytes and the 0x00 separator
  const synthLen = maxLen > 0 ? prf('length', 2).readUInt16BE(0) % (maxLen + 1) : 0;

  // good = 0xff.. when the padding is valid; sep = index of the first zero byte after the header (constant scan).
  let good = ((raw[0]! | (raw[1]! ^ 2)) === 0 ? 1 : 0) & (k >= 11 ? 1 : 0);
  let sep = 0;
  let found = 0;
  for (let i = 2; i < k; i++) {
    const isZero = raw[i] === 0 ? 1 : 0;
    const take = isZero & (found ^ 1);
    sep = take ? i : sep;
    found |= isZero;
  }
  good &= found & (sep >= 10 ? 1 : 0);
  const realLen = k - sep - 1;
  const len = good ? realLen : synthLen;
  const mask = -good & 0xff;
  const out = Buffer.alloc(k);
  for (let i = 0; i < k; i++) out[i] = (raw[i]! & mask) | (synthetic[i]! & ~mask & 0xff);
  return out.subarray(k - len);
}

const DIGEST_INFO: Record<string, { prefix: string; len: number }> = {
  RS256: { prefix: '3031300d060960864801650304020105000420', len: 32 },
  RS384: { prefix: '3041300d060960864801650304020205000430', len: 48 },
  RS512: { prefix: '3051300d060960864801650304020305000440', len: 64 },
};
export const SIGN_ALGS = Object.keys(DIGEST_INFO);

export function rsaSign(priv: KeyObject, alg: string, digest: Buffer): Buffer {
  const di = DIGEST_INFO[alg];
  if (!di) throw new CryptoInputError(`unsupported signature algorithm '${alg}': use one of ${SIGN_ALGS.join(', ')}`);
  if (digest.length !== di.len) throw new CryptoInputError(`the digest for ${alg} must be ${di.len} bytes, got ${digest.length}`);
  return privateEncrypt({ key: priv, padding: constants.RSA_PKCS1_PADDING }, Buffer.concat([Buffer.from(di.prefix, 'hex'), digest]));
}

export function rsaVerify(pub: KeyObject, alg: string, digest: Buffer, signature: Buffer): boolean {
  const di = DIGEST_INFO[alg];
  if (!di) throw new CryptoInputError(`unsupported signature algorithm '${alg}': use one of ${SIGN_ALGS.join(', ')}`);
  try {
    const got = publicDecrypt({ key: pub, padding: constants.RSA_PKCS1_PADDING }, signature);
    return got.equals(Buffer.concat([Buffer.from(di.prefix, 'hex'), digest]));
  } catch {
    return false;
  }
}
