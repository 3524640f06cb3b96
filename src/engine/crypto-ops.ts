/**
 * The CPU-heavy operations over shared memory (SHA-256, HMAC, AES-GCM), as one request handler.
 * Runs in the worker threads (crypto-worker.ts) and, for small jobs, inline on the calling thread.
 */
import { chunkDigestOf, chunkIdFromDigest, idsEqual, openInto, SealError, sealInto } from './seal.js';

/** Messages between the engine and its crypto workers. */
export interface SlotRef {
  sab: SharedArrayBuffer;
  off: number;
  len: number;
}

export type WorkerRequest =
  | { op: 'hash'; seq: number; idKey: Uint8Array; src: SlotRef; sealKey?: Uint8Array; dst?: SlotRef }
  | { op: 'seal'; seq: number; sealKey: Uint8Array; id: Uint8Array; src: SlotRef; dst: SlotRef }
  | { op: 'open'; seq: number; sealKey: Uint8Array; id: Uint8Array; src: SlotRef; dst: SlotRef; idKey?: Uint8Array };

export type WorkerResponse =
  | { seq: number; ok: true; zero?: boolean; id?: Uint8Array; sealedLen?: number; plainLen?: number; digest?: Uint8Array }
  | { seq: number; ok: false; error: { name: string; message: string } };

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

function handle(req: WorkerRequest): WorkerResponse {
  switch (req.op) {
    case 'hash': {
      const data = view(req.src);
      if (data.equals(zeros(data.length))) return { seq: req.seq, ok: true, zero: true };
      const digest = chunkDigestOf(data);
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
    case 'open': {
      const out = view(req.dst);
      const plainLen = openInto(req.sealKey, req.id, view(req.src), out);
      if (req.idKey) {
        const digest = chunkDigestOf(out.subarray(0, plainLen));
        if (!idsEqual(chunkIdFromDigest(req.idKey, digest), req.id)) {
          return { seq: req.seq, ok: false, error: { name: 'SealError', message: 'chunk content does not hash to its id' } };
        }
        return { seq: req.seq, ok: true, plainLen, digest };
      }
      return { seq: req.seq, ok: true, plainLen };
    }
  }
}

/** Handle one request; failures become `ok: false` responses (SealError keeps its name). */
export function handleRequest(req: WorkerRequest): WorkerResponse {
  try {
    return handle(req);
  } catch (err) {
    const e = err instanceof Error ? err : new Error(String(err));
    return { seq: req.seq, ok: false, error: { name: err instanceof SealError ? 'SealError' : e.name, message: e.message } };
  }
}
