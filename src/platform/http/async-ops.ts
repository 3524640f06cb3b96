/**
 * One helper for ARM long-running operations: 202 + Azure-AsyncOperation + Location + Retry-After, a durable
 * operation row, and status endpoints that always answer 200 (Azure-AsyncOperation) or 202/200/204 (Location).
 * Slices call `start()` with the work to run; the row is the truth across restarts (interrupted work is marked
 * Failed with OperationInterrupted unless a job system resumes it).
 */
import type { Kysely } from 'kysely';
import type { FastifyReply } from 'fastify';
import { randomUUID } from 'node:crypto';
import type { Db } from '../db/index.js';
import type { Logger } from '../log.js';
import { ArmError, HttpError, type ArmErrorBody } from './errors.js';

export type OperationStatus = 'InProgress' | 'Succeeded' | 'Failed' | 'Canceled';

type OpTables = {
  platform_operations: {
    id: string;
    kind: string;
    status: string;
    resource_id: string | null;
    error_json: string | null;
    result_json: string | null;
    started_at: number;
    ended_at: number | null;
  };
}

export interface OperationView {
  id: string;
  name: string;
  status: OperationStatus;
  startTime: string;
  endTime?: string;
  error?: ArmErrorBody;
  result?: unknown;
  resourceId?: string;
}

export class AsyncOperations {
  private readonly db: Kysely<OpTables>;
  private readonly running = new Set<Promise<unknown>>();
  constructor(db: Db, private readonly log: Logger) {
    this.db = db.withTables<OpTables>();
  }

  /** Starts `work` in the background and returns the operation id at once. */
  async start(kind: string, resourceId: string | undefined, work: (opId: string) => Promise<unknown>): Promise<string> {
    const id = randomUUID();
    await this.db
      .insertInto('platform_operations')
      .values({ id, kind, status: 'InProgress', resource_id: resourceId ?? null, error_json: null, result_json: null, started_at: Date.now(), ended_at: null })
      .execute();
    const p = (async () => {
      try {
        const result = await work(id);
        await this.finish(id, 'Succeeded', undefined, result);
      } catch (e) {
        const body =
          e instanceof HttpError
            ? ((e.toBody() as { error?: ArmErrorBody }).error ?? { code: e.code, message: e.message })
            : { code: 'InternalServerError', message: 'The operation failed unexpectedly.' };
        if (!(e instanceof HttpError)) this.log.error({ err: e, opId: id }, 'async operation failed');
        await this.finish(id, 'Failed', body);
      }
    })();
    this.running.add(p);
    void p.finally(() => this.running.delete(p));
    return id;
  }

  private async finish(id: string, status: OperationStatus, error?: ArmErrorBody, result?: unknown): Promise<void> {
    await this.db
      .updateTable('platform_operations')
      .set({ status, error_json: error ? JSON.stringify(error) : null, result_json: result === undefined ? null : JSON.stringify(result), ended_at: Date.now() })
      .where('id', '=', id)
      .execute();
  }

  async get(id: string): Promise<OperationView | undefined> {
    const r = await this.db.selectFrom('platform_operations').selectAll().where('id', '=', id).executeTakeFirst();
    if (!r) return undefined;
    const view: OperationView = { id: r.id, name: r.id, status: r.status as OperationStatus, startTime: new Date(r.started_at).toISOString() };
    if (r.ended_at) view.endTime = new Date(r.ended_at).toISOString();
    if (r.error_json) view.error = JSON.parse(r.error_json) as ArmErrorBody;
    if (r.result_json) view.result = JSON.parse(r.result_json);
    if (r.resource_id) view.resourceId = r.resource_id;
    return view;
  }

  async require(id: string): Promise<OperationView> {
    const v = await this.get(id);
    if (!v) throw new ArmError(404, 'OperationNotFound', `The operation '${id}' was not found.`);
    return v;
  }

  /** Marks operations left InProgress by a previous process as Failed (called once at start-up). */
  async failInterrupted(): Promise<number> {
    const res = await this.db
      .updateTable('platform_operations')
      .set({
        status: 'Failed',
        ended_at: Date.now(),
        error_json: JSON.stringify({ code: 'OperationInterrupted', message: 'The server restarted while the operation was running; nothing was committed by it. Retry the operation.' }),
      })
      .where('status', '=', 'InProgress')
      .executeTakeFirst();
    return Number(res.numUpdatedRows);
  }

  /** Waits for in-flight operations (graceful shutdown). */
  async drain(timeoutMs = 30_000): Promise<void> {
    await Promise.race([Promise.allSettled([...this.running]), new Promise((r) => setTimeout(r, timeoutMs).unref())]);
  }
}

/** Answers 202 Accepted with the async-operation headers. */
export function accepted(reply: FastifyReply, urls: { asyncOperation?: string; location?: string }, retryAfterSec = 1, body?: unknown): FastifyReply {
  if (urls.asyncOperation) void reply.header('azure-asyncoperation', urls.asyncOperation);
  if (urls.location) void reply.header('location', urls.location);
  void reply.header('retry-after', String(retryAfterSec));
  return reply.code(202).send(body ?? '');
}

/**
 * Status answers (Azure-AsyncOperation bodies, 200 with `status`): while the operation is still running, Retry-After
 * tells the client when to poll again. Without it the Python SDK's ARM poller waits its default 30 s per poll.
 */
export function retryAfterWhileRunning(reply: FastifyReply, status: string, retryAfterSec = 1): void {
  if (['InProgress', 'Running', 'Accepted', 'Cancelling'].includes(status)) void reply.header('retry-after', String(retryAfterSec));
}
