/**
 * The Azure Blob service subset the official SDKs (`@azure/storage-blob`, `azure.storage.blob`) use to list and
 * download, at `https://{account}.{blob suffix}:{port}/` (Host-routed to `/__blob/{account}/…`), read-only:
 *   GET  /?comp=list                              List Containers (prefix, marker, maxresults)
 *   GET  /?restype=account&comp=properties        Get Account Information
 *   GET  /{c}?restype=container                   Get Container Properties (HEAD too)
 *   GET  /{c}?restype=container&comp=list         List Blobs (prefix, marker, maxresults, delimiter)
 *   HEAD /{c}/{b}                                 Get Blob Properties
 *   GET  /{c}/{b}                                 Get Blob, whole or `x-ms-range`/`Range` → 206 + Content-Range, 416
 * Auth: a bearer token for `https://storage.azure.com` (RBAC read on the account), a service SAS in Azure's format,
 * or Shared Key (`Authorization: SharedKey {account}:{sig}`, the keys of listKeys). Every answer echoes
 * `x-ms-version`; errors are Azure Storage XML (`<Error><Code/><Message/></Error>`) with `x-ms-error-code`.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { createHash } from 'node:crypto';
import { createReadStream, type Stats } from 'node:fs';
import { HttpError } from '../platform/http/errors.js';
import { BLOB_ROUTE_PREFIX } from '../platform/http/app.js';
import type { Caller } from '../platform/auth/index.js';
import { hmac, sameSig, sharedKeyStringToSign, STORAGE_SERVICE_VERSION } from './azure-auth.js';
import { BLOB_READ_ACTION, CONTAINER_READ_ACTION, type BlobEntry, type StorageAccount, type StorageService } from './service.js';

/** An Azure Storage error: XML body, `x-ms-error-code` header. */
export class StorageXmlError extends HttpError {
  override name = 'StorageXmlError';
  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(status, code, message, { 'content-type': 'application/xml', 'x-ms-error-code': code, ...headers });
  }
  toBody(): string {
    return `<?xml version="1.0" encoding="utf-8"?><Error><Code>${xml(this.code)}</Code><Message>${xml(this.message)}\nTime:${new Date().toISOString()}</Message></Error>`;
  }
}

export interface BlobPlaneDeps {
  storage: StorageService;
  /** Verifies a bearer token for the storage plane (audience https://storage.azure.com); throws when invalid. */
  verifyStorageToken(token: string): Promise<Caller>;
  checkAccess(caller: Caller, scope: string, action: string): Promise<boolean>;
  /** Where clients get tokens (the 401 challenge's authorization_uri). */
  authorizationUri(): string;
}

const xml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const rfc1123 = (d: Date) => d.toUTCString();
const etagOf = (st: Stats) => `"0x8D${createHash('sha256').update(`${st.ino}:${st.size}:${st.mtimeMs}`).digest('hex').slice(0, 13).toUpperCase()}"`;
const contentTypeOf = (name: string) => (name.endsWith('.json') ? 'application/json' : 'application/octet-stream');

const notFound = {
  account: (a: string) => new StorageXmlError(404, 'ResourceNotFound', `The specified resource does not exist: no storage account '${a}'.`),
  container: (c: string) => new StorageXmlError(404, 'ContainerNotFound', `The specified container does not exist: '${c}'.`),
  blob: (c: string, b: string) => new StorageXmlError(404, 'BlobNotFound', `The specified blob does not exist: '${c}/${b}'.`),
};

/** Parses `bytes=a-b` / `bytes=a-`; 'invalid' for other syntax. */
function parseRange(h: string | undefined): { start: number; end?: number | undefined } | 'invalid' | undefined {
  if (!h) return undefined;
  const m = /^bytes=(\d+)-(\d*)$/.exec(h.trim());
  if (!m) return 'invalid';
  const start = Number(m[1]);
  const end = m[2] ? Number(m[2]) : undefined;
  if (!Number.isSafeInteger(start) || (end !== undefined && (!Number.isSafeInteger(end) || end < start))) return 'invalid';
  return { start, end };
}

