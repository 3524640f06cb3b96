/**
 * aes-xts-plain64 over whole buffers of 512-byte sectors, batched: one AES-ECB pass with K2 computes every sector's
 * first tweak, the other tweaks follow by GF(2^128) doubling in JS, and one AES-ECB pass with K1 does the data
 * (C = E_K1(P ⊕ T) ⊕ T). A cipher object per sector is about 10× slower.
 * IV (plain64) = the sector number as a 16-byte little-endian integer, counted from the start of the payload.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import os from 'node:os';

export const SECTOR = 512;
const LE = os.endianness() === 'LE';

export class Xts {
  private readonly k1: Buffer;
  private readonly k2: Buffer;
  private readonly alg: string;

  /** `key` = 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS). */
  constructor(key: Buffer) {
    if (key.length !== 32 && key.length !== 64) throw new Error(`XTS key must be 32 or 64 bytes, got ${key.length}`);
    const half = key.length / 2;
    this.k1 = Buffer.from(key.subarray(0, half));
    this.k2 = Buffer.from(key.subarray(half));
    this.alg = half === 32 ? 'aes-256-ecb' : 'aes-128-ecb';
  }

  /** Encrypts `data` (a whole number of sectors) in place; its first sector has number `firstSector`. */
  encrypt(data: Buffer, firstSector: number): Buffer {
    return this.run(data, firstSector, true);
  }

  decrypt(data: Buffer, firstSector: number): Buffer {
    return this.run(data, firstSector, false);
  }

  /**
   * Pass 1: every tweak T (first per sector from one AES-ECB pass with K2, the rest by GF(2^128) doubling) is stored
   * in `t` and XORed into `data` in the same loop. Pass 2 (after ECB with K1): data = ecbOut ⊕ T.
   */
  private run(data: Buffer, firstSector: number, enc: boolean): Buffer {
    if (data.length % SECTOR !== 0) throw new Error(`XTS data must be whole ${SECTOR}-byte sectors (got ${data.length} bytes)`);
    if (data.length === 0) return data;
    if (!LE) throw new Error('XTS batch path needs a little-endian host');
    const len = data.length;
    const sectors = len / SECTOR;
    const ivs = Buffer.alloc(sectors * 16);
    for (let s = 0; s < sectors; s++) {
      const n = firstSector + s;
      ivs.writeUInt32LE(n % 0x100000000, s * 16);
      ivs.writeUInt32LE(Math.floor(n / 0x100000000), s * 16 + 4);
    }
    const e = createCipheriv(this.alg, this.k2, null);
    e.setAutoPadding(false);
    const t0 = Buffer.concat([e.update(ivs), e.final()]);
    const w0 = new Uint32Array(t0.buffer, t0.byteOffset, t0.length / 4);
    const aligned = data.byteOffset % 4 === 0;
    const src = aligned ? data : Buffer.from(data);
    const d = new Uint32Array(src.buffer, src.byteOffset, len / 4);
    const tb = Buffer.allocUnsafeSlow(len);
    const w = new Uint32Array(tb.buffer, tb.byteOffset, len / 4);
    for (let s = 0; s < sectors; s++) {
      let a = w0[s * 4]!, b = w0[s * 4 + 1]!, c = w0[s * 4 + 2]!, dd = w0[s * 4 + 3]!;
      let p = s * (SECTOR / 4);
      const end = p + SECTOR / 4;
      while (p < end) {
        w[p] = a; w[p + 1] = b; w[p + 2] = c; w[p + 3] = dd;
        d[p] = d[p]! ^ a; d[p + 1] = d[p + 1]! ^ b; d[p + 2] = d[p + 2]! ^ c; d[p + 3] = d[p + 3]! ^ dd;
        p += 4;
        const carry = dd >>> 31;
        dd = ((dd << 1) | (c >>> 31)) >>> 0;
        c = ((c << 1) | (b >>> 31)) >>> 0;
        b = ((b << 1) | (a >>> 31)) >>> 0;
        a = ((a << 1) ^ (carry ? 0x87 : 0)) >>> 0;
      }
    }
    const k = enc ? createCipheriv(this.alg, this.k1, null) : createDecipheriv(this.alg, this.k1, null);
    k.setAutoPadding(false);
    const out = k.update(src);
    k.final();
    const o = out.byteOffset % 4 === 0 ? out : Buffer.from(out);
    const ow = new Uint32Array(o.buffer, o.byteOffset, len / 4);
    for (let i = 0; i < d.length; i++) d[i] = ow[i]! ^ w[i]!;
    if (!aligned) src.copy(data);
    return data;
  }
}
