import { readFileSync } from 'node:fs';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EngineError } from './errors.js';
import { FsChunkStore } from './fs-store.js';
import { decodeIndexFile, encodeIndexFile, readIndexFile, writeIndexFile } from './index-file.js';
import { bindingOf, manifestKeyOf, writeFileExclusive } from './manifest-auth.js';
import { Manifest, decodeManifest, encodeManifest, readManifestFile, writeManifestFile } from './manifest.js';
import { listQuarantine, quarantineChunk } from './quarantine.js';
import { chunkIdOf, generateStoreKeys, seal } from './seal.js';
import { GOLDEN_MAC, GOLDEN_V2, goldenV1Digest } from './testdata/golden.js';
import { tempDir } from './testdata/helpers.js';

const codeOf = (f: () => unknown): string | undefined => {
  try {
    f();
  } catch (e) {
    return e instanceof EngineError ? e.code : `other: ${String(e)}`;
  }
  return undefined;
};

describe('manifest version 2 (authenticated) golden files', () => {
  for (const [name, make] of GOLDEN_V2) {
    it(`${name}: byte-identical, decodes only with the key and binding`, () => {
      const golden = readFileSync(new URL(`./testdata/${name}`, import.meta.url));
      const m = make();
      expect(encodeManifest(m, GOLDEN_MAC).equals(golden)).toBe(true);
      expect(golden.readUInt16LE(8)).toBe(2);
      const d = decodeManifest(golden, GOLDEN_MAC);
      expect(d.version).toBe(2);
      expect(d.authenticated).toBe(true);
      expect(Buffer.from(d.ids).equals(Buffer.from(m.ids))).toBe(true);
      expect(d.diskSize).toBe(m.diskSize);
      expect(d.chunkHash).toBe(m.chunkHash);
      expect(d.trailer?.equals(golden.subarray(golden.length - 32))).toBe(true);
    });
  }

  it('version 2 differs from version 1 only in the version field and the trailer', () => {
    const v1 = readFileSync(new URL('./testdata/manifest-v1-digest.bin', import.meta.url));
    const v2 = readFileSync(new URL('./testdata/manifest-v2-digest.bin', import.meta.url));
    expect(v1.subarray(10, v1.length - 32).equals(v2.subarray(10, v2.length - 32))).toBe(true);
    expect(v1.readUInt16LE(8)).toBe(1);
  });

  it('old (version 1) manifests stay readable and are reported as unauthenticated, with or without a key', () => {
    const v1 = readFileSync(new URL('./testdata/manifest-v1-digest.bin', import.meta.url));
    for (const m of [decodeManifest(v1), decodeManifest(v1, GOLDEN_MAC)]) {
      expect(m.version).toBe(1);
      expect(m.authenticated).toBe(false);
    }
  });
});

describe('manifest authentication: binding, key, tampering', () => {
  const keys = generateStoreKeys();
  const key = manifestKeyOf(keys);
  const binding = (rp: string, item: string, disk: string) => bindingOf([['rp', rp], ['item', item], ['disk', disk]]);
  const m = goldenV1Digest();

  it('the MAC key is derived, not the chunk id key or the seal key', () => {
    expect(key).toHaveLength(32);
    expect(key.equals(keys.idKey)).toBe(false);
    expect(key.equals(keys.sealKey)).toBe(false);
    expect(manifestKeyOf(keys).equals(key)).toBe(true);
    expect(manifestKeyOf(generateStoreKeys()).equals(key)).toBe(false);
  });

  it('a manifest under another recovery point, item or disk, another store key, or with a flipped byte fails with ManifestAuthenticationFailed', () => {
    const data = encodeManifest(m, { key, binding: binding('rp1', 'itemA', 'os') });
    expect(decodeManifest(data, { key, binding: binding('rp1', 'itemA', 'os') }).authenticated).toBe(true);
    expect(codeOf(() => decodeManifest(data, { key, binding: binding('rp2', 'itemA', 'os') }))).toBe('ManifestAuthenticationFailed'); // moved / rolled back into a newer point
    expect(codeOf(() => decodeManifest(data, { key, binding: binding('rp1', 'itemB', 'os') }))).toBe('ManifestAuthenticationFailed'); // VM A's over VM B's
    expect(codeOf(() => decodeManifest(data, { key, binding: binding('rp1', 'itemA', 'lun0') }))).toBe('ManifestAuthenticationFailed'); // another disk
    expect(codeOf(() => decodeManifest(data, { key: manifestKeyOf(generateStoreKeys()), binding: binding('rp1', 'itemA', 'os') }))).toBe('ManifestAuthenticationFailed');
    expect(codeOf(() => decodeManifest(data))).toBe('ManifestAuthenticationFailed'); // no key: refused, not silently trusted
    expect(decodeManifest(data, undefined, { unauthenticated: true }).authenticated).toBe(false);
    for (let i = 0; i < data.length; i += 5) {
      const bad = Buffer.from(data);
      bad[i]! ^= 0x01;
      const c = codeOf(() => decodeManifest(bad, { key, binding: binding('rp1', 'itemA', 'os') }));
      expect(['ManifestAuthenticationFailed', 'ManifestCorrupted'], `byte ${i}`).toContain(c);
    }
    // A version-1 manifest forged with a recomputed SHA-256 is readable but never "authenticated".
    expect(decodeManifest(encodeManifest(m), { key, binding: binding('rp1', 'itemA', 'os') }).authenticated).toBe(false);
  });

  it('bindings are unambiguous: a field cannot smuggle a newline or "="', () => {
    expect(() => bindingOf([['rp', 'a\nitem=b']])).toThrow(EngineError);
    expect(bindingOf([['rp', '1'], ['disk', 'os']])).toBe('rp=1\ndisk=os');
  });
});

