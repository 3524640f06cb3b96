/**
 * Worker pool for the CPU-heavy work (HMAC, AES-GCM, SHA-256) and shared-memory slot pools.
 *
 * Data never crosses threads by copy: the main thread reads into a slot of a SharedArrayBuffer
 * (`SlotPool`), a worker hashes/seals it into an output slot (`LentSlotPool`: an ordinary
 * ArrayBuffer lent to the worker by transfer and handed back with the answer — copying into
 * shared memory is ~8× slower than into ordinary memory in V8), and the main thread writes from
 * there. Memory is bounded by the slot pools (slots × slot size), never by the image.
 *
 * The worker script is `crypto-worker.js` next to this file when running compiled code (dist/);
 * when running TypeScript sources (vitest, tsx) only `crypto-worker.ts` exists and the worker
 * starts with tsx's loader (`--import tsx`).
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { handleRequest, transferablesOf, type OkResponse, type RequestBody, type SlotRef, type WorkerRequest, type WorkerResponse } from './crypto-ops.js';
import { EngineError } from './errors.js';
import { addressMod, adviseHugePages } from './native.js';

export type { OkResponse, RequestBody, SlotRef, WorkerRequest, WorkerResponse } from './crypto-ops.js';

/** Error from a worker: `name` is 'SealError' for authentication / id mismatches. */
export class WorkerTaskError extends Error {
  constructor(
    readonly workerErrorName: string,
    message: string,
  ) {
    super(message);
    this.name = 'WorkerTaskError';
  }
  get isSealError(): boolean {
    return this.workerErrorName === 'SealError';
  }
}

/** How to start the worker: the compiled .js, or the .ts through tsx's loader (registered in-thread). */
function workerSpec(): { script: URL | string; eval: boolean } {
  const js = new URL('./crypto-worker.js', import.meta.url);
  if (existsSync(fileURLToPath(js))) return { script: js, eval: false };
  const ts = new URL('./crypto-worker.ts', import.meta.url);
  let api = 'tsx/esm/api';
  try {
    const cjs = createRequire(import.meta.url).resolve('tsx/esm/api');
    const mjs = cjs.replace(/\.cjs$/, '.mjs');
    api = pathToFileURL(existsSync(mjs) ? mjs : cjs).href;
  } catch {
    // Fall back to resolving the bare specifier from the working directory.
  }
  // `execArgv: ['--import', 'tsx']` does not reach worker threads on Node 20; register in-thread.
  const code = `const { register } = await import(${JSON.stringify(api)});\nregister();\nawait import(${JSON.stringify(ts.href)});\n`;
  return { script: code, eval: true };
}

/**
 * postMessage clones a typed array together with its *whole* ArrayBuffer: a 32-byte key from
 * Node's 8 KiB Buffer pool costs 8 KiB per message, and a manifest's `idAt(i)` (a view into all
 * ids) would cost 32 B × chunk count per message — quadratic in the image size (8 MiB per chunk
 * at 1 TiB). Small fields are therefore sent as compact copies.
 */
export function compactForMessage<T extends object>(msg: T): T {
  const out = { ...msg } as Record<string, unknown>;
  for (const k of ['idKey', 'sealKey', 'id']) {
    const v = out[k];
    if (v instanceof Uint8Array && v.byteLength !== v.buffer.byteLength) out[k] = new Uint8Array(v);
  }
  return out as T;
}

class PooledWorker {
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: OkResponse) => void; reject: (e: Error) => void }>();
  private seq = 0;
  private dead: Error | undefined;
  /** The worker has loaded its modules (its first message, seq 0). */
  ready = false;

  constructor() {
    const spec = workerSpec();
    this.worker = new Worker(spec.script, { eval: spec.eval });
    this.worker.unref();
    this.worker.on('message', (res: WorkerResponse) => {
      this.ready = true;
      const p = this.pending.get(res.seq);
      if (!p) return;
      this.pending.delete(res.seq);
      if (this.pending.size === 0) this.worker.unref();
      if (res.ok) p.resolve(res);
      else p.reject(new WorkerTaskError(res.error.name, res.error.message));
    });
    const fail = (err: Error): void => {
      this.dead = err;
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`crypto worker exited with code ${code}`)));
  }

  get load(): number {
    return this.pending.size;
  }

  get alive(): boolean {
    return this.dead === undefined;
  }

  run(body: RequestBody): Promise<OkResponse> {
    if (this.dead) return Promise.reject(this.dead);
    const seq = ++this.seq;
    return new Promise<OkResponse>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject });
      if (this.pending.size === 1) this.worker.ref();
      this.worker.postMessage(compactForMessage({ ...body, seq } as WorkerRequest), transferablesOf(body));
    });
  }

  terminate(): Promise<number> {
    return this.worker.terminate();
  }
}

