import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { BITMAP_BLOCK_SIZE, ChangedBlockBitmap } from './bitmap.js';
import { EngineError } from './errors.js';
import { Manifest, decodeManifest, encodeManifest, readManifestFile, writeManifestFile } from './manifest.js';
import { chunkDigestOf, chunkIdOf, generateMasterKey, generateStoreKeys, open, seal, storeKeysFromBytes, storeKeysToBytes, unwrapStoreKeys, wrapStoreKeys, WRAPPED_KEYS_BYTES, WRAPPED_KEYS_V2_BYTES } from './seal.js';
import { GOLDEN } from './testdata/golden.js';
import { tempDir } from './testdata/helpers.js';

describe('manifest format (golden files)', () => {
  for (const [name, make] of GOLDEN) {
    it(`${name}: encoding is byte-identical and decodes back`, () => {
      const golden = readFileSync(new URL(`./testdata/${name}`, import.meta.url));
      const m = make();
      expect(encodeManifest(m).equals(golden)).toBe(true);
      const d = decodeManifest(golden);
      expect(d.diskSize).toBe(m.diskSize);
      expect(d.chunkSize).toBe(m.chunkSize);
      expect(d.chunkCount).toBe(m.chunkCount);
      expect(Buffer.from(d.ids).equals(Buffer.from(m.ids))).toBe(true);
      expect(d.imageDigest?.toString('hex')).toBe(m.imageDigest?.toString('hex'));
      expect(d.chunkHash).toBe(m.chunkHash);
    });
  }

  it('the BLAKE3 flag is bit 1 of the flags; the rest of the encoding is unchanged', () => {
    const a = readFileSync(new URL('./testdata/manifest-v1-digest.bin', import.meta.url));
    const b = readFileSync(new URL('./testdata/manifest-v1-blake3.bin', import.meta.url));
    expect(a.readUInt16LE(10)).toBe(1);
    expect(b.readUInt16LE(10)).toBe(3);
    expect(a.subarray(12, a.length - 32).equals(b.subarray(12, b.length - 32))).toBe(true);
  });

  it('holes, offsets and lengths', () => {
    const m = decodeManifest(readFileSync(new URL('./testdata/manifest-v1-digest.bin', import.meta.url)));
    expect([0, 1, 2, 3].map((i) => m.isHole(i))).toEqual([false, true, false, false]);
    expect(m.lengthOf(3)).toBe(100);
    expect(m.offsetOf(2)).toBe(2 * 65536);
    expect([...m.distinctIds()]).toHaveLength(3);
  });

  it('rejects any flipped byte, truncation and unknown versions', () => {
    const golden = readFileSync(new URL('./testdata/manifest-v1-digest.bin', import.meta.url));
    for (let i = 0; i < golden.length; i += 7) {
      const bad = Buffer.from(golden);
      bad[i]! ^= 0x01;
      expect(() => decodeManifest(bad), `byte ${i}`).toThrow(EngineError);
    }
    expect(() => decodeManifest(golden.subarray(0, golden.length - 1))).toThrow(/corrupted/);
    try {
      decodeManifest(golden.subarray(0, 10));
    } catch (err) {
      expect((err as EngineError).code).toBe('ManifestCorrupted');
    }
  });

  it('is written durably and read back', async () => {
    const t = await tempDir();
    try {
      const m = GOLDEN[0]![1]();
      await writeManifestFile(`${t.dir}/m.bin`, m);
      const r = await readManifestFile(`${t.dir}/m.bin`);
      expect(encodeManifest(r).equals(encodeManifest(m))).toBe(true);
    } finally {
      await t.dispose();
    }
  });

  it('validates chunk sizes', () => {
    expect(() => new Manifest(10, 1000, new Uint8Array(32), undefined)).toThrow(/multiple of 64 KiB/);
  });
});

describe('changed-block bitmap', () => {
  it('marks every block a write touches and answers range queries', () => {
    const size = 10 * BITMAP_BLOCK_SIZE + 5;
    const b = new ChangedBlockBitmap(size);
    expect(b.blockCount).toBe(11);
    b.markWritten(BITMAP_BLOCK_SIZE - 1, 2); // blocks 0 and 1
    b.markWritten(10 * BITMAP_BLOCK_SIZE + 4, 1); // last (partial) block
    expect(b.dirtyBlockCount()).toBe(3);
    expect(b.isRangeDirty(0, 1)).toBe(true);
    expect(b.isRangeDirty(2 * BITMAP_BLOCK_SIZE, 8 * BITMAP_BLOCK_SIZE)).toBe(false);
    expect(b.isRangeDirty(2 * BITMAP_BLOCK_SIZE, 8 * BITMAP_BLOCK_SIZE + 1)).toBe(true);
    const copy = ChangedBlockBitmap.fromBytes(size, b.toBytes());
    expect(copy.dirtyBlockCount()).toBe(3);
    copy.clear();
    expect(copy.isRangeDirty(0, size)).toBe(false);
    expect(() => ChangedBlockBitmap.fromBytes(size, new Uint8Array(1))).toThrow(/needs 2/);
  });

  it('skips clean bytes in range queries over large ranges', () => {
    const size = 4096 * BITMAP_BLOCK_SIZE;
    const b = new ChangedBlockBitmap(size);
    b.markWritten(4000 * BITMAP_BLOCK_SIZE, 1);
    expect(b.isRangeDirty(0, 4000 * BITMAP_BLOCK_SIZE)).toBe(false);
    expect(b.isRangeDirty(0, size)).toBe(true);
  });
});

