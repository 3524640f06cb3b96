/**
 * `rsvault keyvault …` (az keyvault shapes): vaults and access policies over ARM, keys and secrets over the vault's
 * data plane (https://{name}.vault.localhost:{port}, token for the vault resource). Talks to the server through the
 * client only.
 */
import type { Command } from 'commander';
import { readFileSync, writeFileSync } from 'node:fs';
import { ApiError, type RsvaultClient } from '../client/index.js';
import type { CliHelpers } from './helpers.js';
import type { Profile } from './profile.js';

const KV_API = '2023-07-01';
const DATA_API = '7.4';



type VaultView = { id: string; name: string; location: string; properties: { vaultUri: string; tenantId: string; accessPolicies: Policy[] } & Record<string, unknown> } & Record<string, unknown>;
type Policy = { tenantId: string; objectId: string; applicationId?: string; permissions: { keys?: string[]; secrets?: string[]; certificates?: string[]; storage?: string[] } };
type Template = { name: string; permissions: { keys: string[]; secrets: string[]; certificates: string[] } };

export function registerKeyvaultCommands(program: Command, h: CliHelpers): void {
  const { action, out, withClient, sub } = h;
  const kv = program.command('keyvault').description('Manage key vaults, their access policies, keys and secrets.');
  const q = { query: { 'api-version': KV_API } };

  const vaultId = async (c: RsvaultClient, p: Profile, cmd: Command, name: string, rg?: string): Promise<string> => {
    const s = sub(p, cmd);
    if (rg) return `/subscriptions/${s}/resourceGroups/${rg}/providers/Microsoft.KeyVault/vaults/${name}`;
    const list = await c.list<{ id: string; name: string }>(`/subscriptions/${s}/providers/Microsoft.KeyVault/vaults`, q);
    const v = list.find((x) => x.name.toLowerCase() === name.toLowerCase());
    if (!v) throw new ApiError(404, 'ResourceNotFound', `The vault '${name}' was not found in subscription ${s}.`, `List vaults with: rsvault keyvault list`);
    return v.id;
  };
  const getVault = async (c: RsvaultClient, p: Profile, cmd: Command, name: string, rg?: string) => c.request<VaultView>('GET', await vaultId(c, p, cmd, name, rg), q);

  const selfObjectId = async (c: RsvaultClient, p: Profile): Promise<string | undefined> => {
    if (p.clientId) {
      const r = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: `servicePrincipalNames/any(c:c eq '${p.clientId}')` } });
      return r.value[0]?.id;
    }
    const me = await c.request<{ id: string }>('GET', '/v1.0/me').catch(() => undefined);
    return me?.id;
  };

  const principalId = async (c: RsvaultClient, o: { objectId?: string; spn?: string; upn?: string }): Promise<string> => {
    if (o.objectId) return o.objectId;
    if (o.spn) {
      const r = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: `servicePrincipalNames/any(c:c eq '${o.spn.replace(/'/g, "''")}')` } });
      const byName = r.value[0] ?? (await c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: `displayName eq '${o.spn.replace(/'/g, "''")}'` } })).value[0];
      if (!byName) throw new ApiError(400, 'PrincipalNotFound', `Unable to find service principal '${o.spn}'.`);
      return byName.id;
    }
    if (o.upn) {
      const r = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/users', { query: { $filter: `userPrincipalName eq '${o.upn.replace(/'/g, "''")}'` } });
      if (!r.value[0]) throw new ApiError(400, 'PrincipalNotFound', `Unable to find user '${o.upn}'.`);
      return r.value[0].id;
    }
    throw h.usageError('give --object-id, --spn or --upn');
  };

  kv.command('create')
    .description('Create a key vault (with an access policy for you unless --enable-rbac-authorization).')
    .requiredOption('-n, --name <name>', 'vault name (3-24 characters, globally unique)')
    .requiredOption('-g, --resource-group <rg>', 'resource group')
    .option('-l, --location <location>', 'location (default: the group\'s)')
    .option('--enabled-for-disk-encryption [bool]', 'allow Azure Disk Encryption to retrieve secrets and unwrap keys', 'false')
    .option('--enabled-for-deployment [bool]', 'allow VMs to retrieve certificates', 'false')
    .option('--enable-rbac-authorization [bool]', 'use Key Vault RBAC roles instead of access policies', 'false')
    .option('--enable-purge-protection [bool]', 'forbid purging deleted vaults and objects during retention', 'false')
    .option('--retention-days <days>', 'soft-delete retention, 7-90', '90')
    .option('--sku <sku>', 'standard | premium', 'standard')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .action(
      action(async (o: { name: string; resourceGroup: string; location?: string; enabledForDiskEncryption: string | boolean; enabledForDeployment: string | boolean; enableRbacAuthorization: string | boolean; enablePurgeProtection: string | boolean; retentionDays: string; sku: string; tags?: string[] }, cmd: Command) => {
        const bool = (v: string | boolean) => v === true || String(v).toLowerCase() === 'true';
        await withClient(async (c, p) => {
          const s = sub(p, cmd);
          const location = o.location ?? (await c.request<{ location: string }>('GET', `/subscriptions/${s}/resourcegroups/${o.resourceGroup}`, { query: { 'api-version': '2021-04-01' } })).location;
          const rbac = bool(o.enableRbacAuthorization);
          const me = rbac ? undefined : await selfObjectId(c, p);
          const all = { keys: ['all'], secrets: ['all'], certificates: ['all'], storage: [] as string[] };
          out(
            await c.request('PUT', `/subscriptions/${s}/resourceGroups/${o.resourceGroup}/providers/Microsoft.KeyVault/vaults/${o.name}`, {
              ...q,
              body: {
                location,
                tags: h.parseTags(o.tags),
                properties: {
                  tenantId: p.tenantId,
                  sku: { family: 'A', name: o.sku },
                  accessPolicies: me ? [{ tenantId: p.tenantId, objectId: me, permissions: all }] : [],
                  enabledForDiskEncryption: bool(o.enabledForDiskEncryption),
                  enabledForDeployment: bool(o.enabledForDeployment),
                  enableRbacAuthorization: rbac,
                  enableSoftDelete: true,
                  softDeleteRetentionInDays: Number(o.retentionDays),
                  ...(bool(o.enablePurgeProtection) ? { enablePurgeProtection: true } : {}),
                },
              },
            }),
            cmd,
          );
        });
      }),
    );
  kv.command('show')
    .description('Show a key vault.')
    .requiredOption('-n, --name <name>', 'vault name')
    .option('-g, --resource-group <rg>', 'resource group (optional: names are unique)')
    .action(action(async (o: { name: string; resourceGroup?: string }, cmd: Command) => withClient(async (c, p) => out(await getVault(c, p, cmd, o.name, o.resourceGroup), cmd))));
  kv.command('list')
    .description('List key vaults.')
    .option('-g, --resource-group <rg>', 'resource group')
    .action(
      action(async (o: { resourceGroup?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const s = sub(p, cmd);
          out(await c.list(o.resourceGroup ? `/subscriptions/${s}/resourceGroups/${o.resourceGroup}/providers/Microsoft.KeyVault/vaults` : `/subscriptions/${s}/providers/Microsoft.KeyVault/vaults`, q), cmd);
        }),
      ),
    );
  kv.command('delete')
    .description('Delete a key vault (soft delete: recoverable until its retention ends).')
    .requiredOption('-n, --name <name>', 'vault name')
    .option('-g, --resource-group <rg>', 'resource group')
    .action(action(async (o: { name: string; resourceGroup?: string }, cmd: Command) => withClient(async (c, p) => void (await c.request('DELETE', await vaultId(c, p, cmd, o.name, o.resourceGroup), q)))));

  kv.command('set-policy')
    .description('Grant permissions to a principal (rewrites the vault\'s access policies, as az does). Use --template "Azure Backup" for the backup service.')
    .requiredOption('-n, --name <name>', 'vault name')
    .option('-g, --resource-group <rg>', 'resource group')
    .option('--object-id <id>', 'object id of the principal')
    .option('--spn <spn>', 'service principal: app id or display name')
    .option('--upn <upn>', 'user principal name')
    .option('--key-permissions <perms...>', 'e.g. get list backup wrapKey unwrapKey')
    .option('--secret-permissions <perms...>', 'e.g. get list set backup')
    .option('--certificate-permissions <perms...>', 'e.g. get list')
    .option('--template <name>', 'an access-policy template: "Azure Backup", "Key & Secret Management", "Secret Management", "Key Management"')
    .action(
      action(async (o: { name: string; resourceGroup?: string; objectId?: string; spn?: string; upn?: string; keyPermissions?: string[]; secretPermissions?: string[]; certificatePermissions?: string[]; template?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          let perms: Policy['permissions'] = { keys: o.keyPermissions, secrets: o.secretPermissions, certificates: o.certificatePermissions };
          if (o.template) {
            const t = (await c.request<{ value: Template[] }>('GET', '/providers/Microsoft.KeyVault/accessPolicyTemplates', q)).value.find((x) => x.name.toLowerCase() === o.template!.toLowerCase());
            if (!t) throw new ApiError(400, 'TemplateNotFound', `No access-policy template named '${o.template}'.`, 'List them with: rsvault keyvault template list');
            perms = { keys: [...t.permissions.keys, ...(o.keyPermissions ?? [])], secrets: [...t.permissions.secrets, ...(o.secretPermissions ?? [])], certificates: [...t.permissions.certificates, ...(o.certificatePermissions ?? [])] };
          }
          if (!perms.keys?.length && !perms.secrets?.length && !perms.certificates?.length) throw h.usageError('give --key-permissions, --secret-permissions, --certificate-permissions or --template');
          const objectId = await principalId(c, o);
          const v = await getVault(c, p, cmd, o.name, o.resourceGroup);
          const policies = v.properties.accessPolicies.filter((x) => x.objectId.toLowerCase() !== objectId.toLowerCase() || x.applicationId);
          const prev = v.properties.accessPolicies.find((x) => x.objectId.toLowerCase() === objectId.toLowerCase() && !x.applicationId);
          // az semantics: the given permission kinds replace that principal's lists; kinds not given stay.
          const merged = {
            keys: perms.keys ?? prev?.permissions.keys ?? [],
            secrets: perms.secrets ?? prev?.permissions.secrets ?? [],
            certificates: perms.certificates ?? prev?.permissions.certificates ?? [],
            storage: prev?.permissions.storage ?? [],
          };
          policies.push({ tenantId: v.properties.tenantId, objectId, permissions: merged });
          const { id: _id, name: _n, type: _t, systemData: _s, ...rest } = v;
          out(await c.request('PUT', v.id, { ...q, body: { ...rest, properties: { ...v.properties, accessPolicies: policies } } }), cmd);
        }),
      ),
    );
  kv.command('delete-policy')
    .description('Remove a principal\'s access policy.')
    .requiredOption('-n, --name <name>', 'vault name')
    .option('-g, --resource-group <rg>', 'resource group')
    .option('--object-id <id>', 'object id of the principal')
    .option('--spn <spn>', 'service principal: app id or display name')
    .option('--upn <upn>', 'user principal name')
    .action(
      action(async (o: { name: string; resourceGroup?: string; objectId?: string; spn?: string; upn?: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const objectId = await principalId(c, o);
          const v = await getVault(c, p, cmd, o.name, o.resourceGroup);
          const { id: _id, name: _n, type: _t, systemData: _s, ...rest } = v;
          out(await c.request('PUT', v.id, { ...q, body: { ...rest, properties: { ...v.properties, accessPolicies: v.properties.accessPolicies.filter((x) => x.objectId.toLowerCase() !== objectId.toLowerCase()) } } }), cmd);
        }),
      ),
    );
  kv.command('list-deleted')
    .description('List soft-deleted key vaults.')
    .action(action(async (_o: unknown, cmd: Command) => withClient(async (c, p) => out(await c.list(`/subscriptions/${sub(p, cmd)}/providers/Microsoft.KeyVault/deletedVaults`, q), cmd))));
  const deletedVault = async (c: RsvaultClient, p: Profile, cmd: Command, name: string) => {
    const list = await c.list<{ name: string; properties: { vaultId: string; location: string } }>(`/subscriptions/${sub(p, cmd)}/providers/Microsoft.KeyVault/deletedVaults`, q);
    const d = list.find((x) => x.name.toLowerCase() === name.toLowerCase());
    if (!d) throw new ApiError(404, 'ResourceNotFound', `No deleted vault named '${name}'.`, 'List them with: rsvault keyvault list-deleted');
    return d;
  };
  kv.command('recover')
    .description('Recover a soft-deleted key vault (with its keys and secrets).')
    .requiredOption('-n, --name <name>', 'vault name')
    .action(
      action(async (o: { name: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const d = await deletedVault(c, p, cmd, o.name);
          out(await c.request('PUT', d.properties.vaultId, { ...q, body: { location: d.properties.location, properties: { tenantId: p.tenantId, sku: { family: 'A', name: 'standard' }, createMode: 'recover' } } }), cmd);
        }),
      ),
    );
  kv.command('purge')
    .description('Permanently delete a soft-deleted key vault.')
    .requiredOption('-n, --name <name>', 'vault name')
    .action(
      action(async (o: { name: string }, cmd: Command) =>
        withClient(async (c, p) => {
          const d = await deletedVault(c, p, cmd, o.name);
          await c.request('POST', `/subscriptions/${sub(p, cmd)}/providers/Microsoft.KeyVault/locations/${d.properties.location}/deletedVaults/${d.name}/purge`, q);
        }),
      ),
    );
  kv.command('template')
    .description('Access-policy templates.')
    .command('list')
    .description('List access-policy templates (name and permissions).')
    .action(action(async (_o: unknown, cmd: Command) => withClient(async (c) => out((await c.request<{ value: unknown[] }>('GET', '/providers/Microsoft.KeyVault/accessPolicyTemplates', q)).value, cmd))));
  kv.command('audit')
    .description('Show the data-plane audit log of a vault (newest first; values are never logged).')
    .requiredOption('-n, --name <name>', 'vault name')
    .option('-g, --resource-group <rg>', 'resource group')
    .option('--top <n>', 'number of events', '100')
    .action(action(async (o: { name: string; resourceGroup?: string; top: string }, cmd: Command) => withClient(async (c, p) => out((await c.request<{ value: unknown[] }>('GET', `${await vaultId(c, p, cmd, o.name, o.resourceGroup)}/auditEvents`, { query: { 'api-version': KV_API, $top: o.top } })).value, cmd))));

  // ---- data plane --------------------------------------------------------------------------------------------------
  const data = async <T>(c: RsvaultClient, p: Profile, cmd: Command, vault: string, method: string, path: string, body?: unknown): Promise<T> => {
    const v = await getVault(c, p, cmd, vault);
    const uri = new URL(v.properties.vaultUri);
    const resource = `https://${uri.host.split('.').slice(1).join('.')}`;
    return c.request<T>(method, path, { baseUrl: uri.origin, resource, query: { 'api-version': DATA_API }, body });
  };
  const dataList = async (c: RsvaultClient, p: Profile, cmd: Command, vault: string, path: string) => {
    let pageBody = await data<{ value: unknown[]; nextLink?: string | null }>(c, p, cmd, vault, 'GET', path);
    const all = [...pageBody.value];
    while (pageBody.nextLink) {
      const next = new URL(pageBody.nextLink);
      const v = await getVault(c, p, cmd, vault);
      const resource = `https://${new URL(v.properties.vaultUri).host.split('.').slice(1).join('.')}`;
      pageBody = await c.request('GET', next.pathname + next.search, { baseUrl: next.origin, resource });
      all.push(...pageBody.value);
    }
    return all;
  };

  for (const kind of ['key', 'secret'] as const) {
    const coll = `${kind}s`;
    const g = kv.command(kind).description(kind === 'key' ? 'Manage keys (RSA KEKs).' : 'Manage secrets (BEKs).');
    const std = (c: Command) => c.requiredOption('--vault-name <vault>', 'vault name').requiredOption('-n, --name <name>', `${kind} name`);
    if (kind === 'key') {
      std(g.command('create').description('Create an RSA key (a new version if the name exists).'))
        .option('--kty <kty>', 'RSA | RSA-HSM', 'RSA')
        .option('--size <bits>', '2048 | 3072 | 4096', '2048')
        .option('--ops <ops...>', 'key operations, e.g. wrapKey unwrapKey')
        .option('--tags <tags...>', 'space-separated tags: key[=value]')
        .action(action(async (o: { vaultName: string; name: string; kty: string; size: string; ops?: string[]; tags?: string[] }, cmd: Command) => withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'POST', `/keys/${o.name}/create`, { kty: o.kty, key_size: Number(o.size), ...(o.ops ? { key_ops: o.ops } : {}), ...(o.tags ? { tags: h.parseTags(o.tags) } : {}) }), cmd))));
    } else {
      std(g.command('set').description('Set a secret (a new version if the name exists).'))
        .option('--value <value>', 'the secret value')
        .option('--file <file>', 'read the value from a file')
        .option('--content-type <type>', 'content type, e.g. BEK or "Wrapped BEK"')
        .option('--tags <tags...>', 'space-separated tags: key[=value]')
        .action(
          action(async (o: { vaultName: string; name: string; value?: string; file?: string; contentType?: string; tags?: string[] }, cmd: Command) => {
            const value = o.value ?? (o.file ? readFileSync(o.file, 'utf8') : undefined);
            if (value === undefined) throw h.usageError('give --value or --file');
            await withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'PUT', `/secrets/${o.name}`, { value, ...(o.contentType ? { contentType: o.contentType } : {}), ...(o.tags ? { tags: h.parseTags(o.tags) } : {}) }), cmd));
          }),
        );
    }
    std(g.command('show').description(`Show a ${kind} (latest version unless --version).`))
      .option('--version <version>', 'version id')
      .action(action(async (o: { vaultName: string; name: string; version?: string }, cmd: Command) => withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'GET', `/${coll}/${o.name}/${o.version ?? ''}`), cmd))));
    g.command('list')
      .description(`List ${kind}s (or the versions of one with --name).`)
      .requiredOption('--vault-name <vault>', 'vault name')
      .option('-n, --name <name>', `list the versions of this ${kind}`)
      .option('--deleted', `list soft-deleted ${kind}s`)
      .action(action(async (o: { vaultName: string; name?: string; deleted?: boolean }, cmd: Command) => withClient(async (c, p) => out(await dataList(c, p, cmd, o.vaultName, o.deleted ? `/deleted${coll}` : o.name ? `/${coll}/${o.name}/versions` : `/${coll}`), cmd))));
    std(g.command('backup').description(`Back up every version of a ${kind} to a file (opaque, bound to this installation).`))
      .requiredOption('-f, --file <file>', 'output file')
      .action(
        action(async (o: { vaultName: string; name: string; file: string }, cmd: Command) =>
          withClient(async (c, p) => {
            const r = await data<{ value: string }>(c, p, cmd, o.vaultName, 'POST', `/${coll}/${o.name}/backup`);
            writeFileSync(o.file, Buffer.from(r.value, 'base64url'), { mode: 0o600 });
          }),
        ),
      );
    g.command('restore')
      .description(`Restore a ${kind} (all versions, same version ids) from a backup file.`)
      .requiredOption('--vault-name <vault>', 'vault name')
      .requiredOption('-f, --file <file>', 'backup file')
      .action(action(async (o: { vaultName: string; file: string }, cmd: Command) => withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'POST', `/${coll}/restore`, { value: readFileSync(o.file).toString('base64url') }), cmd))));
    std(g.command('delete').description(`Delete a ${kind} (soft delete when the vault has it).`)).action(action(async (o: { vaultName: string; name: string }, cmd: Command) => withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'DELETE', `/${coll}/${o.name}`), cmd))));
    std(g.command('recover').description(`Recover a soft-deleted ${kind}.`)).action(action(async (o: { vaultName: string; name: string }, cmd: Command) => withClient(async (c, p) => out(await data(c, p, cmd, o.vaultName, 'POST', `/deleted${coll}/${o.name}/recover`), cmd))));
    std(g.command('purge').description(`Permanently delete a soft-deleted ${kind}.`)).action(action(async (o: { vaultName: string; name: string }, cmd: Command) => withClient(async (c, p) => void (await data(c, p, cmd, o.vaultName, 'DELETE', `/deleted${coll}/${o.name}`)))));
  }
}