/** N workers, least-loaded dispatch, started on first use. */
export class CryptoPool implements CryptoRunner {
  private readonly workers: PooledWorker[] = [];

  constructor(readonly size: number = defaultWorkerCount()) {
    if (!(size >= 1)) throw new EngineError('InvalidArgument', 'worker count must be >= 1');
  }

  private pick(): PooledWorker {
    for (let i = this.workers.length - 1; i >= 0; i--) if (!this.workers[i]?.alive) this.workers.splice(i, 1);
    if (this.workers.length < this.size) {
      const idle = this.workers.find((w) => w.load === 0);
      if (idle) return idle;
      const w = new PooledWorker();
      this.workers.push(w);
      return w;
    }
    let best = this.workers[0] as PooledWorker;
    for (const w of this.workers) if (w.load < best.load) best = w;
    return best;
  }

  run(body: RequestBody): Promise<OkResponse> {
    return this.pick().run(body);
  }

  /** True once a worker has booted; a request sent before waits for the boot (≈ 0.1–0.3 s on the reference VM). */
  get ready(): boolean {
    return this.workers.some((w) => w.ready && w.alive);
  }

  /** Start every worker now, so they boot while the caller does other work. */
  warm(): void {
    for (let i = this.workers.length - 1; i >= 0; i--) if (!this.workers[i]?.alive) this.workers.splice(i, 1);
    while (this.workers.length < this.size) this.workers.push(new PooledWorker());
  }

  async close(): Promise<void> {
    const all = [...this.workers];
    this.workers.length = 0;
    await Promise.all(all.map((w) => w.terminate()));
  }
}

/** What the engine's jobs need from a pool: `run` a request and a degree of parallelism. */
export interface CryptoRunner {
  readonly size: number;
  run(body: RequestBody): Promise<OkResponse>;
  /** False while no worker has booted yet (a pool of threads); absent or true: requests run at once. */
  readonly ready?: boolean;
  /** Start booting the workers now. */
  warm?(): void;
}

/**
 * Runs requests on the calling thread. For jobs too small to pay for starting workers (a bitmap
 * incremental with a few dirty chunks): worker start-up costs more than the hashing.
 */
export class InlineCrypto implements CryptoRunner {
  readonly size = 1;
  async run(body: RequestBody): Promise<OkResponse> {
    const res = handleRequest({ ...body, seq: 0 } as WorkerRequest);
    if (!res.ok) throw new WorkerTaskError(res.error.name, res.error.message);
    return res;
  }
}

export function defaultWorkerCount(): number {
  return Math.max(1, os.availableParallelism());
}

let shared: CryptoPool | undefined;

/** The process-wide pool (workers are unref'd while idle, so it never keeps a process alive). */
export function sharedCryptoPool(): CryptoPool {
  if (!shared) shared = new CryptoPool();
  return shared;
}

/**
 * Slot memory kept between jobs. A fresh buffer costs a page fault per 4 KiB on first touch (≈ 25 ms
 * per 4 MiB slot on the reference VM, more than hashing and sealing the chunk): a running server would
 * pay that on every job, and a small bitmap incremental is mostly that. Pools therefore take their
 * slots from here and give them back when their job is over (`dispose`): only buffers no worker can
 * still write (the job has settled every request). At most `SPARE_MAX_BYTES` are kept, and all of them
 * are dropped after `SPARE_IDLE_MS` without a job, so an idle process returns the memory (to the GC).
 * Reused memory holds an earlier job's bytes: every user overwrites a slot before reading it (reads,
 * seals, opens), and O_DIRECT padding is zeroed before it is written (fs-store).
 */
