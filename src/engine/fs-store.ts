/**
 * Filesystem chunk store.
 *
 * Layout under `root`:
 * ```
 * chunks/<first 4 hex of id>/<id>          committed objects (fan-out: at most 65,536 directories)
 * chunks/<first 4 hex of id>/.tmp-<id>-<r> an object being written (never listed; GC removes old ones)
 * trash/<id>                               a fossil (GC's two-step delete, see gc.ts)
 * <metaDir>/<name>                         metadata objects (default <root>/meta; a vault keeps its
 *                                          manifests beside the store: metaDir = the vault's dir)
 * ```
 * Writes: temp file (O_EXCL) → write → fdatasync → rename over the final name. The directory
 * holding the new name is remembered and fsynced by `sync()` (the commit point), together with
 * `chunks/` when a fan-out directory was created. When the caller's buffer is aligned
 * (`PutOptions.alignedTail`) the write uses O_DIRECT: the bytes go from the caller's memory to the
 * device without a page-cache copy (padded to 4 KiB, then truncated to size; fdatasync still
 * follows, for the file's metadata and the device cache). The caller's buffer is released
 * (`onDataTaken`) as soon as the write returned; the fdatasync and the rename run
 * while the caller goes on (at most `maxPendingObjects` at once), so the disk writes back one
 * chunk while the CPU seals the next, instead of after the last one. A name never appears before
 * its bytes are durable: a crash (even a power cut) leaves only temp files, never a named chunk
 * with unwritten data that a later backup would dedup against. While an object is pending,
 * every operation on its id waits for it first.
 *
 * Fossils: `fossilize` renames a chunk into `trash/`, `resurrect` renames it back; both are atomic,
 * so a chunk is always in one of the two places while GC and readers race. Any read that misses
 * a chunk also looks in `trash/` and moves it back.
 */
import { constants as fsc, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FileHandle } from 'node:fs/promises';
import { ChunkStoreError } from './errors.js';
import { addressMod } from './native.js';
import { Semaphore } from './store-wrappers.js';
import { assertChunkId, assertMetaName, assertMetaPrefix, isChunkId, isMetaName, type ChunkStat, type ChunkStore, type DeleteResult, type PutOptions } from './store.js';

const TRANSIENT_CODES = new Set(['EAGAIN', 'EBUSY', 'EMFILE', 'ENFILE', 'EINTR', 'ETIMEDOUT', 'ECONNRESET']);

function errCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

function classify(err: unknown, what: string): ChunkStoreError {
  if (err instanceof ChunkStoreError) return err;
  const code = errCode(err);
  const msg = `${what}: ${err instanceof Error ? err.message : String(err)}`;
  if (code === 'ENOENT') return new ChunkStoreError('NotFound', msg, { cause: err });
  if (code !== undefined && TRANSIENT_CODES.has(code)) return new ChunkStoreError('Transient', msg, { cause: err });
  return new ChunkStoreError('Permanent', msg, { cause: err });
}

export interface FsChunkStoreOptions {
  /** fdatasync each object before its rename (default true). Turning it off is for benchmarks only. */
  fsyncObjects?: boolean;
  /** Objects written whose fdatasync + rename is still running, at most (default 32). */
  maxPendingObjects?: number;
  /**
   * Write objects with O_DIRECT when the caller's buffer allows it (`PutOptions.alignedTail`,
   * checked with the native addon) — default true, also without `fsyncObjects` (then only the
   * fdatasync is skipped). The bytes go from the caller's buffer to the device without a copy into
   * the page cache (that copy cost more CPU than hashing and sealing together, and made a backup
   * without fdatasync slower than the durable one: bench/README.md). Filesystems that refuse
   * O_DIRECT fall back to buffered writes, once and for all.
   */
  directIO?: boolean;
  /** Where metadata objects live (default `<root>/meta`). May contain `root` itself (never listed). */
  metaDir?: string;
}

/** What the puts of a store did (for tests and the bench). */
export interface FsWriteCounters {
  direct: number;
  buffered: number;
}

/** O_DIRECT granularity used: the page size, a multiple of every usual logical block size. */
const DIRECT_ALIGN = 4096;

