/**
 * `rsvault backup …` in az's shapes: vault, policy, protection, item, job, recoverypoint. Long operations show a
 * progress bar on stderr (a TTY) and take `--no-wait`. Talks to the server through the client only.
 */
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import cliProgress from 'cli-progress';
import { ApiError, toApiError, type RsvaultClient } from '../client/index.js';
import { restoreNextSteps } from './restore.js';
import type { CliHelpers } from './helpers.js';

const RS_API = '2023-04-01';
const BK_API = '2023-02-01';



interface Job {
  name: string;
  properties: { status: string; operation: string; entityFriendlyName: string; errorDetails?: { errorTitle: string; errorString: string; recommendations?: string[] }[]; extendedInfo?: { progressPercentage?: number; tasksList?: { taskId: string; status: string }[] } };
}
interface OpStatus {
  status: string;
  error?: { code: string; message: string };
  properties?: { jobId?: string } | null;
}
interface Item {
  name: string;
  id: string;
  properties: { friendlyName: string; containerName: string; sourceResourceId: string };
}

const q = { 'api-version': BK_API };
const vaultPath = (sub: string, rg: string, v: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.RecoveryServices/vaults/${encodeURIComponent(v)}`;
const enc = (s: string) => encodeURIComponent(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function readJsonArg(v: string, what: string, usage: (m: string) => Error): unknown {
  const text = v.startsWith('@') ? readFileSync(v.slice(1), 'utf8') : v;
  try {
    return JSON.parse(text);
  } catch (e) {
    throw usage(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

/** dd-mm-yyyy (az) or ISO → ISO date-time (UTC). */
function retainUntil(v: string, usage: (m: string) => Error): string {
  const m = /^(\d{2})-(\d{2})-(\d{4})$/.exec(v);
  const t = m ? Date.parse(`${m[3]}-${m[2]}-${m[1]}T00:00:00Z`) : Date.parse(v);
  if (Number.isNaN(t)) throw usage(`--retain-until '${v}' is not a date: use dd-mm-yyyy`);
  return new Date(t).toISOString();
}

async function opStatus(c: RsvaultClient, res: { headers: Record<string, string | string[] | undefined> }): Promise<OpStatus> {
  const url = res.headers['azure-asyncoperation'];
  if (!url) throw new ApiError(0, 'NoAsyncOperation', 'The server did not return an operation to track.');
  const u = new URL(String(url));
  for (;;) {
    const st = await c.request<OpStatus>('GET', u.pathname + u.search);
    if (st.status !== 'InProgress') return st;
    await sleep(300);
  }
}

/** Tracks a job to its end, with a progress bar on a TTY. */
async function waitJob(c: RsvaultClient, vp: string, id: string, timeoutSec?: number): Promise<Job> {
  const tty = process.stderr.isTTY;
  const bar = tty ? new cliProgress.SingleBar({ format: ' {op} [{bar}] {percentage}% | {task}', stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic) : undefined;
  const end = timeoutSec ? Date.now() + timeoutSec * 1000 : Infinity;
  let started = false;
  try {
    for (;;) {
      const j = await c.request<Job>('GET', `${vp}/backupJobs/${enc(id)}`, { query: q });
      const pct = Math.round(j.properties.extendedInfo?.progressPercentage ?? 0);
      const task = j.properties.extendedInfo?.tasksList?.find((t) => t.status === 'InProgress')?.taskId ?? j.properties.status;
      if (bar) {
        if (!started) bar.start(100, pct, { op: j.properties.operation, task });
        started = true;
        bar.update(j.properties.status === 'Completed' ? 100 : pct, { op: j.properties.operation, task });
      }
      if (!['InProgress', 'Cancelling'].includes(j.properties.status)) return j;
      if (Date.now() > end) throw new ApiError(0, 'JobWaitTimedOut', `Job ${id} is still ${j.properties.status} after ${timeoutSec} s.`, `Check it later: rsvault backup job show -n ${id}`);
      await sleep(500);
    }
  } finally {
    bar?.stop();
  }
}

function jobError(j: Job): ApiError | undefined {
  if (j.properties.status !== 'Failed') return undefined;
  const e = j.properties.errorDetails?.[0];
  return new ApiError(0, e?.errorTitle ?? 'JobFailed', e?.errorString ?? `The ${j.properties.operation} job failed.`, e?.recommendations?.[0]);
}

/** Accepts az's friendly names (`vm1`) or full names (`IaasVMContainer;iaasvmcontainerv2;rg;vm1`). */
async function resolveItem(c: RsvaultClient, vp: string, container: string, item: string): Promise<Item> {
  const items = await c.list<Item>(`${vp}/backupProtectedItems`, { query: { ...q, $filter: "backupManagementType eq 'AzureIaasVM'" } });
  const lc = (s: string) => s.toLowerCase();
  const last = (s: string) => lc(s.split(';').pop()!);
  const hit = items.find((i) => {
    const cOk = container.includes(';') ? lc(container).endsWith(lc(i.properties.containerName)) : last(i.properties.containerName) === lc(container);
    const iOk = item.includes(';') ? lc(i.name) === lc(item) || lc(i.name).endsWith(lc(item)) : lc(i.properties.friendlyName) === lc(item);
    return cOk && iOk;
  });
  if (!hit) throw new ApiError(404, 'BMSUserErrorItemNotFound', `No protected item '${item}' in container '${container}'.`, 'List them with: rsvault backup item list --vault-name <vault> -g <group>');
  return hit;
}

export function registerBackupCommands(program: Command, h: CliHelpers): void {
  const { action, out, withClient, sub, usageError } = h;
  const backup = program.command('backup').description('Azure Backup for VMs: vaults, policies, protection, jobs, recovery points.');
  type V = { vaultName: string; resourceGroup: string };

  // ---- vault ---------------------------------------------------------------------------------------------------
  const vault = backup.command('vault').description('Recovery Services vaults.');
  vault
    .command('create')
    .description('Create or update a Recovery Services vault (a DefaultPolicy comes with it).')
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .requiredOption('-l, --location <location>', 'location')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .action(
      action(async (o: { name: string; resourceGroup: string; location: string; tags?: string[] }, cmd: Command) => {
        await withClient(async (c, p) => out(await c.request('PUT', vaultPath(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': RS_API }, body: { location: o.location, sku: { name: 'Standard' }, tags: h.parseTags(o.tags), properties: {} } }), cmd));
      }),
    );
  vault
    .command('show')
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { name: string; resourceGroup: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', vaultPath(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': RS_API } }), cmd))));
  vault
    .command('list')
    .option('-g, --resource-group <rg>', 'resource group (default: the whole subscription)')
    .action(
      action(async (o: { resourceGroup?: string }, cmd: Command) =>
        withClient(async (c, p) => out(await c.list(o.resourceGroup ? `/subscriptions/${sub(p, cmd)}/resourceGroups/${o.resourceGroup}/providers/Microsoft.RecoveryServices/vaults` : `/subscriptions/${sub(p, cmd)}/providers/Microsoft.RecoveryServices/vaults`, { query: { 'api-version': RS_API } }), cmd)),
      ),
    );
  vault
    .command('delete')
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('-y, --yes', 'do not prompt for confirmation')
    .action(action(async (o: { name: string; resourceGroup: string }, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', vaultPath(sub(p, cmd), o.resourceGroup, o.name), { query: { 'api-version': RS_API } })))));
  const props = vault.command('backup-properties').description('Storage redundancy, soft delete and the BEK-only setting.');
  props
    .command('show')
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .action(
      action(async (o: { name: string; resourceGroup: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.name);
          const [storage, config] = await Promise.all([c.request('GET', `${vp}/backupstorageconfig/vaultstorageconfig`, { query: q }), c.request('GET', `${vp}/backupconfig/vaultconfig`, { query: q })]);
          out([storage, config], cmd);
        }),
      ),
    );
  props
    .command('set')
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('--backup-storage-redundancy <type>', 'GeoRedundant | LocallyRedundant | ZoneRedundant (only while nothing is protected)')
    .option('--cross-region-restore-flag <bool>', 'true | false')
    .option('--soft-delete-feature-state <state>', 'Enable | Disable')
    .option('--bek-only-backup <state>', 'Enabled | Disabled: allow VMs encrypted with a BEK and no KEK')
    .action(
      action(async (o: { name: string; resourceGroup: string; backupStorageRedundancy?: string; crossRegionRestoreFlag?: string; softDeleteFeatureState?: string; bekOnlyBackup?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.name);
          const res: unknown[] = [];
          if (o.backupStorageRedundancy || o.crossRegionRestoreFlag) {
            res.push(await c.request('PUT', `${vp}/backupstorageconfig/vaultstorageconfig`, { query: q, body: { properties: { ...(o.backupStorageRedundancy ? { storageType: o.backupStorageRedundancy, storageModelType: o.backupStorageRedundancy } : {}), ...(o.crossRegionRestoreFlag ? { crossRegionRestoreFlag: o.crossRegionRestoreFlag === 'true' } : {}) } } }));
          }
          if (o.softDeleteFeatureState || o.bekOnlyBackup) {
            const sd = o.softDeleteFeatureState ? (/^enable/i.test(o.softDeleteFeatureState) ? 'Enabled' : 'Disabled') : undefined;
            res.push(await c.request('PATCH', `${vp}/backupconfig/vaultconfig`, { query: q, body: { properties: { ...(sd ? { softDeleteFeatureState: sd } : {}), ...(o.bekOnlyBackup ? { bekOnlyBackup: o.bekOnlyBackup } : {}) } } }));
          }
          if (res.length === 0) throw usageError('nothing to set: give --backup-storage-redundancy, --soft-delete-feature-state or --bek-only-backup');
          out(res.length === 1 ? res[0] : res, cmd);
        }),
      ),
    );

  // ---- policy --------------------------------------------------------------------------------------------------
  const policy = backup.command('policy').description('Backup policies (AzureIaasVM: daily/weekly schedule, long-term retention).');
  const pv = (cmd: Command) => cmd.requiredOption('-v, --vault-name <vault>', 'vault name').requiredOption('-g, --resource-group <rg>', 'resource group');
  pv(policy.command('list')).action(action(async (o: V, cmd: Command) => withClient(async (c, p) => out(await c.list(`${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupPolicies`, { query: q }), cmd))));
  pv(policy.command('show').requiredOption('-n, --name <name>', 'policy name')).action(action(async (o: V & { name: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupPolicies/${enc(o.name)}`, { query: q }), cmd))));
  pv(policy.command('get-default-for-vm')).action(action(async (o: V, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupPolicies/DefaultPolicy`, { query: q }), cmd))));
  for (const verb of ['create', 'set'] as const) {
    pv(policy.command(verb).requiredOption('-n, --name <name>', 'policy name').requiredOption('--policy <json>', 'the policy JSON (or @file): {"properties": {...}} or just the properties'))
      .action(
        action(async (o: V & { name: string; policy: string }, cmd: Command) =>
          withClient(async (c, p) => {
            const body = readJsonArg(o.policy, '--policy', usageError) as Record<string, unknown>;
            const wrapped = body && typeof body === 'object' && 'properties' in body ? body : { properties: body };
            out(await c.request('PUT', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupPolicies/${enc(o.name)}`, { query: q, body: wrapped }), cmd);
          }),
        ),
      );
  }
  pv(policy.command('delete').requiredOption('-n, --name <name>', 'policy name')).action(action(async (o: V & { name: string }, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupPolicies/${enc(o.name)}`, { query: q })))));

  // ---- protection ----------------------------------------------------------------------------------------------
  const protection = backup.command('protection').description('Enable, trigger, stop and resume protection of VMs.');
  const finishOp = async (c: RsvaultClient, vp: string, res: { status: number; headers: Record<string, string | string[] | undefined>; body: unknown }, wait: boolean, cmd: Command, trackJob: boolean) => {
    if (res.status >= 400) throw toApiError(res.status, res.body);
    const st = await opStatus(c, res);
    const jobId = st.properties?.jobId;
    if (st.status === 'Failed') {
      const j = jobId ? await c.request<Job>('GET', `${vp}/backupJobs/${enc(jobId)}`, { query: q }).catch(() => undefined) : undefined;
      throw new ApiError(0, st.error?.code ?? 'OperationFailed', st.error?.message ?? 'The operation failed.', j?.properties.errorDetails?.[0]?.recommendations?.[0]);
    }
    if (!jobId) return;
    const job = trackJob && wait ? await waitJob(c, vp, jobId) : await c.request<Job>('GET', `${vp}/backupJobs/${enc(jobId)}`, { query: q });
    out(job, cmd);
    const e = jobError(job);
    if (e) throw e;
  };
  // vault verify / recatalog (rsvault extensions): data integrity of a vault's recovery points.
  vault
    .command('verify')
    .description("Verify every recovery point of the vault: manifests authenticate, every chunk opens and hashes to its id. Damaged chunks are quarantined (the next backup stores them again); the Verify job fails naming the recovery points, disks and byte ranges lost. Also runs on the server's --verify-schedule (weekly by default).")
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('--no-wait', 'return as soon as the Verify job is created')
    .action(
      action(async (o: { name: string; resourceGroup: string; wait: boolean }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.name);
          const res = await c.send('POST', `${vp}/verify`, { query: q });
          await finishOp(c, vp, res, o.wait, cmd, true);
        }),
      ),
    );
  vault
    .command('recatalog')
    .description("Rebuild the vault's recovery points from the authenticated index files in its chunk store (after the database lost them; the local vault directory is not needed); points whose index or manifests do not authenticate are skipped and listed.")
    .requiredOption('-n, --name <name>', 'vault name')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { name: string; resourceGroup: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('POST', `${vaultPath(sub(p, cmd), o.resourceGroup, o.name)}/recatalog`, { query: q }), cmd))));
  pv(protection.command('enable-for-vm').description('Enable backup of a VM with a policy (preflight: agent, encryption, Key Vault permissions). Needs a backup role on the vault and write + read on the VM (Virtual Machine Contributor).'))
    .requiredOption('--vm <vm>', 'VM name (in the vault resource group) or id')
    .requiredOption('-p, --policy-name <policy>', 'policy name')
    .option('--no-wait', 'do not wait for the ConfigureBackup job')
    .action(
      action(async (o: V & { vm: string; policyName: string; wait: boolean }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          const vp = vaultPath(s, o.resourceGroup, o.vaultName);
          const vmId = o.vm.startsWith('/') ? o.vm : `/subscriptions/${s}/resourceGroups/${o.resourceGroup}/providers/Microsoft.Compute/virtualMachines/${o.vm}`;
          const m = /\/resourceGroups\/([^/]+)\/providers\/Microsoft\.Compute\/virtualMachines\/([^/]+)$/i.exec(vmId);
          if (!m) throw usageError(`--vm '${o.vm}' is not a VM name or id`);
          const name = `iaasvmcontainerv2;${m[1]};${m[2]}`;
          const res = await c.send('PUT', `${vp}/backupFabrics/Azure/protectionContainers/${enc(`IaasVMContainer;${name}`)}/protectedItems/${enc(`VM;${name}`)}`, { query: q, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: vmId, policyId: `${vp}/backupPolicies/${o.policyName}` } } });
          await finishOp(c, vp, res, o.wait, cmd, false);
        }),
      ),
    );
  pv(protection.command('backup-now').description('Back up an item now (first full, then incremental). Needs a backup role on the vault and write + read on the VM.'))
    .requiredOption('-c, --container-name <container>', 'container name (or the VM name)')
    .requiredOption('-i, --item-name <item>', 'item name (or the VM name)')
    .option('--retain-until <date>', 'keep the recovery point until dd-mm-yyyy (default: 30 days)')
    .option('--backup-management-type <type>', 'AzureIaasVM')
    .option('--no-wait', 'return as soon as the job is created')
    .action(
      action(async (o: V & { containerName: string; itemName: string; retainUntil?: string; wait: boolean }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
          const item = await resolveItem(c, vp, o.containerName, o.itemName);
          const expiry = o.retainUntil ? retainUntil(o.retainUntil, usageError) : undefined;
          const res = await c.send('POST', `${itemPathOf(item)}/backup`, { query: q, body: { properties: { objectType: 'IaasVMBackupRequest', ...(expiry ? { recoveryPointExpiryTimeInUTC: expiry } : {}) } } });
          await finishOp(c, vp, res, o.wait, cmd, true);
        }),
      ),
    );
  pv(protection.command('disable').description('Stop protection, keeping the backup data or deleting it (soft-deleted for 14 days).'))
    .requiredOption('-c, --container-name <container>', 'container name (or the VM name)')
    .requiredOption('-i, --item-name <item>', 'item name (or the VM name)')
    .option('--delete-backup-data <bool>', 'true: delete the backup data', 'false')
    .option('-y, --yes', 'do not prompt for confirmation')
    .action(
      action(async (o: V & { containerName: string; itemName: string; deleteBackupData: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
          const item = await resolveItem(c, vp, o.containerName, o.itemName);
          const res = /^true$/i.test(o.deleteBackupData)
            ? await c.send('DELETE', itemPathOf(item), { query: q })
            : await c.send('PUT', itemPathOf(item), { query: q, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: item.properties.sourceResourceId, protectionState: 'ProtectionStopped' } } });
          await finishOp(c, vp, res, true, cmd, false);
        }),
      ),
    );
  pv(protection.command('resume').description('Resume protection of a stopped item with a policy.'))
    .requiredOption('-c, --container-name <container>', 'container name (or the VM name)')
    .requiredOption('-i, --item-name <item>', 'item name (or the VM name)')
    .requiredOption('-p, --policy-name <policy>', 'policy name')
    .action(
      action(async (o: V & { containerName: string; itemName: string; policyName: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
          const item = await resolveItem(c, vp, o.containerName, o.itemName);
          const res = await c.send('PUT', itemPathOf(item), { query: q, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: item.properties.sourceResourceId, policyId: `${vp}/backupPolicies/${o.policyName}` } } });
          await finishOp(c, vp, res, true, cmd, false);
        }),
      ),
    );

  // ---- item ----------------------------------------------------------------------------------------------------
  const item = backup.command('item').description('Protected items.');
  pv(item.command('list')).action(action(async (o: V, cmd: Command) => withClient(async (c, p) => out(await c.list(`${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupProtectedItems`, { query: q }), cmd))));
  pv(item.command('show').requiredOption('-c, --container-name <container>', 'container name (or the VM name)').requiredOption('-n, --name <item>', 'item name (or the VM name)')).action(
    action(async (o: V & { containerName: string; name: string }, cmd: Command) =>
      withClient(async (c, p) => {
        const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
        const it = await resolveItem(c, vp, o.containerName, o.name);
        out(await c.request('GET', itemPathOf(it), { query: q }), cmd);
      }),
    ),
  );
  pv(item.command('set-policy').requiredOption('-c, --container-name <container>', 'container name (or the VM name)').requiredOption('-n, --name <item>', 'item name (or the VM name)').requiredOption('-p, --policy-name <policy>', 'policy name')).action(
    action(async (o: V & { containerName: string; name: string; policyName: string }, cmd: Command) =>
      withClient(async (c, p) => {
        const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
        const it = await resolveItem(c, vp, o.containerName, o.name);
        const res = await c.send('PUT', itemPathOf(it), { query: q, body: { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: it.properties.sourceResourceId, policyId: `${vp}/backupPolicies/${o.policyName}` } } });
        await finishOp(c, vp, res, true, cmd, false);
      }),
    ),
  );

  // ---- job -----------------------------------------------------------------------------------------------------
  const job = backup.command('job').description('Backup jobs.');
  pv(job.command('list'))
    .option('--status <status>', 'InProgress | Completed | Failed | Cancelled | CompletedWithWarnings')
    .option('--operation <op>', 'Backup | ConfigureBackup | DisableBackup | DeleteBackupData | Restore')
    .option('--start-date <date>', 'jobs started at or after (dd-mm-yyyy or ISO)')
    .option('--end-date <date>', 'jobs started at or before (dd-mm-yyyy or ISO)')
    .action(
      action(async (o: V & { status?: string; operation?: string; startDate?: string; endDate?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const f = [o.status && `status eq '${o.status}'`, o.operation && `operation eq '${o.operation}'`, o.startDate && `startTime eq '${retainUntil(o.startDate, usageError)}'`, o.endDate && `endTime eq '${retainUntil(o.endDate, usageError)}'`].filter(Boolean).join(' and ');
          out(await c.list(`${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupJobs`, { query: { ...q, $filter: f || undefined } }), cmd);
        }),
      ),
    );
  pv(job.command('show').requiredOption('-n, --name <id>', 'job id')).action(
    action(async (o: V & { name: string }, cmd: Command) =>
      withClient(async (c, p) => {
        const j = await c.request<Job & { properties: { extendedInfo?: { propertyBag?: Record<string, string> } } }>('GET', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupJobs/${enc(o.name)}`, { query: q });
        out(j, cmd);
        // A completed restore: its outputs and the command to run next (stderr keeps -o json clean).
        for (const l of restoreNextSteps(j, o.resourceGroup)) process.stderr.write(l + '\n');
      }),
    ),
  );
  pv(job.command('wait').description('Wait for a job to finish (progress bar on a TTY).').requiredOption('-n, --name <id>', 'job id').option('--timeout <seconds>', 'give up after this many seconds')).action(
    action(async (o: V & { name: string; timeout?: string }, cmd: Command) =>
      withClient(async (c, p) => {
        const j = await waitJob(c, vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName), o.name, o.timeout ? Number(o.timeout) : undefined);
        out(j, cmd);
        const e = jobError(j);
        if (e) throw e;
      }),
    ),
  );
  pv(job.command('stop').description('Cancel a running backup job.').requiredOption('-n, --name <id>', 'job id')).action(
    action(async (o: V & { name: string }, cmd: Command) =>
      withClient(async (c, p) => {
        const res = await c.send('POST', `${vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName)}/backupJobs/${enc(o.name)}/cancel`, { query: q });
        if (res.status >= 400) throw toApiError(res.status, res.body);
        await c.waitForOperation(res, { intervalMs: 300 });
      }),
    ),
  );

  // ---- recoverypoint -------------------------------------------------------------------------------------------
  const rp = backup.command('recoverypoint').description('Recovery points of a protected item.');
  pv(rp.command('list').requiredOption('-c, --container-name <container>', 'container name (or the VM name)').requiredOption('-i, --item-name <item>', 'item name (or the VM name)'))
    .option('--backup-management-type <type>', 'AzureIaasVM')
    .option('--start-date <date>', 'from (dd-mm-yyyy or ISO)')
    .option('--end-date <date>', 'to (dd-mm-yyyy or ISO)')
    .action(
      action(async (o: V & { containerName: string; itemName: string; startDate?: string; endDate?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
          const it = await resolveItem(c, vp, o.containerName, o.itemName);
          const f = [o.startDate && `startDate eq '${retainUntil(o.startDate, usageError)}'`, o.endDate && `endDate eq '${retainUntil(o.endDate, usageError)}'`].filter(Boolean).join(' and ');
          out(await c.list(`${itemPathOf(it)}/recoveryPoints`, { query: { ...q, $filter: f || undefined } }), cmd);
        }),
      ),
    );
  pv(rp.command('show').description('Show a recovery point; keyAndSecret (KEK and wrapped BEK backup) only when you may read the source VM.').requiredOption('-c, --container-name <container>', 'container name (or the VM name)').requiredOption('-i, --item-name <item>', 'item name (or the VM name)').requiredOption('-n, --name <id>', 'recovery point id'))
    .option('--backup-management-type <type>', 'AzureIaasVM')
    .action(
      action(async (o: V & { containerName: string; itemName: string; name: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const vp = vaultPath(sub(p, cmd), o.resourceGroup, o.vaultName);
          const it = await resolveItem(c, vp, o.containerName, o.itemName);
          out(await c.request('GET', `${itemPathOf(it)}/recoveryPoints/${enc(o.name)}`, { query: q }), cmd);
        }),
      ),
    );
}

/** The item's path with `;` percent-encoded (as az sends it). */
function itemPathOf(i: Item): string {
  return i.id.split('/').map((seg) => (seg.includes(';') ? encodeURIComponent(seg) : seg)).join('/');
}
