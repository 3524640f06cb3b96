/**
 * aes-xts-plain64 over whole buffers of 512-byte sectors, batched: one AES-ECB pass with K2 computes every sector's
 * first tweak, the other tweaks follow by GF(2^128) doubling in JS, and one AES-ECB pass with K1 does the data
 * (C = E_K1(P ⊕ T) ⊕ T). A cipher object per sector is about 10× slower.
 * IV (plain64) = the sector number as a 16-byte little-endian integer, counted from the start of the payload.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto';
import os from 'node:os';

export const SECTOR = 512;
const LE = os.endianness() === 'LE';

/**
 * The two XOR passes in WebAssembly (i64 tweak doubling, v128 XOR): about 2× faster than the JS loops, which cost
 * more than the AES itself. Compiled from this WAT (wabt `wat2wasm`), 348 bytes:
 *
 *   (module (memory (export "mem") 1)
 *     ;; pre(d, tw, t0, sectors): per sector s, T = t0[s]; for its 32 blocks: tw[blk] = T; d[blk] ^= T; T = T·α
 *     (func (export "pre") (param $d i32) (param $tw i32) (param $t0 i32) (param $sectors i32)
 *       (local $lo i64) (local $hi i64) (local $end i32) (local $send i32) (local $c i64)
 *       (local.set $send (i32.add (local.get $t0) (i32.shl (local.get $sectors) (i32.const 4))))
 *       (block $done (loop $sec
 *         (br_if $done (i32.ge_u (local.get $t0) (local.get $send)))
 *         (local.set $lo (i64.load (local.get $t0))) (local.set $hi (i64.load offset=8 (local.get $t0)))
 *         (local.set $end (i32.add (local.get $d) (i32.const 512)))
 *         (loop $blk
 *           (i64.store (local.get $tw) (local.get $lo)) (i64.store offset=8 (local.get $tw) (local.get $hi))
 *           (i64.store (local.get $d) (i64.xor (i64.load (local.get $d)) (local.get $lo)))
 *           (i64.store offset=8 (local.get $d) (i64.xor (i64.load offset=8 (local.get $d)) (local.get $hi)))
 *           (local.set $c (i64.shr_s (local.get $hi) (i64.const 63)))
 *           (local.set $hi (i64.or (i64.shl (local.get $hi) (i64.const 1)) (i64.shr_u (local.get $lo) (i64.const 63))))
 *           (local.set $lo (i64.xor (i64.shl (local.get $lo) (i64.const 1)) (i64.and (local.get $c) (i64.const 0x87))))
 *           (local.set $d (i32.add (local.get $d) (i32.const 16))) (local.set $tw (i32.add (local.get $tw) (i32.const 16)))
 *           (br_if $blk (i32.lt_u (local.get $d) (local.get $end))))
 *         (local.set $t0 (i32.add (local.get $t0) (i32.const 16))) (br $sec))))
 *     ;; post(d, o, tw, len): d = o ^ tw (len a multiple of 64)
 *     (func (export "post") (param $d i32) (param $o i32) (param $tw i32) (param $len i32) (local $end i32)
 *       (local.set $end (i32.add (local.get $d) (local.get $len)))
 *       (block $done (loop $l
 *         (br_if $done (i32.ge_u (local.get $d) (local.get $end)))
 *         (v128.store (local.get $d) (v128.xor (v128.load (local.get $o)) (v128.load (local.get $tw))))
 *         (v128.store offset=16 (local.get $d) (v128.xor (v128.load offset=16 (local.get $o)) (v128.load offset=16 (local.get $tw))))
 *         (v128.store offset=32 (local.get $d) (v128.xor (v128.load offset=32 (local.get $o)) (v128.load offset=32 (local.get $tw))))
 *         (v128.store offset=48 (local.get $d) (v128.xor (v128.load offset=48 (local.get $o)) (v128.load offset=48 (local.get $tw))))
 *         (local.set $d (i32.add (local.get $d) (i32.const 64))) (local.set $o (i32.add (local.get $o) (i32.const 64)))
 *         (local.set $tw (i32.add (local.get $tw) (i32.const 64))) (br $l)))))
 */