export class FsChunkStore implements ChunkStore {
  readonly description: string;
  private readonly chunksDir: string;
  private readonly trashDir: string;
  private readonly metaDir: string;
  private readonly knownDirs = new Set<string>();
  private dirtyDirs = new Set<string>();
  private readonly fsyncObjects: boolean;
  /** Objects being flushed and renamed, by id: operations on such an id wait for it. */
  private readonly pending = new Map<string, Promise<void>>();
  private readonly pendingSlots: Semaphore;
  private direct: boolean;
  readonly writeCounters: FsWriteCounters = { direct: 0, buffered: 0 };

  private constructor(readonly root: string, options: FsChunkStoreOptions) {
    this.description = `fs:${root}`;
    this.chunksDir = path.join(root, 'chunks');
    this.trashDir = path.join(root, 'trash');
    this.metaDir = path.resolve(options.metaDir ?? path.join(root, 'meta'));
    this.fsyncObjects = options.fsyncObjects ?? true;
    this.pendingSlots = new Semaphore(Math.max(1, options.maxPendingObjects ?? 32));
    this.direct = (options.directIO ?? true) && typeof fsc.O_DIRECT === 'number';
  }

  /**
   * The padded, aligned view of `data` for an O_DIRECT write, or undefined when the caller's
   * buffer does not allow one (no hint, no addon, misaligned, no room for the padding).
   */
  private directView(data: Uint8Array, options: PutOptions): Uint8Array | undefined {
    const align = options.alignedTail;
    if (!this.direct || align === undefined || align < DIRECT_ALIGN || align % DIRECT_ALIGN !== 0 || data.length === 0) return undefined;
    if (addressMod(data, DIRECT_ALIGN) !== 0) return undefined;
    const padded = Math.ceil(data.length / DIRECT_ALIGN) * DIRECT_ALIGN;
    if (data.byteOffset + padded > data.buffer.byteLength) return undefined;
    const view = new Uint8Array(data.buffer, data.byteOffset, padded);
    view.fill(0, data.length); // the padding is cut off again, but never carries stale memory to disk
    return view;
  }

