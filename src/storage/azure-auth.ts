/**
 * Azure Storage's own signing rules (pure): the service SAS string-to-sign for each signed version `sv`, and the
 * Shared Key string-to-sign of a request, so that tokens made by the official SDKs (generateBlobSASQueryParameters,
 * StorageSharedKeyCredential, azure.storage.blob's generate_blob_sas) verify here with the account key.
 * https://learn.microsoft.com/rest/api/storageservices/create-service-sas
 * https://learn.microsoft.com/rest/api/storageservices/authorize-with-shared-key
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

/** The `x-ms-version` rsvault answers with when a client sends none, and the `sv` of the SAS it issues. */
export const STORAGE_SERVICE_VERSION = '2021-12-02';

export const hmac = (key: Buffer, text: string) => createHmac('sha256', key).update(text, 'utf8').digest('base64');

export function sameSig(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/**
 * The string a blob/container service SAS signs, by version (2015-04-05 → 2018-11-09 adds sr and the snapshot time →
 * 2020-12-06 adds the encryption scope). `resource` is `/blob/{account}/{container}[/{blob}]`. Undefined for versions
 * older than 2015-04-05 (not accepted).
 */
export function serviceSasStringToSign(q: URLSearchParams, resource: string): string | undefined {
  const g = (k: string) => q.get(k) ?? '';
  const sv = g('sv');
  if (!/^\d{4}-\d{2}-\d{2}$/.test(sv) || sv < '2015-04-05') return undefined;
  const head = [g('sp'), g('st'), g('se'), resource, g('si'), g('sip'), g('spr'), sv];
  const tail = [g('rscc'), g('rscd'), g('rsce'), g('rscl'), g('rsct')];
  // The signed snapshot time / version id (sr=bs|bv) stays empty: rsvault blobs have neither.
  if (sv >= '2020-12-06') return [...head, g('sr'), '', g('ses'), ...tail].join('\n');
  if (sv >= '2018-11-09') return [...head, g('sr'), '', ...tail].join('\n');
  return [...head, ...tail].join('\n');
}

/** Query parameters of a raw query string, names lower-cased, values URL-decoded (Shared Key's canonical form). */
function rawQuery(search: string): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const part of search.replace(/^\?/, '').split('&')) {
    if (!part) continue;
    const eq = part.indexOf('=');
    const k = (eq < 0 ? part : part.slice(0, eq)).toLowerCase();
    let v = eq < 0 ? '' : part.slice(eq + 1);
    try {
      v = decodeURIComponent(v);
    } catch {
      /* left as sent */
    }
    m.set(k, [...(m.get(k) ?? []), v]);
  }
  return m;
}

export interface SignedRequest {
  method: string;
  /** The request's path and query as sent (percent-encoded), on the account's host: `/{container}/{blob}?…`. */
  rawUrl: string;
  headers: Record<string, string | string[] | undefined>;
}

/** Shared Key (blob service, version 2015-02-21 and later) string-to-sign of a request for `account`. */
export function sharedKeyStringToSign(account: string, r: SignedRequest): string {
  const h = (k: string) => {
    const v = r.headers[k];
    return Array.isArray(v) ? v.join(',') : (v ?? '');
  };
  const len = h('content-length');
  const xms = Object.keys(r.headers)
    .map((k) => k.toLowerCase())
    .filter((k) => k.startsWith('x-ms-'))
    .sort()
    .map((k) => `${k}:${h(k).replace(/\s+/g, ' ').trim()}\n`)
    .join('');
  const q = r.rawUrl.indexOf('?');
  const path = (q < 0 ? r.rawUrl : r.rawUrl.slice(0, q)) || '/';
  const query = rawQuery(q < 0 ? '' : r.rawUrl.slice(q));
  const canonQuery = [...query.keys()]
    .sort()
    .map((k) => `\n${k}:${query.get(k)!.sort().join(',')}`)
    .join('');
  return [
    r.method.toUpperCase(),
    h('content-encoding'),
    h('content-language'),
    len === '0' ? '' : len,
    h('content-md5'),
    h('content-type'),
    h('x-ms-date') ? '' : h('date'),
    h('if-modified-since'),
    h('if-match'),
    h('if-none-match'),
    h('if-unmodified-since'),
    h('range'),
  ].join('\n') + '\n' + xms + `/${account}${path}` + canonQuery;
}
