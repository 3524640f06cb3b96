/** Progress events of long operations (backup, restore, verify), throttled. */

export interface Progress {
  /** Bytes of the image (or store) handled so far, including holes and reused chunks. */
  bytesDone: number;
  bytesTotal: number;
  /** Average rate since the start. */
  rateBytesPerSec: number;
  /** Seconds left at that rate; undefined until there is a rate. */
  etaSec: number | undefined;
}

export type ProgressListener = (p: Progress) => void;

/** Calls `listener` at most every `intervalMs`, and always once at `finish()`. */
export class ProgressTracker {
  private done = 0;
  private readonly started = performance.now();
  private lastEmit = 0;

  constructor(
    private readonly total: number,
    private readonly listener: ProgressListener | undefined,
    private readonly intervalMs = 250,
  ) {}

  add(bytes: number): void {
    this.done += bytes;
    if (!this.listener) return;
    const now = performance.now();
    if (now - this.lastEmit >= this.intervalMs) {
      this.lastEmit = now;
      this.emit(now);
    }
  }

  finish(): void {
    if (this.listener) this.emit(performance.now());
  }

  private emit(now: number): void {
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const left = Math.max(0, this.total - this.done);
    try {
      this.listener?.({
        bytesDone: this.done,
        bytesTotal: this.total,
        rateBytesPerSec: rate,
        etaSec: rate > 0 ? left / rate : undefined,
      });
    } catch {
      // A listener's failure must not fail the job.
    }
  }
}
