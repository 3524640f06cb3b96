/**
 * Key Vault data plane at https://{vault}.{suffix}:{port} (the app rewrites that host to /__vault/{vault}/…).
 * Thin: parse → call the service as the token's principal → present. Errors answer in Key Vault's envelope.
 * Paths match case-insensitively; an empty version segment (`/keys/k/`, `/keys/k//wrapkey`) means the latest.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { HttpError } from '../platform/http/errors.js';
import { originOf, toHttpError, VAULT_ROUTE_PREFIX } from '../platform/http/app.js';
import { readApiVersion } from '../platform/http/api-version.js';
import type { KvPrincipal } from './api.js';
import { KeyVaultError, kvErrors } from './errors.js';
import { b64url, decodeB64 } from './model.js';
import type { KeyVaultServiceImpl } from './service.js';

/** The 401 every vault-plane request without a valid token gets (before its body is read). */
export function keyVaultChallenge(opts: { tenantId: () => string; port: () => number; vaultHostSuffix: string }) {
  // The challenge names the host and port the client used (a proxy on 443 → no port), so SDKs verify it as is.
  return (req: FastifyRequest, reason: string): HttpError => {
    const m = /:(\d+)$/.exec(req.headers.host ?? '');
    // A Host without a port is the default HTTPS port (a reverse proxy on 443): the resource then has no port.
    const hostPort = m ? Number(m[1]) : 443;
    const resourcePort = hostPort === 443 ? '' : `:${hostPort}`;
    const authPort = m ? resourcePort : `:${opts.port()}`;
    return new KeyVaultError(401, 'Unauthorized', /missing an access token/.test(reason) ? 'AKV10000: Request is missing a Bearer or PoP token.' : `AKV10022: ${reason}`, undefined, {
      'www-authenticate': `Bearer authorization="https://localhost${authPort === ':443' ? '' : authPort}/${opts.tenantId()}", resource="https://${opts.vaultHostSuffix}${resourcePort}"`,
    });
  };
}

const API_VERSION = /^(7\.\d+(-preview(\.\d+)?)?|\d{4}-\d{2}-\d{2}(-preview)?)$/i;
const MAX_PAGE = 25;

function page<T>(req: FastifyRequest, items: T[]): { value: T[]; nextLink: string | null } {
  const u = new URL(req.url.replace(/^\/__vault\/[^/]+/, ''), originOf(req));
  const raw = u.searchParams.get('maxresults');
  let size = MAX_PAGE;
  if (raw !== null) {
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_PAGE) throw kvErrors.badParameter(`Invalid maxresults '${raw}': use an integer from 1 to ${MAX_PAGE}.`);
    size = Number(raw);
  }
  const tok = u.searchParams.get('$skiptoken');
  const offset = tok && /^\d+$/.test(tok) ? Number(tok) : 0;
  const value = items.slice(offset, offset + size);
  if (offset + size >= items.length) return { value, nextLink: null };
  u.searchParams.set('$skiptoken', String(offset + size));
  u.searchParams.set('maxresults', String(size));
  return { value, nextLink: u.href };
}

function body(req: FastifyRequest): Record<string, unknown> {
  const b = req.body;
  if (b === undefined || b === null || typeof b !== 'object' || Array.isArray(b)) throw kvErrors.badParameter('The request body must be a JSON object.');
  return b as Record<string, unknown>;
}

function bytes(b: Record<string, unknown>, field: string): Buffer {
  const v = b[field];
  if (typeof v !== 'string') throw kvErrors.badParameter(`'${field}' is required (base64url).`);
  const buf = decodeB64(v);
  if (!buf) throw kvErrors.badParameter(`'${field}' is not valid base64url.`);
  return buf;
}

type Params = { vault: string; name?: string; version?: string; op?: string };

