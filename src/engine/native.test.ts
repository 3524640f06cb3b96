import { createCipheriv, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, it, expect } from 'vitest';
import { addressMod, adviseHugePages, nativeGcm, nativeStatus, type NativeGcm } from './native.js';

// CI builds the addon (npm install runs scripts/build-native.mjs), so a missing addon is a failure,
// not a skip. With RSVAULT_NATIVE=0 the loader must report it as disabled instead.
const disabled = process.env.RSVAULT_NATIVE === '0';
const ADDON_FILE = fileURLToPath(new URL('../../native/build/Release/rsvault_native.node', import.meta.url));

function gcm(): NativeGcm {
  if (!nativeGcm) throw new Error(`native addon not available: ${nativeStatus()} (run: node scripts/build-native.mjs)`);
  return nativeGcm;
}

function reference(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plain: Uint8Array): { ct: Buffer; tag: Buffer } {
  const c = createCipheriv('aes-256-gcm', key, iv);
  if (aad.length > 0) c.setAAD(aad);
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return { ct, tag: c.getAuthTag() };
}

type Kind = 'shared' | 'array';
const GUARD = 0xa5;

/** A copy of `bytes` as a view at byte offset `off` into a fresh SharedArrayBuffer or ArrayBuffer, with guard bytes around it. */
function place(kind: Kind, bytes: Uint8Array | number, off: number): Uint8Array {
  const len = typeof bytes === 'number' ? bytes : bytes.length;
  const backing = kind === 'shared' ? new SharedArrayBuffer(off + len + 16) : new ArrayBuffer(off + len + 16);
  new Uint8Array(backing).fill(GUARD);
  const v = new Uint8Array(backing, off, len);
  if (typeof bytes !== 'number') v.set(bytes);
  return v;
}

/** The guard bytes around a view placed by `place` are untouched. */
function guardsIntact(v: Uint8Array): boolean {
  const all = new Uint8Array(v.buffer);
  for (let i = 0; i < v.byteOffset; i++) if (all[i] !== GUARD) return false;
  for (let i = v.byteOffset + v.length; i < all.length; i++) if (all[i] !== GUARD) return false;
  return true;
}

const eq = (a: Uint8Array, b: Uint8Array): boolean => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));

const SIZES = [0, 1, 15, 16, 17, 65536 + 3, 4 * 1024 * 1024];
const AADS = [0, 52];
const KINDS: Kind[] = ['shared', 'array'];

