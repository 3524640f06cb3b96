/**
 * `rsvault storage account …`, `rsvault storage blob download|generate-sas`, `rsvault deployment group …` and
 * `rsvault backup restore restore-disks|restore-vm|restore-keys` (az shapes where az has them). Talks to the server
 * through the client only.
 */
import type { Command } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { ApiError, toApiError, type RsvaultClient } from '../client/index.js';
import type { CliHelpers } from './helpers.js';
import type { Profile } from './profile.js';

const ST_API = '2023-01-01';
const RES_API = '2021-04-01';
const BK_API = '2023-02-01';
const KV_API = '2023-07-01';



interface Job {
  name: string;
  properties: { status: string; operation: string; errorDetails?: { errorTitle: string; errorString: string; recommendations?: string[] }[]; extendedInfo?: { propertyBag?: Record<string, string>; progressPercentage?: number } };
}
interface Item {
  id: string;
  name: string;
  properties: { friendlyName: string; containerName: string; sourceResourceId: string };
}

const enc = encodeURIComponent;
/**
 * A blob URL as the server's path-based form (`/blob/{account}/{container}/{blob}`, which the CLI reaches with its own
 * token): Azure-shaped `https://{account}.blob.{suffix}[:port]/{container}/{blob}` URLs are rewritten; others kept.
 */
