/**
 * Image sources and point-in-time snapshots.
 *
 * A backup reads an {@link ImageSource}. A plain file is one (`openFileSource`) — fine for an
 * image nobody writes to. For a disk in use, `createSnapshot` gives a point-in-time source:
 * - `reflink`: a copy-on-write clone made by the filesystem (`COPYFILE_FICLONE_FORCE`; btrfs,
 *   XFS with reflink, bcachefs...). Instant, independent of later writes.
 * - `cow`: where the filesystem cannot clone (ext4), a side file keeps the "before" content of
 *   every 64 KiB block the guest overwrites while the snapshot lives. The writer of the live file
 *   (compute's guest I/O) must `await snapshot.beforeWrite(offset, length)` before each write;
 *   reads take preserved blocks from the side file and all others from the live file. A read in
 *   progress on a block delays that block's preservation until the read is done, so a reader
 *   never sees new data.
 * In both modes the caller quiesces writes while `createSnapshot` runs and calls `release()` when
 * the backup is done (deletes the clone / side file).
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { EngineError } from './errors.js';
import { BITMAP_BLOCK_SIZE } from './bitmap.js';

export interface ImageSource {
  /** Image size in bytes, fixed for the source's lifetime. */
  readonly size: number;
  /** Read up to `buf.length` bytes at `offset` (fewer only at the end of the image). */
  read(buf: Uint8Array, offset: number): Promise<number>;
  close(): Promise<void>;
}

