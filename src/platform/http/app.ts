/**
 * The one Fastify app: HTTPS with the installation certificate, Key Vault data-plane routing by Host header,
 * ARM error envelope for every failure, JSON and form parsing with clear errors, request ids, metrics.
 */
import Fastify, { LogController, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyError } from 'fastify';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { ArmError, HttpError } from './errors.js';
import { parseJsonLenient } from './jsonc.js';

export interface HttpOptions {
  tls: { key: string; cert: string };
  logger: Logger;
  metrics: Metrics;
  /** Key Vault data-plane host suffix (`vault.localhost`): `{name}.{suffix}` hosts route to `/__vault/{name}/…`. */
  vaultHostSuffix: string;
  /** Blob data-plane host suffix (`blob.localhost`): `{account}.{suffix}` hosts route to `/__blob/{account}/…`. */
  blobHostSuffix?: string | undefined;
  bodyLimit?: number;
}

/** Prefix the data-plane routes are registered under after the Host-based rewrite. */
export const VAULT_ROUTE_PREFIX = '/__vault';
/** Prefix the blob data-plane routes are registered under after the Host-based rewrite. */
export const BLOB_ROUTE_PREFIX = '/__blob';

/** Where a route lives and what it needs: which plane's token and which RBAC action. */
export interface RouteConfig {
  /** public: no token; arm/graph/vault: bearer token for that audience. Default arm. */
  plane?: 'public' | 'arm' | 'graph' | 'vault';
  /** RBAC action checked against role assignments at the request's scope (ARM writes and reads). */
  action?: string;
  /**
   * A route with a token plane but no `action` must say so: 'authenticated' = any caller with a valid token for the
   * plane reaches the handler, which does its own checks (Key Vault access policies, "my own" Graph objects, lists
   * filtered by role). Without `action`, `open` or plane 'public' the server refuses to start (registerAuth).
   */
  open?: 'authenticated';
  /** 'bytes': the route reads a raw body (application/octet-stream); other ARM routes take JSON only (else 415). */
  body?: 'bytes';
  /** Scope to check: default = the request path. */
  scope?: (req: FastifyRequest) => string;
}

declare module 'fastify' {
  // eslint-disable-next-line @typescript-eslint/no-empty-object-type -- declaration merging: route config gains RouteConfig's members
  interface FastifyContextConfig extends RouteConfig {}
}

export function vaultNameFromHost(host: string | undefined, suffix: string): string | undefined {
  if (!host) return undefined;
  const h = host.toLowerCase().replace(/:\d+$/, '');
  const s = '.' + suffix.toLowerCase();
  if (!h.endsWith(s)) return undefined;
  const name = h.slice(0, -s.length);
  return /^[a-z0-9-]{1,127}$/.test(name) ? name : undefined;
}

/** `{account}.{suffix}` → the storage account name (Azure: 3-24 lower-case letters and digits), else undefined. */
export function blobAccountFromHost(host: string | undefined, suffix: string | undefined): string | undefined {
  if (!host || !suffix) return undefined;
  const h = host.toLowerCase().replace(/:\d+$/, '');
  const s = '.' + suffix.toLowerCase();
  if (!h.endsWith(s)) return undefined;
  const name = h.slice(0, -s.length);
  return /^[a-z0-9]{3,24}$/.test(name) ? name : undefined;
}

/** The scheme://host:port the client used (ids echo it). */
export function originOf(req: FastifyRequest): string {
  return `https://${req.headers.host ?? 'localhost'}`;
}

function rewriteUrl(this: unknown, req: IncomingMessage & { url?: string; headers: Record<string, string | string[] | undefined> }, suffix: string, blobSuffix?: string): string {
  let url = req.url ?? '/';
  // az with a trailing-slash endpoint requests `//metadata/endpoints`: collapse leading slashes.
  url = url.replace(/^\/{2,}/, '/');
  const host = req.headers.host;
  const vault = vaultNameFromHost(typeof host === 'string' ? host : undefined, suffix);
  if (vault) return `${VAULT_ROUTE_PREFIX}/${vault}${url}`;
  const account = blobAccountFromHost(typeof host === 'string' ? host : undefined, blobSuffix);
  if (account) return `${BLOB_ROUTE_PREFIX}/${account}${url.startsWith('/') ? url : `/${url}`}`;
  return url;
}

