/**
 * Storage accounts as restore targets: each account is a directory `{dataDir}/storage/{account}/`, each container a
 * sub-directory, each blob a file. Writers stage a whole container under `.staging/` and publish it with one rename,
 * so a reader never sees a half-written container; `cleanLeftovers()` removes staging left by a crash.
 * Blobs are read with a bearer token (RBAC on the account) or a service SAS signed with the account key.
 */
import { createHmac, randomBytes } from 'node:crypto';
import type { Stats } from 'node:fs';
import { mkdirSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { ArmError, armErrors } from '../platform/http/errors.js';
import type { Sealer } from '../platform/crypto.js';
import type { ResourceService } from '../resources/index.js';
import type { Caller } from '../platform/auth/index.js';
import { accountIdOf, blobEndpointOf, blobNameError, blobUrlOf, containerNameError, parseAccountId, parseBlobUrl, requireAccountName, STORAGE_TYPE, storageErrors } from './model.js';
import { hmac, sameSig, serviceSasStringToSign, STORAGE_SERVICE_VERSION } from './azure-auth.js';
import type { StorageStore, StorageTables } from './store.js';

export type AccountRow = StorageTables['storage_accounts'];

/** The RBAC action that lets a principal read blobs of an account (GET /blob/..., imports from a blob URL). */
export const BLOB_READ_ACTION = 'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read';
/** The RBAC action that lets a principal list the containers of an account (blob plane `GET /?comp=list`). */
export const CONTAINER_READ_ACTION = 'Microsoft.Storage/storageAccounts/blobServices/containers/read';

/** One entry of a container or blob listing. */
export interface BlobEntry {
  name: string;
  stat: Stats;
}

/** Who wants to read a blob, and how to check their RBAC access (identity's checkAccess). */
export interface BlobReadAccess {
  caller: Caller | undefined;
  checkAccess(caller: Caller, scope: string, action: string): Promise<boolean>;
  /** The request field the URL came from (error target). */
  target?: string | undefined;
}

export interface StorageAccount {
  id: string;
  name: string;
  subscriptionId: string;
  resourceGroup: string;
  location: string;
  tags: Record<string, string>;
  sku: { name: string; tier?: string | undefined };
  kind: string;
  quotaBytes?: number | undefined;
  createdAt: number;
  props: Record<string, unknown>;
}

export interface AccountInput {
  location: string;
  tags?: Record<string, string> | undefined;
  sku?: { name?: string | undefined } | undefined;
  kind?: string | undefined;
  quotaBytes?: number | null | undefined;
  props?: Record<string, unknown> | undefined;
}

const SKUS = ['Standard_LRS', 'Standard_GRS', 'Standard_RAGRS', 'Standard_ZRS', 'Premium_LRS', 'Standard_GZRS', 'Standard_RAGZRS'];

function toAccount(r: AccountRow): StorageAccount {
  return {
    id: r.id, name: r.name, subscriptionId: r.subscription_id, resourceGroup: r.resource_group, location: r.location,
    tags: JSON.parse(r.tags_json) as Record<string, string>, sku: JSON.parse(r.sku_json) as { name: string }, kind: r.kind,
    quotaBytes: r.quota_bytes === null ? undefined : Number(r.quota_bytes), createdAt: Number(r.created_at), props: JSON.parse(r.props_json) as Record<string, unknown>,
  };
}

export class StorageService {
  readonly root: string;
  constructor(
    private readonly store: StorageStore,
    private readonly resources: ResourceService,
    private readonly opts: { dataDir: string; sealer: Sealer; /** `{account}.{suffix}` hosts serve the blob plane (default blob.localhost). */ blobHostSuffix?: string | undefined },
  ) {
    this.root = path.join(opts.dataDir, 'storage');
    mkdirSync(this.root, { recursive: true, mode: 0o700 });
  }

  // ---- accounts ---------------------------------------------------------------------------------------------------
  async getAccount(id: string): Promise<StorageAccount | undefined> {
    const r = await this.store.db.selectFrom('storage_accounts').selectAll().where('id_norm', '=', id.toLowerCase()).executeTakeFirst();
    return r ? toAccount(r) : undefined;
  }

  async getAccountByName(name: string): Promise<StorageAccount | undefined> {
    const r = await this.store.db.selectFrom('storage_accounts').selectAll().where('name', '=', name.toLowerCase()).executeTakeFirst();
    return r ? toAccount(r) : undefined;
  }

  async requireAccount(sub: string, rg: string, name: string): Promise<StorageAccount> {
    await this.resources.requireGroup(sub, rg);
    const a = await this.getAccount(accountIdOf(sub, rg, name));
    if (!a) throw storageErrors.notFound(name, rg);
    return a;
  }

  async listAccounts(sub: string, rg?: string): Promise<StorageAccount[]> {
    this.resources.requireSubscription(sub);
    let q = this.store.db.selectFrom('storage_accounts').selectAll().where('subscription_id', '=', sub);
    if (rg) {
      await this.resources.requireGroup(sub, rg);
      q = q.where('resource_group', '=', rg.toLowerCase());
    }
    return (await q.orderBy('name').execute()).map(toAccount);
  }

  async createOrUpdateAccount(sub: string, rg: string, name: string, input: AccountInput): Promise<{ account: StorageAccount; created: boolean }> {
    const g = await this.resources.requireGroup(sub, rg);
    requireAccountName(name);
    const skuName = input.sku?.name ?? 'Standard_LRS';
    const sku = SKUS.find((s) => s.toLowerCase() === skuName.toLowerCase());
    if (!sku) throw armErrors.invalidContent(`The sku '${skuName}' is not supported: use one of ${SKUS.join(', ')}.`, 'sku.name');
    if (input.quotaBytes !== undefined && input.quotaBytes !== null && (!Number.isSafeInteger(input.quotaBytes) || input.quotaBytes < 0)) {
      throw armErrors.invalidContent("'properties.quotaBytes' must be a non-negative integer (bytes) or null.", 'properties.quotaBytes');
    }
    const id = accountIdOf(sub, g.name, name);
    const taken = await this.getAccountByName(name);
    if (taken && taken.id.toLowerCase() !== id.toLowerCase()) {
      throw new ArmError(409, 'StorageAccountAlreadyTaken', `The storage account named ${name} is already taken.`, { recommendation: 'Storage account names are globally unique: pick another name.' });
    }
    const existing = await this.getAccount(id);
    if (existing) {
      if (existing.location.toLowerCase() !== input.location.toLowerCase()) throw new ArmError(409, 'InvalidResourceLocation', `The storage account '${name}' already exists in location '${existing.location}'.`);
      await this.store.db
        .updateTable('storage_accounts')
        .set({ tags_json: JSON.stringify(input.tags ?? existing.tags), sku_json: JSON.stringify({ name: sku, tier: sku.startsWith('Premium') ? 'Premium' : 'Standard' }), ...(input.quotaBytes !== undefined ? { quota_bytes: input.quotaBytes } : {}), props_json: JSON.stringify({ ...existing.props, ...(input.props ?? {}) }) })
        .where('id_norm', '=', id.toLowerCase())
        .execute();
    } else {
      await this.store.db
        .insertInto('storage_accounts')
        .values({
          id_norm: id.toLowerCase(), id, subscription_id: sub, resource_group: g.name.toLowerCase(), name, location: input.location, tags_json: JSON.stringify(input.tags ?? {}),
          sku_json: JSON.stringify({ name: sku, tier: sku.startsWith('Premium') ? 'Premium' : 'Standard' }), kind: input.kind ?? 'StorageV2', props_json: JSON.stringify(input.props ?? {}),
          quota_bytes: input.quotaBytes ?? null, key_sealed: this.opts.sealer.seal(randomBytes(32), `storage-account-key:${name}`), created_at: Date.now(),
        })
        .execute();
      mkdirSync(this.accountDir(name), { recursive: true, mode: 0o700 });
    }
    await this.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: STORAGE_TYPE, name, location: input.location, tags: input.tags ?? existing?.tags });
    return { account: (await this.getAccount(id))!, created: !existing };
  }

  /** Deletes the account and every blob in it. */
  async deleteAccountById(id: string): Promise<boolean> {
    const a = await this.getAccount(id);
    if (!a) return false;
    await this.store.db.deleteFrom('storage_accounts').where('id_norm', '=', id.toLowerCase()).execute();
    await this.resources.unindex(a.id);
    await rm(this.accountDir(a.name), { recursive: true, force: true });
    return true;
  }

  // ---- containers and blobs ---------------------------------------------------------------------------------------
  accountDir(name: string): string {
    return path.join(this.root, name.toLowerCase());
  }

  containerDir(account: string, container: string): string {
    const e = containerNameError(container);
    if (e) throw armErrors.invalidName('container', container, e);
    return path.join(this.accountDir(account), container);
  }

  blobPath(account: string, container: string, blob: string): string {
    const e = blobNameError(blob);
    if (e) throw armErrors.invalidName('blob', blob, e);
    return path.join(this.containerDir(account, container), blob);
  }

  /** A fresh staging directory for a container that will be published with `publishContainer`. */
  async stageContainer(account: string, container: string): Promise<string> {
    this.containerDir(account, container);
    const dir = path.join(this.accountDir(account), '.staging', container);
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return dir;
  }

  /** Publishes a staged container in one rename: before it, the container does not exist; after it, it is complete. */
  async publishContainer(account: string, container: string): Promise<void> {
    const dst = this.containerDir(account, container);
    if (await stat(dst).catch(() => undefined)) throw new ArmError(409, 'ContainerAlreadyExists', `The container '${container}' already exists in storage account '${account}'.`);
    await rename(path.join(this.accountDir(account), '.staging', container), dst);
  }

  async discardStaging(account: string, container: string): Promise<void> {
    await rm(path.join(this.accountDir(account), '.staging', container), { recursive: true, force: true });
  }

  /** Removes staging left by a writer that died (start-up); `keep` spares containers a live writer may still fill. */
  async cleanLeftovers(keep: (container: string) => boolean = () => false): Promise<number> {
    let n = 0;
    for (const e of await readdir(this.root, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory()) continue;
      const staging = path.join(this.root, e.name, '.staging');
      for (const s of await readdir(staging).catch(() => [])) {
        if (keep(s)) continue;
        await rm(path.join(staging, s), { recursive: true, force: true });
        n++;
      }
    }
    return n;
  }

  /** Bytes (apparent file sizes) the account holds, staging included. */
  async usedBytes(account: string): Promise<number> {
    const walk = async (dir: string): Promise<number> => {
      let total = 0;
      for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) total += await walk(p);
        else total += (await stat(p).catch(() => ({ size: 0 }))).size;
      }
      return total;
    };
    return walk(this.accountDir(account));
  }

  /** Bytes still free under the account's quota, or undefined when it has none. */
  async freeBytes(account: StorageAccount): Promise<number | undefined> {
    if (account.quotaBytes === undefined) return undefined;
    return Math.max(0, account.quotaBytes - (await this.usedBytes(account.name)));
  }

  // ---- blob addressing, SAS -----------------------------------------------------------------------------------------
  private accountKey(a: AccountRow | StorageAccount & { key_sealed?: string }): Buffer {
    return this.opts.sealer.open((a as AccountRow).key_sealed, `storage-account-key:${a.name}`);
  }

  private async row(name: string): Promise<AccountRow | undefined> {
    return this.store.db.selectFrom('storage_accounts').selectAll().where('name', '=', name.toLowerCase()).executeTakeFirst();
  }

  get blobHostSuffix(): string {
    return this.opts.blobHostSuffix ?? 'blob.localhost';
  }

  /** `https://{account}.{suffix}:{port}/` for a request that came to `origin`. */
  blobEndpoint(origin: string, account: string): string {
    return blobEndpointOf(origin, account, this.blobHostSuffix);
  }

  /** `https://{account}.{suffix}:{port}/{container}/{blob}`: the URL Azure clients expect (restore outputs). */
  blobUrl(origin: string, account: string, container: string, blob: string): string {
    return blobUrlOf(origin, account, container, blob, this.blobHostSuffix);
  }

  /**
   * The account keys (`listKeys`): key1 is the account's own 32-byte secret, key2 is derived from it; both sign
   * Shared Key requests and SAS tokens. Base64, as Azure hands them out.
   */
  async accountKeys(account: string): Promise<Buffer[]> {
    const r = await this.row(account);
    if (!r) throw storageErrors.notFound(account);
    const k1 = this.accountKey(r);
    return [k1, createHmac('sha256', k1).update('rsvault storage account key2').digest()];
  }

  /**
   * A read SAS query string in Azure's service-SAS format (`sv&sr&sp&se&spr&sig`, HMAC-SHA256 of Azure's
   * string-to-sign under key1) for one blob, valid for `seconds`.
   */
  async blobSas(account: string, container: string, blob: string, seconds: number, permissions = 'r'): Promise<string> {
    const [key] = await this.accountKeys(account);
    const se = new Date(Date.now() + seconds * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
    const q = new URLSearchParams({ sv: STORAGE_SERVICE_VERSION, spr: 'https', se, sr: 'b', sp: permissions });
    q.set('sig', hmac(key!, serviceSasStringToSign(q, `/blob/${account.toLowerCase()}/${container}/${blob}`)!));
    return q.toString();
  }

  /** rsvault's first SAS format (before Azure's): still accepted until such tokens expire (at most 7 days). */
  private legacySig(key: Buffer, account: string, container: string, blob: string, se: string, sp: string): string {
    return createHmac('sha256', key).update(`${account}\n${container}\n${blob}\n${se}\n${sp}`).digest('base64');
  }

  /**
   * Checks a service SAS (Azure's format, signed with key1 or key2; or rsvault's legacy format) for reading the blob
   * (`blob` given, `sp` must hold `r`) or listing the container (`blob` undefined: a container SAS, `sr=c`, with `l`).
   * Throws AuthenticationFailed (403) naming what is wrong.
   */
  async checkSas(account: string, container: string, blob: string | undefined, q: URLSearchParams): Promise<void> {
    const keys = await this.accountKeys(account);
    const name = account.toLowerCase();
    const se = q.get('se');
    const sp = q.get('sp') ?? '';
    const sig = q.get('sig') ?? '';
    const sr = q.get('sr') ?? '';
    const st = q.get('st');
    if (!se || Number.isNaN(Date.parse(se))) throw storageErrors.sasInvalid("missing its expiry ('se')");
    if (Date.parse(se) < Date.now()) throw storageErrors.sasInvalid(`expired (se=${se})`);
    if (st && (Number.isNaN(Date.parse(st)) || Date.parse(st) > Date.now() + 15 * 60_000)) throw storageErrors.sasInvalid(`not valid yet (st=${st})`);
    const need = blob === undefined ? 'l' : 'r';
    if (!sp.includes(need)) throw storageErrors.sasInvalid(`not valid for ${need === 'r' ? 'reading' : 'listing'} (sp has no '${need}')`);
    if (q.get('si')) throw storageErrors.sasInvalid(`bound to a stored access policy ('si'), which this account does not have`);
    if (q.get('sip')) throw storageErrors.sasInvalid("restricted to an IP range ('sip'), which rsvault does not support: ask for one without");
    const spr = q.get('spr');
    if (spr && !spr.split(',').includes('https')) throw storageErrors.sasInvalid(`not valid over HTTPS (spr=${spr})`);
    // A blob SAS (sr=b) reads its blob; a container SAS (sr=c) reads and lists the container.
    const resource = sr === 'c' ? `/blob/${name}/${container}` : sr === 'b' && blob !== undefined ? `/blob/${name}/${container}/${blob}` : undefined;
    const toSign = resource ? serviceSasStringToSign(q, resource) : undefined;
    if (toSign && keys.some((k) => sameSig(hmac(k, toSign), sig))) return;
    if (blob !== undefined && sameSig(this.legacySig(keys[0]!, name, container, blob, se, sp), sig)) return;
    if (!resource) throw storageErrors.sasInvalid(`not for this resource (sr=${sr || 'missing'}; a blob needs sr=b or sr=c, a listing sr=c)`);
    if (!toSign) throw storageErrors.sasInvalid(`of an unsupported signed version (sv=${q.get('sv') ?? 'missing'}; 2015-04-05 or later)`);
    throw storageErrors.sasInvalid('not signed by this account (signature mismatch)');
  }

  /** Published containers of an account (no staging), by name. */
  async listContainers(account: string): Promise<BlobEntry[]> {
    const dir = this.accountDir(account);
    const out: BlobEntry[] = [];
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!e.isDirectory() || e.name.startsWith('.') || containerNameError(e.name)) continue;
      const st = await stat(path.join(dir, e.name)).catch(() => undefined);
      if (st) out.push({ name: e.name, stat: st });
    }
    return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  /** The container's stat, or undefined when it does not exist (or the name is invalid). */
  async containerStat(account: string, container: string): Promise<Stats | undefined> {
    if (containerNameError(container)) return undefined;
    const st = await stat(this.containerDir(account, container)).catch(() => undefined);
    return st?.isDirectory() ? st : undefined;
  }

  /** Blobs of a container, by name; undefined when the container does not exist. */
  async listBlobs(account: string, container: string): Promise<BlobEntry[] | undefined> {
    if (!(await this.containerStat(account, container))) return undefined;
    const dir = this.containerDir(account, container);
    const out: BlobEntry[] = [];
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      if (!e.isFile() || blobNameError(e.name)) continue;
      const st = await stat(path.join(dir, e.name)).catch(() => undefined);
      if (st) out.push({ name: e.name, stat: st });
    }
    return out.sort((x, y) => (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  }

  /** A blob's file and stat, or undefined when it does not exist (or a name is invalid). */
  async blobFile(account: string, container: string, blob: string): Promise<{ file: string; stat: Stats } | undefined> {
    if (containerNameError(container) || blobNameError(blob)) return undefined;
    const file = this.blobPath(account, container, blob);
    const st = await stat(file).catch(() => undefined);
    return st?.isFile() ? { file, stat: st } : undefined;
  }

  /**
   * Server-side path of a blob URL served by this installation (`https://{account}.{blob suffix}/{container}/{blob}` or
   * `…/blob/{account}/{container}/{blob}`), if it exists,
   * for a caller that may read it: a valid read SAS in the URL, or RBAC read on the storage account (the same rule
   * as `GET /blob/...`). Throws 403 (AuthorizationFailed / AuthenticationFailed) when the account exists but the caller
   * may not read it, so a principal cannot copy a blob it could not download (e.g. by importing it as a disk).
   * `caller: undefined` means no principal (always refused unless the URL carries a SAS).
   */
  async resolveBlobUrl(url: string, access: BlobReadAccess): Promise<string | undefined> {
    const b = parseBlobUrl(url, this.blobHostSuffix);
    if (!b) return undefined;
    const account = await this.getAccountByName(b.account);
    if (!account) return undefined;
    if (b.query.get('sig')) {
      await this.checkSas(account.name, b.container, b.blob, b.query);
    } else if (!access.caller || !(await access.checkAccess(access.caller, account.id, BLOB_READ_ACTION))) {
      const who = access.caller ? `The client '${access.caller.appId ?? access.caller.objectId}' with object id '${access.caller.objectId}'` : 'The caller';
      throw new ArmError(403, 'AuthorizationFailed', `${who} does not have authorization to perform action '${BLOB_READ_ACTION}' over scope '${account.id}', needed to read the blob '${b.container}/${b.blob}'.`, {
        target: access.target,
        recommendation: `Use a read SAS URL of the blob (rsvault storage blob generate-sas), or ask an Owner for a role on the account: rsvault role assignment create --assignee ${access.caller?.appId ?? access.caller?.objectId ?? '<principal>'} --role Reader --scope ${account.id}`,
      });
    }
    let p: string;
    try {
      p = this.blobPath(b.account, b.container, b.blob);
    } catch {
      return undefined;
    }
    const st = await stat(p).catch(() => undefined);
    return st?.isFile() ? p : undefined;
  }

  parseAccountId = parseAccountId;
}