const WASM_B64 =
  'AGFzbQEAAAABCAFgBH9/f38AAwMCAAAFAwEAAQcUAwNtZW0CAANwcmUAAARwb3N0AAEKpwICoAEDAn4CfwF+IAIgA0EEdGohBwJAA0AgAiAHTw0BIAIpAwAhBCACKQMIIQUgAEGABGohBgNAIAEgBDcDACABIAU3AwggACAAKQMAIASFNwMAIAAgACkDCCAFhTcDCCAFQj+HIQggBUIBhiAEQj+IhCEFIARCAYYgCEKHAYOFIQQgAEEQaiEAIAFBEGohASAAIAZJDQALIAJBEGohAgwACwsLggEBAX8gACADaiEEAkADQCAAIARPDQEgACAB/QAEACAC/QAEAP1R/QsEACAAIAH9AAQQIAL9AAQQ/VH9CwQQIAAgAf0ABCAgAv0ABCD9Uf0LBCAgACAB/QAEMCAC/QAEMP1R/QsEMCAAQcAAaiEAIAFBwABqIQEgAkHAAGohAgwACwsL';
/** Sectors per WebAssembly pass (4 MiB); larger buffers go through in pieces. */
const WASM_PIECE = 4 << 20;

/** The few WebAssembly APIs used here (the project's TS lib has no WebAssembly declarations). */
interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object) => { exports: Record<string, unknown> };
}
interface XtsWasm {
  pre: (d: number, tw: number, t0: number, sectors: number) => void;
  post: (d: number, o: number, tw: number, len: number) => void;
  memory: WasmMemory;
  view: Buffer;
}
let wasm: XtsWasm | null | undefined;
/** The shared instance with at least `bytes` of memory (one instance: `run` is synchronous), or null if unavailable. */
function wasmWith(bytes: number): XtsWasm | null {
  if (wasm === undefined) {
    try {
      const WA = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;
      const inst = new WA.Instance(new WA.Module(Buffer.from(WASM_B64, 'base64')));
      const ex = inst.exports as unknown as Omit<XtsWasm, 'view' | 'memory'> & { mem: WasmMemory };
      wasm = { pre: ex.pre, post: ex.post, memory: ex.mem, view: Buffer.from(ex.mem.buffer) };
    } catch {
      wasm = null;
    }
  }
  if (!wasm) return null;
  if (wasm.memory.buffer.byteLength < bytes) {
    wasm.memory.grow(Math.ceil((bytes - wasm.memory.buffer.byteLength) / 65536));
    wasm.view = Buffer.from(wasm.memory.buffer);
  }
  return wasm;
}

export class Xts {
  private readonly k1: Buffer;
  private readonly k2: Buffer;
  private readonly alg: string;

  /** `key` = 32 bytes (AES-128-XTS) or 64 bytes (AES-256-XTS). */
  constructor(key: Buffer) {
    if (key.length !== 32 && key.length !== 64) throw new Error(`XTS key must be 32 or 64 bytes, got ${key.length}`);
    const half = key.length / 2;
    this.k1 = Buffer.from(key.subarray(0, half));
    this.k2 = Buffer.from(key.subarray(half));
    this.alg = half === 32 ? 'aes-256-ecb' : 'aes-128-ecb';
  }

  /** Encrypts `data` (a whole number of sectors) in place; its first sector has number `firstSector`. */
  encrypt(data: Buffer, firstSector: number): Buffer {
    return this.run(data, firstSector, true);
  }

  decrypt(data: Buffer, firstSector: number): Buffer {
    return this.run(data, firstSector, false);
  }

  /**
   * Pass 1: every tweak T (first per sector from one AES-ECB pass with K2, the rest by GF(2^128) doubling) is stored
   * in `t` and XORed into `data` in the same loop. Pass 2 (after ECB with K1): data = ecbOut ⊕ T.
   */
  private run(data: Buffer, firstSector: number, enc: boolean): Buffer {
    if (data.length % SECTOR !== 0) throw new Error(`XTS data must be whole ${SECTOR}-byte sectors (got ${data.length} bytes)`);
    if (data.length === 0) return data;
    if (!LE) throw new Error('XTS batch path needs a little-endian host');
    if (wasmWith(0)) {
      for (let off = 0; off < data.length; off += WASM_PIECE) {
        this.runWasm(data.subarray(off, Math.min(data.length, off + WASM_PIECE)), firstSector + off / SECTOR, enc);
      }
      return data;
    }
    return this.runJs(data, firstSector, enc);
  }

