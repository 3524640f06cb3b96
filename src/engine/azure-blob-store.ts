/**
 * Azure Blob Storage backend of `ObjectChunkStore` (@azure/storage-blob): one block blob per
 * object, written with a single Put Blob (atomic), If-None-Match: * for conditional puts.
 * Tested against Azurite (object-store.test.ts).
 */
import type { Readable } from 'node:stream';
import { BlobServiceClient, RestError, StorageSharedKeyCredential, type ContainerClient } from '@azure/storage-blob';
import { ChunkStoreError } from './errors.js';
import { kindOfStatus, ObjectChunkStore, type ObjectBackend, type ObjectHead } from './object-store.js';

export interface AzureBlobOptions {
  /** Container name (3-63 lowercase letters, digits and hyphens). Created if missing. */
  container: string;
  /** A storage connection string (takes precedence over url + key). */
  connectionString?: string | undefined;
  /** Blob service URL, e.g. https://account.blob.core.windows.net or http://127.0.0.1:10000/devstoreaccount1 (may carry a SAS). */
  url?: string | undefined;
  /** Shared key: account name (default: from the URL) and key. */
  accountName?: string | undefined;
  accountKey?: string | undefined;
}

function classify(err: unknown, what: string): ChunkStoreError {
  if (err instanceof ChunkStoreError) return err;
  const status = err instanceof RestError ? err.statusCode : undefined;
  const code = err instanceof RestError ? err.code : undefined;
  // Messages of RestError carry no secrets (the request URL is not part of them), but keep them short.
  const msg = `${what}: ${status ?? ''} ${code ?? (err instanceof Error ? err.message.split('\n')[0] : String(err))}`.trim();
  return new ChunkStoreError(kindOfStatus(status), msg, { cause: err });
}

/** The account name of a blob service URL: `devstoreaccount1` of http://host:port/devstoreaccount1, `acct` of https://acct.blob.core.windows.net. */
export function accountNameOf(url: string): string {
  const u = new URL(url);
  const seg = u.pathname.split('/').filter(Boolean)[0];
  if (seg && /^(\d+\.){3}\d+$|^localhost$|^\[/.test(u.hostname)) return seg;
  return u.hostname.split('.')[0]!;
}

async function drain(stream: Readable | NodeJS.ReadableStream, target?: Uint8Array): Promise<{ size: number; chunks: Buffer[] }> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of stream as AsyncIterable<Buffer>) {
    if (target && size + c.length <= target.length) target.set(c, size);
    else if (!target) chunks.push(c);
    size += c.length;
  }
  return { size, chunks };
}

export class AzureBlobBackend implements ObjectBackend {
  readonly description: string;
  private constructor(private readonly container: ContainerClient) {
    const u = new URL(container.url);
    this.description = `blob:${u.host}${u.pathname}`;
  }

  static create(options: AzureBlobOptions): AzureBlobBackend {
    let service: BlobServiceClient;
    const retryOptions = { maxTries: 4, retryDelayInMs: 200, maxRetryDelayInMs: 5000 };
    if (options.connectionString) {
      service = BlobServiceClient.fromConnectionString(options.connectionString, { retryOptions });
    } else if (options.url && options.accountKey) {
      const cred = new StorageSharedKeyCredential(options.accountName ?? accountNameOf(options.url), options.accountKey);
      service = new BlobServiceClient(options.url, cred, { retryOptions });
    } else if (options.url) {
      service = new BlobServiceClient(options.url, undefined, { retryOptions }); // a SAS in the URL, or public
    } else {
      throw new ChunkStoreError('Permanent', 'Azure Blob store: give a connection string, or a service URL (with an account key or a SAS)');
    }
    return new AzureBlobBackend(service.getContainerClient(options.container));
  }

  async ensure(): Promise<void> {
    try {
      await this.container.createIfNotExists();
    } catch (err) {
      throw classify(err, `create container ${this.container.containerName}`);
    }
  }

  async put(key: string, data: Uint8Array, options: { ifAbsent?: boolean } = {}): Promise<boolean> {
    try {
      await this.container.getBlockBlobClient(key).upload(data, data.length, options.ifAbsent ? { conditions: { ifNoneMatch: '*' } } : {});
      return true;
    } catch (err) {
      if (options.ifAbsent && err instanceof RestError && (err.statusCode === 409 || err.statusCode === 412)) return false;
      throw classify(err, `put ${key}`);
    }
  }

  private async download(key: string, target?: Uint8Array): Promise<{ size: number; chunks: Buffer[] }> {
    try {
      const r = await this.container.getBlobClient(key).download(0);
      if (!r.readableStreamBody) throw new ChunkStoreError('Transient', `get ${key}: no body`);
      return await drain(r.readableStreamBody, target);
    } catch (err) {
      throw classify(err, `get ${key}`);
    }
  }

  async get(key: string): Promise<Buffer> {
    const { chunks } = await this.download(key);
    return Buffer.concat(chunks);
  }

  async readInto(key: string, target: Uint8Array): Promise<number> {
    return (await this.download(key, target)).size;
  }

  async head(key: string): Promise<ObjectHead | undefined> {
    try {
      const p = await this.container.getBlobClient(key).getProperties();
      return { size: p.contentLength ?? 0, mtimeMs: p.lastModified?.getTime() ?? 0 };
    } catch (err) {
      if (err instanceof RestError && err.statusCode === 404) return undefined;
      throw classify(err, `head ${key}`);
    }
  }

  async *list(prefix: string): AsyncIterable<string> {
    try {
      for await (const b of this.container.listBlobsFlat({ prefix })) yield b.name;
    } catch (err) {
      throw classify(err, `list ${prefix}`);
    }
  }

  async *listSegments(prefix: string): AsyncIterable<string> {
    try {
      for await (const item of this.container.listBlobsByHierarchy('/', { prefix })) {
        if (item.kind === 'prefix') yield item.name.slice(prefix.length).replace(/\/$/, '');
      }
    } catch (err) {
      throw classify(err, `list ${prefix}`);
    }
  }

  async delete(key: string): Promise<boolean> {
    try {
      return (await this.container.getBlobClient(key).deleteIfExists()).succeeded;
    } catch (err) {
      throw classify(err, `delete ${key}`);
    }
  }

  /** Delete the whole container (tests: "the primary is gone"). */
  async destroy(): Promise<void> {
    try {
      await this.container.deleteIfExists();
    } catch (err) {
      throw classify(err, `delete container ${this.container.containerName}`);
    }
  }
}

/** An Azure Blob chunk store under `prefix` of the container (created if missing). */
export async function openAzureBlobStore(options: AzureBlobOptions, prefix = ''): Promise<ObjectChunkStore> {
  const backend = AzureBlobBackend.create(options);
  await backend.ensure();
  return new ObjectChunkStore(backend, prefix);
}
