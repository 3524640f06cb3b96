/**
 * The promises an engine operation has in flight (one per chunk or object), and the failure among
 * them that the operation reports: the first by default, or the one `prefer` chooses (restore
 * reports the failure earliest in the image). Owners also set `failure` themselves (abort, a read
 * that failed before its task started) and stop issuing work once it is set.
 */
export class TaskGroup {
  private readonly inflight = new Set<Promise<void>>();
  failure: unknown;

  constructor(private readonly prefer: (current: unknown, next: unknown) => unknown = (current, next) => (current === undefined ? next : current)) {}

  add(task: Promise<void>): void {
    this.inflight.add(task);
    task.then(
      () => this.inflight.delete(task),
      (err: unknown) => {
        this.inflight.delete(task);
        this.failure = this.prefer(this.failure, err);
      },
    );
  }

  /** Wait until nothing is in flight, tasks added meanwhile included. Never throws: see `failure`. */
  async settle(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }
}
