/**
 * The portal's HTTP client: the same public API every other client uses (ARM, Graph-lite, token endpoint), from the
 * browser with fetch. Same origin as the portal, so no CORS. Errors become ApiError with the ARM envelope's
 * code, message and Recommendation (src/client/index.ts reads the same shape on the Node side).
 */
import { session, signOut } from './session';

export const API_VERSIONS = {
  resources: '2021-04-01',
  keyVault: '2023-07-01',
  compute: '2024-03-01',
  storage: '2023-01-01',
  recoveryServices: '2023-04-01',
  backup: '2023-02-01',
  authorization: '2022-04-01',
} as const;

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly recommendation?: string,
    readonly target?: string,
    /** The final status of a failed long-running operation (its properties may name the job). */
    readonly operation?: OperationStatus,
  ) {
    super(message);
  }
}

interface ErrorEnvelope {
  error?:
    | { code?: string; message?: string; target?: string; additionalInfo?: { type?: string; info?: { text?: string } }[]; recommendations?: string[] }
    | string;
  error_description?: string;
}

/** Turns any error body (ARM envelope, Key Vault envelope, OAuth error, plain text) into an ApiError. */
export function toApiError(status: number, body: unknown): ApiError {
  const b = (body ?? {}) as ErrorEnvelope;
  const e = b.error;
  if (e && typeof e === 'object') {
    const rec = e.additionalInfo?.find((a) => a.type === 'Recommendation')?.info?.text ?? e.recommendations?.join(' ');
    return new ApiError(status, e.code ?? 'Error', e.message ?? `Request failed (${status})`, rec, e.target);
  }
  if (typeof e === 'string') {
    const desc = (b.error_description ?? e).split('\r\n')[0] ?? e;
    return new ApiError(status, e, desc.replace(/^AADSTS\d+:\s*/, ''));
  }
  if (typeof body === 'string' && body) return new ApiError(status, `Http${status}`, body.slice(0, 300));
  return new ApiError(status, `Http${status}`, `The request failed with status ${status}.`);
}

export interface Response<T> {
  status: number;
  headers: Headers;
  body: T;
}

async function parse(res: globalThis.Response): Promise<unknown> {
  const text = await res.text();
  if (!text) return undefined;
  if (/json/.test(res.headers.get('content-type') ?? '')) {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return text;
    }
  }
  return text;
}

/** Sends a request with the session's token; returns any status (4xx included) except 401, which ends the session. */
export async function send<T = unknown>(method: string, path: string, body?: unknown): Promise<Response<T>> {
  const s = session();
  const headers: Record<string, string> = { accept: 'application/json' };
  if (s) headers.authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  let res: globalThis.Response;
  try {
    res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'ServerUnreachable', `The server did not answer (${(e as Error).message}).`, 'Check that `rsvault serve` is running, then retry.');
  }
  const parsed = await parse(res);
  if (res.status === 401 && s) {
    signOut('Your session has expired. Sign in again.');
    throw toApiError(401, parsed);
  }
  return { status: res.status, headers: res.headers, body: parsed as T };
}

/** Sends a request and throws ApiError for a non-2xx answer. */
export async function request<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await send<T>(method, path, body);
  if (r.status >= 400) throw toApiError(r.status, r.body);
  return r.body;
}

export function withVersion(path: string, version: string, query: Record<string, string> = {}): string {
  const u = new URL(path, location.origin);
  u.searchParams.set('api-version', version);
  for (const [k, v] of Object.entries(query)) u.searchParams.set(k, v);
  return u.pathname + u.search;
}

export interface Page<T> {
  value: T[];
  nextLink?: string | null;
}

/** One page of an ARM list; `next` is the server's nextLink (made relative: same origin). */
export async function getPage<T>(pathOrNext: string): Promise<{ items: T[]; next?: string | undefined }> {
  const p = await request<Page<T>>('GET', relative(pathOrNext));
  return { items: p.value ?? [], next: p.nextLink ? relative(p.nextLink) : undefined };
}

/** Every page of an ARM list. */
export async function listAll<T>(path: string): Promise<T[]> {
  const out: T[] = [];
  let next: string | undefined = path;
  while (next) {
    const p: { items: T[]; next?: string | undefined } = await getPage<T>(next);
    out.push(...p.items);
    next = p.next;
  }
  return out;
}