export function registerKeyVaultDataRoutes(app: FastifyInstance, deps: { keyvault: KeyVaultServiceImpl }): void {
  const kv = deps.keyvault;

  void app.register(
    async (r) => {
      // Key Vault error envelope for everything under the vault hosts (validation, JSON parse errors included).
      r.setErrorHandler((error, req, reply) => {
        let e = toHttpError(error as Error, req);
        if (!(e instanceof KeyVaultError)) e = new KeyVaultError(e.status, e.status >= 500 ? 'InternalServerError' : e.status === 401 ? 'Unauthorized' : 'BadParameter', e.message, undefined, e.headers);
        if (e.status >= 500) req.log.error({ err: error, reqId: req.id }, 'key vault request failed');
        if (e.headers) for (const [k, v] of Object.entries(e.headers)) void reply.header(k, v);
        void reply.code(e.status).type('application/json; charset=utf-8').send(e.toBody());
      });
      r.setNotFoundHandler((req, reply) => {
        const path = req.url.replace(/^\/__vault\/[^/]+/, '').replace(/\?.*$/, '');
        void reply.code(404).send(new KeyVaultError(404, 'NotFound', `No such Key Vault operation: ${req.method} ${path}`).toBody());
      });
      r.addHook('preHandler', async (req) => {
        const v = readApiVersion(req.url);
        if (!v) throw kvErrors.badParameter("The 'api-version' query parameter is required (e.g. api-version=7.4).");
        if (!API_VERSION.test(v)) throw kvErrors.badParameter(`The specified version (${v}) is not recognized. Consider using the latest supported version (2025-07-01).`);
      });

      // Any caller with a vault token reaches the handler; the service checks the vault's access policies (or RBAC mode).
      const cfg = { config: { plane: 'vault' as const, open: 'authenticated' as const } };
      const who = (req: FastifyRequest): KvPrincipal => ({ objectId: req.caller!.objectId, tenantId: req.caller!.tenantId, appId: req.caller!.appId });
      const ctx = (req: FastifyRequest) => ({ base: originOf(req) });
      const P = (req: FastifyRequest) => req.params as Params;
      const ver = (v: string | undefined) => (v && v.length ? v : undefined);

      // ---- secrets ----------------------------------------------------------------------------------------------------
      r.get('/secrets', cfg, async (req) => page(req, await kv.listSecrets(who(req), P(req).vault, ctx(req))));
      r.get('/secrets/:name', cfg, async (req) => kv.getSecret(who(req), P(req).vault, P(req).name!, undefined, ctx(req)));
      r.get('/secrets/:name/:version', cfg, async (req) => {
        const p = P(req);
        if (p.version!.toLowerCase() === 'versions') return page(req, await kv.listSecretVersions(who(req), p.vault, p.name!, ctx(req)));
        return kv.getSecret(who(req), p.vault, p.name!, ver(p.version), ctx(req));
      });
      r.put('/secrets/:name', cfg, async (req) => {
        const b = body(req);
        return kv.setSecret(who(req), P(req).vault, P(req).name!, { value: b.value as string, contentType: b.contentType as string | undefined, tags: b.tags as Record<string, string> | undefined, attributes: b.attributes as never }, ctx(req));
      });
      const patchSecret = async (req: FastifyRequest) => kv.updateSecret(who(req), P(req).vault, P(req).name!, ver(P(req).version), body(req) as never, ctx(req));
      r.patch('/secrets/:name', cfg, patchSecret);
      r.patch('/secrets/:name/:version', cfg, patchSecret);
      r.delete('/secrets/:name', cfg, async (req) => kv.deleteSecret(who(req), P(req).vault, P(req).name!, ctx(req)));
      r.post('/secrets/:name', cfg, async (req, reply) => {
        const p = P(req);
        if (p.name!.toLowerCase() !== 'restore') return notFound(req, reply);
        return kv.restoreSecret(who(req), p.vault, body(req).value as string, ctx(req));
      });
      r.post('/secrets/:name/:op', cfg, async (req, reply) => {
        const p = P(req);
        if (p.op!.toLowerCase() !== 'backup') return notFound(req, reply);
        return { value: await kv.backupSecret(who(req), p.vault, p.name!) };
      });
      r.get('/deletedsecrets', cfg, async (req) => page(req, await kv.listDeletedSecrets(who(req), P(req).vault, ctx(req))));
      r.get('/deletedsecrets/:name', cfg, async (req) => kv.getDeletedSecret(who(req), P(req).vault, P(req).name!, ctx(req)));
      r.delete('/deletedsecrets/:name', cfg, async (req, reply) => {
        await kv.purgeDeletedSecret(who(req), P(req).vault, P(req).name!);
        return reply.code(204).send();
      });
      r.post('/deletedsecrets/:name/recover', cfg, async (req) => kv.recoverDeletedSecret(who(req), P(req).vault, P(req).name!, ctx(req)));

      // ---- keys -------------------------------------------------------------------------------------------------------
      r.get('/keys', cfg, async (req) => page(req, await kv.listKeys(who(req), P(req).vault, ctx(req))));
      r.get('/keys/:name', cfg, async (req) => kv.getKey(who(req), P(req).vault, P(req).name!, undefined, ctx(req)));
      r.get('/keys/:name/:version', cfg, async (req) => {
        const p = P(req);
        if (p.version!.toLowerCase() === 'versions') return page(req, await kv.listKeyVersions(who(req), p.vault, p.name!, ctx(req)));
        return kv.getKey(who(req), p.vault, p.name!, ver(p.version), ctx(req));
      });
      r.put('/keys/:name', cfg, async (req) => kv.importKey(who(req), P(req).vault, P(req).name!, body(req) as never, ctx(req)));
      const patchKey = async (req: FastifyRequest) => kv.updateKey(who(req), P(req).vault, P(req).name!, ver(P(req).version), body(req) as never, ctx(req));
      r.patch('/keys/:name', cfg, patchKey);
      r.patch('/keys/:name/:version', cfg, patchKey);
      r.delete('/keys/:name', cfg, async (req) => kv.deleteKey(who(req), P(req).vault, P(req).name!, ctx(req)));
      r.post('/keys/:name', cfg, async (req, reply) => {
        const p = P(req);
        if (p.name!.toLowerCase() !== 'restore') return notFound(req, reply);
        return kv.restoreKey(who(req), p.vault, body(req).value as string, ctx(req));
      });

      const keyOp = async (req: FastifyRequest, reply: FastifyReply, name: string, version: string | undefined, op: string) => {
        const p = P(req);
        const o = ctx(req);
        const cryptoOp = ({ wrapkey: 'wrapKey', unwrapkey: 'unwrapKey', encrypt: 'encrypt', decrypt: 'decrypt' } as const)[op.toLowerCase() as 'wrapkey'];
        if (cryptoOp) {
          const b = body(req);
          const res = await kv.cryptWire(who(req), p.vault, name, version, cryptoOp, b.alg, bytes(b, 'value'), o);
          return { kid: res.kid, value: b64url(res.value) };
        }
        switch (op.toLowerCase()) {
          case 'sign': {
            const b = body(req);
            const res = await kv.sign(who(req), p.vault, name, version, b.alg, bytes(b, 'value'), o);
            return { kid: res.kid, value: b64url(res.value) };
          }
          case 'verify': {
            const b = body(req);
            return { value: await kv.verify(who(req), p.vault, name, version, b.alg, bytes(b, 'digest'), bytes(b, 'value')) };
          }
          default:
            return notFound(req, reply);
        }
      };
      r.post('/keys/:name/:op', cfg, async (req, reply) => {
        const p = P(req);
        switch (p.op!.toLowerCase()) {
          case 'create':
            return kv.createKeyWire(who(req), p.vault, p.name!, body(req) as never, ctx(req));
          case 'backup':
            return { value: await kv.backupKey(who(req), p.vault, p.name!) };
          default:
            return keyOp(req, reply, p.name!, undefined, p.op!);
        }
      });
      r.post('/keys/:name/:version/:op', cfg, async (req, reply) => keyOp(req, reply, P(req).name!, ver(P(req).version), P(req).op!));
      r.get('/deletedkeys', cfg, async (req) => page(req, await kv.listDeletedKeys(who(req), P(req).vault, ctx(req))));
      r.get('/deletedkeys/:name', cfg, async (req) => kv.getDeletedKey(who(req), P(req).vault, P(req).name!, ctx(req)));
      r.delete('/deletedkeys/:name', cfg, async (req, reply) => {
        await kv.purgeDeletedKey(who(req), P(req).vault, P(req).name!);
        return reply.code(204).send();
      });
      r.post('/deletedkeys/:name/recover', cfg, async (req) => kv.recoverDeletedKey(who(req), P(req).vault, P(req).name!, ctx(req)));
    },
    { prefix: `${VAULT_ROUTE_PREFIX}/:vault` },
  );
}

function notFound(req: FastifyRequest, reply: FastifyReply) {
  const path = req.url.replace(/^\/__vault\/[^/]+/, '').replace(/\?.*$/, '');
  return reply.code(404).send(new KeyVaultError(404, 'NotFound', `No such Key Vault operation: ${req.method} ${path}`).toBody());
}