describe('sealed chunk and wrapped keys formats (golden files)', () => {
  const idKey = Buffer.alloc(32, 1);
  const sealKey = Buffer.alloc(32, 2);
  const master = Buffer.alloc(32, 3);
  const plain = Buffer.from('rsvault sealed chunk v1\n'.repeat(10));

  it('the chunk id definition is pinned: HMAC-SHA256(idKey, SHA-256(plaintext))', () => {
    expect(chunkIdOf(idKey, plain).toString('hex')).toBe('38fb2b6261fd96cf8d71f67e29299f1a04ce4c626281a72065097db4d3ee1a26');
    expect(chunkIdOf(idKey, plain, 'sha256').toString('hex')).toBe('38fb2b6261fd96cf8d71f67e29299f1a04ce4c626281a72065097db4d3ee1a26');
  });

  it('… and for BLAKE3 stores: HMAC-SHA256(idKey, BLAKE3(plaintext))', () => {
    // BLAKE3 test vector ("abc"), then the id of the pinned plaintext.
    expect(chunkDigestOf(Buffer.from('abc'), 'blake3').toString('hex')).toBe('6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85');
    expect(chunkIdOf(idKey, plain, 'blake3').toString('hex')).toBe(createHmac('sha256', idKey).update(chunkDigestOf(plain, 'blake3')).digest('hex'));
    expect(chunkIdOf(idKey, plain, 'blake3').toString('hex')).toBe('4cf31caba8f527120b734024bdc4a1b5dc8c1ed35fc7e01d1a21690cee7bb5f0');
  });

  it('a v1 sealed chunk still opens', () => {
    const sealed = readFileSync(new URL('./testdata/sealed-chunk-v1.bin', import.meta.url));
    expect(sealed.length).toBe(plain.length + 36);
    expect(sealed.subarray(0, 8).toString('hex')).toBe(Buffer.concat([Buffer.from('RSVC'), Buffer.from([1, 1, 0, 0])]).toString('hex'));
    expect(open(sealKey, chunkIdOf(idKey, plain), sealed).equals(plain)).toBe(true);
  });

  it('v1 wrapped keys still unwrap', () => {
    const w = readFileSync(new URL('./testdata/wrapped-keys-v1.bin', import.meta.url));
    const k = unwrapStoreKeys(w, master);
    expect(k.idKey.equals(idKey) && k.sealKey.equals(sealKey)).toBe(true);
  });
});

describe('keys and sealing', () => {
  it('wraps and unwraps store keys; a wrong master key or damage fails', () => {
    const keys = generateStoreKeys();
    expect(keys.chunkHash).toBe('blake3');
    const master = generateMasterKey();
    const w = wrapStoreKeys(keys, master);
    expect(w.length).toBe(WRAPPED_KEYS_V2_BYTES);
    expect(w[4]).toBe(2);
    const k = unwrapStoreKeys(w, master);
    expect(k.idKey.equals(keys.idKey) && k.sealKey.equals(keys.sealKey)).toBe(true);
    expect(k.chunkHash).toBe('blake3');
    const old = generateStoreKeys('sha256');
    const w1 = wrapStoreKeys(old, master);
    expect(w1.length).toBe(WRAPPED_KEYS_BYTES);
    expect(w1[4]).toBe(1);
    expect(unwrapStoreKeys(w1, master).chunkHash).toBeUndefined();
    expect(storeKeysFromBytes(storeKeysToBytes(keys))).toEqual(keys);
    expect(storeKeysToBytes(old).length).toBe(64);
    expect(() => storeKeysFromBytes(Buffer.concat([storeKeysToBytes(old), Buffer.from([9])]))).toThrow(expect.objectContaining({ code: 'KeyUnwrapFailed' }));
    expect(() => unwrapStoreKeys(w, generateMasterKey())).toThrow(expect.objectContaining({ code: 'KeyUnwrapFailed' }));
    const bad = Buffer.from(w);
    bad[40]! ^= 1;
    expect(() => unwrapStoreKeys(bad, master)).toThrow(expect.objectContaining({ code: 'KeyUnwrapFailed' }));
  });

  it('ids are keyed: same data, different stores → different ids', () => {
    const data = Buffer.from('hello');
    const a = generateStoreKeys();
    const b = generateStoreKeys();
    expect(chunkIdOf(a.idKey, data).equals(chunkIdOf(a.idKey, data))).toBe(true);
    expect(chunkIdOf(a.idKey, data).equals(chunkIdOf(b.idKey, data))).toBe(false);
  });

  it('seals with a random nonce; opens only with the right id and untouched bytes', () => {
    const keys = generateStoreKeys();
    const data = Buffer.alloc(200_000, 7);
    const id = chunkIdOf(keys.idKey, data);
    const s1 = seal(keys.sealKey, id, data);
    const s2 = seal(keys.sealKey, id, data);
    expect(s1.equals(s2)).toBe(false);
    expect(s1.subarray(0, 4).toString('latin1')).toBe('RSVC');
    expect(open(keys.sealKey, id, s1).equals(data)).toBe(true);
    const otherId = chunkIdOf(keys.idKey, Buffer.from('other'));
    expect(() => open(keys.sealKey, otherId, s1)).toThrow(/authentication/);
    for (const pos of [0, 5, 10, 30, 100_000, s1.length - 1]) {
      const bad = Buffer.from(s1);
      bad[pos]! ^= 0x80;
      expect(() => open(keys.sealKey, id, bad), `byte ${pos}`).toThrow();
    }
  });
});
