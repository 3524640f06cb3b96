/**
 * S3 backend of `ObjectChunkStore` (@aws-sdk/client-s3): one object per chunk, written with a
 * single PutObject (atomic), If-None-Match: * for conditional puts (AWS honours it; s3rver, the
 * local test server, ignores it, which only means an identical rewrite). Tested against s3rver
 * (object-store.test.ts).
 */
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand, DeleteObjectCommand, GetObjectCommand, HeadBucketCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { ChunkStoreError } from './errors.js';
import { kindOfStatus, ObjectChunkStore, type ObjectBackend, type ObjectHead } from './object-store.js';

export interface S3Options {
  bucket: string;
  /** Endpoint URL for S3-compatible services (MinIO, s3rver, …); AWS when absent. */
  endpoint?: string | undefined;
  region?: string | undefined;
  /** Static credentials; the SDK's default chain (AWS_* env, profiles, instance roles) when absent. */
  accessKeyId?: string | undefined;
  secretAccessKey?: string | undefined;
  /** Path-style addressing (http://host/bucket/key): needed by most local servers. */
  forcePathStyle?: boolean | undefined;
}

interface S3Failure {
  name?: string;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null ? (err as S3Failure).$metadata?.httpStatusCode : undefined;
}

function classify(err: unknown, what: string): ChunkStoreError {
  if (err instanceof ChunkStoreError) return err;
  const status = statusOf(err);
  const name = typeof err === 'object' && err !== null ? (err as S3Failure).name : undefined;
  const msg = `${what}: ${status ?? ''} ${name ?? (err instanceof Error ? err.message.split('\n')[0] : String(err))}`.trim();
  return new ChunkStoreError(kindOfStatus(status), msg, { cause: err });
}

export class S3Backend implements ObjectBackend {
  readonly description: string;
  private constructor(private readonly client: S3Client, private readonly bucket: string, endpoint: string | undefined) {
    this.description = `s3:${endpoint ? `${new URL(endpoint).host}/` : ''}${bucket}`;
  }

  static create(options: S3Options): S3Backend {
    const config: S3ClientConfig = {
      region: options.region ?? 'us-east-1',
      forcePathStyle: options.forcePathStyle ?? Boolean(options.endpoint),
      maxAttempts: 4,
      ...(options.endpoint ? { endpoint: options.endpoint } : {}),
      ...(options.accessKeyId && options.secretAccessKey ? { credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } } : {}),
    };
    return new S3Backend(new S3Client(config), options.bucket, options.endpoint);
  }

  async ensure(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.bucket }));
      return;
    } catch (err) {
      if (statusOf(err) !== 404) throw classify(err, `head bucket ${this.bucket}`);
    }
    try {
      await this.client.send(new CreateBucketCommand({ Bucket: this.bucket }));
    } catch (err) {
      if (statusOf(err) !== 409) throw classify(err, `create bucket ${this.bucket}`); // created meanwhile
    }
  }

  async put(key: string, data: Uint8Array, options: { ifAbsent?: boolean } = {}): Promise<boolean> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: key, Body: data, ContentLength: data.length, ...(options.ifAbsent ? { IfNoneMatch: '*' } : {}) }));
      return true;
    } catch (err) {
      const s = statusOf(err);
      if (options.ifAbsent && (s === 412 || s === 409)) return false;
      throw classify(err, `put ${key}`);
    }
  }

  private async download(key: string, target?: Uint8Array): Promise<{ size: number; chunks: Buffer[] }> {
    try {
      const r = await this.client.send(new GetObjectCommand({ Bucket: this.bucket, Key: key }));
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const c of r.Body as Readable) {
        const b = c as Buffer;
        if (target && size + b.length <= target.length) target.set(b, size);
        else if (!target) chunks.push(b);
        size += b.length;
      }
      return { size, chunks };
    } catch (err) {
      throw classify(err, `get ${key}`);
    }
  }

  async get(key: string): Promise<Buffer> {
    return Buffer.concat((await this.download(key)).chunks);
  }

  async readInto(key: string, target: Uint8Array): Promise<number> {
    return (await this.download(key, target)).size;
  }

  async head(key: string): Promise<ObjectHead | undefined> {
    try {
      const h = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: key }));
      return { size: h.ContentLength ?? 0, mtimeMs: h.LastModified?.getTime() ?? 0 };
    } catch (err) {
      if (statusOf(err) === 404) return undefined;
      throw classify(err, `head ${key}`);
    }
  }

  private async *pages(prefix: string, delimiter?: string): AsyncGenerator<{ keys: string[]; prefixes: string[] }> {
    let token: string | undefined;
    do {
      let r;
      try {
        r = await this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: prefix, ContinuationToken: token, ...(delimiter ? { Delimiter: delimiter } : {}) }));
      } catch (err) {
        throw classify(err, `list ${prefix}`);
      }
      yield { keys: (r.Contents ?? []).map((c) => c.Key ?? '').filter(Boolean), prefixes: (r.CommonPrefixes ?? []).map((c) => c.Prefix ?? '').filter(Boolean) };
      token = r.IsTruncated ? r.NextContinuationToken : undefined;
    } while (token);
  }

  async *list(prefix: string): AsyncIterable<string> {
    for await (const p of this.pages(prefix)) yield* p.keys;
  }

  async *listSegments(prefix: string): AsyncIterable<string> {
    for await (const p of this.pages(prefix, '/')) for (const x of p.prefixes) yield x.slice(prefix.length).replace(/\/$/, '');
  }

  async delete(key: string): Promise<boolean> {
    // DeleteObject answers 204 whether or not the key existed: ask first.
    if (!(await this.head(key))) return false;
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: key }));
      return true;
    } catch (err) {
      if (statusOf(err) === 404) return false;
      throw classify(err, `delete ${key}`);
    }
  }

  async close(): Promise<void> {
    this.client.destroy();
  }
}

/** An S3 chunk store under `prefix` of the bucket (created if missing). */
export async function openS3Store(options: S3Options, prefix = ''): Promise<ObjectChunkStore> {
  const backend = S3Backend.create(options);
  await backend.ensure();
  return new ObjectChunkStore(backend, prefix);
}