describe('native AES-256-GCM addon', () => {
  if (disabled) {
    it('is not loaded when RSVAULT_NATIVE=0', () => {
      expect(nativeGcm).toBeUndefined();
      expect(nativeStatus()).toMatch(/RSVAULT_NATIVE=0/);
    });
    return;
  }

  it('is built and loads', () => {
    expect(nativeGcm, nativeStatus()).toBeDefined();
    expect(nativeStatus()).toMatch(/^native/);
  });

  it('addressMod tells a view\'s address modulo m, consistently across views, SharedArrayBuffers and transfers', () => {
    const g = gcm();
    expect(typeof g.addressMod).toBe('function');
    const ab = new ArrayBuffer(3 * 4096);
    const base = addressMod(new Uint8Array(ab), 4096);
    expect(base).toBeGreaterThanOrEqual(0);
    for (const off of [1, 17, 4095, 4096, 5000]) expect(addressMod(new Uint8Array(ab, off), 4096)).toBe(((base ?? 0) + off) % 4096);
    // The view a LentSlotPool derives from it is aligned.
    const aligned = new Uint8Array(ab, (4096 - (base ?? 0)) % 4096);
    expect(addressMod(aligned, 4096)).toBe(0);
    expect(addressMod(aligned, 512)).toBe(0);
    expect(addressMod(Buffer.from(new SharedArrayBuffer(8192), 3), 1)).toBe(0);
    // A transferred ArrayBuffer keeps its memory (what the output slots rely on).
    const { port1, port2 } = new MessageChannel();
    port1.postMessage(ab, [ab]);
    port1.close();
    port2.close();
    expect(ab.byteLength).toBe(0);
    expect(() => g.addressMod?.(new Uint8Array(8), 0)).toThrow(TypeError);
    expect(() => g.addressMod?.(new Uint8Array(8), 1 << 21)).toThrow(TypeError);
    expect(() => g.addressMod?.(new Uint16Array(8) as unknown as Uint8Array, 16)).toThrow(TypeError);
  });

  it('adviseHugePages advises the 2 MiB-aligned interior of a view (Linux) and nothing outside it', () => {
    const g = gcm();
    expect(typeof g.adviseHugePages).toBe('function');
    const MiB = 1024 * 1024;
    const big = new Uint8Array(new ArrayBuffer(6 * MiB));
    const advised = adviseHugePages(big);
    if (process.platform === 'linux') {
      // 6 MiB hold at least two whole aligned 2 MiB pages, at most three.
      expect([4 * MiB, 6 * MiB]).toContain(advised);
    } else {
      expect(advised).toBe(0);
    }
    big.fill(1); // still ordinary memory
    expect(big[6 * MiB - 1]).toBe(1);
    expect(adviseHugePages(new Uint8Array(MiB))).toBe(0); // no aligned 2 MiB inside
    expect(adviseHugePages(new Uint8Array(new SharedArrayBuffer(5 * MiB))) % (2 * MiB)).toBe(0);
    expect(() => g.adviseHugePages?.(new Uint16Array(8) as unknown as Uint8Array)).toThrow(TypeError);
  });

  for (const kind of KINDS) {
    for (const aadLen of AADS) {
      it(`seal/open match node:crypto byte for byte (${kind} buffers, aad ${aadLen})`, () => {
        const g = gcm();
        for (const size of SIZES) {
          const key = randomBytes(32);
          const iv = randomBytes(12);
          const aad = randomBytes(aadLen);
          const plain = randomBytes(size);
          const ref = reference(key, iv, aad, plain);

          // every argument at a different non-zero offset, so a wrong data pointer shows
          const k = place(kind, key, 3);
          const n = place(kind, iv, 5);
          const a = place(kind, aad, 7);
          const p = place(kind, plain, 9);
          const out = place(kind, size + 16, 11);
          g.seal(k, n, a, p, out);
          expect(eq(out.subarray(0, size), ref.ct), `ciphertext, size ${size}`).toBe(true);
          expect(eq(out.subarray(size), ref.tag), `tag, size ${size}`).toBe(true);
          expect(guardsIntact(out), `writes stay inside out, size ${size}`).toBe(true);
          expect(eq(p, plain), 'plain is not modified').toBe(true);

          const ct = place(kind, ref.ct, 13);
          const tag = place(kind, ref.tag, 1);
          const back = place(kind, size, 15);
          expect(g.open(k, n, a, ct, tag, back), `open, size ${size}`).toBe(true);
          expect(eq(back, plain), `round trip, size ${size}`).toBe(true);
          expect(guardsIntact(back)).toBe(true);
        }
      });
    }
  }

  it('accepts Buffers and a larger out (writes only the first n + 16 bytes)', () => {
    const g = gcm();
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const plain = randomBytes(1000);
    const ref = reference(key, iv, Buffer.alloc(0), plain);
    const out = Buffer.alloc(2000, 7);
    g.seal(key, iv, Buffer.alloc(0), plain, out);
    expect(out.subarray(0, 1000).equals(ref.ct)).toBe(true);
    expect(out.subarray(1000, 1016).equals(ref.tag)).toBe(true);
    expect(out.subarray(1016).every((b) => b === 7)).toBe(true);
    const back = Buffer.alloc(1500, 9);
    expect(g.open(key, iv, Buffer.alloc(0), ref.ct, ref.tag, back)).toBe(true);
    expect(back.subarray(0, 1000).equals(plain)).toBe(true);
    expect(back.subarray(1000).every((b) => b === 9)).toBe(true);
  });

  it('open returns false for a flipped ciphertext, tag or aad byte, a wrong key or a wrong iv', () => {
    const g = gcm();
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const aad = randomBytes(52);
    const plain = randomBytes(65536 + 3);
    const { ct, tag } = reference(key, iv, aad, plain);
    const out = new Uint8Array(ct.length);
    const flip = (b: Buffer, i: number): Buffer => {
      const c = Buffer.from(b);
      c[i]! ^= 0x01;
      return c;
    };

    expect(g.open(key, iv, aad, flip(ct, 0), tag, out)).toBe(false);
    expect(g.open(key, iv, aad, flip(ct, ct.length - 1), tag, out)).toBe(false);
    expect(g.open(key, iv, aad, flip(ct, 40_000), tag, out)).toBe(false);
    expect(g.open(key, iv, aad, ct, flip(tag, 0), out)).toBe(false);
    expect(g.open(key, iv, aad, ct, flip(tag, 15), out)).toBe(false);
    expect(g.open(key, iv, flip(aad, 0), ct, tag, out)).toBe(false);
    expect(g.open(key, iv, flip(aad, 51), ct, tag, out)).toBe(false);
    expect(g.open(key, iv, aad.subarray(0, 51), ct, tag, out)).toBe(false);
    expect(g.open(key, iv, new Uint8Array(0), ct, tag, out)).toBe(false);
    expect(g.open(randomBytes(32), iv, aad, ct, tag, out)).toBe(false);
    expect(g.open(flip(key, 31), iv, aad, ct, tag, out)).toBe(false);
    expect(g.open(key, flip(iv, 11), aad, ct, tag, out)).toBe(false);
    expect(g.open(key, iv, aad, ct.subarray(0, ct.length - 1), tag, out)).toBe(false);

    // a failure leaves no state behind: the genuine message still opens
    expect(g.open(key, iv, aad, ct, tag, out)).toBe(true);
    expect(eq(out, plain)).toBe(true);

    // empty message: only the tag authenticates
    const e = reference(key, iv, aad, new Uint8Array(0));
    expect(g.open(key, iv, aad, new Uint8Array(0), e.tag, new Uint8Array(0))).toBe(true);
    expect(g.open(key, iv, aad, new Uint8Array(0), flip(e.tag, 3), new Uint8Array(0))).toBe(false);
  });

  it('works in place (plain and out the same memory)', () => {
    const g = gcm();
    for (const kind of KINDS) {
      for (const size of [0, 17, 65536 + 3, 4 * 1024 * 1024]) {
        const key = randomBytes(32);
        const iv = randomBytes(12);
        const aad = randomBytes(52);
        const plain = randomBytes(size);
        const ref = reference(key, iv, aad, plain);

        const buf = place(kind, size + 16, 5);
        buf.set(plain);
        g.seal(key, iv, aad, buf.subarray(0, size), buf);
        expect(eq(buf.subarray(0, size), ref.ct), `in-place seal, ${kind} ${size}`).toBe(true);
        expect(eq(buf.subarray(size), ref.tag)).toBe(true);
        expect(guardsIntact(buf)).toBe(true);

        const body = buf.subarray(0, size);
        expect(g.open(key, iv, aad, body, buf.subarray(size), body)).toBe(true);
        expect(eq(body, plain), `in-place open, ${kind} ${size}`).toBe(true);
        expect(guardsIntact(buf)).toBe(true);
      }
    }
  });

  it('throws a TypeError for wrong sizes, too small an out, wrong types and partial overlap', () => {
    const g = gcm();
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const aad = new Uint8Array(0);
    const plain = randomBytes(100);
    const out = new Uint8Array(116);
    const tag = new Uint8Array(16);
    const bad = (f: () => unknown): void => expect(f).toThrow(TypeError);

    bad(() => g.seal(randomBytes(31), iv, aad, plain, out));
    bad(() => g.seal(randomBytes(33), iv, aad, plain, out));
    bad(() => g.seal(randomBytes(16), iv, aad, plain, out));
    bad(() => g.seal(key, randomBytes(11), aad, plain, out));
    bad(() => g.seal(key, randomBytes(16), aad, plain, out));
    bad(() => g.seal(key, new Uint8Array(0), aad, plain, out));
    bad(() => g.seal(key, iv, aad, plain, new Uint8Array(115)));
    bad(() => g.seal(key, iv, aad, new Uint8Array(0), new Uint8Array(15)));
    bad(() => g.open(randomBytes(31), iv, aad, plain, tag, out));
    bad(() => g.open(key, randomBytes(13), aad, plain, tag, out));
    bad(() => g.open(key, iv, aad, plain, new Uint8Array(15), out));
    bad(() => g.open(key, iv, aad, plain, new Uint8Array(17), out));
    bad(() => g.open(key, iv, aad, plain, tag, new Uint8Array(99)));

    // wrong types and arity (the JS wrapper does not check: the addon does)
    const loose = g as unknown as Record<'seal' | 'open', (...args: unknown[]) => unknown>;
    bad(() => loose.seal(key.buffer, iv, aad, plain, out));
    bad(() => loose.seal(key, iv, 'aad', plain, out));
    bad(() => loose.seal(key, iv, aad, new Uint16Array(50), out));
    bad(() => loose.seal(key, iv, aad, new DataView(plain.buffer), out));
    bad(() => loose.seal(key, iv, aad, plain));
    bad(() => loose.open(key, iv, aad, plain, tag));
    bad(() => loose.open(key, iv, aad, plain, null, out));

    // out overlapping plain other than exactly in place
    const buf = new Uint8Array(300);
    bad(() => g.seal(key, iv, aad, buf.subarray(0, 100), buf.subarray(1, 117)));
    bad(() => g.seal(key, iv, aad, buf.subarray(20, 120), buf.subarray(0, 116)));
    bad(() => g.open(key, iv, aad, buf.subarray(0, 100), tag, buf.subarray(50, 150)));
    // a valid call still works after all that
    g.seal(key, iv, aad, plain, out);
    const ref = reference(key, iv, aad, plain);
    expect(eq(out, Buffer.concat([ref.ct, ref.tag]))).toBe(true);
  });

  it('loads and works in worker_threads Workers (context-aware, one instance per thread)', async () => {
    gcm(); // loaded on this thread too
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const addon = require(workerData.file);
      const { key, iv, aad, plain, out } = workerData;
      for (let i = 0; i < 20; i++) addon.seal(key, iv, aad, plain, out);
      const back = new Uint8Array(plain.length);
      const ok = addon.open(key, iv, aad, out.subarray(0, plain.length), out.subarray(plain.length), back);
      parentPort.postMessage({ ok, same: Buffer.from(back).equals(Buffer.from(plain)) });
    `;
    const runOne = async (): Promise<void> => {
      const key = randomBytes(32);
      const iv = randomBytes(12);
      const aad = randomBytes(52);
      const plain = randomBytes(65536 + 3);
      const ref = reference(key, iv, aad, plain);
      const out = place('shared', plain.length + 16, 8);
      const w = new Worker(code, { eval: true, workerData: { file: ADDON_FILE, key, iv, aad, plain, out } });
      const msg = await new Promise<{ ok: boolean; same: boolean }>((resolve, reject) => {
        w.once('message', resolve);
        w.once('error', reject);
        w.once('exit', (c) => reject(new Error(`worker exited with ${c} before answering`)));
      });
      await w.terminate();
      expect(msg).toEqual({ ok: true, same: true });
      expect(eq(out, Buffer.concat([ref.ct, ref.tag]))).toBe(true);
    };
    await Promise.all([runOne(), runOne(), runOne()]);
    await runOne(); // after the first workers' instances were finalised

    // the main thread's instance is unaffected by the workers coming and going
    const key = randomBytes(32);
    const iv = randomBytes(12);
    const plain = randomBytes(4096);
    const out = new Uint8Array(4096 + 16);
    gcm().seal(key, iv, new Uint8Array(0), plain, out);
    const ref = reference(key, iv, new Uint8Array(0), plain);
    expect(eq(out, Buffer.concat([ref.ct, ref.tag]))).toBe(true);
  });
});