  /** Write `data` to a new temp file with O_DIRECT from `view` (its padded form). False: not supported here. */
  private async writeDirect(tmp: string, data: Uint8Array, view: Uint8Array): Promise<FileHandle | undefined> {
    let fh: FileHandle;
    try {
      fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_DIRECT, 0o600);
    } catch (err) {
      if (errCode(err) !== 'EINVAL') throw err;
      this.direct = false; // this filesystem refuses O_DIRECT (some create the file first)
      await fsp.rm(tmp, { force: true });
      return undefined;
    }
    try {
      let written = 0;
      while (written < view.length) {
        const { bytesWritten } = await fh.write(view, written, view.length - written, written);
        if (bytesWritten === 0 || bytesWritten % DIRECT_ALIGN !== 0) throw Object.assign(new Error(`short O_DIRECT write (${bytesWritten} bytes)`), { code: 'EIO' });
        written += bytesWritten;
      }
      if (view.length !== data.length) await fh.truncate(data.length);
      return fh;
    } catch (err) {
      await fh.close().catch(() => undefined);
      if (errCode(err) !== 'EINVAL') throw err;
      // Refused at write time (alignment rules of this device): the temp file is rewritten buffered.
      this.direct = false;
      await fsp.rm(tmp, { force: true });
      return undefined;
    }
  }

  /** Wait until `id` is not being written (its put's outcome is its own caller's business). */
  private async settled(id: string): Promise<void> {
    for (let p = this.pending.get(id); p; p = this.pending.get(id)) await p.catch(() => undefined);
  }

  /** Open (creating if needed) a store rooted at `root`. */
  static async open(root: string, options: FsChunkStoreOptions = {}): Promise<FsChunkStore> {
    const store = new FsChunkStore(path.resolve(root), options);
    try {
      // Owner-only (0700 dirs, 0600 objects): the store holds sealed chunks, but nobody else needs to list or read them.
      await fsp.mkdir(store.chunksDir, { recursive: true, mode: 0o700 });
      await fsp.mkdir(store.trashDir, { recursive: true, mode: 0o700 });
      await fsp.mkdir(store.metaDir, { recursive: true, mode: 0o700 });
      await fsyncDir(store.root);
    } catch (err) {
      throw classify(err, `open store ${root}`);
    }
    return store;
  }

  private dirOf(id: string): string {
    return path.join(this.chunksDir, id.slice(0, 4));
  }

  private pathOf(id: string): string {
    return path.join(this.chunksDir, id.slice(0, 4), id);
  }

  /** Move an object back from trash/ (a fossil). True if it is now in place. */
  async resurrect(id: string): Promise<boolean> {
    assertChunkId(id);
    try {
      await fsp.access(path.join(this.trashDir, id));
    } catch {
      return false; // the common case: the object simply does not exist
    }
    try {
      await this.ensureDir(this.dirOf(id));
      await fsp.rename(path.join(this.trashDir, id), this.pathOf(id));
      this.dirtyDirs.add(this.dirOf(id));
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw classify(err, `resurrect ${id}`);
    }
  }

  private async ensureDir(dir: string): Promise<void> {
    if (this.knownDirs.has(dir)) return;
    try {
      await fsp.mkdir(dir, { mode: 0o700 });
      this.dirtyDirs.add(this.chunksDir);
    } catch (err) {
      if (errCode(err) !== 'EEXIST') throw err;
    }
    this.knownDirs.add(dir);
  }

  async putIfAbsent(id: string, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    assertChunkId(id);
    if (await this.touch(id)) return false; // touch waits for a put of the same id in flight
    await this.pendingSlots.acquire();
    if (this.pending.has(id)) {
      // Another put of the same id started while we waited: it decides.
      this.pendingSlots.release();
      return this.putIfAbsent(id, data, options);
    }
    let done!: () => void;
    const settledPromise = new Promise<void>((resolve) => (done = resolve));
    this.pending.set(id, settledPromise);
    const dir = this.dirOf(id);
    const tmp = path.join(dir, `.tmp-${id}-${randomBytes(6).toString('hex')}`);
    try {
      await this.ensureDir(dir);
      const view = this.directView(data, options);
      const directFh = view ? await this.writeDirect(tmp, data, view) : undefined;
      const fh = directFh ?? (await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600));
      if (directFh) this.writeCounters.direct++;
      else this.writeCounters.buffered++;
      try {
        let written = directFh ? data.length : 0; // O_DIRECT: already written (and cut to size)
        while (written < data.length) {
          const { bytesWritten } = await fh.write(data, written, data.length - written);
          written += bytesWritten;
        }
        options.onDataTaken?.();
        if (this.fsyncObjects) await fh.datasync();
      } finally {
        await fh.close();
      }
      await fsp.rename(tmp, this.pathOf(id));
      this.dirtyDirs.add(dir);
      return true;
    } catch (err) {
      await fsp.rm(tmp, { force: true }).catch(() => undefined);
      throw classify(err, `put ${id}`);
    } finally {
      this.pending.delete(id);
      this.pendingSlots.release();
      done();
    }
  }

  async get(id: string): Promise<Buffer> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    try {
      return await fsp.readFile(this.pathOf(id));
    } catch (err) {
      if (errCode(err) === 'ENOENT' && (await this.resurrect(id))) return this.get(id);
      throw classify(err, `get ${id}`);
    }
  }

  async readInto(id: string, target: Uint8Array): Promise<number> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    let fh;
    try {
      fh = await fsp.open(this.pathOf(id), 'r');
    } catch (err) {
      if (errCode(err) === 'ENOENT' && (await this.resurrect(id))) return this.readInto(id, target);
      throw classify(err, `get ${id}`);
    }
    try {
      const size = (await fh.stat()).size;
      if (size > target.length) return size;
      let done = 0;
      while (done < size) {
        const { bytesRead } = await fh.read(target, done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done;
    } catch (err) {
      throw classify(err, `get ${id}`);
    } finally {
      await fh.close();
    }
  }

  async has(id: string): Promise<boolean> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    try {
      await fsp.access(this.pathOf(id));
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return this.resurrect(id);
      throw classify(err, `has ${id}`);
    }
  }

  async touch(id: string): Promise<boolean> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    const now = new Date();
    try {
      await fsp.utimes(this.pathOf(id), now, now);
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return (await this.resurrect(id)) ? this.touch(id) : false;
      throw classify(err, `touch ${id}`);
    }
  }

  async stat(id: string): Promise<ChunkStat> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    try {
      const st = await fsp.stat(this.pathOf(id));
      return { size: st.size, mtimeMs: st.mtimeMs };
    } catch (err) {
      if (errCode(err) === 'ENOENT' && (await this.resurrect(id))) return this.stat(id);
      throw classify(err, `stat ${id}`);
    }
  }

  async *list(): AsyncIterable<string> {
    let dirs: string[];
    try {
      dirs = await fsp.readdir(this.chunksDir);
    } catch (err) {
      throw classify(err, 'list');
    }
    for (const d of dirs.sort()) {
      if (!/^[0-9a-f]{4}$/.test(d)) continue;
      let names: string[];
      try {
        names = await fsp.readdir(path.join(this.chunksDir, d));
      } catch (err) {
        if (errCode(err) === 'ENOENT') continue;
        throw classify(err, 'list');
      }
      for (const n of names) if (isChunkId(n) && n.startsWith(d)) yield n;
    }
  }

  async delete(id: string): Promise<DeleteResult> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    try {
      await fsp.unlink(this.pathOf(id));
      this.dirtyDirs.add(this.dirOf(id));
      return 'deleted';
    } catch (err) {
      if (errCode(err) === 'ENOENT') return 'absent';
      throw classify(err, `delete ${id}`);
    }
  }

  async fossilize(id: string): Promise<boolean> {
    assertChunkId(id);
    if (this.pending.size > 0) await this.settled(id);
    try {
      await fsp.rename(this.pathOf(id), path.join(this.trashDir, id));
      this.dirtyDirs.add(this.dirOf(id));
      this.dirtyDirs.add(this.trashDir);
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw classify(err, `fossilize ${id}`);
    }
  }

  async *listFossils(): AsyncIterable<string> {
    let names: string[];
    try {
      names = await fsp.readdir(this.trashDir);
    } catch (err) {
      if (errCode(err) === 'ENOENT') return;
      throw classify(err, 'list fossils');
    }
    for (const n of names) if (isChunkId(n)) yield n;
  }

  async deleteFossil(id: string): Promise<boolean> {
    assertChunkId(id);
    try {
      await fsp.unlink(path.join(this.trashDir, id));
      this.dirtyDirs.add(this.trashDir);
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw classify(err, `delete fossil ${id}`);
    }
  }

  private metaPath(name: string): string {
    assertMetaName(name);
    return path.join(this.metaDir, ...name.split('/'));
  }

  async putMeta(name: string, data: Uint8Array): Promise<void> {
    const file = this.metaPath(name);
    try {
      // Create missing parents one by one, fsyncing each parent that gained an entry.
      const segs = name.split('/').slice(0, -1);
      let dir = this.metaDir;
      for (const seg of segs) {
        const next = path.join(dir, seg);
        try {
          await fsp.mkdir(next, { mode: 0o700 });
          await fsyncDir(dir);
        } catch (err) {
          if (errCode(err) !== 'EEXIST') throw err;
        }
        dir = next;
      }
      await writeFileDurable(file, data);
    } catch (err) {
      throw classify(err, `put metadata ${name}`);
    }
  }

  async getMeta(name: string): Promise<Buffer> {
    const file = this.metaPath(name);
    try {
      return await fsp.readFile(file);
    } catch (err) {
      throw classify(err, `get metadata ${name}`);
    }
  }

  async *listMeta(prefix: string): AsyncIterable<string> {
    assertMetaPrefix(prefix);
    // Walk from the deepest whole directory of the prefix.
    const cut = prefix.lastIndexOf('/');
    const base = cut < 0 ? '' : prefix.slice(0, cut);
    const walk = async function* (this: FsChunkStore, rel: string): AsyncGenerator<string> {
      const abs = rel === '' ? this.metaDir : path.join(this.metaDir, ...rel.split('/'));
      if (abs === this.root) return; // the chunk store itself may sit inside metaDir
      let entries;
      try {
        entries = await fsp.readdir(abs, { withFileTypes: true });
      } catch (err) {
        if (errCode(err) === 'ENOENT' || errCode(err) === 'ENOTDIR') return;
        throw classify(err, 'list metadata');
      }
      for (const e of entries.sort((a, b) => (a.name < b.name ? -1 : 1))) {
        const name = rel === '' ? e.name : `${rel}/${e.name}`;
        if (!isMetaName(name)) continue; // temp files (.name.tmp-…) and anything foreign
        if (e.isDirectory()) {
          if (name.startsWith(prefix) || prefix.startsWith(`${name}/`)) yield* walk.call(this, name);
        } else if (e.isFile() && name.startsWith(prefix)) {
          yield name;
        }
      }
    };
    yield* walk.call(this, base);
  }

  async deleteMeta(name: string): Promise<boolean> {
    const file = this.metaPath(name);
    try {
      await fsp.unlink(file);
      await fsyncDir(path.dirname(file));
      return true;
    } catch (err) {
      if (errCode(err) === 'ENOENT') return false;
      throw classify(err, `delete metadata ${name}`);
    }
  }

  async sync(): Promise<void> {
    // Puts still flushing are not waited for: a caller syncs after its own puts resolved (each
    // one renamed, its directory recorded below), so pending ones belong to other callers.
    const dirs = [...this.dirtyDirs];
    this.dirtyDirs = new Set();
    try {
      // Fan-out directories first, then chunks/ itself (it records newly created fan-out dirs).
      const chunksDirty = dirs.includes(this.chunksDir);
      const fanout = dirs.filter((d) => d !== this.chunksDir && d !== this.trashDir);
      for (let i = 0; i < fanout.length; i += 16) {
        await Promise.all(fanout.slice(i, i + 16).map((d) => fsyncDir(d)));
      }
      if (chunksDirty) await fsyncDir(this.chunksDir);
      if (dirs.includes(this.trashDir)) await fsyncDir(this.trashDir);
    } catch (err) {
      for (const d of dirs) this.dirtyDirs.add(d);
      throw classify(err, 'sync');
    }
  }

  async removeStaleTemporaries(olderThan: Date): Promise<number> {
    let removed = 0;
    const cutoff = olderThan.getTime();
    const sweepDir = async (dir: string, match: (n: string) => boolean): Promise<void> => {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch (err) {
        if (errCode(err) === 'ENOENT') return;
        throw classify(err, 'removeStaleTemporaries');
      }
      for (const n of names) {
        if (!match(n)) continue;
        const p = path.join(dir, n);
        try {
          const st = await fsp.stat(p);
          if (st.mtimeMs < cutoff) {
            await fsp.unlink(p);
            removed++;
          }
        } catch (err) {
          if (errCode(err) !== 'ENOENT') throw classify(err, 'removeStaleTemporaries');
        }
      }
    };
    const dirs = await fsp.readdir(this.chunksDir).catch(() => [] as string[]);
    for (const d of dirs) await sweepDir(path.join(this.chunksDir, d), (n) => n.startsWith('.tmp-'));
    // trash/ holds fossils: GC's generations decide about them, never their mtimes.
    return removed;
  }
}

/** fsync a directory so the names it holds survive a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, fsc.O_RDONLY | fsc.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/**
 * Writes `data` to a fresh temp file beside `file` and fsyncs it, then `publish(tmp)` puts it in place (rename, or
 * link for an exclusive create); if anything fails the temp is removed.
 */
export async function publishViaTemp(file: string, data: Uint8Array, publish: (tmp: string) => Promise<void>): Promise<void> {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${randomBytes(6).toString('hex')}`);
  try {
    const fh = await fsp.open(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL, 0o600);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await publish(tmp);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Write a file durably: temp + fsync + rename + directory fsync. */
export function writeFileDurable(file: string, data: Uint8Array): Promise<void> {
  return publishViaTemp(file, data, async (tmp) => {
    await fsp.rename(tmp, file);
    await fsyncDir(path.dirname(file));
  });
}