const SPARE_MAX_BYTES = 128 * 1024 * 1024;
const SPARE_IDLE_MS = 60_000;
const spare = { shared: new Map<number, SharedArrayBuffer[]>(), plain: new Map<number, ArrayBuffer[]>(), bytes: 0 };
let spareTimer: NodeJS.Timeout | undefined;

function takeSpare<T extends SharedArrayBuffer | ArrayBuffer>(map: Map<number, T[]>, size: number): T | undefined {
  const b = map.get(size)?.pop();
  if (b) spare.bytes -= size;
  return b;
}

function giveSpare<T extends SharedArrayBuffer | ArrayBuffer>(map: Map<number, T[]>, b: T): void {
  if (b.byteLength === 0 || spare.bytes + b.byteLength > SPARE_MAX_BYTES) return; // detached, or enough kept
  let list = map.get(b.byteLength);
  if (!list) map.set(b.byteLength, (list = []));
  list.push(b);
  spare.bytes += b.byteLength;
  if (spareTimer) spareTimer.refresh();
  else {
    spareTimer = setTimeout(() => {
      spare.shared.clear();
      spare.plain.clear();
      spare.bytes = 0;
      spareTimer = undefined;
    }, SPARE_IDLE_MS);
    spareTimer.unref();
  }
}

/** Bytes of slot memory kept for the next job (for tests). */
export function spareSlotBytes(): number {
  return spare.bytes;
}

/** Offset of the first `align`-aligned byte of `b` (0 without alignment), and huge pages for the slot there. */
function prepare(b: SharedArrayBuffer | ArrayBuffer, align: number, slotSize: number, fresh: boolean): number {
  const off = align > 0 ? (align - (addressMod(new Uint8Array(b, 0, 1), align) ?? 0)) % align : 0;
  if (fresh) adviseHugePages(new Uint8Array(b, off, slotSize));
  return off;
}

/**
 * A fixed set of equal slots of shared memory (one SharedArrayBuffer each, allocated on first use or
 * taken from the memory a finished job gave back); acquire waits when all are in use. With `align` (a
 * power of two) and the native addon, every slot starts at an `align`-aligned address (`aligned`), for
 * O_DIRECT I/O from the slots. `dispose()` gives the memory back for the next job: call it only when
 * no request that names a slot can still be running.
 */
export class SlotPool {
  readonly aligned: boolean;
  private readonly allocSize: number;
  private readonly align: number;
  private readonly bufs: Array<SharedArrayBuffer | undefined>;
  private readonly offs: number[];
  private readonly free: number[] = [];
  private readonly waiters: Array<(slot: number) => void> = [];

  constructor(
    readonly count: number,
    readonly slotSize: number,
    align = 0,
  ) {
    this.aligned = align > 0 && slotSize % align === 0 && addressMod(new Uint8Array(1), align) !== undefined;
    this.align = this.aligned ? align : 0;
    this.allocSize = slotSize + this.align;
    this.bufs = new Array<SharedArrayBuffer | undefined>(count).fill(undefined);
    this.offs = new Array<number>(count).fill(0);
    for (let i = count - 1; i >= 0; i--) this.free.push(i);
  }

  async acquire(): Promise<number> {
    const s = this.free.pop();
    if (s !== undefined) return s;
    return new Promise<number>((resolve) => this.waiters.push(resolve));
  }

  release(slot: number): void {
    const w = this.waiters.shift();
    if (w) w(slot);
    else this.free.push(slot);
  }

  private buf(slot: number): SharedArrayBuffer {
    let b = this.bufs[slot];
    if (!b) {
      const kept = takeSpare(spare.shared, this.allocSize);
      b = kept ?? new SharedArrayBuffer(this.allocSize);
      this.offs[slot] = prepare(b, this.align, this.slotSize, !kept);
      this.bufs[slot] = b;
    }
    return b;
  }

  ref(slot: number, len: number, at = 0): SlotRef {
    const sab = this.buf(slot);
    return { sab, off: (this.offs[slot] ?? 0) + at, len };
  }

