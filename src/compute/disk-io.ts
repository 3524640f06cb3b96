/**
 * Guest I/O on disk image files: plaintext reads/writes (through LUKS1 when encrypted), before-write hooks (the
 * engine's copy-on-write snapshots), the changed-block bitmap and its file stamp, bulk in-place conversion
 * raw ⇄ LUKS1, sparse copy. No ARM words here; the service passes rows in.
 */
import { link, open, stat, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { formatHeader, LuksVolume, readHeader, unlock, verifyMasterKey, SECTOR, type FormatOptions } from '../engine/index.js';
import { CBT_BLOCK_SIZE } from './model.js';

export interface FileStamp {
  size: number;
  mtimeMs: number;
  ino: number;
}

export async function stampOf(file: string): Promise<FileStamp | undefined> {
  try {
    const s = await stat(file, { bigint: false });
    return { size: s.size, mtimeMs: s.mtimeMs, ino: s.ino };
  } catch {
    return undefined;
  }
}

export function sameStamp(a: FileStamp | undefined, b: FileStamp | undefined): boolean {
  return !!a && !!b && a.size === b.size && a.ino === b.ino && Math.abs(a.mtimeMs - b.mtimeMs) < 0.001;
}

/** Sets bits for every 64 KiB block that [offset, offset+length) of the image file touches. */
export function markBits(bits: Buffer, offset: number, length: number): Buffer {
  if (length <= 0) return bits;
  const first = Math.floor(offset / CBT_BLOCK_SIZE);
  const last = Math.floor((offset + length - 1) / CBT_BLOCK_SIZE);
  let out = bits;
  if (out.length * 8 <= last) {
    out = Buffer.alloc(Math.ceil((last + 1) / 8));
    bits.copy(out);
  }
  for (let i = first; i <= last; i++) out[i >> 3] = out[i >> 3]! | (1 << (i & 7));
  return out;
}

export function bitmapBytesFor(imageSize: number): number {
  return Math.ceil(Math.ceil(imageSize / CBT_BLOCK_SIZE) / 8);
}

/** Resize a bitmap to `imageSize` (keeps bits, zero-fills new ones). */
export function fitBits(bits: Buffer, imageSize: number): Buffer {
  const n = bitmapBytesFor(imageSize);
  if (bits.length === n) return bits;
  const out = Buffer.alloc(n);
  bits.copy(out, 0, 0, Math.min(n, bits.length));
  return out;
}

export function dirtyBlocks(bits: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (bits[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

/** A disk opened for guest I/O: raw or an unlocked LUKS1 volume. Image-file coordinates are reported to `touched`. */
export class OpenDisk {
  private constructor(
    readonly fh: FileHandle,
    private readonly luks: LuksVolume | undefined,
  ) {}

  static async open(file: string, masterKey: Buffer | undefined, writable: boolean): Promise<OpenDisk> {
    const fh = await open(file, writable ? 'r+' : 'r');
    try {
      if (!masterKey) return new OpenDisk(fh, undefined);
      const h = await readHeader(fh);
      if (!(await verifyMasterKey(h, masterKey))) throw new Error('stored volume key does not match the LUKS header');
      return new OpenDisk(fh, new LuksVolume(fh, h, masterKey));
    } catch (e) {
      await fh.close();
      throw e;
    }
  }

  get payloadStart(): number {
    return this.luks?.payloadStart ?? 0;
  }

  async guestSize(): Promise<number> {
    if (this.luks) return this.luks.size();
    return (await this.fh.stat()).size;
  }

  /** The image-file byte range a guest write of [offset, offset+length) changes. */
  fileRange(offset: number, length: number): { offset: number; length: number } {
    if (!this.luks) return { offset, length };
    const s0 = Math.floor(offset / SECTOR);
    const s1 = Math.ceil((offset + length) / SECTOR);
    return { offset: this.payloadStart + s0 * SECTOR, length: (s1 - s0) * SECTOR };
  }

  async read(offset: number, length: number): Promise<Buffer> {
    if (this.luks) return this.luks.read(offset, length);
    const b = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await this.fh.read(b, done, length - done, offset + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return b;
  }

  async write(offset: number, data: Buffer): Promise<void> {
    if (this.luks) return this.luks.write(offset, data);
    let done = 0;
    while (done < data.length) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, offset + done);
      done += bytesWritten;
    }
  }

  async close(): Promise<void> {
    await this.fh.sync().catch(() => undefined);
    await this.fh.close();
  }
}

const CHUNK = 8 << 20;

async function readFull(fh: FileHandle, buf: Buffer, pos: number): Promise<number> {
  let done = 0;
  while (done < buf.length) {
    const { bytesRead } = await fh.read(buf, done, buf.length - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}
async function writeFull(fh: FileHandle, buf: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const { bytesWritten } = await fh.write(buf, done, buf.length - done, pos + done);
    done += bytesWritten;
  }
}
const ZEROS = Buffer.alloc(1 << 20);
/** All bytes zero? (memcmp against a shared zero page, 1 MiB at a time.) */
const isZero = (b: Buffer): boolean => {
  for (let i = 0; i < b.length; i += ZEROS.length) {
    const piece = b.subarray(i, Math.min(b.length, i + ZEROS.length));
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false;
  }
  return true;
};

/** Buffers in the conversion pipeline: one being read, one in the cipher, one being written. */
const DEPTH = 3;
const FLUSH_EVERY = 64 << 20;
/** Hole granularity of writeDecryptedCopy (all-zero pieces of this size stay unwritten). */
const HOLE = 4 << 20;

/**
 * Bulk conversion pipeline over [0, size) in CHUNK pieces: chunk i+1 is read and chunk i-1 written while chunk i
 * goes through `work` (synchronous, in place), so file I/O (libuv threads) overlaps the cipher (main thread). `read`
 * returns how many bytes it filled; `work` returns the piece to write, or undefined to skip writing it (holes). Writes
 * go to distinct offsets, so their order does not matter; every read/write in flight is settled before returning or
 * throwing (the caller closes the handles afterwards).
 */
async function pipeline(
  size: number,
  read: (buf: Buffer, pos: number) => Promise<number>,
  work: (piece: Buffer, pos: number) => Buffer | undefined,
  write: (piece: Buffer, pos: number) => Promise<void>,
  flush?: () => Promise<void>,
): Promise<void> {
  const count = Math.ceil(size / CHUNK);
  if (count === 0) return;
  const bufs = Array.from({ length: Math.min(DEPTH, count) }, () => Buffer.alloc(Math.min(CHUNK, size)));
  const writes: (Promise<void> | undefined)[] = new Array<Promise<void> | undefined>(bufs.length).fill(undefined);
  const pending = new Set<Promise<unknown>>();
  const track = <T>(p: Promise<T>): Promise<T> => {
    pending.add(p);
    const done = () => pending.delete(p);
    p.then(done, done);
    return p;
  };
  const startRead = async (i: number): Promise<number> => {
    const slot = i % bufs.length;
    await writes[slot]; // the buffer's previous chunk must be on its way to disk first
    return read(bufs[slot]!, i * CHUNK);
  };
  // Write-back while converting: a datasync every FLUSH_EVERY bytes written (one at a time) so the caller's final
  // sync has only the tail left instead of the whole image.
  let unflushed = 0;
  let flushing: Promise<void> | undefined;
  const written = (n: number) => {
    unflushed += n;
    if (!flush || flushing || unflushed < FLUSH_EVERY) return;
    unflushed = 0;
    flushing = track(flush()).finally(() => (flushing = undefined));
  };
  try {
    let next = track(startRead(0));
    for (let i = 0; i < count; i++) {
      const n = await next;
      if (i + 1 < count) next = track(startRead(i + 1));
      const slot = i % bufs.length;
      const out = work(bufs[slot]!.subarray(0, n), i * CHUNK);
      writes[slot] = out ? track(write(out, i * CHUNK).then(() => written(out.length))) : undefined;
    }
    await Promise.all(writes);
    await flushing;
  } catch (e) {
    await Promise.allSettled([...pending]);
    throw e;
  }
}

/** Copies `src` to `dst` leaving all-zero 1 MiB ranges as holes (sparse); returns the size. */
/** Copies `src` (a path, or a file already opened and checked by the caller, which keeps ownership of it) sparsely. */
export async function sparseCopy(src: string | FileHandle, dst: string): Promise<number> {
  const a = typeof src === 'string' ? await open(src, 'r') : src;
  const b = await open(dst, 'wx', 0o600).catch(async (e: unknown) => {
    if (typeof src === 'string') await a.close();
    throw e;
  });
  try {
    const size = (await a.stat()).size;
    const buf = Buffer.alloc(1 << 20);
    for (let pos = 0; pos < size; pos += buf.length) {
      const n = await readFull(a, buf, pos);
      const piece = buf.subarray(0, n);
      if (n % 8 === 0 && isZero(piece)) continue;
      await writeFull(b, piece, pos);
    }
    await b.truncate(size);
    await b.sync();
    return size;
  } finally {
    if (typeof src === 'string') await a.close();
    await b.close();
  }
}

const tmpName = (file: string) => `${file}.convert-${process.pid}-${randomBytes(4).toString('hex')}`;

/**
 * Conversion leftovers next to an image: `{image}.convert-{pid}-{hex}` (a new image being written) and
 * `{image}.convert-{pid}-{hex}.orig-{raw|luks1}` (a hard link of the original kept while the swap commits; the suffix
 * is the original's format).
 */
export const CONVERT_LEFTOVER = /^(.+)\.convert-\d+-[0-9a-f]+(?:\.orig-(raw|luks1))?$/;

/**
 * Raw → LUKS1, preserving data: writes a new file = LUKS header area (2 MiB) + the old bytes encrypted next to
 * `file` and returns its path (the original is untouched; the caller swaps it in with `swapImage`). The image grows
 * by the header size; the guest-visible size stays the same.
 */
export async function writeEncryptedCopy(file: string, passphrase: Buffer, o: FormatOptions = {}): Promise<{ tmp: string; masterKey: Buffer; payloadOffset: number }> {
  const tmp = tmpName(file);
  const src = await open(file, 'r');
  const dst = await open(tmp, 'wx', 0o600);
  try {
    const size = (await src.stat()).size;
    if (size % SECTOR !== 0) throw new Error(`image size ${size} is not a multiple of ${SECTOR}`);
    const { header, masterKey } = await formatHeader(dst, passphrase, o);
    const vol = new LuksVolume(dst, header, masterKey);
    await pipeline(
      size,
      (buf, pos) => readFull(src, buf.subarray(0, Math.min(CHUNK, size - pos)), pos),
      (piece, pos) => vol.encryptSectors(piece, pos / SECTOR),
      (piece, pos) => writeFull(dst, piece, vol.payloadStart + pos),
      () => dst.datasync(),
    );
    await dst.truncate(vol.payloadStart + size);
    await dst.sync();
    await dst.close();
    await src.close();
    return { tmp, masterKey, payloadOffset: header.payloadOffset };
  } catch (e) {
    await dst.close().catch(() => undefined);
    await src.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

/** LUKS1 → raw: writes the decrypted image (sparse) next to `file` and returns its path (see `writeEncryptedCopy`). */
export async function writeDecryptedCopy(file: string, masterKey: Buffer): Promise<string> {
  const tmp = tmpName(file);
  const src = await open(file, 'r');
  const dst = await open(tmp, 'wx', 0o600);
  try {
    const h = await readHeader(src);
    if (!(await verifyMasterKey(h, masterKey))) throw new Error('volume key does not match the LUKS header');
    const vol = new LuksVolume(src, h, masterKey);
    const size = await vol.size();
    await pipeline(
      size,
      async (buf, pos) => {
        const n = Math.min(CHUNK, size - pos);
        await readFull(src, buf.subarray(0, n), vol.payloadStart + pos);
        return n;
      },
      (piece, pos) => {
        vol.decryptSectors(piece, pos / SECTOR);
        return isZero(piece) ? undefined : piece;
      },
      async (piece, pos) => {
        // Holes at the same 4 MiB granularity as before the I/O chunk grew: all-zero 4 MiB pieces are not written.
        const parts: Promise<void>[] = [];
        for (let o = 0; o < piece.length; o += HOLE) {
          const part = piece.subarray(o, Math.min(piece.length, o + HOLE));
          if (!isZero(part)) parts.push(writeFull(dst, part, pos + o));
        }
        await Promise.all(parts);
      },
      () => dst.datasync(),
    );
    await dst.truncate(size);
    await dst.sync();
    await dst.close();
    await src.close();
    return tmp;
  } catch (e) {
    await dst.close().catch(() => undefined);
    await src.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r').catch(() => undefined);
  if (!fh) return;
  await fh.sync().catch(() => undefined);
  await fh.close().catch(() => undefined);
}

/**
 * Swaps a converted image (`tmp`, from writeEncryptedCopy / writeDecryptedCopy) in for `file` so that the image and
 * the metadata `commit` writes change together: the original is kept as a hard link (`{tmp}.orig-{origFormat}`), the
 * new image is renamed over `file`, `commit` runs (one database transaction), and only then is the original dropped.
 * If `commit` throws, the original is put back. After a crash, `recoverConversion` decides from the database which
 * side won (see CONVERT_LEFTOVER).
 */
export async function swapImage(file: string, tmp: string, origFormat: 'raw' | 'luks1', commit: () => Promise<void>): Promise<void> {
  const keep = `${tmp}.orig-${origFormat}`;
  try {
    await link(file, keep);
    await syncDir(path.dirname(file));
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  let swapped = false;
  try {
    await rename(tmp, file);
    swapped = true;
    await syncDir(path.dirname(file));
    await commit();
  } catch (e) {
    if (swapped) await rename(keep, file).catch(() => undefined);
    await unlink(keep).catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await unlink(keep).catch(() => undefined);
}

/**
 * Start-up: settles one conversion leftover next to `image` (see CONVERT_LEFTOVER). `dbFormat` is the image's format
 * in the database, undefined when no disk uses the image. A new image never swapped in is removed; a kept original
 * whose swap was not committed (the database still says its format) is renamed back over the image; one whose swap
 * was committed is removed. Returns what was done.
 */
export async function recoverConversion(leftover: string, image: string, dbFormat: 'raw' | 'luks1' | undefined): Promise<'removed' | 'rolled-back'> {
  const m = CONVERT_LEFTOVER.exec(path.basename(leftover));
  const origFormat = m?.[2] as 'raw' | 'luks1' | undefined;
  if (origFormat && dbFormat === origFormat) {
    // Not committed: the original wins. (rename is a no-op when both names are links of the same file.)
    await rename(leftover, image);
    await unlink(leftover).catch(() => undefined);
    await syncDir(path.dirname(image));
    return 'rolled-back';
  }
  await unlink(leftover).catch(() => undefined);
  return 'removed';
}

/**
 * Raw → LUKS1 in place (a crash leaves the original untouched). Returns the volume key. For disks with metadata to
 * commit together with the swap, use writeEncryptedCopy + swapImage.
 */
export async function encryptInPlace(file: string, passphrase: Buffer, o: FormatOptions = {}): Promise<{ masterKey: Buffer; payloadOffset: number }> {
  const { tmp, masterKey, payloadOffset } = await writeEncryptedCopy(file, passphrase, o);
  await rename(tmp, file).catch(async (e: unknown) => {
    await unlink(tmp).catch(() => undefined);
    throw e;
  });
  return { masterKey, payloadOffset };
}

/** LUKS1 → raw in place (a new sparse file renamed over the original). */
export async function decryptInPlace(file: string, masterKey: Buffer): Promise<void> {
  const tmp = await writeDecryptedCopy(file, masterKey);
  await rename(tmp, file).catch(async (e: unknown) => {
    await unlink(tmp).catch(() => undefined);
    throw e;
  });
}

/** Opens a LUKS1 image with a passphrase: the volume key, or throws LuksError. */
export async function unlockImage(file: string, passphrase: Buffer): Promise<{ masterKey: Buffer; payloadOffset: number }> {
  const fh = await open(file, 'r');
  try {
    const r = await unlock(fh, passphrase);
    return { masterKey: r.masterKey, payloadOffset: r.header.payloadOffset };
  } finally {
    await fh.close();
  }
}

export async function luksPayloadOffset(file: string): Promise<number | undefined> {
  const fh = await open(file, 'r');
  try {
    return (await readHeader(fh)).payloadOffset * SECTOR;
  } catch {
    return undefined;
  } finally {
    await fh.close();
  }
}