function blobPathUrl(url: string): URL {
  const u = new URL(url);
  const m = /^([a-z0-9]{3,24})\.blob\./i.exec(u.hostname);
  if (m && !u.pathname.startsWith('/blob/')) u.pathname = `/blob/${m[1]!.toLowerCase()}${u.pathname}`;
  return u;
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const vaultPath = (sub: string, rg: string, v: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.RecoveryServices/vaults/${enc(v)}`;
const itemPathOf = (i: Item) => i.id.split('/').map((seg) => (seg.includes(';') ? enc(seg) : seg)).join('/');

async function resolveItem(c: RsvaultClient, vp: string, container: string, item: string): Promise<Item> {
  const items = await c.list<Item>(`${vp}/backupProtectedItems`, { query: { 'api-version': BK_API } });
  const l = (s: string) => s.toLowerCase();
  const last = (s: string) => l(s.split(';').pop()!);
  const hit = items.find((i) => last(i.properties.containerName) === last(container) && (l(i.properties.friendlyName) === last(item) || l(i.name) === l(item)));
  if (!hit) throw new ApiError(404, 'BMSUserErrorItemNotFound', `No protected item '${item}' in container '${container}'.`, 'List them with: rsvault backup item list --vault-name <vault> -g <group>');
  return hit;
}

/** The restore outputs of a job and the command to run next (stderr, so -o json stays clean). */
export function restoreNextSteps(j: Job, rg: string): string[] {
  const b = j.properties.extendedInfo?.propertyBag ?? {};
  if (j.properties.operation !== 'Restore' || j.properties.status !== 'Completed') return [];
  const lines = ['Restore outputs:'];
  for (const k of ['Target Storage Account Name', 'Config Blob Container Name', 'Config Blob Name', 'Encryption Info Blob Name', 'Template Blob Uri', 'Config Blob Uri', 'Encryption Info Blob Uri', 'Secret Url', 'Key Url', 'Target VM Id']) if (b[k]) lines.push(`  ${k}: ${b[k]}`);
  for (const [k, v] of Object.entries(b)) if (/^(OS Disk|Data Disk)/.test(k)) lines.push(`  ${k}: ${v}`);
  if (b['Target VM Id']) {
    lines.push(`Next: the VM exists: rsvault vm show --ids ${b['Target VM Id']}`);
  } else if (b['Template Blob Uri']) {
    lines.push('Next: create the VM from the restored disks with the template:');
    lines.push(`  rsvault storage blob download --url "${b['Template Blob Uri']}" -f template.json`);
    lines.push(`  rsvault deployment group create -g ${rg} --template-file template.json --parameters VirtualMachineName=<new VM name>`);
    const os = b['OS Disk Id'];
    if (os) lines.push(`or: rsvault vm create -g ${rg} -n <new VM name> --attach-os-disk ${os} --os-type Linux${b['Secret Url'] ? ` --encryption-secret-url ${b['Secret Url']}` : ''}${b['Key Url'] ? ` --encryption-key-url ${b['Key Url']}` : ''}`);
  }
  return lines;
}

export function registerRestoreCommands(program: Command, h: CliHelpers): void {
  const { action, out, withClient, sub, usageError } = h;

  // ================= storage =================
  const storage = program.command('storage').description('Storage accounts (restore targets) and their blobs.');
  const account = storage.command('account').description('Manage storage accounts (Microsoft.Storage/storageAccounts).');
  const acctUrl = (s: string, rg: string, n: string) => `/subscriptions/${s}/resourceGroups/${enc(rg)}/providers/Microsoft.Storage/storageAccounts/${enc(n)}`;
  account
    .command('create')
    .requiredOption('-n, --name <name>', 'account name (3-24 lower-case letters and digits)')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('-l, --location <loc>', 'location (default: the resource group location)')
    .option('--sku <sku>', 'Standard_LRS | Standard_GRS | Premium_LRS ...', 'Standard_LRS')
    .option('--kind <kind>', 'StorageV2', 'StorageV2')
    .option('--quota-bytes <n>', 'rsvault: the account holds at most this many bytes (writes beyond fail as a full target)')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .action(
      action(async (o: { name: string; resourceGroup: string; location?: string; sku: string; kind: string; quotaBytes?: string; tags?: string[] }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          if (o.quotaBytes !== undefined && !/^\d+$/.test(o.quotaBytes)) throw usageError(`--quota-bytes '${o.quotaBytes}' is not a number of bytes`);
          const loc = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${s}/resourcegroups/${enc(o.resourceGroup)}`, { query: { 'api-version': RES_API } })).location;
          out(await c.request('PUT', acctUrl(s, o.resourceGroup, o.name), { query: { 'api-version': ST_API }, body: { location: loc, sku: { name: o.sku }, kind: o.kind, tags: h.parseTags(o.tags), properties: o.quotaBytes !== undefined ? { quotaBytes: Number(o.quotaBytes) } : {} } }), cmd);
        }),
      ),
    );
  account
    .command('show')
    .requiredOption('-n, --name <name>', 'account name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { name: string; resourceGroup: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', acctUrl(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': ST_API } }), cmd))));
  account
    .command('list')
    .option('-g, --resource-group <rg>', 'resource group (default: the whole subscription)')
    .action(
      action(async (o: { resourceGroup?: string }, cmd: Command) =>
        withClient(async (c, p) => out(await c.list(o.resourceGroup ? `/subscriptions/${sub(p, cmd)}/resourceGroups/${enc(o.resourceGroup)}/providers/Microsoft.Storage/storageAccounts` : `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Storage/storageAccounts`, { query: { 'api-version': ST_API } }), cmd)),
      ),
    );
  account
    .command('delete')
    .requiredOption('-n, --name <name>', 'account name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('-y, --yes', 'do not prompt')
    .action(action(async (o: { name: string; resourceGroup: string }, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', acctUrl(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': ST_API } })))));
  const blob = storage.command('blob').description('Blobs written by restores.');
  blob
    .command('download')
    .description('Download a blob (a restore output) with your credentials, or with the SAS in --url.')
    .requiredOption('--url <uri>', 'blob URI (https://{account}.blob.localhost:{port}/{container}/{blob}[?SAS], or https://<server>/blob/{account}/{container}/{blob}[?SAS])')
    .requiredOption('-f, --file <path>', 'file to write')
    .action(
      action(async (o: { url: string; file: string }) =>
        withClient(async (c) => {
          const u = blobPathUrl(o.url);
          const res = await c.send<unknown>('GET', u.pathname + u.search, { anonymous: !!u.searchParams.get('sig') });
          if (res.status >= 400) throw toApiError(res.status, res.body);
          writeFileSync(o.file, typeof res.body === 'string' ? res.body : Buffer.isBuffer(res.body) ? res.body : JSON.stringify(res.body, null, 2));
        }),
      ),
    );
  blob
    .command('generate-sas')
    .description('A read SAS URL for a blob (POST listServiceSas).')
    .requiredOption('--url <uri>', 'blob URI')
    .requiredOption('-g, --resource-group <rg>', 'resource group of the storage account')
    .option('--expiry-seconds <n>', 'validity', '3600')
    .action(
      action(async (o: { url: string; resourceGroup: string; expirySeconds: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const given = new URL(o.url);
          const u = blobPathUrl(o.url);
          const m = /^\/blob\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(u.pathname);
          if (!m) throw usageError(`--url '${o.url}' is not a blob URI`);
          const r = await c.request<{ serviceSasToken: string }>('POST', `${acctUrl(sub(p, cmd), o.resourceGroup, m[1]!)}/listServiceSas`, { query: { 'api-version': ST_API }, body: { canonicalizedResource: u.pathname, signedResource: 'b', signedPermission: 'r', signedExpiry: new Date(Date.now() + Number(o.expirySeconds) * 1000).toISOString() } });
          out({ url: `${given.origin}${given.pathname}?${r.serviceSasToken}` }, cmd);
        }),
      ),
    );

  // ================= deployment =================
  const deployment = program.command('deployment').description('ARM template deployments.');
  const dgroup = deployment.command('group').description('Deployments at resource-group scope.');
  const depUrl = (s: string, rg: string, n: string) => `/subscriptions/${s}/resourcegroups/${enc(rg)}/providers/Microsoft.Resources/deployments/${enc(n)}`;
  dgroup
    .command('create')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('-n, --name <name>', 'deployment name (default: the template file name)')
    .option('-f, --template-file <file>', 'template file (JSON)')
    .option('-u, --template-uri <uri>', 'template URI (a blob of this rsvault; a SAS URL or your credentials)')
    .option('-p, --parameters <params...>', 'KEY=VALUE pairs, a JSON object, or @file.json')
    .option('--no-wait', 'do not wait for the deployment')
    .action(
      action(async (o: { resourceGroup: string; name?: string; templateFile?: string; templateUri?: string; parameters?: string[]; wait: boolean }, cmd: Command) =>
        withClient(async (c, p) => {
          if (!o.templateFile === !o.templateUri) throw usageError('give exactly one of --template-file and --template-uri');
          let template: unknown;
          if (o.templateFile) {
            try {
              template = JSON.parse(readFileSync(o.templateFile, 'utf8'));
            } catch (e) {
              throw usageError(`--template-file '${o.templateFile}': ${(e as Error).message}`);
            }
          }
          const parameters: Record<string, { value: unknown }> = {};
          for (const x of o.parameters ?? []) {
            const text = x.startsWith('@') ? readFileSync(x.slice(1), 'utf8') : x;
            if (text.trim().startsWith('{')) {
              let j: Record<string, unknown>;
              try {
                j = JSON.parse(text) as Record<string, unknown>;
              } catch (e) {
                throw usageError(`--parameters: ${(e as Error).message}`);
              }
              const ps = (j.parameters ?? j) as Record<string, unknown>;
              for (const [k, v] of Object.entries(ps)) parameters[k] = v && typeof v === 'object' && 'value' in v ? (v as { value: unknown }) : { value: v };
            } else {
              const i = x.indexOf('=');
              if (i < 1) throw usageError(`--parameters '${x}': use KEY=VALUE`);
              const raw = x.slice(i + 1);
              let value: unknown = raw;
              if (/^(true|false|-?\d+)$/.test(raw) || /^[[{]/.test(raw)) {
                try {
                  value = JSON.parse(raw);
                } catch {
                  value = raw;
                }
              }
              parameters[x.slice(0, i)] = { value };
            }
          }
          const s = sub(p, cmd);
          const name = o.name ?? (o.templateFile ? o.templateFile.split('/').pop()!.replace(/\.json$/i, '') : 'deployment').replace(/[^-\w.()]/g, '-').slice(0, 64);
          const url = depUrl(s, o.resourceGroup, name);
          const res = await c.send('PUT', url, { query: { 'api-version': RES_API }, body: { properties: { mode: 'Incremental', ...(template ? { template } : { templateLink: { uri: o.templateUri } }), parameters } } });
          if (res.status >= 400) throw toApiError(res.status, res.body);
          if (o.wait) {
            for (;;) {
              const d = await c.request<{ properties: { provisioningState: string; error?: { code: string; message: string; details?: { code: string; message: string; target?: string }[] } } }>('GET', url, { query: { 'api-version': RES_API } });
              if (d.properties.provisioningState === 'Failed') {
                const e = d.properties.error;
                out(d, cmd);
                throw new ApiError(400, e?.code ?? 'DeploymentFailed', `${e?.message ?? 'The deployment failed.'}${(e?.details ?? []).map((x) => `\n  (${x.code}) ${x.target ? `${x.target}: ` : ''}${x.message}`).join('')}`);
              }
              if (d.properties.provisioningState === 'Succeeded') return out(d, cmd);
              await sleep(300);
            }
          }
          out(res.body, cmd);
        }),
      ),
    );
  for (const verb of ['show', 'delete'] as const) {
    dgroup
      .command(verb)
      .requiredOption('-g, --resource-group <rg>', 'resource group')
      .requiredOption('-n, --name <name>', 'deployment name')
      .action(
        action(async (o: { resourceGroup: string; name: string }, cmd: Command) =>
          withClient(async (c, p) => {
            const r = await c.request(verb === 'show' ? 'GET' : 'DELETE', depUrl(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': RES_API } });
            if (verb === 'show') out(r, cmd);
          }),
        ),
      );
  }
  dgroup
    .command('list')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { resourceGroup: string }, cmd: Command) => withClient(async (c, p) => out(await c.list(`/subscriptions/${sub(p, cmd)}/resourcegroups/${enc(o.resourceGroup)}/providers/Microsoft.Resources/deployments`, { query: { 'api-version': RES_API } }), cmd))));

  // ================= backup restore =================
  const backup = program.commands.find((x) => x.name() === 'backup') ?? program.command('backup');
  const restore = backup.command('restore').description('Restore disks, a VM, or the key and secret of an encrypted VM from a recovery point.');
  type R = { vaultName: string; resourceGroup: string; containerName: string; itemName: string; rpName: string };
  const base = (x: Command) =>
    x
      .requiredOption('-v, --vault-name <vault>', 'vault name')
      .requiredOption('-g, --resource-group <rg>', 'resource group of the vault')
      .requiredOption('-c, --container-name <container>', 'container name (or the VM name)')
      .requiredOption('-i, --item-name <item>', 'item name (or the VM name)')
      .requiredOption('-r, --rp-name <rp>', 'recovery point id');
  const accountId = async (c: RsvaultClient, s: string, rg: string, a: string) => {
    if (a.startsWith('/')) return a;
    const all = await c.list<{ id: string; name: string }>(`/subscriptions/${s}/providers/Microsoft.Storage/storageAccounts`, { query: { 'api-version': ST_API } });
    return all.find((x) => x.name === a.toLowerCase())?.id ?? `/subscriptions/${s}/resourceGroups/${rg}/providers/Microsoft.Storage/storageAccounts/${a}`;
  };
  const vaultId = async (c: RsvaultClient, s: string, v: string | undefined) => {
    if (!v || v.startsWith('/')) return v;
    const all = await c.list<{ id: string; name: string }>(`/subscriptions/${s}/providers/Microsoft.KeyVault/vaults`, { query: { 'api-version': KV_API } });
    const hit = all.find((x) => x.name.toLowerCase() === v.toLowerCase());
    if (!hit) throw new ApiError(404, 'UserErrorKeyVaultNotFound', `The key vault '${v}' does not exist.`, `Create it: rsvault keyvault create -n ${v} -g <group> -l <location> --enabled-for-disk-encryption true`);
    return hit.id;
  };
  const trigger = async (c: RsvaultClient, p: Profile, cmd: Command, o: R & { wait: boolean }, props: Record<string, unknown>) => {
    const s = sub(p, cmd);
    const vp = vaultPath(s, o.resourceGroup, o.vaultName);
    const it = await resolveItem(c, vp, o.containerName, o.itemName);
    const res = await c.send('POST', `${itemPathOf(it)}/recoveryPoints/${enc(o.rpName)}/restore`, { query: { 'api-version': BK_API }, body: { properties: { objectType: 'IaasVMRestoreRequest', recoveryPointId: o.rpName, sourceResourceId: it.properties.sourceResourceId, ...props } } });
    if (res.status >= 400) throw toApiError(res.status, res.body);
    const u = new URL(String(res.headers['azure-asyncoperation']));
    let jobId: string | undefined;
    for (;;) {
      const st = await c.request<{ status: string; error?: { code: string; message: string }; properties?: { jobId?: string } | null }>('GET', u.pathname + u.search);
      jobId = st.properties?.jobId ?? jobId;
      if (st.status === 'Failed') throw new ApiError(0, st.error?.code ?? 'OperationFailed', st.error?.message ?? 'The restore failed.');
      if (st.status !== 'InProgress' || (jobId && !o.wait)) break;
      await sleep(300);
    }
    // The Restore job runs on a worker after the operation hands out its id: follow the job to its end.
    let j = await c.request<Job>('GET', `${vp}/backupJobs/${enc(jobId!)}`, { query: { 'api-version': BK_API } });
    while (o.wait && ['InProgress', 'Cancelling'].includes(j.properties.status)) {
      await sleep(300);
      j = await c.request<Job>('GET', `${vp}/backupJobs/${enc(jobId!)}`, { query: { 'api-version': BK_API } });
    }
    out(j, cmd);
    for (const l of restoreNextSteps(j, o.resourceGroup)) process.stderr.write(l + '\n');
    if (j.properties.status === 'Failed') {
      const e = j.properties.errorDetails?.[0];
      throw new ApiError(0, e?.errorTitle ?? 'RestoreFailed', e?.errorString ?? 'The restore job failed.', e?.recommendations?.[0]);
    }
  };
  const encOpts = (x: Command) =>
    x
      .option('--kek-url <url>', 'encrypted VMs: the (restored) key encryption key URL to stamp (default: the one recorded)')
      .option('--secret-url <url>', 'encrypted VMs: the (restored) BEK secret URL to stamp (default: the one recorded)')
      .option('--key-vault-id <id>', 'encrypted VMs: the vault (name or id) holding them (default: from the URLs)');
  const encDetails = async (c: RsvaultClient, s: string, o: { kekUrl?: string; secretUrl?: string; keyVaultId?: string }) => {
    if (!o.kekUrl && !o.secretUrl) return {};
    const id = await vaultId(c, s, o.keyVaultId);
    return { encryptionDetails: { encryptionEnabled: true, ...(o.kekUrl ? { kekUrl: o.kekUrl, ...(id ? { kekVaultId: id } : {}) } : {}), ...(o.secretUrl ? { secretKeyUrl: o.secretUrl, ...(id ? { secretKeyVaultId: id } : {}) } : {}) } };
  };
  encOpts(base(restore.command('restore-disks').description('Restore the disks (blobs in --storage-account, or managed disks in --target-resource-group) with the VM config, encryption info and an ARM template. Needs write + read on the source VM, write on the storage account (and the target group).')))
    .requiredOption('--storage-account <account>', 'staging storage account (name or id)')
    .option('-t, --target-resource-group <rg>', 'restore as managed disks in this resource group')
    .option('--restore-only-osdisk', 'restore the OS disk only')
    .option('--no-wait', 'return once the job is created')
    .action(
      action(async (o: R & { storageAccount: string; targetResourceGroup?: string; restoreOnlyOsdisk?: boolean; wait: boolean; kekUrl?: string; secretUrl?: string; keyVaultId?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          await trigger(c, p, cmd, o, {
            recoveryType: 'RestoreDisks', storageAccountId: await accountId(c, s, o.resourceGroup, o.storageAccount),
            ...(o.targetResourceGroup ? { targetResourceGroupId: `/subscriptions/${s}/resourceGroups/${o.targetResourceGroup}` } : {}),
            ...(o.restoreOnlyOsdisk ? { restoreDiskLunList: [] } : {}),
            ...(await encDetails(c, s, o)),
          });
        }),
      ),
    );
  encOpts(base(restore.command('restore-vm').description('Restore to a new VM (AlternateLocation), also for encrypted VMs. Needs write + read on the source VM, write on the storage account and on the target group (Contributor).')))
    .requiredOption('--storage-account <account>', 'staging storage account (name or id)')
    .requiredOption('--target-resource-group <rg>', 'resource group of the new VM')
    .requiredOption('--target-vm-name <name>', 'name of the new VM')
    .option('--no-wait', 'return once the job is created')
    .action(
      action(async (o: R & { storageAccount: string; targetResourceGroup: string; targetVmName: string; wait: boolean; kekUrl?: string; secretUrl?: string; keyVaultId?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          await trigger(c, p, cmd, o, {
            recoveryType: 'AlternateLocation', storageAccountId: await accountId(c, s, o.resourceGroup, o.storageAccount), targetResourceGroupId: `/subscriptions/${s}/resourceGroups/${o.targetResourceGroup}`,
            targetVirtualMachineId: `/subscriptions/${s}/resourceGroups/${o.targetResourceGroup}/providers/Microsoft.Compute/virtualMachines/${o.targetVmName}`,
            ...(await encDetails(c, s, o)),
          });
        }),
      ),
    );
  base(restore.command('restore-keys').description('Restore the key (KEK) and secret (BEK) of an encrypted VM from a recovery point into a key vault; prints the new URLs. Needs read on the source VM and keys restore/get, secrets set/restore on the target vault.'))
    .requiredOption('--target-key-vault <vault>', 'key vault name or id (of this installation)')
    .action(
      action(async (o: R & { targetKeyVault: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          const vp = vaultPath(s, o.resourceGroup, o.vaultName);
          const it = await resolveItem(c, vp, o.containerName, o.itemName);
          const id = o.targetKeyVault.startsWith('/') ? o.targetKeyVault : await vaultId(c, s, o.targetKeyVault);
          const r = await c.request<{ keyUrl?: string; secretUrl: string; nextCommand: string }>('POST', `${itemPathOf(it)}/recoveryPoints/${enc(o.rpName)}/restoreKeys`, { query: { 'api-version': BK_API }, body: { targetKeyVaultId: id } });
          out(r, cmd);
          process.stderr.write(`Restored ${r.keyUrl ? `key ${r.keyUrl} and ` : ''}secret ${r.secretUrl}\nNext: ${r.nextCommand}\n`);
        }),
      ),
    );
}
