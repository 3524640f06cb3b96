import { describe, expect, it } from 'vitest';
import { constants, generateKeyPairSync, publicEncrypt, randomBytes } from 'node:crypto';
import { rsaDecrypt, rsaEncrypt } from './crypto.js';

describe('RSA1_5 decrypt with implicit rejection', () => {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const k = 256;
  const rawEncrypt = (block: Buffer) => publicEncrypt({ key: publicKey, padding: constants.RSA_NO_PADDING }, block);

  it('decrypts valid ciphertexts', () => {
    const msg = randomBytes(32);
    expect(rsaDecrypt(privateKey, 'RSA1_5', rsaEncrypt(publicKey, 'RSA1_5', msg))).toEqual(msg);
    expect(rsaDecrypt(privateKey, 'RSA1_5', rsaEncrypt(publicKey, 'RSA1_5', Buffer.alloc(0)))).toEqual(Buffer.alloc(0));
  });

  it('answers bad padding with a deterministic pseudo-random message instead of an error', () => {
    const wrongType = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(k - 2, 0xff)]);
    const noSeparator = Buffer.concat([Buffer.from([0, 2]), Buffer.alloc(k - 2, 0x5a)]);
    const shortPad = Buffer.concat([Buffer.from([0, 2, 1, 2, 3, 0]), randomBytes(k - 6)]);
    const notZeroFirst = Buffer.concat([Buffer.from([1, 2]), randomBytes(k - 2)]);
    for (const block of [wrongType, noSeparator, shortPad, notZeroFirst]) {
      const c = rawEncrypt(block);
      const a = rsaDecrypt(privateKey, 'RSA1_5', c);
      expect(a.length).toBeLessThanOrEqual(k - 11);
      expect(rsaDecrypt(privateKey, 'RSA1_5', c)).toEqual(a); // same ciphertext, same answer
      expect(a).not.toEqual(block.subarray(block.length - a.length));
    }
    // Different ciphertexts give different synthetic messages.
    expect(rsaDecrypt(privateKey, 'RSA1_5', rawEncrypt(wrongType))).not.toEqual(rsaDecrypt(privateKey, 'RSA1_5', rawEncrypt(noSeparator)));
  });
});
