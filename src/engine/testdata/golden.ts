/** The manifests pinned by testdata/*.bin (see manifest.test.ts). Deterministic by construction. */
import { createHash } from 'node:crypto';
import { Manifest } from '../manifest.js';

function fakeId(i: number): Buffer {
  return createHash('sha256').update(`chunk ${i}`).digest();
}

/** 3 full 64 KiB chunks + a 100-byte tail; chunk 1 is a hole; with an image digest. */
export function goldenV1Digest(): Manifest {
  const chunkSize = 64 * 1024;
  const diskSize = 3 * chunkSize + 100;
  const ids = new Uint8Array(4 * 32);
  for (const i of [0, 2, 3]) ids.set(fakeId(i), i * 32);
  return new Manifest(diskSize, chunkSize, ids, createHash('sha256').update('image').digest());
}

/** 2 chunks of 4 MiB, no image digest (a bitmap incremental). */
export function goldenV1NoDigest(): Manifest {
  const ids = new Uint8Array(2 * 32);
  ids.set(fakeId(7), 0);
  ids.set(fakeId(8), 32);
  return new Manifest(8 * 1024 * 1024, 4 * 1024 * 1024, ids, undefined);
}

/** An empty image. */
export function goldenV1Empty(): Manifest {
  return new Manifest(0, 4 * 1024 * 1024, new Uint8Array(0), createHash('sha256').update('').digest());
}

/** As goldenV1Digest, from a BLAKE3 store (flag bit 1; the digest field is opaque here). */
export function goldenV1Blake3(): Manifest {
  const m = goldenV1Digest();
  return new Manifest(m.diskSize, m.chunkSize, m.ids, m.imageDigest, 'blake3');
}

export const GOLDEN: Array<[string, () => Manifest]> = [
  ['manifest-v1-digest.bin', goldenV1Digest],
  ['manifest-v1-blake3.bin', goldenV1Blake3],
  ['manifest-v1-nodigest.bin', goldenV1NoDigest],
  ['manifest-v1-empty.bin', goldenV1Empty],
];

/** The key and binding of the version-2 (authenticated) goldens: fixed so the bytes are pinned. */
export const GOLDEN_MAC = {
  key: createHash('sha256').update('golden manifest key').digest(),
  binding: 'rp=1234567890123\nitem=vault|vm;iaasvmcontainerv2;rg;vm1\ndisk=os',
};

/** Version 2: the same manifests with an HMAC trailer bound to GOLDEN_MAC.binding. */
export const GOLDEN_V2: Array<[string, () => Manifest]> = [
  ['manifest-v2-digest.bin', goldenV1Digest],
  ['manifest-v2-blake3.bin', goldenV1Blake3],
  ['manifest-v2-empty.bin', goldenV1Empty],
];
