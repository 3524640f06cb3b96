/**
 * The CPU-heavy operations over shared memory (SHA-256, HMAC, AES-GCM), as one request handler.
 * Runs in the worker threads (crypto-worker.ts) and, for small jobs, inline on the calling thread.
 */
import { chunkDigestOf, chunkIdFromDigest, idsEqual, openInPlace, openInto, SEAL_HEADER_BYTES, SealError, sealInto, type ChunkHash } from './seal.js';

/**
 * Messages between the engine and its crypto workers. A slot is a range of a SharedArrayBuffer
 * (shared, nothing moves) or of an ordinary ArrayBuffer, which is *transferred* to the worker with
 * the request and back with the response (`out`). Outputs use the latter: V8 copies into shared
 * memory with relaxed per-word atomics (≈ 1 GB/s here against ≈ 9 GB/s for ordinary memory), and
 * the cipher's output slices must be copied into the slot, so a shared output slot halved the
 * AES-GCM throughput. Inputs stay shared: `fs.read` and OpenSSL access them natively.
 */
export interface SlotRef {
  sab: SharedArrayBuffer | ArrayBuffer;
  off: number;
  len: number;
}

export type WorkerRequest =
  | { op: 'hash'; seq: number; idKey: Uint8Array; hash: ChunkHash; src: SlotRef; sealKey?: Uint8Array; dst?: SlotRef }
  | { op: 'seal'; seq: number; sealKey: Uint8Array; id: Uint8Array; src: SlotRef; dst: SlotRef }
  | { op: 'open'; seq: number; sealKey: Uint8Array; id: Uint8Array; src: SlotRef; dst: SlotRef; idKey?: Uint8Array; hash?: ChunkHash }
  /**
   * Open in place: the plaintext replaces the ciphertext at src.off + SEAL_HEADER_BYTES. With
   * idKey (verify), the plaintext must also hash back to the id; the response carries its digest.
   */
  | { op: 'openInPlace'; seq: number; sealKey: Uint8Array; id: Uint8Array; src: SlotRef; idKey?: Uint8Array; hash?: ChunkHash };

export type WorkerResponse =
  | { seq: number; ok: true; zero?: boolean; id?: Uint8Array; sealedLen?: number; plainLen?: number; digest?: Uint8Array; out?: ArrayBuffer }
  | { seq: number; ok: false; error: { name: string; message: string }; out?: ArrayBuffer };

export type OkResponse = Extract<WorkerResponse, { ok: true }>;

/** Distributive Omit, so each request variant keeps its own fields. */
type WithoutSeq<T> = T extends unknown ? Omit<T, 'seq'> : never;
export type RequestBody = WithoutSeq<WorkerRequest>;

const zeroCache = new Map<number, Buffer>();
function zeros(n: number): Buffer {
  let z = zeroCache.get(n);
  if (!z) {
    z = Buffer.alloc(n);
    if (zeroCache.size > 8) zeroCache.clear();
    zeroCache.set(n, z);
  }
  return z;
}

function view(s: SlotRef): Buffer {
  return Buffer.from(s.sab, s.off, s.len);
}

/** After an open: with an idKey, the plaintext must hash back to the id (verify). */
function checkId(req: { seq: number; id: Uint8Array; idKey?: Uint8Array | undefined; hash?: ChunkHash | undefined }, plain: Uint8Array, plainLen: number): WorkerResponse {
  if (!req.idKey) return { seq: req.seq, ok: true, plainLen };
  const digest = chunkDigestOf(plain, req.hash);
  if (!idsEqual(chunkIdFromDigest(req.idKey, digest), req.id)) {
    return { seq: req.seq, ok: false, error: { name: 'SealError', message: 'chunk content does not hash to its id' } };
  }
  return { seq: req.seq, ok: true, plainLen, digest };
}

function handle(req: WorkerRequest): WorkerResponse {
  switch (req.op) {
    case 'hash': {
      const data = view(req.src);
      if (data.equals(zeros(data.length))) return { seq: req.seq, ok: true, zero: true };
      const digest = chunkDigestOf(data, req.hash);
      const id = chunkIdFromDigest(req.idKey, digest);
      if (req.sealKey && req.dst) {
        const sealedLen = sealInto(req.sealKey, id, data, view(req.dst));
        return { seq: req.seq, ok: true, zero: false, id, digest, sealedLen };
      }
      return { seq: req.seq, ok: true, zero: false, id, digest };
    }
    case 'seal': {
      const sealedLen = sealInto(req.sealKey, req.id, view(req.src), view(req.dst));
      return { seq: req.seq, ok: true, sealedLen };
    }
    case 'openInPlace': {
      const sealed = view(req.src);
      const plainLen = openInPlace(req.sealKey, req.id, sealed);
      return checkId(req, sealed.subarray(SEAL_HEADER_BYTES, SEAL_HEADER_BYTES + plainLen), plainLen);
    }
    case 'open': {
      const out = view(req.dst);
      const plainLen = openInto(req.sealKey, req.id, view(req.src), out);
      return checkId(req, out.subarray(0, plainLen), plainLen);
    }
  }
}

/** The ordinary (transferable) ArrayBuffers of a request: they travel with it and back. */
export function transferablesOf(req: { src?: SlotRef; dst?: SlotRef }): ArrayBuffer[] {
  const out: ArrayBuffer[] = [];
  for (const r of [req.src, req.dst]) if (r && !(r.sab instanceof SharedArrayBuffer)) out.push(r.sab);
  return out;
}

/**
 * Handle one request; failures become `ok: false` responses (SealError keeps its name). A
 * transferred output buffer is handed back as `out` (also on failure, so the slot survives).
 */
export function handleRequest(req: WorkerRequest): WorkerResponse {
  let res: WorkerResponse;
  try {
    res = handle(req);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    res = { seq: req.seq, ok: false, error: { name: err instanceof SealError ? 'SealError' : e.name, message: e.message } };
  }
  const dst = 'dst' in req ? req.dst : undefined;
  if (dst && !(dst.sab instanceof SharedArrayBuffer)) res.out = dst.sab;
  return res;
}
