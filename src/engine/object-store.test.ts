/**
 * Object-storage chunk stores against real local servers (Azurite for Azure Blob, s3rver for
 * S3), started as processes here: the conformance suite, the GC suite, geo-redundant
 * replication with the primary destroyed, and copying a store.
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AzureBlobBackend } from './azure-blob-store.js';
import { backupImage } from './backup.js';
import { copyStore } from './copy-store.js';
import { FsChunkStore } from './fs-store.js';
import { collectGarbage } from './gc.js';
import { readManifest, writeManifest } from './manifest.js';
import { ObjectChunkStore } from './object-store.js';
import { replicatedStore } from './replicate.js';
import { restoreImage } from './restore.js';
import { S3Backend } from './s3-store.js';
import { generateStoreKeys } from './seal.js';
import { runChunkStoreConformance } from './store-conformance.js';
import type { ChunkStore } from './store.js';
import { runGcSuite } from './testdata/gc-suite.js';
import { tempDir, writeImage } from './testdata/helpers.js';
import { AZURITE_KEY, S3RVER_KEY_ID, S3RVER_SECRET, startAzurite, startS3rver, type LocalServer } from './testdata/object-servers.js';
import { verifyManifest, verifyStore } from './verify.js';

let azurite: LocalServer;
let s3rver: LocalServer;
let blob: AzureBlobBackend;
let s3: S3Backend;

beforeAll(async () => {
  [azurite, s3rver] = await Promise.all([startAzurite(), startS3rver()]);
  blob = AzureBlobBackend.create({ url: azurite.url, accountKey: AZURITE_KEY, container: 'rsvault-test' });
  s3 = S3Backend.create({ endpoint: s3rver.url, bucket: 'rsvault-test', accessKeyId: S3RVER_KEY_ID, secretAccessKey: S3RVER_SECRET });
  await Promise.all([blob.ensure(), s3.ensure()]);
}, 60_000);

afterAll(async () => {
  await s3?.close();
  await Promise.all([azurite?.stop(), s3rver?.stop()]);
});

/** A fresh store: a unique key prefix in the shared container/bucket. */
const fresh = (backend: () => AzureBlobBackend | S3Backend) => async () => ({
  store: new ObjectChunkStore(backend(), `t${randomBytes(6).toString('hex')}/`) as ChunkStore,
  dispose: async () => undefined,
});

runChunkStoreConformance('azure blob (Azurite)', fresh(() => blob), { describe, it }, { raceRounds: 8 });
runChunkStoreConformance('s3 (s3rver)', fresh(() => s3), { describe, it }, { raceRounds: 8 });
runChunkStoreConformance('geo-redundant: azure blob → s3', async () => {
  const [a, b] = await Promise.all([fresh(() => blob)(), fresh(() => s3)()]);
  return { store: replicatedStore(a.store, b.store), dispose: async () => undefined };
}, { describe, it }, { raceRounds: 8 });

runGcSuite('azure blob (Azurite)', fresh(() => blob), { concurrencyRuns: 3 });
runGcSuite('s3 (s3rver)', fresh(() => s3), { concurrencyRuns: 3 });

const CS = 64 * 1024;

