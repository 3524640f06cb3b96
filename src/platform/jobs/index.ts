/** Platform jobs: the work queue (embedded; pg-boss later) and the scheduler (croner). No domain words. */
export { EmbeddedQueue, jobsMigrations, type JobQueue, type JobHandler, type JobContext, type SendOptions, type DeadJob, type EmbeddedQueueOptions } from './queue.js';
export { Scheduler, slotsBetween, nextSlot, systemClock, offsetClock, type Clock, type ScheduleEntry, type ScheduleSource, type SchedulerOptions } from './scheduler.js';