export function registerBlobPlane(app: FastifyInstance, deps: BlobPlaneDeps): void {
  const { storage } = deps;

  /** Authenticates the request for `account`; `container`/`blob` say what it reads (SAS scope). */
  async function authorize(req: FastifyRequest, account: StorageAccount, q: URLSearchParams, container: string | undefined, blob: string | undefined, action: string): Promise<void> {
    const auth = req.headers.authorization;
    if (q.get('sig')) {
      if (!container) throw new StorageXmlError(403, 'AuthorizationResourceTypeMismatch', 'This request is not authorized to perform this operation using this resource type: a service SAS names one container or blob (account SAS is not supported).');
      try {
        await storage.checkSas(account.name, container, blob, q);
      } catch (e) {
        throw new StorageXmlError(403, 'AuthenticationFailed', `Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature. ${(e as Error).message}`);
      }
      return;
    }
    const sk = auth ? /^SharedKey\s+([^:\s]+):(\S+)$/i.exec(auth) : null;
    if (sk) {
      if (sk[1]!.toLowerCase() !== account.name) throw new StorageXmlError(403, 'AuthenticationFailed', `Server failed to authenticate the request: the Shared Key names account '${sk[1]}', not '${account.name}'.`);
      const when = String(req.headers['x-ms-date'] ?? req.headers.date ?? '');
      const t = Date.parse(when);
      if (Number.isNaN(t) || Math.abs(t - Date.now()) > 15 * 60_000) throw new StorageXmlError(403, 'AuthenticationFailed', `Server failed to authenticate the request: x-ms-date / Date '${when}' is missing or more than 15 minutes off the server's time.`);
      const toSign = sharedKeyStringToSign(account.name, { method: req.method, rawUrl: req.originalUrl.replace(/^\/{2,}/, '/'), headers: req.headers });
      const keys = await storage.accountKeys(account.name);
      if (!keys.some((k) => sameSig(hmac(k, toSign), sk[2]!))) {
        throw new StorageXmlError(403, 'AuthenticationFailed', `Server failed to authenticate the request. Make sure the value of Authorization header is formed correctly including the signature. The MAC signature found in the HTTP request is not the same as any computed signature. Server used following string to sign: '${toSign.replace(/\n/g, '\\n')}'.`);
      }
      return;
    }
    const bearer = auth ? /^Bearer\s+(\S+)$/i.exec(auth) : null;
    const challenge = { 'www-authenticate': `Bearer authorization_uri=${deps.authorizationUri()} resource_id=https://storage.azure.com` };
    if (!bearer) throw new StorageXmlError(401, 'NoAuthenticationInformation', 'Server failed to authenticate the request. Please refer to the information in the www-authenticate header: send a bearer token for https://storage.azure.com, a Shared Key signature or a SAS.', challenge);
    let caller: Caller;
    try {
      caller = await deps.verifyStorageToken(bearer[1]!);
    } catch (e) {
      throw new StorageXmlError(401, 'InvalidAuthenticationInfo', `Server failed to authenticate the request: ${(e as Error).message} Request a token for the scope https://storage.azure.com/.default.`, challenge);
    }
    if (!(await deps.checkAccess(caller, account.id, action))) {
      throw new StorageXmlError(403, 'AuthorizationPermissionMismatch', `This request is not authorized to perform this operation using this permission: the client '${caller.appId ?? caller.objectId}' has no role allowing '${action}' on '${account.id}'.`);
    }
  }

  /** If-Match / If-None-Match / If-Modified-Since / If-Unmodified-Since against a blob or container. */
  function conditions(req: FastifyRequest, etag: string, mtime: Date): number | undefined {
    const im = req.headers['if-match'];
    if (im && im !== '*' && !im.split(',').map((x) => x.trim()).includes(etag)) return 412;
    const ius = req.headers['if-unmodified-since'];
    if (ius && !Number.isNaN(Date.parse(ius)) && Math.floor(mtime.getTime() / 1000) > Math.floor(Date.parse(ius) / 1000)) return 412;
    const inm = req.headers['if-none-match'];
    if (inm && (inm === '*' || inm.split(',').map((x) => x.trim()).includes(etag))) return req.method === 'GET' || req.method === 'HEAD' ? 304 : 412;
    const ims = req.headers['if-modified-since'];
    if (ims && !Number.isNaN(Date.parse(ims)) && Math.floor(mtime.getTime() / 1000) <= Math.floor(Date.parse(ims) / 1000)) return 304;
    return undefined;
  }

  function page(items: BlobEntry[], q: URLSearchParams): { list: BlobEntry[]; next?: string | undefined; prefix: string; marker: string; max?: number | undefined } {
    const prefix = q.get('prefix') ?? '';
    const marker = q.get('marker') ?? '';
    const mr = q.get('maxresults');
    let max: number | undefined;
    if (mr !== null) {
      max = Number(mr);
      if (!/^\d+$/.test(mr) || max < 1) throw new StorageXmlError(400, 'OutOfRangeQueryParameterValue', `One of the query parameters specified in the request URI is outside the permissible range: maxresults=${mr} (1-5000).`);
      max = Math.min(max, 5000);
    }
    const all = items.filter((i) => i.name.startsWith(prefix) && (!marker || i.name >= marker));
    const n = Math.min(max ?? 5000, 5000);
    return { list: all.slice(0, n), next: all.length > n ? all[n]!.name : undefined, prefix, marker, max };
  }

  const handler = async (req: FastifyRequest, reply: FastifyReply) => {
    const version = typeof req.headers['x-ms-version'] === 'string' ? req.headers['x-ms-version'] : STORAGE_SERVICE_VERSION;
    void reply.header('x-ms-version', version);
    const url = new URL(req.url, 'https://x');
    const parts = url.pathname.slice(BLOB_ROUTE_PREFIX.length + 1).split('/');
    const accountName = parts[0]!;
    let rest = parts.slice(1).filter((p, i, a) => p !== '' || i < a.length - 1);
    // rsvault blob names have no '/', so three segments can only be a path-style prefix: Azurite's
    // `/{account}/{container}/{blob}`, or what azure.storage.blob's BlobClient.from_blob_url builds for any host
    // containing "localhost" (it takes the first segment for the account: `/{container}/{container}/{blob}`).
    if (rest.length === 3 && (rest[0]!.toLowerCase() === accountName || rest[0] === rest[1])) rest = rest.slice(1);
    const container = rest[0] ? decodeURIComponent(rest[0]) : undefined;
    const blob = rest.length > 1 ? rest.slice(1).map(decodeURIComponent).join('/') : undefined;
    const q = url.searchParams;
    const origin = `https://${req.headers.host ?? `${accountName}.${storage.blobHostSuffix}`}/`;
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      throw new StorageXmlError(405, 'UnsupportedHttpVerb', `The resource doesn't support the specified HTTP verb ${req.method}: rsvault's blob plane is read-only (restore outputs); it serves List Containers, List Blobs, Get Blob Properties and Get Blob.`);
    }
    const account = await storage.getAccountByName(accountName);
    if (!account) throw notFound.account(accountName);

    // ---- account level ----
    if (!container) {
      const comp = q.get('comp');
      const restype = q.get('restype');
      if (restype === 'account' && comp === 'properties') {
        await authorize(req, account, q, undefined, undefined, CONTAINER_READ_ACTION);
        return reply.header('x-ms-sku-name', account.sku.name).header('x-ms-account-kind', account.kind).header('x-ms-is-hns-enabled', 'false').code(200).send();
      }
      if (comp !== 'list') throw new StorageXmlError(400, 'InvalidQueryParameterValue', `Value for one of the query parameters specified in the request URI is invalid: this endpoint serves '?comp=list' (List Containers) and '?restype=account&comp=properties'.`);
      await authorize(req, account, q, undefined, undefined, CONTAINER_READ_ACTION);
      const p = page(await storage.listContainers(account.name), q);
      const body =
        `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="${xml(origin)}">` +
        (p.prefix ? `<Prefix>${xml(p.prefix)}</Prefix>` : '') + (p.marker ? `<Marker>${xml(p.marker)}</Marker>` : '') + (p.max ? `<MaxResults>${p.max}</MaxResults>` : '') +
        '<Containers>' +
        p.list.map((c) => `<Container><Name>${xml(c.name)}</Name><Properties><Last-Modified>${rfc1123(c.stat.mtime)}</Last-Modified><Etag>${etagOf(c.stat)}</Etag><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><DefaultEncryptionScope>$account-encryption-key</DefaultEncryptionScope><DenyEncryptionScopeOverride>false</DenyEncryptionScopeOverride><HasImmutabilityPolicy>false</HasImmutabilityPolicy><HasLegalHold>false</HasLegalHold></Properties></Container>`).join('') +
        `</Containers><NextMarker>${p.next ? xml(p.next) : ''}</NextMarker></EnumerationResults>`;
      return reply.header('content-type', 'application/xml').code(200).send(body);
    }

    // ---- container level ----
    if (blob === undefined) {
      if (q.get('restype') !== 'container') throw new StorageXmlError(400, 'InvalidQueryParameterValue', `Value for one of the query parameters specified in the request URI is invalid: a container URL needs '?restype=container' (Get Container Properties) or '?restype=container&comp=list' (List Blobs).`);
      await authorize(req, account, q, container, undefined, BLOB_READ_ACTION);
      const cst = await storage.containerStat(account.name, container);
      if (!cst) throw notFound.container(container);
      if (q.get('comp') === 'list') {
        const delimiter = q.get('delimiter') ?? '';
        const p = page((await storage.listBlobs(account.name, container)) ?? [], q);
        const prefixes = new Set<string>();
        const blobs: BlobEntry[] = [];
        for (const b of p.list) {
          const i = delimiter ? b.name.indexOf(delimiter, p.prefix.length) : -1;
          if (i >= 0) prefixes.add(b.name.slice(0, i + delimiter.length));
          else blobs.push(b);
        }
        const body =
          `<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="${xml(origin)}" ContainerName="${xml(container)}">` +
          (p.prefix ? `<Prefix>${xml(p.prefix)}</Prefix>` : '') + (p.marker ? `<Marker>${xml(p.marker)}</Marker>` : '') + (p.max ? `<MaxResults>${p.max}</MaxResults>` : '') + (delimiter ? `<Delimiter>${xml(delimiter)}</Delimiter>` : '') +
          '<Blobs>' +
          blobs.map((b) => `<Blob><Name>${xml(b.name)}</Name><Properties><Creation-Time>${rfc1123(b.stat.birthtime.getTime() ? b.stat.birthtime : b.stat.mtime)}</Creation-Time><Last-Modified>${rfc1123(b.stat.mtime)}</Last-Modified><Etag>${etagOf(b.stat)}</Etag><Content-Length>${b.stat.size}</Content-Length><Content-Type>${contentTypeOf(b.name)}</Content-Type><Content-Encoding /><Content-Language /><Content-CRC64 /><Content-MD5 /><Cache-Control /><Content-Disposition /><BlobType>BlockBlob</BlobType><AccessTier>Hot</AccessTier><AccessTierInferred>true</AccessTierInferred><LeaseStatus>unlocked</LeaseStatus><LeaseState>available</LeaseState><ServerEncrypted>true</ServerEncrypted></Properties><Metadata /></Blob>`).join('') +
          [...prefixes].map((x) => `<BlobPrefix><Name>${xml(x)}</Name></BlobPrefix>`).join('') +
          `</Blobs><NextMarker>${p.next ? xml(p.next) : ''}</NextMarker></EnumerationResults>`;
        return reply.header('content-type', 'application/xml').code(200).send(body);
      }
      const etag = etagOf(cst);
      return reply.header('etag', etag).header('last-modified', rfc1123(cst.mtime)).header('x-ms-lease-status', 'unlocked').header('x-ms-lease-state', 'available')
        .header('x-ms-has-immutability-policy', 'false').header('x-ms-has-legal-hold', 'false').header('x-ms-default-encryption-scope', '$account-encryption-key').header('x-ms-deny-encryption-scope-override', 'false').code(200).send();
    }

    // ---- blob ----
    if (q.get('comp') || q.get('restype')) throw new StorageXmlError(400, 'InvalidQueryParameterValue', `Value for one of the query parameters specified in the request URI is invalid: blob operations other than Get Blob and Get Blob Properties are not supported (comp=${q.get('comp') ?? ''}).`);
    await authorize(req, account, q, container, blob, BLOB_READ_ACTION);
    const f = await storage.blobFile(account.name, container, blob);
    if (!f) {
      if (!(await storage.containerStat(account.name, container))) throw notFound.container(container);
      throw notFound.blob(container, blob);
    }
    const { stat: st } = f;
    const etag = etagOf(st);
    void reply
      .header('etag', etag)
      .header('last-modified', rfc1123(st.mtime))
      .header('x-ms-creation-time', rfc1123(st.birthtime.getTime() ? st.birthtime : st.mtime))
      .header('x-ms-blob-type', 'BlockBlob')
      .header('x-ms-lease-status', 'unlocked')
      .header('x-ms-lease-state', 'available')
      .header('x-ms-server-encrypted', 'true')
      .header('accept-ranges', 'bytes')
      .header('content-type', contentTypeOf(blob));
    const cond = conditions(req, etag, st.mtime);
    if (cond === 412) throw new StorageXmlError(412, 'ConditionNotMet', 'The condition specified using HTTP conditional header(s) is not met.');
    if (cond === 304) return reply.code(304).send();
    if (req.method === 'HEAD') {
      return reply.header('content-length', String(st.size)).header('x-ms-access-tier', 'Hot').header('x-ms-access-tier-inferred', 'true').code(200).send();
    }
    const xr = req.headers['x-ms-range'];
    const range = parseRange(typeof xr === 'string' ? xr : req.headers.range);
    if (range === undefined) return reply.header('content-length', String(st.size)).code(200).send(createReadStream(f.file));
    if (range === 'invalid' || range.start >= st.size) {
      throw new StorageXmlError(416, 'InvalidRange', `The range specified is invalid for the current size of the resource: '${typeof xr === 'string' ? xr : req.headers.range}' for a blob of ${st.size} bytes.`, { 'content-range': `bytes */${st.size}` });
    }
    const end = Math.min(range.end ?? st.size - 1, st.size - 1);
    return reply
      .header('content-range', `bytes ${range.start}-${end}/${st.size}`)
      .header('content-length', String(end - range.start + 1))
      .code(206)
      .send(createReadStream(f.file, { start: range.start, end }));
  };

  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'], url: `${BLOB_ROUTE_PREFIX}/:account`, config: { plane: 'public' }, handler });
  app.route({ method: ['GET', 'HEAD', 'PUT', 'POST', 'DELETE', 'PATCH'], url: `${BLOB_ROUTE_PREFIX}/:account/*`, config: { plane: 'public' }, handler });
}