describe('geo-redundant store', () => {
  it('a backup to blob (primary) + fs (secondary) restores byte-identical after the primary container is deleted', async () => {
    const t = await tempDir();
    const container = `grs${randomBytes(5).toString('hex')}`;
    const primaryBackend = AzureBlobBackend.create({ url: azurite.url, accountKey: AZURITE_KEY, container });
    await primaryBackend.ensure();
    try {
      const primary = new ObjectChunkStore(primaryBackend, 'vaults/v1/');
      const secondary = await FsChunkStore.open(path.join(t.dir, 'secondary'));
      const store = replicatedStore(primary, secondary);
      const keys = generateStoreKeys();
      const data = await writeImage(path.join(t.dir, 'disk.img'), [['r', 10 * CS], ['z', 3 * CS], ['r', CS - 100]]);
      const { manifest } = await backupImage({ store, keys, source: path.join(t.dir, 'disk.img'), chunkSize: CS });
      await writeManifest(store, 'manifests/rp1/os.manifest', manifest);
      // Both copies are complete on their own.
      expect((await verifyManifest({ store: primary, keys, manifest })).ok).toBe(true);
      expect((await verifyManifest({ store: secondary, keys, manifest })).ok).toBe(true);

      await primaryBackend.destroy();
      await expect(primary.getMeta('manifests/rp1/os.manifest')).rejects.toMatchObject({ kind: 'NotFound' });
      const m = await readManifest(store, 'manifests/rp1/os.manifest');
      await restoreImage({ store, keys, manifest: m, target: path.join(t.dir, 'restored.img') });
      expect((await fsp.readFile(path.join(t.dir, 'restored.img'))).equals(data)).toBe(true);
    } finally {
      await primaryBackend.destroy().catch(() => undefined);
      await t.dispose();
    }
  });

  it('a write fails unless both stores take it (no silent single copy)', async () => {
    const t = await tempDir();
    const container = `grs${randomBytes(5).toString('hex')}`;
    const secondaryBackend = AzureBlobBackend.create({ url: azurite.url, accountKey: AZURITE_KEY, container });
    await secondaryBackend.ensure();
    try {
      const primary = await FsChunkStore.open(path.join(t.dir, 'primary'));
      const store = replicatedStore(primary, new ObjectChunkStore(secondaryBackend, ''));
      await store.putMeta('manifests/x', Buffer.from('both'));
      await secondaryBackend.destroy();
      await expect(store.putMeta('manifests/y', Buffer.from('one'))).rejects.toMatchObject({ kind: 'NotFound' });
      await expect(store.putIfAbsent('cd'.repeat(32), Buffer.from('z'))).rejects.toThrow();
    } finally {
      await t.dispose();
    }
  });
});

describe('copyStore', () => {
  it('copies every chunk, fossil and manifest from fs to s3, verified; the copy restores and GC goes on from the copied generation', async () => {
    const t = await tempDir();
    try {
      const src = await FsChunkStore.open(path.join(t.dir, 'vault', 'store'), { metaDir: path.join(t.dir, 'vault') });
      const keys = generateStoreKeys();
      const data = await writeImage(path.join(t.dir, 'a.img'), [['r', 5 * CS]]);
      await writeImage(path.join(t.dir, 'b.img'), [['r', 2 * CS]]);
      const a = (await backupImage({ store: src, keys, source: path.join(t.dir, 'a.img'), chunkSize: CS })).manifest;
      await backupImage({ store: src, keys, source: path.join(t.dir, 'b.img'), chunkSize: CS });
      await writeManifest(src, 'manifests/1/os.manifest', a);
      const g = await collectGarbage({ store: src, liveManifests: [a], cutoff: new Date(), safetyMarginMs: 0 });
      expect(g.fossilized).toBe(2);

      const dst = new ObjectChunkStore(s3, `copy${randomBytes(4).toString('hex')}/vaults/v/`);
      const stats = await copyStore(src, dst);
      expect(stats).toMatchObject({ chunks: 5, fossils: 2, meta: 2, alreadyPresent: 0 }); // manifest + gc/fossils
      // Idempotent: a second run finds everything in place.
      expect(await copyStore(src, dst)).toMatchObject({ chunks: 5, fossils: 2, alreadyPresent: 5 }); // fossils are rewritten (they are not live on either side)
      const m = await readManifest(dst, 'manifests/1/os.manifest');
      await restoreImage({ store: dst, keys, manifest: m, target: path.join(t.dir, 'r.img') });
      expect((await fsp.readFile(path.join(t.dir, 'r.img'))).equals(data)).toBe(true);
      expect((await verifyStore({ store: dst, keys })).bad).toEqual([]);
      // The copied fossil index lets the next GC finish the generation the fs store started.
      expect(await collectGarbage({ store: dst, liveManifests: [m], cutoff: new Date(), safetyMarginMs: 0 })).toMatchObject({ swept: 2, marked: 5 });
    } finally {
      await t.dispose();
    }
  });
});
