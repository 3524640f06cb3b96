/**
 * Vault chunk stores from the server configuration: the primary store (fs, Azure Blob or S3) and, for
 * GeoRedundant vaults, a second store every chunk and manifest is replicated to (engine `replicatedStore`).
 *
 * Layout: fs keeps the embedded layout (`<dataDir>/vaults/<uid>/store` for chunks, manifests beside it) unless
 * a directory is configured (`<dir>/vaults/<uid>/…`); object stores use the key prefix `vaults/<uid>/` of one
 * container/bucket. Object-store calls are bounded (32 in flight per vault) and retried on transient errors.
 */
import path from 'node:path';
import type { ChunkStoreConfig } from '../config.js';
import {
  AzureBlobBackend, FsChunkStore, ObjectChunkStore, S3Backend, replicatedStore, withConcurrencyLimit, withRetry,
  type ChunkStore, type ObjectBackend,
} from '../engine/index.js';

export interface VaultStoreOptions {
  /** The vault's local directory (`<dataDir>/vaults/<uid>`): the fs layout's home. */
  localDir: string;
  /** GeoRedundant: replicate to the secondary store (when one is configured). */
  geo: boolean;
}

export class ChunkStores {
  private readonly backends = new Map<ChunkStoreConfig, Promise<ObjectBackend>>();

  constructor(readonly primary: ChunkStoreConfig, readonly secondary: ChunkStoreConfig | undefined) {}

  /** How the configuration reads in logs (no secrets). */
  describe(): string {
    const one = (c: ChunkStoreConfig): string =>
      c.kind === 'fs' ? `fs${c.dir ? `:${c.dir}` : ''}` : c.kind === 'blob' ? `blob:${c.url ? new URL(c.url).host : '(connection string)'}/${c.container}` : `s3:${c.endpoint ? new URL(c.endpoint).host + '/' : ''}${c.bucket}`;
    return this.secondary ? `${one(this.primary)} (GeoRedundant vaults also → ${one(this.secondary)})` : one(this.primary);
  }

  private backend(c: Exclude<ChunkStoreConfig, { kind: 'fs' }>): Promise<ObjectBackend> {
    let p = this.backends.get(c);
    if (!p) {
      p = (async () => {
        const b: ObjectBackend = c.kind === 'blob' ? AzureBlobBackend.create(c) : S3Backend.create(c);
        await b.ensure();
        return b;
      })();
      p.catch(() => this.backends.delete(c));
      this.backends.set(c, p);
    }
    return p;
  }

  /** One store of a vault from one configuration. */
  async openOne(c: ChunkStoreConfig, uid: string, localDir: string): Promise<ChunkStore> {
    if (c.kind === 'fs') {
      const home = c.dir ? path.join(c.dir, 'vaults', uid) : localDir;
      return FsChunkStore.open(path.join(home, 'store'), { metaDir: home });
    }
    return withRetry(withConcurrencyLimit(new ObjectChunkStore(await this.backend(c), `vaults/${uid}/`), 32));
  }

  async open(uid: string, o: VaultStoreOptions): Promise<ChunkStore> {
    const primary = await this.openOne(this.primary, uid, o.localDir);
    if (!o.geo || !this.secondary) return primary;
    return replicatedStore(primary, await this.openOne(this.secondary, uid, o.localDir));
  }

  /** Deletes every object of a vault in the object stores (fs directories are the caller's). */
  async removeVault(uid: string): Promise<void> {
    for (const c of [this.primary, this.secondary]) {
      if (!c || c.kind === 'fs') continue;
      const b = await this.backend(c);
      const keys: string[] = [];
      for await (const k of b.list(`vaults/${uid}/`)) keys.push(k);
      for (const k of keys) await b.delete(k);
    }
  }

  /** Vault uids that have objects in a store (for `admin copy-store`). */
  async vaultsIn(c: ChunkStoreConfig, dataDir: string): Promise<string[]> {
    if (c.kind === 'fs') {
      const { readdir } = await import('node:fs/promises');
      return (await readdir(path.join(c.dir ?? dataDir, 'vaults')).catch(() => [] as string[])).filter((n) => /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/.test(n));
    }
    const out: string[] = [];
    for await (const seg of (await this.backend(c)).listSegments('vaults/')) out.push(seg);
    return out;
  }
}