/**
 * Keep-alive longer than clients' idle pools (Node's default 5 s makes a pooled client socket race the server's
 * close); headers timeout above it, as Node requires.
 */
export function tuneServer<S extends https.Server>(server: S): S {
  server.keepAliveTimeout = 72_000;
  server.headersTimeout = 75_000;
  return server;
}

export function createHttpApp(opts: HttpOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: opts.logger,
    logController: new LogController({ disableRequestLogging: true }),
    exposeHeadRoutes: false,
    routerOptions: {
      caseSensitive: false,
      ignoreTrailingSlash: true,
      ignoreDuplicateSlashes: true,
      maxParamLength: 1000,
    },
    bodyLimit: opts.bodyLimit ?? 4 * 1024 * 1024,
    genReqId: (req) => {
      const h = req.headers['x-ms-client-request-id'];
      return typeof h === 'string' && /^[\w-]{1,64}$/.test(h) ? h : randomUUID();
    },
    requestIdHeader: false,
    rewriteUrl(req) {
      return rewriteUrl.call(this, req as never, opts.vaultHostSuffix, opts.blobHostSuffix);
    },
    // A path segment over maxParamLength (a 2000-character resource name) or a malformed URL: the ARM envelope, not fastify's.
    frameworkErrors: (error, req, reply) => {
      const e =
        (error as { code?: string }).code === 'FST_ERR_MAX_PARAM_LENGTH'
          ? new ArmError(400, 'InvalidResourceName', 'A name in the request path is longer than 1000 characters; resource names are at most 90 characters.', { recommendation: 'Use a valid resource name.' })
          : new ArmError(400, 'InvalidRequestUri', `The request URI '${req.url.slice(0, 200)}' is malformed.`);
      void (reply as unknown as FastifyReply).code(e.status).send(e.toBody());
    },
    serverFactory: (handler) => tuneServer(https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, handler)),
    ajv: { customOptions: { coerceTypes: false, allErrors: false, removeAdditional: false, useDefaults: true } },
  }) as unknown as FastifyInstance;

  // Bodies: JSON (with the comments, trailing commas and unquoted keys ARM's deserializer accepts) with positioned parse errors; empty JSON bodies are undefined (the SDKs' first request has none).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(/^application\/(.+\+)?json/, { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, parseJsonLenient(text));
    } catch (e) {
      done(
        new ArmError(400, 'InvalidRequestContent', `The request content was invalid and could not be deserialized: '${(e as Error).message}'.`, {
          recommendation: 'Send a valid JSON document.',
        }),
        undefined,
      );
    }
  });
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string' }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(typeof body === 'string' ? body : body.toString('utf8'))));
  });
  app.addContentTypeParser(['text/plain', 'application/octet-stream'], (_req, payload, done) => done(null, payload));
  // Clients that send JSON with no or an unusual content type (some send text/json): parse leniently.
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, undefined);
    try {
      done(null, parseJsonLenient(text));
    } catch {
      done(new ArmError(415, 'UnsupportedMediaType', 'The content media type is not supported; use application/json.'), undefined);
    }
  });

  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-ms-request-id', req.id);
    reply.header('x-ms-correlation-request-id', req.id);
    req.log.debug({ method: req.method, url: req.url.replace(/\?.*$/, '') }, 'request');
  });

  // ARM writes take JSON: a form, text or octet-stream body on a JSON route is 415 in the ARM envelope (other content
  // types already go through the lenient JSON parser above, which answers 415 when the body is not JSON).
  app.addHook('preValidation', async (req) => {
    const cfg = req.routeOptions.config;
    if ((cfg?.plane ?? 'arm') !== 'arm' || cfg?.body === 'bytes' || !['PUT', 'PATCH', 'POST'].includes(req.method)) return;
    const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
    if (!['application/x-www-form-urlencoded', 'text/plain', 'application/octet-stream'].includes(type)) return;
    if (Number(req.headers['content-length'] ?? '0') === 0 && !req.headers['transfer-encoding']) return;
    throw new ArmError(415, 'UnsupportedMediaType', `The content media type '${type}' is not supported; send the request body as application/json.`, {
      recommendation: "Send 'Content-Type: application/json' with a JSON body.",
    });
  });

  app.addHook('onResponse', async (req, reply) => {
    const route = req.routeOptions.url ?? 'unmatched';
    opts.metrics.httpRequests.inc({ method: req.method, route, status: String(reply.statusCode) });
    opts.metrics.httpDuration.observe({ method: req.method, route }, reply.elapsedTime / 1000);
    req.log.info(
      { reqId: req.id, method: req.method, route, status: reply.statusCode, ms: Math.round(reply.elapsedTime) },
      'request completed',
    );
  });

  app.setNotFoundHandler((req, reply) => {
    const path = req.url.replace(/\?.*$/, '');
    const err = /^\/subscriptions\//i.test(path)
      ? new ArmError(404, 'InvalidResourceType', `The resource type or operation for '${req.method} ${path}' could not be found.`, {
          recommendation: 'Check the resource path and the provider namespace.',
        })
      : new ArmError(404, 'NotFound', `No such endpoint: ${req.method} ${path}`);
    void reply.code(404).send(err.toBody());
  });

  app.setErrorHandler((error: FastifyError | HttpError | Error, req: FastifyRequest, reply: FastifyReply) => {
    const e = toHttpError(error, req);
    if (e.status >= 500) req.log.error({ err: error, reqId: req.id }, 'request failed');
    else req.log.info({ reqId: req.id, code: e.code, status: e.status }, 'request rejected');
    if (e.headers) for (const [k, v] of Object.entries(e.headers)) void reply.header(k, v);
    void reply.code(e.status).send(e.toBody());
  });

  return app;
}

