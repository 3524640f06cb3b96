/**
 * Typed HTTPS client of rsvault's own API, used by the CLI, the tests and (its wire types) the portal.
 * Trusts the installation CA given to it, resolves `*.localhost` to loopback itself, obtains and caches tokens
 * per resource with client credentials (or a user's password), and turns error envelopes into ApiError.
 */
import https from 'node:https';
import { readFileSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import dns from 'node:dns';

export interface ClientCredentials {
  tenantId: string;
  clientId?: string | undefined;
  clientSecret?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
}

export interface ClientOptions {
  server: string;
  credentials: ClientCredentials;
  ca?: string | Buffer | undefined;
  caFile?: string | undefined;
}

export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly recommendation?: string,
    readonly body?: unknown,
  ) {
    super(message);
  }
}

export interface RequestOptions {
  query?: Record<string, string | undefined> | undefined;
  body?: unknown;
  /** Resource the token is for; default: the ARM audience. */
  resource?: string | undefined;
  /** Host override, e.g. for a vault's data plane. */
  baseUrl?: string | undefined;
  headers?: Record<string, string> | undefined;
  /** Send without a token. */
  anonymous?: boolean | undefined;
}

export interface ApiResponse<T> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

/** Resolves `*.localhost` to loopback (glibc does not), everything else normally. */
export const localhostLookup: LookupFunction = (hostname, options, callback) => {
  if (hostname === 'localhost' || hostname.endsWith('.localhost')) {
    const family = (options as { family?: number }).family;
    const all = (options as { all?: boolean }).all;
    const addr = family === 6 ? { address: '::1', family: 6 } : { address: '127.0.0.1', family: 4 };
    if (all) return (callback as unknown as (e: null, a: { address: string; family: number }[]) => void)(null, [addr]);
    return (callback as unknown as (e: null, a: string, f: number) => void)(null, addr.address, addr.family);
  }
  return dns.lookup(hostname, options, callback as never);
};

export class RsvaultClient {
  readonly server: URL;
  private readonly agent: https.Agent;
  private readonly tokens = new Map<string, { token: string; exp: number }>();

  constructor(private readonly opts: ClientOptions) {
    this.server = new URL(opts.server.endsWith('/') ? opts.server : opts.server + '/');
    const ca = opts.ca ?? (opts.caFile ? readFileSync(opts.caFile) : undefined);
    this.agent = new https.Agent({ keepAlive: true, lookup: localhostLookup, ...(ca ? { ca } : {}) });
  }

  get tenantId(): string {
    return this.opts.credentials.tenantId;
  }

  /** The ARM audience this client asks tokens for (the server's own origin). */
  get armResource(): string {
    return this.server.origin + '/';
  }

  close(): void {
    this.agent.destroy();
  }

  async token(resource: string = this.armResource): Promise<string> {
    const cached = this.tokens.get(resource);
    if (cached && cached.exp > Date.now() + 60_000) return cached.token;
    const c = this.opts.credentials;
    const form = new URLSearchParams({ scope: `${resource}/.default` });
    if (c.clientId && c.clientSecret) {
      form.set('grant_type', 'client_credentials');
      form.set('client_id', c.clientId);
      form.set('client_secret', c.clientSecret);
    } else if (c.username && c.password) {
      form.set('grant_type', 'password');
      form.set('username', c.username);
      form.set('password', c.password);
    } else {
      throw new ApiError(0, 'NotLoggedIn', 'No credentials: run `rsvault login` first.');
    }
    const res = await this.raw<{ access_token?: string; expires_in?: number; error?: string; error_description?: string }>('POST', `/${c.tenantId}/oauth2/v2.0/token`, {
      rawBody: form.toString(),
      contentType: 'application/x-www-form-urlencoded',
    });
    if (res.status !== 200 || !res.body.access_token) {
      const desc = (res.body.error_description ?? 'token request failed').split('\r\n')[0]!;
      throw new ApiError(res.status, res.body.error ?? 'TokenRequestFailed', desc);
    }
    this.tokens.set(resource, { token: res.body.access_token, exp: Date.now() + (res.body.expires_in ?? 3600) * 1000 });
    return res.body.access_token;
  }

  /** Sends a request; returns the response for any status (no throwing on 4xx). */
  async send<T = unknown>(method: string, path: string, o: RequestOptions = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { ...(o.headers ?? {}) };
    if (!o.anonymous) headers.authorization = `Bearer ${await this.token(o.resource)}`;
    return this.raw<T>(method, path, { query: o.query, body: o.body, headers, baseUrl: o.baseUrl });
  }

  /** Sends a request and throws ApiError for a non-2xx answer. */
  async request<T = unknown>(method: string, path: string, o: RequestOptions = {}): Promise<T> {
    const res = await this.send<T>(method, path, o);
    if (res.status >= 400) throw toApiError(res.status, res.body);
    return res.body;
  }

  /** GETs every page of an ARM list (`value` + `nextLink`). */
  async list<T = unknown>(path: string, o: RequestOptions = {}): Promise<T[]> {
    const out: T[] = [];
    let page = await this.request<{ value: T[]; nextLink?: string }>('GET', path, o);
    out.push(...page.value);
    while (page.nextLink) {
      const next = new URL(page.nextLink);
      page = await this.request<{ value: T[]; nextLink?: string }>('GET', next.pathname + next.search, { ...o, query: undefined });
      out.push(...page.value);
    }
    return out;
  }

