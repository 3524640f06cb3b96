/**
 * `rsvault vm …` and `rsvault disk …` (az vm / az disk shapes): VMs, managed disks (image files), VM agent, guest I/O,
 * Azure Disk Encryption (`vm encryption enable|disable|show`), disk export (grant-access / revoke-access), import and
 * upload. Talks to the server through the client only; binary guest I/O and SAS transfers use plain HTTPS with the
 * profile's CA.
 */
import type { Command } from 'commander';
import https from 'node:https';
import { readFileSync, writeFileSync, openSync, readSync, closeSync, statSync } from 'node:fs';
import path from 'node:path';
import { ApiError, localhostLookup, toApiError, type RsvaultClient } from '../client/index.js';
import type { CliHelpers } from './helpers.js';
import type { Profile } from './profile.js';

const API = '2022-08-01';
const KV_API = '2023-07-01';



type G = { resourceGroup: string; name: string };

function binary(_c: RsvaultClient, p: Profile, method: string, url: string, o: { token?: string; body?: Buffer; headers?: Record<string, string> } = {}): Promise<{ status: number; body: Buffer }> {
  const ca = p.caFile ? readFileSync(p.caFile) : undefined;
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method, lookup: localhostLookup, ...(ca ? { ca } : {}), headers: { ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...(o.body ? { 'content-type': 'application/octet-stream', 'content-length': String(o.body.length) } : {}), ...(o.headers ?? {}) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (d: Buffer) => chunks.push(d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('error', reject);
    if (o.body) req.write(o.body);
    req.end();
  });
}

function check(r: { status: number; body: Buffer }): Buffer {
  if (r.status >= 400) {
    let parsed: unknown = r.body.toString('utf8');
    try {
      parsed = JSON.parse(parsed as string);
    } catch {
      /* plain text */
    }
    throw toApiError(r.status, parsed);
  }
  return r.body;
}