function jsonPath(instancePath: string, context: string | undefined, missing?: string): string {
  const parts = instancePath.split('/').filter(Boolean).map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (missing) parts.push(missing);
  const base = parts.map((p) => (/^\d+$/.test(p) ? `[${p}]` : `.${p}`)).join('');
  const prefix = context === 'querystring' ? 'query' : context === 'params' ? 'path' : context === 'headers' ? 'headers' : '$';
  return (prefix + base).replace(/^\$\./, '$.');
}

export function toHttpError(error: FastifyError | HttpError | Error, req?: FastifyRequest): HttpError {
  if (error instanceof HttpError) return error;
  const fe = error as FastifyError & { validation?: { instancePath: string; message?: string; keyword: string; params: Record<string, unknown> }[]; validationContext?: string };
  if (fe.validation && fe.validation.length > 0) {
    const v = fe.validation[0]!;
    const missing = v.keyword === 'required' ? String(v.params.missingProperty ?? '') : undefined;
    const extra = v.keyword === 'additionalProperties' ? String(v.params.additionalProperty ?? '') : undefined;
    const path = jsonPath(v.instancePath, fe.validationContext, missing ?? extra);
    const detail =
      v.keyword === 'required'
        ? `a value is required`
        : v.keyword === 'additionalProperties'
          ? `this member is not allowed here`
          : v.keyword === 'enum'
            ? `must be one of ${JSON.stringify((v.params as { allowedValues?: unknown[] }).allowedValues ?? [])}`
            : (v.message ?? 'invalid value');
    const code = fe.validationContext === 'querystring' ? 'InvalidQueryParameterValue' : 'InvalidRequestContent';
    return new ArmError(400, code, `The request content was invalid: '${path}' ${detail}.`, {
      target: path,
      recommendation: 'Fix the named member so that it matches the API schema, then retry.',
    });
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new ArmError(413, 'RequestEntityTooLarge', 'The request body is too large.');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new ArmError(415, 'UnsupportedMediaType', 'The content media type is not supported; use application/json.');
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return new ArmError(400, 'InvalidRequestContent', 'The Content-Length does not match the body.');
    default:
      break;
  }
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    return new ArmError(fe.statusCode, 'BadRequest', fe.message);
  }
  return new ArmError(500, 'InternalServerError', `The server hit an unexpected error; request id ${req?.id ?? 'unknown'}. Nothing was changed by the failed step.`, {
    recommendation: 'Retry the request; if it keeps failing, report the request id with the server log.',
  });
}