async function preadFull(fh: FileHandle, buf: Uint8Array, bufOff: number, len: number, pos: number): Promise<number> {
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(buf, bufOff + done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

class FileSource implements ImageSource {
  constructor(
    private readonly fh: FileHandle,
    readonly size: number,
  ) {}
  async read(buf: Uint8Array, offset: number): Promise<number> {
    const len = Math.max(0, Math.min(buf.length, this.size - offset));
    return preadFull(this.fh, buf, 0, len, offset);
  }
  async close(): Promise<void> {
    await this.fh.close();
  }
}

/** A plain file (or block device) as an image source. */
export async function openFileSource(file: string): Promise<ImageSource> {
  const fh = await fsp.open(file, 'r');
  try {
    const st = await fh.stat();
    let size = st.size;
    if (st.isBlockDevice()) {
      // Block devices report size 0 in stat; find the end by seeking with reads.
      size = await blockDeviceSize(fh);
    }
    return new FileSource(fh, size);
  } catch (err) {
    await fh.close();
    throw err;
  }
}

async function blockDeviceSize(fh: FileHandle): Promise<number> {
  // Binary search for the end of the device with 1-byte reads (no ioctl in Node).
  const probe = Buffer.alloc(1);
  let lo = 0;
  let hi = 1;
  while ((await fh.read(probe, 0, 1, hi - 1)).bytesRead === 1) {
    lo = hi;
    hi *= 2;
  }
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if ((await fh.read(probe, 0, 1, mid - 1)).bytesRead === 1) lo = mid;
    else hi = mid;
  }
  return lo;
}

export type SnapshotMode = 'auto' | 'reflink' | 'cow';

export interface Snapshot extends ImageSource {
  readonly kind: 'reflink' | 'cow';
  readonly livePath: string;
  /** Must be awaited by the live file's writer before it overwrites [offset, offset+length). */
  beforeWrite(offset: number, length: number): Promise<void>;
  /** Close and delete the clone or side file. Idempotent. */
  release(): Promise<void>;
}

export interface SnapshotOptions {
  /** 'auto' (default): reflink if the filesystem can, else cow. */
  mode?: SnapshotMode;
  /** Where the clone / side file goes (default: next to the live file; must be the same filesystem for reflink). */
  dir?: string;
}

export async function createSnapshot(livePath: string, options: SnapshotOptions = {}): Promise<Snapshot> {
  const mode = options.mode ?? 'auto';
  const dir = options.dir ?? path.dirname(livePath);
  const base = `${path.basename(livePath)}.snap-${randomBytes(6).toString('hex')}`;
  if (mode !== 'cow') {
    const clone = path.join(dir, base);
    try {
      await fsp.copyFile(livePath, clone, fsc.COPYFILE_FICLONE_FORCE);
      const src = await openFileSource(clone);
      return new ReflinkSnapshot(livePath, clone, src);
    } catch (err) {
      await fsp.rm(clone, { force: true }).catch(() => undefined);
      if (mode === 'reflink') {
        throw new EngineError('SnapshotFailed', `cannot reflink-clone ${livePath}: ${(err as Error).message}`, {}, { cause: err });
      }
    }
  }
  const live = await fsp.open(livePath, 'r');
  try {
    const size = (await live.stat()).size;
    const sidePath = path.join(dir, `${base}.cow`);
    const side = await fsp.open(sidePath, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    return new CowSnapshot(livePath, sidePath, live, side, size);
  } catch (err) {
    await live.close();
    throw new EngineError('SnapshotFailed', `cannot snapshot ${livePath}: ${(err as Error).message}`, {}, { cause: err });
  }
}

class ReflinkSnapshot implements Snapshot {
  readonly kind = 'reflink' as const;
  private released = false;
  constructor(
    readonly livePath: string,
    private readonly clonePath: string,
    private readonly src: ImageSource,
  ) {}
  get size(): number {
    return this.src.size;
  }
  read(buf: Uint8Array, offset: number): Promise<number> {
    return this.src.read(buf, offset);
  }
  async beforeWrite(): Promise<void> {}
  async close(): Promise<void> {
    await this.release();
  }
  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await this.src.close();
    await fsp.rm(this.clonePath, { force: true });
  }
}

class CowSnapshot implements Snapshot {
  readonly kind = 'cow' as const;
  /** One bit per block: its old content is in the side file. */
  private readonly preserved: Uint8Array;
  private readonly preserving = new Map<number, Promise<void>>();
  private readonly readers = new Map<number, number>();
  private readonly readerWaiters = new Map<number, Array<() => void>>();
  private released = false;

  constructor(
    readonly livePath: string,
    private readonly sidePath: string,
    private readonly live: FileHandle,
    private readonly side: FileHandle,
    readonly size: number,
  ) {
    this.preserved = new Uint8Array(Math.ceil(Math.ceil(size / BITMAP_BLOCK_SIZE) / 8));
  }

  private isPreserved(b: number): boolean {
    return ((this.preserved[b >> 3] ?? 0) & (1 << (b & 7))) !== 0;
  }

  async beforeWrite(offset: number, length: number): Promise<void> {
    if (this.released || length <= 0) return;
    const end = Math.min(this.size, offset + length);
    if (offset >= end) return;
    const first = Math.floor(offset / BITMAP_BLOCK_SIZE);
    const last = Math.floor((end - 1) / BITMAP_BLOCK_SIZE);
    const work: Promise<void>[] = [];
    for (let b = first; b <= last; b++) {
      if (this.isPreserved(b)) continue;
      const inProgress = this.preserving.get(b);
      if (inProgress) {
        work.push(inProgress);
        continue;
      }
      // Synchronously claim the block so new readers wait for its preservation.
      const p = this.preserveBlock(b);
      this.preserving.set(b, p);
      work.push(p);
    }
    await Promise.all(work);
  }

  private async preserveBlock(b: number): Promise<void> {
    while ((this.readers.get(b) ?? 0) > 0) {
      await new Promise<void>((resolve) => {
        const list = this.readerWaiters.get(b) ?? [];
        list.push(resolve);
        this.readerWaiters.set(b, list);
      });
    }
    const pos = b * BITMAP_BLOCK_SIZE;
    const len = Math.min(BITMAP_BLOCK_SIZE, this.size - pos);
    const buf = Buffer.allocUnsafe(len);
    const n = await preadFull(this.live, buf, 0, len, pos);
    let w = 0;
    while (w < n) w += (await this.side.write(buf, w, n - w, pos + w)).bytesWritten;
    this.preserved[b >> 3]! |= 1 << (b & 7);
    this.preserving.delete(b);
  }

  private endRead(first: number, last: number): void {
    for (let b = first; b <= last; b++) {
      const n = (this.readers.get(b) ?? 1) - 1;
      if (n > 0) {
        this.readers.set(b, n);
        continue;
      }
      this.readers.delete(b);
      const waiters = this.readerWaiters.get(b);
      if (waiters) {
        this.readerWaiters.delete(b);
        for (const w of waiters) w();
      }
    }
  }

  async read(buf: Uint8Array, offset: number): Promise<number> {
    if (this.released) throw new EngineError('InvalidArgument', 'snapshot was released');
    const end = Math.min(this.size, offset + buf.length);
    let pos = offset;
    while (pos < end) {
      const b = Math.floor(pos / BITMAP_BLOCK_SIZE);
      const pending = this.preserving.get(b);
      if (pending) await pending;
      if (this.isPreserved(b)) {
        const runEnd = Math.min(end, (b + 1) * BITMAP_BLOCK_SIZE);
        await preadFull(this.side, buf, pos - offset, runEnd - pos, pos);
        pos = runEnd;
        continue;
      }
      // A run of blocks still live: register as readers (synchronously, before any await).
      let lastB = b;
      while ((lastB + 1) * BITMAP_BLOCK_SIZE < end && !this.isPreserved(lastB + 1) && !this.preserving.has(lastB + 1)) lastB++;
      for (let x = b; x <= lastB; x++) this.readers.set(x, (this.readers.get(x) ?? 0) + 1);
      const runEnd = Math.min(end, (lastB + 1) * BITMAP_BLOCK_SIZE);
      try {
        await preadFull(this.live, buf, pos - offset, runEnd - pos, pos);
      } finally {
        this.endRead(b, lastB);
      }
      pos = runEnd;
    }
    return Math.max(0, end - offset);
  }

  async close(): Promise<void> {
    await this.release();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    await Promise.allSettled([...this.preserving.values()]);
    await this.live.close().catch(() => undefined);
    await this.side.close().catch(() => undefined);
    await fsp.rm(this.sidePath, { force: true });
  }
}
