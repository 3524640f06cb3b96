/**
 * Chunk stores on object storage (Azure Blob, S3): one `ObjectChunkStore` over a small
 * `ObjectBackend` (whole-object PUT/GET/HEAD/LIST/DELETE), so both services share every rule of
 * the contract in store.ts and differ only in their SDK calls (azure-blob-store.ts, s3-store.ts).
 *
 * Layout under the store's key prefix (`vaults/<uid>/` for a vault):
 * ```
 * chunks/<id>     committed objects
 * trash/<id>      fossils (GC's two-step delete, see gc.ts)
 * meta/<name>     metadata objects (manifests, GC state)
 * ```
 * Durability: an object PUT is atomic on both services (a name only ever points at complete
 * bytes) and durable when it returns, so `sync()` has nothing left to do. `putIfAbsent` asks
 * HEAD first (a dedup hit costs no upload) and then PUTs with If-None-Match: * where the service
 * honours it; a service that ignores it (s3rver) at worst rewrites the same bytes, which the
 * immutability of chunks makes harmless.
 * Fossils move by GET + PUT + DELETE and come back by GET + PUT (the fossil stays until GC's
 * next generation): a chunk is therefore in at least one of the two places at every instant,
 * whatever a GC and a reader do at the same time.
 */
import { ChunkStoreError } from './errors.js';
import { assertChunkId, assertMetaName, assertMetaPrefix, isChunkId, type ChunkStat, type ChunkStore, type DeleteResult, type PutOptions } from './store.js';

export interface ObjectHead {
  size: number;
  /** Last-Modified as the service reports it (ms since the epoch). */
  mtimeMs: number;
}

/** Whole objects by key; every error is a ChunkStoreError (NotFound for a missing key). */
export interface ObjectBackend {
  readonly description: string;
  /** Atomic PUT. With `ifAbsent`, resolves `false` instead of replacing an existing object (where the service can tell). */
  put(key: string, data: Uint8Array, options?: { ifAbsent?: boolean }): Promise<boolean>;
  get(key: string): Promise<Buffer>;
  /** Read into `target`; returns the object size (> target.length: not read). */
  readInto?(key: string, target: Uint8Array): Promise<number>;
  head(key: string): Promise<ObjectHead | undefined>;
  /** Every key starting with `prefix`. */
  list(prefix: string): AsyncIterable<string>;
  /** Distinct next path segments under `prefix` (delimiter listing), without the prefix and the '/'. */
  listSegments(prefix: string): AsyncIterable<string>;
  /** `false` if it was absent. */
  delete(key: string): Promise<boolean>;
  /** Create the container/bucket if missing. */
  ensure(): Promise<void>;
  /** Release connections. */
  close?(): Promise<void>;
}

export class ObjectChunkStore implements ChunkStore {
  readonly description: string;

  constructor(readonly backend: ObjectBackend, readonly prefix = '') {
    if (prefix !== '' && !/^([A-Za-z0-9_-][A-Za-z0-9._-]*\/)+$/.test(prefix)) throw new ChunkStoreError('Permanent', `invalid key prefix ${JSON.stringify(prefix)}`);
    this.description = `${backend.description}/${prefix}`;
  }

  private chunkKey(id: string): string {
    return `${this.prefix}chunks/${id}`;
  }

  private fossilKey(id: string): string {
    return `${this.prefix}trash/${id}`;
  }

  private metaKey(name: string): string {
    assertMetaName(name);
    return `${this.prefix}meta/${name}`;
  }

  async putIfAbsent(id: string, data: Uint8Array, _options?: PutOptions): Promise<boolean> {
    assertChunkId(id);
    if (await this.backend.head(this.chunkKey(id))) return false;
    return this.backend.put(this.chunkKey(id), data, { ifAbsent: true });
  }

  async get(id: string): Promise<Buffer> {
    assertChunkId(id);
    try {
      return await this.backend.get(this.chunkKey(id));
    } catch (err) {
      if (err instanceof ChunkStoreError && err.kind === 'NotFound' && (await this.resurrect(id))) return this.backend.get(this.chunkKey(id));
      throw err;
    }
  }