/**
 * A blob URL as the portal can fetch it with its ARM token: restores report Azure-style host URLs
 * (`https://{account}.blob.localhost:{port}/{container}/{blob}`, whose blob plane wants a storage.azure.com token);
 * the server serves the same blob at `/blob/{account}/{container}/{blob}` on its own origin for ARM tokens.
 */
export function blobRelative(url: string): string {
  if (url.startsWith('/')) return url;
  const u = new URL(url);
  const m = /^([a-z0-9]{3,24})\.blob\./.exec(u.hostname);
  return m ? `/blob/${m[1]}${u.pathname}${u.search}` : u.pathname + u.search;
}

export function relative(url: string): string {
  if (url.startsWith('/')) return url;
  const u = new URL(url);
  return u.pathname + u.search;
}

export interface OperationStatus {
  id?: string;
  name?: string;
  status: string;
  startTime?: string;
  endTime?: string;
  error?: { code?: string; message?: string; additionalInfo?: { type?: string; info?: { text?: string } }[] };
  properties?: { objectType?: string; jobId?: string; jobIds?: string[] } | null;
}

/**
 * Follows an ARM long-running operation to its end: Azure-AsyncOperation (status body) or Location (202 until done).
 * Returns the final status (or result body); throws ApiError for a failed operation with its code and recommendation.
 */
export async function waitForOperation(res: Response<unknown>, o: { intervalMs?: number; timeoutMs?: number; onTick?: (s: OperationStatus | undefined) => void } = {}): Promise<{ status?: OperationStatus; result?: unknown }> {
  const asyncUrl = res.headers.get('azure-asyncoperation');
  const loc = res.headers.get('location');
  if (res.status !== 202 && res.status !== 201 && !asyncUrl) return { result: res.body };
  if (!asyncUrl && !loc) return { result: res.body };
  const deadline = Date.now() + (o.timeoutMs ?? 30 * 60_000);
  const interval = o.intervalMs ?? 750;
  for (;;) {
    if (Date.now() > deadline) throw new ApiError(0, 'OperationTimedOut', 'The operation did not finish in time.', 'Open Backup jobs to follow it, or retry.');
    if (asyncUrl) {
      const s = await request<OperationStatus>('GET', relative(asyncUrl));
      o.onTick?.(s);
      if (s.status === 'Succeeded') return { status: s };
      if (s.status === 'Failed' || s.status === 'Canceled' || s.status === 'Cancelled') {
        const e = toApiError(200, { error: s.error ?? { code: 'OperationFailed', message: `The operation ${s.status.toLowerCase()}.` } });
        throw new ApiError(e.status, e.code, e.message, e.recommendation, e.target, s);
      }
    } else if (loc) {
      const r = await send('GET', relative(loc));
      if (r.status >= 400) throw toApiError(r.status, r.body);
      o.onTick?.(undefined);
      if (r.status !== 202) return { result: r.body };
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** Short, user-facing text of any thrown value. */
export function errorOf(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  return new ApiError(0, 'Error', e instanceof Error ? e.message : String(e));
}

/** ARM id → its parts (case-insensitive keys). */
export function parseId(id: string): { subscription: string; resourceGroup: string; provider: string; type: string; name: string; parts: string[] } {
  const parts = id.split('/').filter(Boolean);
  const at = (k: string) => {
    const i = parts.findIndex((p) => p.toLowerCase() === k.toLowerCase());
    return i >= 0 ? (parts[i + 1] ?? '') : '';
  };
  const pi = parts.findIndex((p) => p.toLowerCase() === 'providers');
  return {
    subscription: at('subscriptions'),
    resourceGroup: at('resourceGroups'),
    provider: pi >= 0 ? (parts[pi + 1] ?? '') : '',
    type: pi >= 0 ? (parts[pi + 2] ?? '') : '',
    name: parts[parts.length - 1] ?? '',
    parts,
  };
}

export function routeExists(e: unknown): boolean {
  const err = errorOf(e);
  return !(err.status === 404 && (err.code === 'InvalidResourceType' || err.code === 'NotFound'));
}
