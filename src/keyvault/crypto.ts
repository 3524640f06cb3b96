/** RSA operations of the data plane (node:crypto): key generation, JWK import, OAEP/OAEP-256/RSA1_5, RS256/384/512. */
import { constants, createPrivateKey, createPublicKey, generateKeyPair, privateDecrypt, privateEncrypt, publicDecrypt, publicEncrypt, type KeyObject } from 'node:crypto';
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
  try {
    if (alg === 'RSA1_5') {
      // Node 20 refuses RSA_PKCS1_PADDING in privateDecrypt (CVE-2023-46809): unpad EME-PKCS1-v1_5 ourselves.
      const raw = privateDecrypt({ key: priv, padding: constants.RSA_NO_PADDING }, data);
      if (raw[0] !== 0 || raw[1] !== 2) throw new Error('bad padding');
      const sep = raw.indexOf(0, 2);
      if (sep < 10) throw new Error('bad padding');
      return raw.subarray(sep + 1);
    }
    return privateDecrypt({ key: priv, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: alg === 'RSA-OAEP-256' ? 'sha256' : 'sha1' }, data);
  } catch {
    throw new CryptoInputError(`the value cannot be decrypted with ${alg} by this key version (wrong key, wrong algorithm or corrupted value)`);
  }
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
