/** Storage account names, ids and blob addressing (pure rules). */
import { ArmError, armErrors } from '../platform/http/errors.js';

export const STORAGE_TYPE = 'Microsoft.Storage/storageAccounts';

/** Azure: 3-24 characters, lower-case letters and digits only. */
export function requireAccountName(name: string): void {
  // Azure's code and wording (AccountNameInvalid).
  if (!/^[a-z0-9]{3,24}$/.test(name)) throw new ArmError(400, 'AccountNameInvalid', `${name} is not a valid storage account name. Storage account name must be between 3 and 24 characters in length and use numbers and lower-case letters only.`, { target: 'name' });
}

/** Azure: 3-63 characters, lower-case letters, digits and single hyphens, starting and ending with a letter or digit. */
export function containerNameError(name: string): string | undefined {
  if (!/^[a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]$/.test(name)) return 'a container name is 3-63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit';
  return undefined;
}

/** rsvault blob names: one path segment (no '/'), 1-255 characters, not starting with '.'. */
export function blobNameError(name: string): string | undefined {
  if (!name || name.length > 255 || name.includes('/') || name.includes('\\') || name.startsWith('.') || name.includes('\0')) return 'a blob name is 1-255 characters, without slashes, not starting with a period';
  return undefined;
}

export const accountIdOf = (sub: string, rg: string, name: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/${STORAGE_TYPE}/${name}`;

export function parseAccountId(id: string): { subscriptionId: string; resourceGroup: string; name: string } | undefined {
  const m = /^\/subscriptions\/([^/]+)\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Storage\/storageAccounts\/([^/]+)$/i.exec(id);
  return m ? { subscriptionId: m[1]!, resourceGroup: m[2]!, name: m[3]!.toLowerCase() } : undefined;
}

/** `{origin}/blob/{account}/{container}/{blob}`: rsvault's path-based blob URL (kept for older clients). */
export const blobPathUrlOf = (origin: string, account: string, container: string, blob: string) => `${origin}/blob/${account}/${container}/${encodeURIComponent(blob)}`;

/** The port part (`:8443`, or '' for 443) of an origin such as `https://localhost:8443`. */
const portOf = (origin: string) => {
  const m = /:(\d+)$/.exec(origin.replace(/\/+$/, ''));
  return m && m[1] !== '443' ? `:${m[1]}` : '';
};

/** The account's blob endpoint as Azure shapes it: `https://{account}.{suffix}:{port}/` (the port of `origin`). */
export const blobEndpointOf = (origin: string, account: string, blobHostSuffix: string) => `https://${account}.${blobHostSuffix}${portOf(origin)}/`;

/** `https://{account}.{suffix}:{port}/{container}/{blob}`: the blob URL Azure clients and SDKs expect. */
export const blobUrlOf = (origin: string, account: string, container: string, blob: string, blobHostSuffix: string) =>
  `${blobEndpointOf(origin, account, blobHostSuffix)}${container}/${encodeURIComponent(blob)}`;

/**
 * A blob URL of this installation in either form: `https://{account}.{suffix}[:port]/{container}/{blob}` (when
 * `blobHostSuffix` is given) or the path-based `https://{server}/blob/{account}/{container}/{blob}`.
 */
export function parseBlobUrl(url: string, blobHostSuffix?: string): { account: string; container: string; blob: string; query: URLSearchParams } | undefined {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return undefined;
  }
  if (u.protocol !== 'https:') return undefined;
  const host = u.hostname.toLowerCase();
  const sfx = blobHostSuffix ? '.' + blobHostSuffix.toLowerCase() : undefined;
  if (sfx && host.endsWith(sfx)) {
    const account = host.slice(0, -sfx.length);
    const m = /^\/([^/]+)\/([^/]+)$/.exec(u.pathname);
    if (!/^[a-z0-9]{3,24}$/.test(account) || !m) return undefined;
    return { account, container: m[1]!, blob: decodeURIComponent(m[2]!), query: u.searchParams };
  }
  const m = /^\/blob\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(u.pathname);
  if (!m) return undefined;
  return { account: m[1]!.toLowerCase(), container: m[2]!, blob: decodeURIComponent(m[3]!), query: u.searchParams };
}

export const storageErrors = {
  notFound: (name: string, rg?: string) => armErrors.notFound(STORAGE_TYPE, name, rg),
  blobNotFound: (account: string, container: string, blob: string) =>
    new ArmError(404, 'BlobNotFound', `The specified blob '${container}/${blob}' does not exist in storage account '${account}'.`, { recommendation: 'Check the blob URI (the restore job names its outputs: rsvault backup job show).' }),
  sasInvalid: (why: string) =>
    new ArmError(403, 'AuthenticationFailed', `Server failed to authenticate the request: the shared access signature is ${why}.`, { recommendation: 'Ask for a new SAS: rsvault storage blob generate-sas (or POST .../storageAccounts/{name}/listServiceSas).' }),
};