  /** Polls an Azure-AsyncOperation / Location URL until the operation ends. */
  async waitForOperation(res: ApiResponse<unknown>, o: { intervalMs?: number; timeoutMs?: number } = {}): Promise<unknown> {
    const asyncUrl = header(res.headers, 'azure-asyncoperation');
    const location = header(res.headers, 'location');
    const deadline = Date.now() + (o.timeoutMs ?? 3600_000);
    const interval = o.intervalMs ?? 500;
    for (;;) {
      if (Date.now() > deadline) throw new ApiError(0, 'OperationTimedOut', 'Timed out waiting for the operation to finish.');
      if (asyncUrl) {
        const u = new URL(asyncUrl);
        const s = await this.request<{ status: string; error?: { code: string; message: string; additionalInfo?: { info?: { text?: string } }[] } }>('GET', u.pathname + u.search);
        if (s.status === 'Succeeded') return s;
        if (s.status === 'Failed' || s.status === 'Canceled') throw toApiError(200, { error: s.error ?? { code: 'OperationFailed', message: `The operation ${s.status.toLowerCase()}.` } });
      } else if (location) {
        const u = new URL(location);
        const r = await this.send('GET', u.pathname + u.search);
        if (r.status >= 400) throw toApiError(r.status, r.body);
        if (r.status !== 202) return r.body;
      } else {
        return res.body;
      }
      await new Promise((r) => setTimeout(r, interval));
    }
  }

  private async raw<T>(
    method: string,
    path: string,
    o: { query?: Record<string, string | undefined> | undefined; body?: unknown; rawBody?: string; contentType?: string; headers?: Record<string, string>; baseUrl?: string | undefined },
  ): Promise<ApiResponse<T>> {
    try {
      return await this.rawOnce<T>(method, path, o);
    } catch (e) {
      // A pooled keep-alive socket the server closed while idle: the request never reached it, so send it again once.
      if ((e as NodeJS.ErrnoException).code === 'ECONNRESET' && (e as { reusedSocket?: boolean }).reusedSocket) return this.rawOnce<T>(method, path, o);
      throw e;
    }
  }

  private rawOnce<T>(
    method: string,
    path: string,
    o: { query?: Record<string, string | undefined> | undefined; body?: unknown; rawBody?: string; contentType?: string; headers?: Record<string, string>; baseUrl?: string | undefined },
  ): Promise<ApiResponse<T>> {
    const base = o.baseUrl ? new URL(o.baseUrl) : this.server;
    const url = new URL(path.replace(/^\/+/, '/'), base);
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const payload = o.rawBody ?? (o.body === undefined ? undefined : JSON.stringify(o.body));
    const headers: Record<string, string> = { accept: 'application/json', ...(o.headers ?? {}) };
    if (payload !== undefined) {
      headers['content-type'] = o.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(payload));
    }
    return new Promise((resolve, reject) => {
      const req = https.request(url, { method, headers, agent: this.agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let body: unknown = text;
          if (text && /json/.test(String(res.headers['content-type'] ?? ''))) {
            try {
              body = JSON.parse(text);
            } catch {
              body = text;
            }
          } else if (!text) body = undefined;
          resolve({ status: res.statusCode ?? 0, headers: res.headers, body: body as T });
        });
        res.on('error', reject);
      });
      req.on('error', (e: NodeJS.ErrnoException & { reusedSocket?: boolean }) => {
        e.reusedSocket = req.reusedSocket;
        if (e.code === 'ECONNREFUSED') reject(new ApiError(0, 'ServerUnreachable', `Cannot connect to ${url.origin}: is \`rsvault serve\` running?`));
        else if (/certificate|self.signed|UNABLE_TO_VERIFY/i.test(e.message + (e.code ?? ''))) {
          reject(new ApiError(0, 'TlsUntrusted', `The server certificate of ${url.origin} is not trusted (${e.code ?? e.message}).`, 'Pass --ca-file <data-dir>/tls/ca.pem to rsvault login.'));
        } else reject(e);
      });
      if (payload !== undefined) req.write(payload);
      req.end();
    });
  }
}

function header(h: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export function toApiError(status: number, body: unknown): ApiError {
  const e = (body as { error?: unknown })?.error;
  if (e && typeof e === 'object') {
    const err = e as { code?: string; message?: string; additionalInfo?: { type?: string; info?: { text?: string } }[] };
    const rec = err.additionalInfo?.find((a) => a.type === 'Recommendation')?.info?.text;
    return new ApiError(status, err.code ?? 'Error', err.message ?? 'Request failed', rec, body);
  }
  if (typeof e === 'string') {
    const desc = String((body as { error_description?: string }).error_description ?? e).split('\r\n')[0]!;
    return new ApiError(status, e, desc, undefined, body);
  }
  return new ApiError(status, `Http${status}`, typeof body === 'string' && body ? body.slice(0, 300) : `Request failed with status ${status}`, undefined, body);
}