describe('exclusive writes: a collision is detected, never an overwrite', () => {
  it('a second manifest written to the same name fails with AlreadyExists and the first stays intact', async () => {
    const t = await tempDir();
    try {
      const keys = generateStoreKeys();
      const mac = { key: manifestKeyOf(keys), binding: 'rp=1\nitem=A\ndisk=os' };
      const file = path.join(t.dir, 'os.manifest');
      const a = goldenV1Digest();
      const trailer = await writeManifestFile(file, a, { mac, exclusive: true });
      const b = new Manifest(a.diskSize, a.chunkSize, new Uint8Array(a.ids.length).fill(7), undefined);
      const err = await writeManifestFile(file, b, { mac: { ...mac, binding: 'rp=1\nitem=B\ndisk=os' }, exclusive: true }).then(() => undefined, (e: unknown) => e);
      expect(err).toBeInstanceOf(EngineError);
      expect((err as EngineError).code).toBe('AlreadyExists');
      const back = await readManifestFile(file, mac);
      expect(Buffer.from(back.ids).equals(Buffer.from(a.ids))).toBe(true);
      expect(back.trailer?.equals(trailer)).toBe(true);
      expect((await readdir(t.dir)).sort()).toEqual(['os.manifest']); // no temp left behind
      await writeFileExclusive(path.join(t.dir, 'x'), Buffer.from('1'));
      await expect(writeFileExclusive(path.join(t.dir, 'x'), Buffer.from('2'))).rejects.toMatchObject({ code: 'AlreadyExists' });
      expect(await readFile(path.join(t.dir, 'x'), 'utf8')).toBe('1');
    } finally {
      await t.dispose();
    }
  });
});

describe('index file', () => {
  it('round-trips, is bound to its binding and key, and is never overwritten', async () => {
    const t = await tempDir();
    try {
      const key = manifestKeyOf(generateStoreKeys());
      const payload = { recoveryPointId: '42', disks: [{ manifest: 'os.manifest' }] };
      const data = encodeIndexFile(payload, { key, binding: 'rp=42' });
      expect(decodeIndexFile(data, { key, binding: 'rp=42' })).toEqual(payload);
      expect(codeOf(() => decodeIndexFile(data, { key, binding: 'rp=43' }))).toBe('ManifestAuthenticationFailed');
      const bad = Buffer.from(data);
      bad[20]! ^= 1;
      expect(codeOf(() => decodeIndexFile(bad, { key, binding: 'rp=42' }))).toBe('ManifestAuthenticationFailed');
      expect(codeOf(() => decodeIndexFile(data.subarray(0, 20), { key, binding: 'rp=42' }))).toBe('ManifestCorrupted');
      const file = path.join(t.dir, 'index');
      await writeIndexFile(file, payload, { key, binding: 'rp=42' });
      await expect(writeIndexFile(file, { other: 1 }, { key, binding: 'rp=42' })).rejects.toMatchObject({ code: 'AlreadyExists' });
      expect(await readIndexFile(file, { key, binding: 'rp=42' })).toEqual(payload);
    } finally {
      await t.dispose();
    }
  });
});

describe('quarantine', () => {
  it('moves a chunk out of the store namespace: touch no longer finds it and a put stores it again', async () => {
    const t = await tempDir();
    try {
      const keys = generateStoreKeys();
      const store = await FsChunkStore.open(path.join(t.dir, 'store'));
      const plain = Buffer.alloc(65536, 3);
      const id = chunkIdOf(keys.idKey, plain, keys.chunkHash);
      const hex = id.toString('hex');
      await store.putIfAbsent(hex, seal(keys.sealKey, id, plain));
      await store.sync();
      // Damage it on disk.
      const file = path.join(t.dir, 'store', 'chunks', hex.slice(0, 4), hex);
      const bytes = await readFile(file);
      bytes[30]! ^= 0xff;
      await writeFile(file, bytes);
      expect(await quarantineChunk(store, hex)).toBe('quarantined');
      expect(await store.touch(hex)).toBe(false);
      expect(await listQuarantine(store)).toEqual([hex]);
      expect(await quarantineChunk(store, hex)).toBe('absent');
      expect(await store.putIfAbsent(hex, seal(keys.sealKey, id, plain))).toBe(true);
    } finally {
      await t.dispose();
    }
  });
});
