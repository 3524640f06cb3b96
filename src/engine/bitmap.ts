/**
 * Changed-block bitmap: one bit per 64 KiB block of a disk, set when the block was written since
 * the last successful backup. Bit i covers bytes [i·64 KiB, (i+1)·64 KiB); bit order inside a byte
 * is least-significant first. Compute's guest I/O layer keeps and persists it (`toBytes`); the
 * engine only reads it. "Valid" is the caller's promise that every write since the previous
 * manifest was recorded; if in doubt, pass no bitmap (everything is read and hashed).
 */
import { EngineError } from './errors.js';

export const BITMAP_BLOCK_SIZE = 64 * 1024;

export class ChangedBlockBitmap {
  readonly bits: Uint8Array;

  /** `diskSize` in bytes; optional `bits` to adopt (e.g. from `toBytes`). */
  constructor(
    readonly diskSize: number,
    bits?: Uint8Array,
  ) {
    if (!Number.isSafeInteger(diskSize) || diskSize < 0) throw new EngineError('InvalidArgument', `bad disk size ${diskSize}`);
    const bytes = Math.ceil(ChangedBlockBitmap.blockCount(diskSize) / 8);
    if (bits && bits.length !== bytes) {
      throw new EngineError('InvalidArgument', `bitmap has ${bits.length} bytes, a ${diskSize}-byte disk needs ${bytes}`);
    }
    this.bits = bits ?? new Uint8Array(bytes);
  }

  static blockCount(diskSize: number): number {
    return Math.ceil(diskSize / BITMAP_BLOCK_SIZE);
  }

  get blockCount(): number {
    return ChangedBlockBitmap.blockCount(this.diskSize);
  }

  /** Record a write of `length` bytes at `offset` (every block it touches becomes dirty). */
  markWritten(offset: number, length: number): void {
    if (length <= 0) return;
    const first = Math.floor(offset / BITMAP_BLOCK_SIZE);
    const last = Math.min(this.blockCount - 1, Math.floor((offset + length - 1) / BITMAP_BLOCK_SIZE));
    for (let b = first; b <= last; b++) this.bits[b >> 3]! |= 1 << (b & 7);
  }

  isBlockDirty(block: number): boolean {
    return ((this.bits[block >> 3] ?? 0) & (1 << (block & 7))) !== 0;
  }

  /** True if any block touching [offset, offset+length) is dirty. */
  isRangeDirty(offset: number, length: number): boolean {
    if (length <= 0) return false;
    const first = Math.floor(offset / BITMAP_BLOCK_SIZE);
    const last = Math.min(this.blockCount - 1, Math.floor((offset + length - 1) / BITMAP_BLOCK_SIZE));
    for (let b = first; b <= last; b++) {
      // Skip whole clean bytes quickly.
      if ((b & 7) === 0 && b + 7 <= last && this.bits[b >> 3] === 0) {
        b += 7;
        continue;
      }
      if (this.isBlockDirty(b)) return true;
    }
    return false;
  }

  dirtyBlockCount(): number {
    let n = 0;
    for (const byte of this.bits) {
      let v = byte;
      while (v) {
        v &= v - 1;
        n++;
      }
    }
    return n;
  }

  clear(): void {
    this.bits.fill(0);
  }

  toBytes(): Uint8Array {
    return this.bits.slice();
  }

  static fromBytes(diskSize: number, bits: Uint8Array): ChangedBlockBitmap {
    return new ChangedBlockBitmap(diskSize, bits.slice());
  }
}