  buffer(slot: number, len = this.slotSize, at = 0): Buffer {
    const sab = this.buf(slot);
    return Buffer.from(sab, (this.offs[slot] ?? 0) + at, len);
  }

  /** Give every slot's memory back for the next job; the pool must not be used afterwards. */
  dispose(): void {
    for (let i = 0; i < this.bufs.length; i++) {
      const b = this.bufs[i];
      this.bufs[i] = undefined;
      if (b) giveSpare(spare.shared, b);
    }
  }
}

/**
 * Output slots: a fixed number of ordinary ArrayBuffers (allocated on first use, or taken from the
 * memory a finished job gave back). `ref` lends the slot's buffer to a worker request (the request
 * transfers it, which detaches it here); give the response's `out` back with `adopt` before reading
 * the slot. A buffer lost with a failed or dead worker is replaced on `release`, so the pool never
 * shrinks and never grows. `dispose()` gives the buffers back for the next job.
 *
 * With `align` (a power of two, e.g. 4096) and the native addon (it alone can see addresses), every
 * slot starts at an `align`-aligned address and has room up to the next multiple of `align` after
 * `slotSize` bytes (`alignedTail`): a store may write it with O_DIRECT, padding the tail. Without
 * the addon the slots are unaligned and `aligned` is false.
 */
export class LentSlotPool {
  private readonly bufs: Array<ArrayBuffer | undefined>;
  private readonly offs: number[];
  private readonly free: number[] = [];
  private readonly waiters: Array<(slot: number) => void> = [];
  /** Bytes allocated per slot. */
  private readonly allocSize: number;
  readonly aligned: boolean;

  constructor(
    readonly count: number,
    readonly slotSize: number,
    readonly align = 0,
  ) {
    this.aligned = align > 0 && addressMod(new Uint8Array(1), align) !== undefined;
    this.allocSize = this.aligned ? Math.ceil(slotSize / align) * align + align : slotSize;
    this.bufs = new Array<ArrayBuffer | undefined>(count).fill(undefined);
    this.offs = new Array<number>(count).fill(0);
    for (let i = count - 1; i >= 0; i--) this.free.push(i);
  }

  async acquire(): Promise<number> {
    const s = this.free.pop();
    if (s !== undefined) return s;
    return new Promise<number>((resolve) => this.waiters.push(resolve));
  }

  release(slot: number): void {
    const b = this.bufs[slot];
    if (b && b.byteLength !== this.allocSize) this.bufs[slot] = undefined; // detached: lost in transit
    const w = this.waiters.shift();
    if (w) w(slot);
    else this.free.push(slot);
  }

  private place(slot: number, b: ArrayBuffer, fresh: boolean): void {
    this.bufs[slot] = b;
    this.offs[slot] = prepare(b, this.aligned ? this.align : 0, this.slotSize, fresh);
  }

  private buf(slot: number): ArrayBuffer {
    let b = this.bufs[slot];
    if (!b || b.byteLength !== this.allocSize) {
      const kept = takeSpare(spare.plain, this.allocSize);
      b = kept ?? new ArrayBuffer(this.allocSize);
      this.place(slot, b, !kept);
    }
    return b;
  }

  ref(slot: number, len: number): SlotRef {
    const b = this.buf(slot);
    return { sab: b, off: this.offs[slot] ?? 0, len };
  }

  /** Take back the buffer a worker returned for `slot` (the response's `out`). */
  adopt(slot: number, out: ArrayBuffer | undefined): void {
    if (out && out.byteLength === this.allocSize) this.place(slot, out, false);
  }

  /** The slot's first `len` bytes; with `aligned`, the view's buffer extends to the next multiple of `align`. */
  buffer(slot: number, len = this.slotSize): Buffer {
    const b = this.buf(slot);
    return Buffer.from(b, this.offs[slot] ?? 0, len);
  }

  /** Give every slot's buffer back for the next job; the pool must not be used afterwards. */
  dispose(): void {
    for (let i = 0; i < this.bufs.length; i++) {
      const b = this.bufs[i];
      this.bufs[i] = undefined;
      if (b && b.byteLength === this.allocSize) giveSpare(spare.plain, b);
    }
  }
}