  /** Tweaks for sectors [firstSector, +sectors): AES-ECB with K2 over the plain64 IVs. */
  private firstTweaks(firstSector: number, sectors: number): Buffer {
    const ivs = Buffer.alloc(sectors * 16);
    for (let s = 0; s < sectors; s++) {
      const n = firstSector + s;
      ivs.writeUInt32LE(n % 0x100000000, s * 16);
      ivs.writeUInt32LE(Math.floor(n / 0x100000000), s * 16 + 4);
    }
    const e = createCipheriv(this.alg, this.k2, null);
    e.setAutoPadding(false);
    return Buffer.concat([e.update(ivs), e.final()]);
  }

  /** Same as runJs, with the XOR passes in WebAssembly. Memory: data at 0, tweaks at len, K1 output at 2·len, T0 at 3·len. */
  private runWasm(data: Buffer, firstSector: number, enc: boolean): void {
    const len = data.length;
    const sectors = len / SECTOR;
    const t0 = this.firstTweaks(firstSector, sectors);
    const w = wasmWith(3 * len + t0.length)!;
    const mem = w.view;
    t0.copy(mem, 3 * len);
    data.copy(mem, 0);
    w.pre(0, len, 3 * len, sectors);
    const k = enc ? createCipheriv(this.alg, this.k1, null) : createDecipheriv(this.alg, this.k1, null);
    k.setAutoPadding(false);
    const out = k.update(mem.subarray(0, len));
    k.final();
    out.copy(mem, 2 * len);
    w.post(0, 2 * len, len, len);
    mem.copy(data, 0, 0, len);
  }

  private runJs(data: Buffer, firstSector: number, enc: boolean): Buffer {
    const len = data.length;
    const sectors = len / SECTOR;
    const ivs = Buffer.alloc(sectors * 16);
    for (let s = 0; s < sectors; s++) {
      const n = firstSector + s;
      ivs.writeUInt32LE(n % 0x100000000, s * 16);
      ivs.writeUInt32LE(Math.floor(n / 0x100000000), s * 16 + 4);
    }
    const e = createCipheriv(this.alg, this.k2, null);
    e.setAutoPadding(false);
    const t0 = Buffer.concat([e.update(ivs), e.final()]);
    const w0 = new Uint32Array(t0.buffer, t0.byteOffset, t0.length / 4);
    const aligned = data.byteOffset % 4 === 0;
    const src = aligned ? data : Buffer.from(data);
    const d = new Uint32Array(src.buffer, src.byteOffset, len / 4);
    const tb = Buffer.allocUnsafeSlow(len);
    const w = new Uint32Array(tb.buffer, tb.byteOffset, len / 4);
    for (let s = 0; s < sectors; s++) {
      let a = w0[s * 4]!, b = w0[s * 4 + 1]!, c = w0[s * 4 + 2]!, dd = w0[s * 4 + 3]!;
      let p = s * (SECTOR / 4);
      const end = p + SECTOR / 4;
      while (p < end) {
        w[p] = a; w[p + 1] = b; w[p + 2] = c; w[p + 3] = dd;
        d[p] = d[p]! ^ a; d[p + 1] = d[p + 1]! ^ b; d[p + 2] = d[p + 2]! ^ c; d[p + 3] = d[p + 3]! ^ dd;
        p += 4;
        const carry = dd >>> 31;
        dd = ((dd << 1) | (c >>> 31)) >>> 0;
        c = ((c << 1) | (b >>> 31)) >>> 0;
        b = ((b << 1) | (a >>> 31)) >>> 0;
        a = ((a << 1) ^ (carry ? 0x87 : 0)) >>> 0;
      }
    }
    const k = enc ? createCipheriv(this.alg, this.k1, null) : createDecipheriv(this.alg, this.k1, null);
    k.setAutoPadding(false);
    const out = k.update(src);
    k.final();
    const o = out.byteOffset % 4 === 0 ? out : Buffer.from(out);
    const ow = new Uint32Array(o.buffer, o.byteOffset, len / 4);
    for (let i = 0; i < d.length; i++) d[i] = ow[i]! ^ w[i]!;
    if (!aligned) src.copy(data);
    return data;
  }
}
