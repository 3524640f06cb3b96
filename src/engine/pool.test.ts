import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { CryptoPool, InlineCrypto, LentSlotPool, SlotPool, WorkerTaskError, compactForMessage, spareSlotBytes, type CryptoRunner } from './pool.js';
import { SEAL_OVERHEAD, chunkIdOf, generateStoreKeys, open } from './seal.js';
import { addressMod } from './native.js';

const pool = new CryptoPool(1);
afterAll(async () => pool.close());

describe('worker messages', () => {
  it('sends small fields as compact copies (a view would clone its whole ArrayBuffer)', () => {
    const ids = Buffer.alloc(32 * 1000, 7);
    const idView = Buffer.from(ids.buffer, ids.byteOffset + 32 * 5, 32);
    const pooledKey = Buffer.from('11'.repeat(32), 'hex'); // a slice of Node's 8 KiB pool
    const msg = compactForMessage({ op: 'open', id: idView, sealKey: pooledKey, idKey: new Uint8Array(32), seq: 1 });
    expect(msg.id.buffer.byteLength).toBe(32);
    expect(Buffer.from(msg.id).equals(idView)).toBe(true);
    expect(msg.sealKey.buffer.byteLength).toBe(32);
    expect(Buffer.from(msg.sealKey).equals(pooledKey)).toBe(true);
    expect(msg.seq).toBe(1);
    // The caller's views are untouched.
    expect(idView.buffer).toBe(ids.buffer);
  });
});

describe.each<[string, () => CryptoRunner]>([
  ['worker', () => pool],
  ['inline', () => new InlineCrypto()],
])('lent output slots (%s)', (_name, runner) => {
  it('seal and open through lent slots round-trip and the slots come back usable', async () => {
    const keys = generateStoreKeys();
    const len = 200_000;
    const inPool = new SlotPool(1, len + SEAL_OVERHEAD);
    const out = new LentSlotPool(1, len + SEAL_OVERHEAD);
    const plain = randomBytes(len);
    inPool.buffer(0, len).set(plain);
    for (let round = 0; round < 3; round++) {
      const slot = await out.acquire();
      const r = await runner().run({ op: 'hash', idKey: keys.idKey, hash: 'blake3', sealKey: keys.sealKey, src: inPool.ref(0, len), dst: out.ref(slot, len + SEAL_OVERHEAD) });
      out.adopt(slot, r.out);
      expect(r.sealedLen).toBe(len + SEAL_OVERHEAD);
      const id = chunkIdOf(keys.idKey, plain, 'blake3');
      expect(Buffer.from(r.id ?? []).equals(id)).toBe(true);
      expect(open(keys.sealKey, id, out.buffer(slot, len + SEAL_OVERHEAD)).equals(plain)).toBe(true);
      out.release(slot);
    }
  });

  it('a slot whose buffer was lost with a failed request is replaced on release', async () => {
    const keys = generateStoreKeys();
    const sealed = new SlotPool(1, 64 + SEAL_OVERHEAD);
    const out = new LentSlotPool(1, 64);
    const slot = await out.acquire();
    await expect(
      runner().run({ op: 'open', sealKey: keys.sealKey, id: Buffer.alloc(32, 1), src: sealed.ref(0, 64 + SEAL_OVERHEAD), dst: out.ref(slot, 64) }),
    ).rejects.toBeInstanceOf(WorkerTaskError);
    out.release(slot);
    const again = await out.acquire();
    expect(out.buffer(again).length).toBe(64);
    out.buffer(again).fill(1);
    out.release(again);
  });
});

describe('slot memory between jobs', () => {
  // A fresh slot pays a page fault per 4 KiB on first touch (≈ 25 ms per 4 MiB on the reference VM): a finished
  // job gives its slots back and the next job of the same slot size takes them (bench/README.md, item 2).
  it('a disposed pool\'s memory serves the next pool of the same slot size, aligned again', async () => {
    const size = 3 * 65536 + 4096;
    const a = new SlotPool(2, size, 4096);
    const la = new LentSlotPool(2, size + SEAL_OVERHEAD, 4096);
    const sabs = [a.ref(0, 1).sab, a.ref(1, 1).sab];
    const bufs = [la.ref(0, 1).sab, la.ref(1, 1).sab];
    const before = spareSlotBytes();
    a.dispose();
    la.dispose();
    expect(spareSlotBytes()).toBeGreaterThanOrEqual(before + 2 * size + 2 * (size + SEAL_OVERHEAD));
    const b = new SlotPool(2, size, 4096);
    const lb = new LentSlotPool(2, size + SEAL_OVERHEAD, 4096);
    expect(sabs).toContain(b.ref(0, 1).sab);
    expect(sabs).toContain(b.ref(1, 1).sab);
    expect(bufs).toContain(lb.ref(0, 1).sab);
    expect(bufs).toContain(lb.ref(1, 1).sab);
    if (b.aligned) expect(addressMod(b.buffer(1, 1), 4096)).toBe(0);
    if (lb.aligned) expect(addressMod(lb.buffer(1, 1), 4096)).toBe(0);
    // Another slot size does not take them.
    const c = new SlotPool(1, size + 65536);
    expect(sabs).not.toContain(c.ref(0, 1).sab);
    b.dispose();
    lb.dispose();
  });

  it('a buffer detached with a request that never came back is not kept', async () => {
    const size = 5 * 65536;
    const p = new LentSlotPool(1, size);
    const { sab } = p.ref(0, 1);
    const { port1, port2 } = new MessageChannel();
    port1.postMessage(sab, [sab as ArrayBuffer]); // what a worker request does with it
    port1.close();
    port2.close();
    const before = spareSlotBytes();
    p.dispose();
    expect(spareSlotBytes()).toBe(before);
  });
});