  async readInto(id: string, target: Uint8Array): Promise<number> {
    assertChunkId(id);
    const read = async (): Promise<number> => {
      if (this.backend.readInto) return this.backend.readInto(this.chunkKey(id), target);
      const data = await this.backend.get(this.chunkKey(id));
      if (data.length <= target.length) target.set(data);
      return data.length;
    };
    try {
      return await read();
    } catch (err) {
      if (err instanceof ChunkStoreError && err.kind === 'NotFound' && (await this.resurrect(id))) return read();
      throw err;
    }
  }

  async has(id: string): Promise<boolean> {
    assertChunkId(id);
    if (await this.backend.head(this.chunkKey(id))) return true;
    return this.resurrect(id);
  }

  touch(id: string): Promise<boolean> {
    return this.has(id);
  }

  async stat(id: string): Promise<ChunkStat> {
    assertChunkId(id);
    let h = await this.backend.head(this.chunkKey(id));
    if (!h && (await this.resurrect(id))) h = await this.backend.head(this.chunkKey(id));
    if (!h) throw new ChunkStoreError('NotFound', `stat ${id}: no such chunk`);
    return h;
  }

  async *list(): AsyncIterable<string> {
    const p = `${this.prefix}chunks/`;
    for await (const key of this.backend.list(p)) {
      const id = key.slice(p.length);
      if (isChunkId(id)) yield id;
    }
  }

  async delete(id: string): Promise<DeleteResult> {
    assertChunkId(id);
    return (await this.backend.delete(this.chunkKey(id))) ? 'deleted' : 'absent';
  }

  async sync(): Promise<void> {
    // Every PUT was durable when it returned.
  }

  async fossilize(id: string): Promise<boolean> {
    assertChunkId(id);
    let data: Buffer;
    try {
      data = await this.backend.get(this.chunkKey(id));
    } catch (err) {
      if (err instanceof ChunkStoreError && err.kind === 'NotFound') return false;
      throw err;
    }
    await this.backend.put(this.fossilKey(id), data);
    await this.backend.delete(this.chunkKey(id));
    return true;
  }

  async resurrect(id: string): Promise<boolean> {
    assertChunkId(id);
    let data: Buffer;
    try {
      data = await this.backend.get(this.fossilKey(id));
    } catch (err) {
      if (err instanceof ChunkStoreError && err.kind === 'NotFound') return false;
      throw err;
    }
    await this.backend.put(this.chunkKey(id), data, { ifAbsent: true });
    return true;
  }

  async *listFossils(): AsyncIterable<string> {
    const p = `${this.prefix}trash/`;
    for await (const key of this.backend.list(p)) {
      const id = key.slice(p.length);
      if (isChunkId(id)) yield id;
    }
  }

  async deleteFossil(id: string): Promise<boolean> {
    assertChunkId(id);
    return this.backend.delete(this.fossilKey(id));
  }

  async putMeta(name: string, data: Uint8Array): Promise<void> {
    await this.backend.put(this.metaKey(name), data);
  }

  async getMeta(name: string): Promise<Buffer> {
    return this.backend.get(this.metaKey(name));
  }

  async *listMeta(prefix: string): AsyncIterable<string> {
    assertMetaPrefix(prefix);
    const p = `${this.prefix}meta/`;
    for await (const key of this.backend.list(p + prefix)) yield key.slice(p.length);
  }

  async deleteMeta(name: string): Promise<boolean> {
    return this.backend.delete(this.metaKey(name));
  }
}

/** Map an HTTP status of an object service to the contract's error kinds. */
export function kindOfStatus(status: number | undefined): 'NotFound' | 'Transient' | 'Permanent' {
  if (status === 404) return 'NotFound';
  if (status === undefined || status === 408 || status === 429 || status >= 500) return 'Transient';
  return 'Permanent';
}
