/**
 * Scheduler: turns cron-style schedules into queue jobs. Each tick looks at the window (last tick, now] of an
 * injectable clock, asks every registered source for its entries (id + cron pattern, UTC, croner syntax with an
 * optional seconds field) and sends one job per slot that fell into the window, with the unique key
 * `{source}:{entry}:{slot ISO}`: however many schedulers run, each slot fires once.
 * Only the latest slot in a window fires per entry (after downtime the scheduler does not replay a backlog).
 *
 * Catch-up: a source with `catchUpMs` also looks back that far on the scheduler's first tick, so the latest slot
 * missed while the process was down still fires once (as Proxmox does with missed jobs), unless it fired already
 * (the unique key) or it is not after the entry's `notBefore` (e.g. the item was protected, or last backed up,
 * after that slot).
 */
import { Cron } from 'croner';
import type { JobQueue } from './queue.js';

export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock running at real speed from an offset (tests move "now" close to a slot). */
export function offsetClock(offsetMs: number): Clock {
  return { now: () => Date.now() + offsetMs };
}

export interface ScheduleEntry {
  /** Stable id of the thing scheduled (e.g. a protected item). */
  key: string;
  /** croner pattern, evaluated in UTC. */
  cron: string;
  payload?: Record<string, unknown>;
  /** Catch-up slots (missed before the scheduler started) at or before this instant (ms) do not fire. */
  notBefore?: number;
}

export interface ScheduleSource {
  name: string;
  /** Queue job name to send for each slot. */
  queue: string;
  entries(): Promise<ScheduleEntry[]>;
  /** On the first tick, also fire the latest slot of the last `catchUpMs` (missed while down). */
  catchUpMs?: number;
}

export interface SchedulerOptions {
  clock?: Clock;
  tickMs?: number;
  log?: { error(o: object, msg: string): void; debug?(o: object, msg: string): void };
}

/** The slots of `cron` in (from, to], oldest first (at most `max`). Pure. */
export function slotsBetween(cron: string, from: number, to: number, max = 1000): number[] {
  const c = new Cron(cron, { timezone: 'UTC', paused: true });
  const out: number[] = [];
  let cur = new Date(from);
  while (out.length < max) {
    const n = c.nextRun(cur);
    if (!n || n.getTime() > to) break;
    out.push(n.getTime());
    cur = n;
  }
  return out;
}

/** The next slot of `cron` strictly after `from`, or undefined. Pure. */
export function nextSlot(cron: string, from: number): number | undefined {
  const n = new Cron(cron, { timezone: 'UTC', paused: true }).nextRun(new Date(from));
  return n ? n.getTime() : undefined;
}

export class Scheduler {
  private readonly sources: ScheduleSource[] = [];
  private readonly clock: Clock;
  private readonly tickMs: number;
  private last: number;
  private readonly startedAt: number;
  private firstTick = true;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<number> | undefined;

  constructor(private readonly queue: JobQueue, private readonly o: SchedulerOptions = {}) {
    this.clock = o.clock ?? systemClock;
    this.tickMs = o.tickMs ?? 15_000;
    this.last = this.clock.now();
    this.startedAt = this.last;
  }

  add(source: ScheduleSource): void {
    this.sources.push(source);
  }

  now(): number {
    return this.clock.now();
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick().catch((e: unknown) => this.o.log?.error({ err: e }, 'scheduler tick failed')), this.tickMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.ticking;
  }

  /** One pass over (last, now]; returns how many jobs were sent. */
  tick(): Promise<number> {
    this.ticking ??= this.doTick().finally(() => (this.ticking = undefined));
    return this.ticking;
  }

  private async doTick(): Promise<number> {
    const to = this.clock.now();
    const first = this.firstTick;
    if (to <= this.last && !(first && this.sources.some((s) => s.catchUpMs))) return 0;
    let sent = 0;
    for (const s of this.sources) {
      const from = first && s.catchUpMs ? this.last - s.catchUpMs : this.last;
      let entries: ScheduleEntry[];
      try {
        entries = await s.entries();
      } catch (e) {
        this.o.log?.error({ err: e, source: s.name }, 'schedule source failed');
        continue;
      }
      for (const e of entries) {
        let slots: number[];
        try {
          // notBefore only filters catch-up slots (before this scheduler started): a slot that comes due while it
          // runs always fires, whatever else happened in between.
          slots = slotsBetween(e.cron, from, to).filter((t) => t > this.startedAt || t > (e.notBefore ?? -Infinity));
        } catch (err) {
          this.o.log?.error({ err, source: s.name, key: e.key, cron: e.cron }, 'invalid schedule');
          continue;
        }
        const slot = slots[slots.length - 1];
        if (slot === undefined) continue;
        const iso = new Date(slot).toISOString();
        const id = await this.queue.send(s.queue, { ...(e.payload ?? {}), key: e.key, slot: iso }, { uniqueKey: `${s.name}:${e.key}:${iso}` });
        if (id) sent++;
      }
    }
    this.last = to;
    this.firstTick = false;
    return sent;
  }
}