export function registerComputeCommands(program: Command, h: CliHelpers): void {
  const { action, out, withClient, sub } = h;
  const q = { query: { 'api-version': API } };
  const rgBase = (p: Profile, cmd: Command, rg: string) => `/subscriptions/${sub(p, cmd)}/resourceGroups/${encodeURIComponent(rg)}/providers/Microsoft.Compute`;
  const diskUrl = (p: Profile, cmd: Command, rg: string, n: string) => `${rgBase(p, cmd, rg)}/disks/${encodeURIComponent(n)}`;
  const vmUrl = (p: Profile, cmd: Command, rg: string, n: string) => `${rgBase(p, cmd, rg)}/virtualMachines/${encodeURIComponent(n)}`;
  const diskRef = (p: Profile, cmd: Command, rg: string, x: string) => (x.startsWith('/subscriptions/') ? x : diskUrl(p, cmd, rg, x));
  const wait = async (c: RsvaultClient, res: { status: number; headers: Record<string, string | string[] | undefined>; body: unknown }) => {
    if (res.status >= 400) throw toApiError(res.status, res.body);
    if (res.status === 202 || res.headers['azure-asyncoperation']) await c.waitForOperation(res);
  };
  const gn = (c: Command) => c.requiredOption('-g, --resource-group <rg>', 'resource group').requiredOption('-n, --name <name>', 'name');

  // ================= vm =================
  const vm = program.command('vm').description('Manage virtual machines (Microsoft.Compute/virtualMachines).');
  gn(vm.command('create').description('Create a VM: a new OS disk (--os-disk-size-gb) or an existing one (--attach-os-disk).'))
    .option('-l, --location <loc>', 'location (default: the resource group location)')
    .option('--size <size>', 'VM size', 'Standard_DS1_v2')
    .option('--os-type <type>', 'Linux or Windows', 'Linux')
    .option('--attach-os-disk <disk>', 'existing managed disk (name or id) as OS disk')
    .option('--os-disk-size-gb <n>', 'size of a new OS disk', '30')
    .option('--attach-data-disks <disks...>', 'existing managed disks (names or ids), luns 0..n-1')
    .option('--data-disk-sizes-gb <sizes...>', 'new empty data disks (GB), after the attached ones')
    .option('--admin-username <u>', 'admin user name', 'azureuser')
    .option('--computer-name <n>', 'host name (default: the VM name)')
    .option('--no-vm-agent', 'do not provision the VM agent (provisionVMAgent=false)')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .option('--encryption-secret-url <url>', 'encrypted OS disk (restored): the BEK secret URL (osDisk.encryptionSettings)')
    .option('--encryption-key-url <url>', 'encrypted OS disk (restored): the KEK URL')
    .option('--encryption-key-vault <vault>', 'vault (name or id) of the secret and key (default: from the URLs)')
    .action(
      action(async (o: G & { encryptionSecretUrl?: string; encryptionKeyUrl?: string; encryptionKeyVault?: string; location?: string; size: string; osType: string; attachOsDisk?: string; osDiskSizeGb: string; attachDataDisks?: string[]; dataDiskSizesGb?: string[]; adminUsername: string; computerName?: string; vmAgent: boolean; tags?: string[] }, cmd: Command) => {
        await withClient(async (c, p) => {
          const loc = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.resourceGroup)}`, { query: { 'api-version': '2021-04-01' } })).location;
          const win = o.osType.toLowerCase() === 'windows';
          const dataDisks = [
            ...(o.attachDataDisks ?? []).map((d, i) => ({ lun: i, createOption: 'Attach', managedDisk: { id: diskRef(p, cmd, o.resourceGroup, d) } })),
            ...(o.dataDiskSizesGb ?? []).map((s, i) => ({ lun: (o.attachDataDisks?.length ?? 0) + i, createOption: 'Empty', diskSizeGB: Number(s) })),
          ];
          let encryptionSettings: Record<string, unknown> | undefined;
          if (o.encryptionKeyUrl && !o.encryptionSecretUrl) throw h.usageError('--encryption-key-url needs --encryption-secret-url');
          if (o.encryptionSecretUrl) {
            const vaultName = o.encryptionKeyVault && !o.encryptionKeyVault.startsWith('/') ? o.encryptionKeyVault : /^https:\/\/([^./]+)\./.exec(o.encryptionSecretUrl)?.[1];
            let kvId = o.encryptionKeyVault?.startsWith('/') ? o.encryptionKeyVault : undefined;
            if (!kvId) {
              const all = await c.list<{ id: string; name: string }>(`/subscriptions/${sub(p, cmd)}/providers/Microsoft.KeyVault/vaults`, { query: { 'api-version': KV_API } });
              kvId = all.find((v) => v.name.toLowerCase() === (vaultName ?? '').toLowerCase())?.id;
              if (!kvId) throw new ApiError(404, 'KeyVaultNotFound', `The key vault '${vaultName}' of --encryption-secret-url does not exist.`, 'Restore the key and secret into a vault first: rsvault backup restore restore-keys ... --target-key-vault <vault>');
            }
            encryptionSettings = { enabled: true, diskEncryptionKey: { sourceVault: { id: kvId }, secretUrl: o.encryptionSecretUrl }, ...(o.encryptionKeyUrl ? { keyEncryptionKey: { sourceVault: { id: kvId }, keyUrl: o.encryptionKeyUrl } } : {}) };
          }
          if (encryptionSettings && !o.attachOsDisk) throw h.usageError('--encryption-secret-url applies to an attached OS disk (--attach-os-disk)');
          const body = {
            location: loc,
            tags: h.parseTags(o.tags),
            properties: {
              hardwareProfile: { vmSize: o.size },
              osProfile: { computerName: o.computerName ?? o.name, adminUsername: o.adminUsername, [win ? 'windowsConfiguration' : 'linuxConfiguration']: { provisionVMAgent: o.vmAgent } },
              storageProfile: {
                osDisk: o.attachOsDisk ? { osType: win ? 'Windows' : 'Linux', createOption: 'Attach', managedDisk: { id: diskRef(p, cmd, o.resourceGroup, o.attachOsDisk) }, ...(encryptionSettings ? { encryptionSettings } : {}) } : { osType: win ? 'Windows' : 'Linux', createOption: 'FromImage', diskSizeGB: Number(o.osDiskSizeGb) },
                dataDisks,
              },
            },
          };
          out(await c.request('PUT', vmUrl(p, cmd, o.resourceGroup, o.name), { ...q, body }), cmd);
        });
      }),
    );
  gn(vm.command('show').description('Show a VM.'))
    .option('-d, --show-details', 'include the instance view (power state, agent, extensions)')
    .action(action(async (o: G & { showDetails?: boolean }, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', vmUrl(p, cmd, o.resourceGroup, o.name), { query: { 'api-version': API, $expand: o.showDetails ? 'instanceView' : undefined } }), cmd))));
  gn(vm.command('get-instance-view').description('Show the instance view of a VM.')).action(action(async (o: G, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', `${vmUrl(p, cmd, o.resourceGroup, o.name)}/instanceView`, q), cmd))));
  vm.command('list')
    .description('List VMs (in a group or the subscription).')
    .option('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { resourceGroup?: string }, cmd: Command) => withClient(async (c, p) => out(await c.list(o.resourceGroup ? `${rgBase(p, cmd, o.resourceGroup)}/virtualMachines` : `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Compute/virtualMachines`, q), cmd))));
  gn(vm.command('delete').description('Delete a VM (its disks are detached and kept).'))
    .option('-y, --yes', 'do not prompt')
    .action(action(async (o: G, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', vmUrl(p, cmd, o.resourceGroup, o.name), q)))));
  for (const [cmdName, api, desc] of [['start', 'start', 'Start a VM.'], ['stop', 'powerOff', 'Power off a VM (keeps resources).'], ['deallocate', 'deallocate', 'Stop and deallocate a VM.'], ['restart', 'restart', 'Restart a VM.']] as const) {
    gn(vm.command(cmdName).description(desc))
      .option('--no-wait', 'do not wait for the operation')
      .action(
        action(async (o: G & { wait: boolean }, cmd: Command) =>
          withClient(async (c, p) => {
            const res = await c.send('POST', `${vmUrl(p, cmd, o.resourceGroup, o.name)}/${api}`, q);
            if (o.wait) await wait(c, res);
            else if (res.status >= 400) throw toApiError(res.status, res.body);
          }),
        ),
      );
  }
  const agent = vm.command('agent').description('The VM agent (needed for extensions and backup).');
  for (const op of ['install', 'uninstall'] as const) {
    gn(agent.command(op).description(`${op === 'install' ? 'Install' : 'Uninstall'} the VM agent.`))
      .option('--version <v>', 'agent version to report')
      .action(action(async (o: G & { version?: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('POST', `${vmUrl(p, cmd, o.resourceGroup, o.name)}/vmAgent/${op}`, { ...q, body: o.version ? { version: o.version } : {} }), cmd))));
  }

  // ---- guest I/O ----
  const vdisk = vm.command('disk').description("Read and write a VM's disks as the guest sees them (through the LUKS layer when encrypted).");
  const io = (c: Command) =>
    c
      .requiredOption('-g, --resource-group <rg>', 'resource group')
      .requiredOption('--vm <name>', 'VM name')
      .option('--lun <n>', 'data disk lun')
      .option('--os-disk', 'the OS disk')
      .requiredOption('--offset <bytes>', 'byte offset on the disk')
      .requiredOption('--file <path>', 'local file');
  type IoO = { resourceGroup: string; vm: string; lun?: string; osDisk?: boolean; offset: string; file: string; length?: string };
  const selOf = (o: IoO) => {
    if ((o.lun === undefined) === !o.osDisk) throw h.usageError('give exactly one of --lun N or --os-disk');
    if (!/^\d+$/.test(o.offset)) throw h.usageError('--offset must be a non-negative integer');
    return o.lun !== undefined ? `lun=${encodeURIComponent(o.lun)}` : 'osDisk=true';
  };
  io(vdisk.command('write').description('Write the bytes of --file at --offset (optionally only --length bytes of it).'))
    .option('--length <bytes>', 'bytes to write from the start of the file')
    .action(
      action(async (o: IoO, cmd: Command) =>
        withClient(async (c, p) => {
          const sel = selOf(o);
          let data = readFileSync(o.file);
          if (o.length !== undefined) data = data.subarray(0, Number(o.length));
          const url = new URL(`${vmUrl(p, cmd, o.resourceGroup, o.vm)}/guestIo/write?api-version=${API}&${sel}&offset=${o.offset}`, c.server).href;
          out(JSON.parse(check(await binary(c, p, 'POST', url, { token: await c.token(), body: data })).toString('utf8')), cmd);
        }),
      ),
    );
  io(vdisk.command('read').description('Read --length bytes at --offset into --file.'))
    .requiredOption('--length <bytes>', 'bytes to read')
    .action(
      action(async (o: IoO, cmd: Command) =>
        withClient(async (c, p) => {
          const sel = selOf(o);
          const url = new URL(`${vmUrl(p, cmd, o.resourceGroup, o.vm)}/guestIo/read?api-version=${API}&${sel}&offset=${o.offset}&length=${encodeURIComponent(o.length ?? '')}`, c.server).href;
          const buf = check(await binary(c, p, 'POST', url, { token: await c.token() }));
          writeFileSync(o.file, buf);
          out({ file: path.resolve(o.file), bytes: buf.length }, cmd);
        }),
      ),
    );

  // ---- encryption (ADE) ----
  const enc = vm.command('encryption').description('Azure Disk Encryption (volumes become LUKS1; BEK in Key Vault, optionally wrapped with a KEK).');
  const findVault = async (c: RsvaultClient, p: Profile, cmd: Command, ref: string): Promise<{ id: string; properties: { vaultUri: string } }> => {
    if (ref.startsWith('/subscriptions/')) return c.request('GET', ref, { query: { 'api-version': KV_API } });
    const all = await c.list<{ id: string; name: string; properties: { vaultUri: string } }>(`/subscriptions/${sub(p, cmd)}/providers/Microsoft.KeyVault/vaults`, { query: { 'api-version': KV_API } });
    const v = all.find((x) => x.name.toLowerCase() === ref.toLowerCase());
    if (!v) throw new ApiError(404, 'KeyVaultNotFound', `Key vault '${ref}' was not found in subscription ${sub(p, cmd)}.`);
    return v;
  };
  const extName = async (c: RsvaultClient, p: Profile, cmd: Command, o: G) => {
    const v = await c.request<{ properties: { storageProfile: { osDisk: { osType: string } } } }>('GET', vmUrl(p, cmd, o.resourceGroup, o.name), q);
    return v.properties.storageProfile.osDisk.osType === 'Windows' ? 'AzureDiskEncryption' : 'AzureDiskEncryptionForLinux';
  };
  const putExt = async (c: RsvaultClient, p: Profile, cmd: Command, o: G, settings: Record<string, unknown>, noWait?: boolean) => {
    const type = await extName(c, p, cmd, o);
    const res = await c.send('PUT', `${vmUrl(p, cmd, o.resourceGroup, o.name)}/extensions/${type}`, { ...q, body: { location: undefined, properties: { publisher: 'Microsoft.Azure.Security', type, typeHandlerVersion: type === 'AzureDiskEncryption' ? '2.2' : '1.1', autoUpgradeMinorVersion: true, settings } } });
    if (res.status >= 400) throw toApiError(res.status, res.body);
    if (!noWait) await c.waitForOperation(res);
    return res.body;
  };
  gn(enc.command('enable').description('Encrypt the VM volumes (az vm encryption enable).'))
    .requiredOption('--disk-encryption-keyvault <vault>', 'name or resource id of the vault for the BEK')
    .option('--key-encryption-key <kek>', 'KEK: key name in the KEK vault, or its URL')
    .option('--key-encryption-keyvault <vault>', 'vault of the KEK (default: the disk encryption vault)')
    .option('--key-encryption-algorithm <alg>', 'RSA-OAEP | RSA-OAEP-256 | RSA1_5', 'RSA-OAEP')
    .option('--volume-type <type>', 'OS | DATA | ALL', 'ALL')
    .option('--no-wait', 'do not wait')
    .action(
      action(async (o: G & { diskEncryptionKeyvault: string; keyEncryptionKey?: string; keyEncryptionKeyvault?: string; keyEncryptionAlgorithm: string; volumeType: string; wait: boolean }, cmd: Command) =>
        withClient(async (c, p) => {
          const v = await findVault(c, p, cmd, o.diskEncryptionKeyvault);
          const settings: Record<string, unknown> = { EncryptionOperation: 'EnableEncryption', KeyVaultURL: v.properties.vaultUri, KeyVaultResourceId: v.id, VolumeType: o.volumeType };
          if (o.keyEncryptionKey) {
            const kv = o.keyEncryptionKeyvault ? await findVault(c, p, cmd, o.keyEncryptionKeyvault) : v;
            settings.KeyEncryptionKeyURL = /^https:\/\//i.test(o.keyEncryptionKey) ? o.keyEncryptionKey : `${kv.properties.vaultUri.replace(/\/$/, '')}/keys/${encodeURIComponent(o.keyEncryptionKey)}`;
            settings.KekVaultResourceId = kv.id;
            settings.KeyEncryptionAlgorithm = o.keyEncryptionAlgorithm;
          }
          await putExt(c, p, cmd, o, settings, !o.wait);
          out(await c.request('GET', `${vmUrl(p, cmd, o.resourceGroup, o.name)}/instanceView`, q).then((iv) => (iv as { disks: unknown }).disks), cmd);
        }),
      ),
    );
  gn(enc.command('disable').description('Decrypt the VM volumes in place.'))
    .option('--volume-type <type>', 'OS | DATA | ALL', 'ALL')
    .option('--no-wait', 'do not wait')
    .action(action(async (o: G & { volumeType: string; wait: boolean }, cmd: Command) => withClient(async (c, p) => void (await putExt(c, p, cmd, o, { EncryptionOperation: 'DisableEncryption', VolumeType: o.volumeType }, !o.wait)))));
  gn(enc.command('show').description('Show the encryption status of each disk.')).action(
    action(async (o: G, cmd: Command) =>
      withClient(async (c, p) => {
        const v = await c.request<{ properties: { storageProfile: { osDisk: { managedDisk: { id: string }; encryptionSettings?: unknown }; dataDisks: { lun: number; managedDisk: { id: string } }[] } } }>('GET', vmUrl(p, cmd, o.resourceGroup, o.name), q);
        const sp = v.properties.storageProfile;
        const disks = [];
        for (const d of [{ lun: undefined as number | undefined, id: sp.osDisk.managedDisk.id }, ...sp.dataDisks.map((x) => ({ lun: x.lun as number | undefined, id: x.managedDisk.id }))]) {
          const dd = await c.request<{ name: string; properties: { encryptionSettingsCollection?: { enabled: boolean; encryptionSettings: unknown[] }; rsvault?: { imageFormat: string } } }>('GET', d.id, q);
          disks.push({ name: dd.name, lun: d.lun, os: d.lun === undefined, encrypted: dd.properties.rsvault?.imageFormat === 'luks1', encryptionSettings: dd.properties.encryptionSettingsCollection?.encryptionSettings ?? [] });
        }
        out({ disks, osDiskEncryptionSettings: sp.osDisk.encryptionSettings ?? null }, cmd);
      }),
    ),
  );

  // ================= disk =================
  const disk = program.command('disk').description('Manage managed disks (raw image files under the server data dir).');
  gn(disk.command('create').description('Create an empty disk (sparse), or one ready for upload (--for-upload).'))
    .option('-l, --location <loc>', 'location (default: the resource group location)')
    .option('-z, --size-gb <n>', 'size in GiB')
    .option('--for-upload', 'create for upload (needs --upload-size-bytes)')
    .option('--upload-size-bytes <n>', 'size of the image to upload')
    .option('--os-type <t>', 'Linux or Windows')
    .option('--source <path>', 'import an image file on the server (same as `disk import`)')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .action(
      action(async (o: G & { location?: string; sizeGb?: string; forUpload?: boolean; uploadSizeBytes?: string; osType?: string; source?: string; tags?: string[] }, cmd: Command) =>
        withClient(async (c, p) => {
          const loc = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.resourceGroup)}`, { query: { 'api-version': '2021-04-01' } })).location;
          const creationData = o.source ? { createOption: 'Import', sourceUri: path.resolve(o.source) } : o.forUpload ? { createOption: 'Upload', uploadSizeBytes: Number(o.uploadSizeBytes) } : { createOption: 'Empty' };
          if (!o.source && !o.forUpload && !o.sizeGb) throw h.usageError('--size-gb is required for an empty disk');
          out(await c.request('PUT', diskUrl(p, cmd, o.resourceGroup, o.name), { ...q, body: { location: loc, tags: h.parseTags(o.tags), properties: { creationData, ...(o.sizeGb ? { diskSizeGB: Number(o.sizeGb) } : {}), ...(o.osType ? { osType: o.osType } : {}) } } }), cmd);
        }),
      ),
    );
  gn(disk.command('import').description('Import an image file on the server (raw or LUKS1): copied sparse, or referenced in place.'))
    .requiredOption('--source <path>', 'image file path on the server')
    .option('-l, --location <loc>', 'location (default: the resource group location)')
    .option('--in-place', 'reference the file where it is instead of copying it')
    .option('--os-type <t>', 'Linux or Windows')
    .option('--passphrase <p>', 'LUKS passphrase of an encrypted image')
    .option('--key-file <file>', 'LUKS key file of an encrypted image (binary allowed)')
    .action(
      action(async (o: G & { source: string; location?: string; inPlace?: boolean; osType?: string; passphrase?: string; keyFile?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const loc = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.resourceGroup)}`, { query: { 'api-version': '2021-04-01' } })).location;
          let d = await c.request('PUT', diskUrl(p, cmd, o.resourceGroup, o.name), { ...q, body: { location: loc, properties: { creationData: { createOption: 'Import', sourceUri: path.resolve(o.source), ...(o.inPlace ? { referenceInPlace: true } : {}) }, ...(o.osType ? { osType: o.osType } : {}) } } });
          if (o.passphrase !== undefined || o.keyFile) {
            d = await c.request('POST', `${diskUrl(p, cmd, o.resourceGroup, o.name)}/unlock`, { ...q, body: o.keyFile ? { passphraseBase64: readFileSync(o.keyFile).toString('base64') } : { passphrase: o.passphrase } });
          }
          out(d, cmd);
        }),
      ),
    );
  gn(disk.command('unlock').description('Give rsvault the passphrase of an imported LUKS1 disk.'))
    .option('--passphrase <p>', 'passphrase')
    .option('--key-file <file>', 'key file (binary allowed)')
    .action(
      action(async (o: G & { passphrase?: string; keyFile?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          if ((o.passphrase === undefined) === !o.keyFile) throw h.usageError('give exactly one of --passphrase or --key-file');
          out(await c.request('POST', `${diskUrl(p, cmd, o.resourceGroup, o.name)}/unlock`, { ...q, body: o.keyFile ? { passphraseBase64: readFileSync(o.keyFile).toString('base64') } : { passphrase: o.passphrase } }), cmd);
        }),
      ),
    );
  gn(disk.command('show').description('Show a disk.')).action(action(async (o: G, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', diskUrl(p, cmd, o.resourceGroup, o.name), q), cmd))));
  disk
    .command('list')
    .description('List disks.')
    .option('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { resourceGroup?: string }, cmd: Command) => withClient(async (c, p) => out(await c.list(o.resourceGroup ? `${rgBase(p, cmd, o.resourceGroup)}/disks` : `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Compute/disks`, q), cmd))));
  gn(disk.command('delete').description('Delete a disk (and its image file unless it was referenced in place).'))
    .option('-y, --yes', 'do not prompt')
    .action(action(async (o: G, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', diskUrl(p, cmd, o.resourceGroup, o.name), q)))));
  gn(disk.command('grant-access').description('Get a time-limited SAS URL for the raw image bytes (Read) or for upload (Write).'))
    .option('--access-level <lvl>', 'Read or Write', 'Read')
    .option('--duration-in-seconds <n>', 'validity', '3600')
    .action(action(async (o: G & { accessLevel: string; durationInSeconds: string }, cmd: Command) => withClient(async (c, p) => out(await c.request('POST', `${diskUrl(p, cmd, o.resourceGroup, o.name)}/beginGetAccess`, { ...q, body: { access: o.accessLevel, durationInSeconds: Number(o.durationInSeconds) } }), cmd))));
  gn(disk.command('revoke-access').description('Revoke the SAS URL.')).action(action(async (o: G, cmd: Command) => withClient(async (c, p) => void (await c.request('POST', `${diskUrl(p, cmd, o.resourceGroup, o.name)}/endGetAccess`, q)))));
  gn(disk.command('upload').description('Create a disk from a local image file by upload (Upload disk + Write SAS + 4 MiB pages).'))
    .requiredOption('--file <path>', 'local raw image (size a multiple of 512)')
    .option('-l, --location <loc>', 'location (default: the resource group location)')
    .action(
      action(async (o: G & { file: string; location?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const size = statSync(o.file).size;
          const loc = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.resourceGroup)}`, { query: { 'api-version': '2021-04-01' } })).location;
          const url = diskUrl(p, cmd, o.resourceGroup, o.name);
          await c.request('PUT', url, { ...q, body: { location: loc, properties: { creationData: { createOption: 'Upload', uploadSizeBytes: size } } } });
          const g = await c.request<{ accessSAS: string }>('POST', `${url}/beginGetAccess`, { ...q, body: { access: 'Write', durationInSeconds: 86400 } });
          const fd = openSync(o.file, 'r');
          try {
            const buf = Buffer.alloc(4 << 20);
            for (let pos = 0; pos < size; pos += buf.length) {
              const n = readSync(fd, buf, 0, Math.min(buf.length, size - pos), pos);
              const piece = buf.subarray(0, n);
              if (piece.every((b) => b === 0)) continue;
              check(await binary(c, p, 'PUT', g.accessSAS, { body: piece, headers: { 'x-ms-range': `bytes=${pos}-${pos + n - 1}`, 'x-ms-page-write': 'update' } }));
            }
          } finally {
            closeSync(fd);
          }
          await c.request('POST', `${url}/endGetAccess`, q);
          out(await c.request('GET', url, q), cmd);
        }),
      ),
    );
  gn(disk.command('changed-blocks').description('Show the changed-block bitmap since the last successful backup (64 KiB blocks of the image file).')).action(
    action(async (o: G, cmd: Command) => withClient(async (c, p) => out(await c.request('GET', `${diskUrl(p, cmd, o.resourceGroup, o.name)}/changedBlocks`, q), cmd))),
  );
}
