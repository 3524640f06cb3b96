/**
 * `rsvault`: an az-shaped command line. Every command except `serve` talks to a server over HTTPS through the
 * typed client (never importing server code). Errors print as one line `ERROR: (<code>) <message>` plus the
 * recommendation, exit code 1; bad usage exits 2.
 */
import { Command, CommanderError, Option } from 'commander';
import { randomUUID } from 'node:crypto';
import { ApiError, RsvaultClient } from '../client/index.js';
import { render, type OutputFormat } from './output.js';
import { clearProfile, loadProfile, profilePath, saveProfile, type Profile } from './profile.js';
import type { CliHelpers } from './helpers.js';
import { registerKeyvaultCommands } from './keyvault.js';
import { registerComputeCommands } from './compute.js';
import { registerBackupCommands } from './backup.js';
import { registerRestoreCommands } from './restore.js';

export interface ServeFlags {
  dataDir?: string;
  port?: string;
  listen?: string;
  dbUrl?: string;
  vaultHostSuffix?: string;
  blobHostSuffix?: string;
  logLevel?: string;
  role?: string;
  importDirs?: string;
  scheduleCatchUpHours?: string;
  verifySchedule?: string;
  keyvaultHostSuffix?: string;
  keyvaultPublicPort?: string;
  chunkStore?: string;
  secondaryChunkStore?: string;
  blobUrl?: string;
  blobContainer?: string;
  s3Endpoint?: string;
  s3Bucket?: string;
  s3Region?: string;
  tokenRateLimit?: string;
  tokenFailureLimit?: string;
}

export interface CopyStoreFlags extends ServeFlags {
  to: string;
  toDir?: string;
  toBlobUrl?: string;
  toBlobContainer?: string;
  toS3Endpoint?: string;
  toS3Bucket?: string;
  toS3Region?: string;
  vault?: string[];
  verify: boolean;
}

export interface CliDeps {
  serve(flags: ServeFlags): Promise<void>;
  /** `rsvault admin copy-store`: runs in the composition root like `serve` (it opens the server's stores). */
  adminCopyStore?(flags: CopyStoreFlags): Promise<void>;
  migrateDb?(o: { from: string; to: string }): Promise<void>;
}

const STORE_HELP = [
  '--chunk-store <kind>', 'where vault chunks and manifests live: fs | blob | s3 (env RSVAULT_CHUNK_STORE; default fs). Connection: RSVAULT_BLOB_URL, RSVAULT_BLOB_CONTAINER, RSVAULT_BLOB_ACCOUNT_KEY[_FILE] or RSVAULT_BLOB_CONNECTION_STRING[_FILE]; RSVAULT_S3_ENDPOINT, RSVAULT_S3_BUCKET, RSVAULT_S3_REGION, RSVAULT_S3_ACCESS_KEY_ID, RSVAULT_S3_SECRET_ACCESS_KEY[_FILE]; RSVAULT_FS_DIR',
] as const;

function storeOptions(c: Command): Command {
  return c
    .option(STORE_HELP[0], STORE_HELP[1])
    .option('--blob-url <url>', 'Azure Blob service URL of the chunk store, e.g. https://acct.blob.core.windows.net (env RSVAULT_BLOB_URL)')
    .option('--blob-container <name>', 'container of the chunk store (env RSVAULT_BLOB_CONTAINER; default rsvault)')
    .option('--s3-endpoint <url>', 'S3 endpoint of the chunk store (env RSVAULT_S3_ENDPOINT; default AWS)')
    .option('--s3-bucket <name>', 'bucket of the chunk store (env RSVAULT_S3_BUCKET)')
    .option('--s3-region <region>', 'S3 region (env RSVAULT_S3_REGION; default us-east-1)');
}

const ARM_RG_API = '2021-04-01';
const AUTHZ_API = '2022-04-01';

class UsageError extends Error {}

function out(data: unknown, cmd: Command): void {
  const fmt = (cmd.optsWithGlobals() as { output?: OutputFormat }).output ?? 'json';
  process.stdout.write(render(data, fmt));
}

function connect(): { client: RsvaultClient; profile: Profile } {
  const profile = loadProfile();
  if (!profile) throw new ApiError(0, 'NotLoggedIn', 'Please run `rsvault login` to set up an account.');
  const client = new RsvaultClient({
    server: profile.server,
    caFile: profile.caFile,
    credentials: { tenantId: profile.tenantId, clientId: profile.clientId, clientSecret: profile.clientSecret, username: profile.username, password: profile.password },
  });
  return { client, profile };
}

function sub(profile: Profile, cmd: Command): string {
  const s = (cmd.optsWithGlobals() as { subscription?: string }).subscription ?? profile.subscriptionId;
  if (!s) throw new ApiError(0, 'NoSubscription', 'No subscription selected: log in again or pass --subscription.');
  return s;
}

/** Wraps an action: one client per command, errors printed az-style. */
function action<A extends unknown[]>(fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    try {
      await fn(...args);
    } catch (e) {
      process.exitCode = printError(e);
    }
  };
}

export function printError(e: unknown): number {
  if (e instanceof ApiError) {
    process.stderr.write(`ERROR: (${e.code}) ${e.message}\n`);
    if (e.recommendation) process.stderr.write(`Recommendation: ${e.recommendation}\n`);
    return 1;
  }
  if (e instanceof UsageError) {
    process.stderr.write(`ERROR: ${e.message}\n`);
    return 2;
  }
  process.stderr.write(`ERROR: ${(e as Error)?.message ?? String(e)}\n`);
  return 1;
}

function parseTags(tags: string[] | undefined): Record<string, string> | undefined {
  if (!tags) return undefined;
  const out: Record<string, string> = {};
  for (const t of tags) {
    const i = t.indexOf('=');
    if (i < 0) out[t] = '';
    else out[t.slice(0, i)] = t.slice(i + 1);
  }
  return out;
}

export function buildProgram(deps: CliDeps): Command {
  const program = new Command('rsvault')
    .description('Self-hosted, Azure-compatible backup and restore for encrypted virtual machines.\nCommands mirror the az CLI; run `rsvault <group> --help` for details.')
    .version('0.1.0')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['json', 'jsonc', 'table', 'tsv', 'none']).default('json'))
    .option('--subscription <id>', 'subscription id (default: the one selected at login)')
    .showHelpAfterError()
    .exitOverride();

  const serveCmd = program
    .command('serve')
    .description('Run the rsvault server (ARM API, token endpoint, Key Vault, backup engine) with embedded defaults.')
    .option('--data-dir <dir>', 'data directory (env RSVAULT_DATA_DIR; default ./.rsvault)')
    .option('--port <port>', 'HTTPS port (env RSVAULT_PORT; default 8443; 0 = any free port)')
    .option('--listen <addrs>', 'comma-separated listen addresses (env RSVAULT_LISTEN; default 127.0.0.1,::1)')
    .option('--db-url <url>', 'metadata database: a SQLite path (default <data-dir>/rsvault.db) or postgres://user:password@host:port/db (env RSVAULT_DB_URL)')
    .option('--keyvault-host-suffix <suffix>', 'Key Vault host suffix: vaults live at https://{name}.<suffix>[:port] (env RSVAULT_KEYVAULT_HOST_SUFFIX; default vault.localhost)')
    .option('--vault-host-suffix <suffix>', 'alias of --keyvault-host-suffix (env RSVAULT_VAULT_HOST_SUFFIX)')
    .option('--keyvault-public-port <port>', 'port clients reach the vault hosts on, put into every Key Vault URL rsvault hands out (vaultUri, kid, ADE settings, recovery points, restore outputs); 443 = no port, e.g. behind a reverse proxy (env RSVAULT_KEYVAULT_PUBLIC_PORT; default: the listen port)')
    .option('--blob-host-suffix <suffix>', 'blob host suffix: storage accounts serve blobs at https://{account}.{suffix}:{port} (env RSVAULT_BLOB_HOST_SUFFIX; default blob.localhost)')
    .option('--log-level <level>', 'fatal|error|warn|info|debug|trace|silent (env RSVAULT_LOG_LEVEL; default info)')
    .option('--role <roles>', 'all, or a comma list of api (HTTPS API + portal), worker (runs backup/restore/retention jobs), scheduler (fires policy slots) (env RSVAULT_ROLE; default all)')
    .option('--import-dirs <dirs>', 'comma-separated server directories whose image files may be imported as disks by path (env RSVAULT_IMPORT_DIRS; default <data-dir>/import)')
    .option('--schedule-catch-up-hours <h>', 'at start, run the latest scheduled backup missed in the last <h> hours while the server was down (env RSVAULT_SCHEDULE_CATCHUP_HOURS; default 168; 0 = never)')
    .option('--verify-schedule <cron>', "when every vault's Verify job runs: a cron pattern in UTC with seconds, or 'off' (env RSVAULT_VERIFY_SCHEDULE; default '0 0 3 * * 0', Sundays 03:00)")
    .option('--token-rate-limit <n>', 'token endpoint requests per minute per source address and client id, then 429 + Retry-After (env RSVAULT_TOKEN_RATE_LIMIT; default 600)')
    .option('--token-failure-limit <n>', 'failed client-credential attempts per client id and per source address in RSVAULT_TOKEN_FAILURE_WINDOW_SEC (default 300 s), then 429 + Retry-After (env RSVAULT_TOKEN_FAILURE_LIMIT; default 20)');
  storeOptions(serveCmd)
    .option('--secondary-chunk-store <kind>', 'second copy of GeoRedundant vaults: none | fs | blob | s3 (env RSVAULT_SECONDARY_CHUNK_STORE; default none). Connection: the RSVAULT_SECONDARY_* twins of the variables above (fs: RSVAULT_SECONDARY_FS_DIR, default <data-dir>/secondary)')
    .action(async (flags: ServeFlags) => deps.serve(flags));
  const admin = program.command('admin').description('Server administration that runs on the server host (not over HTTPS).');
  admin
    .command('migrate-db')
    .description('Copy an embedded installation\'s metadata (SQLite) into an empty PostgreSQL database for scale-out. Stop the server first; keep the data dir (keys, chunk stores, disks) and point every process at it and at --to.')
    .requiredOption('--from <sqlite>', 'the SQLite database, e.g. sqlite:./.rsvault/rsvault.db or ./.rsvault/rsvault.db')
    .requiredOption('--to <url>', 'postgres://user:password@host:port/db (an empty database)')
    .action(async (o: { from: string; to: string }) => {
      if (!deps.migrateDb) throw new UsageError('migrate-db is not available in this build');
      await deps.migrateDb({ from: o.from.replace(/^sqlite:/i, ''), to: o.to });
    });

  storeOptions(
    admin
      .command('copy-store')
      .description('Copy every vault\'s chunks, fossils and manifests from the configured chunk store to another, reading each object back to verify. Stop the server first; re-run to resume. Then start the server with the target as --chunk-store.')
      .option('--data-dir <dir>', 'data directory (env RSVAULT_DATA_DIR; default ./.rsvault)'),
  )
    .requiredOption('--to <kind>', 'target store: fs | blob | s3; its settings come from --to-* flags and RSVAULT_TARGET_* variables (the twins of RSVAULT_BLOB_*, RSVAULT_S3_*, RSVAULT_FS_DIR)')
    .option('--to-dir <dir>', 'target fs directory (absolute; env RSVAULT_TARGET_FS_DIR)')
    .option('--to-blob-url <url>', 'target Azure Blob service URL (env RSVAULT_TARGET_BLOB_URL)')
    .option('--to-blob-container <name>', 'target container (env RSVAULT_TARGET_BLOB_CONTAINER; default rsvault)')
    .option('--to-s3-endpoint <url>', 'target S3 endpoint (env RSVAULT_TARGET_S3_ENDPOINT)')
    .option('--to-s3-bucket <name>', 'target bucket (env RSVAULT_TARGET_S3_BUCKET)')
    .option('--to-s3-region <region>', 'target S3 region (env RSVAULT_TARGET_S3_REGION)')
    .option('--vault <uid...>', 'only these vault uids (default: every vault found in the source)')
    .option('--no-verify', 'do not read objects back from the target')
    .action(async (flags: CopyStoreFlags) => {
      if (!deps.adminCopyStore) throw new Error('`rsvault admin` is started through bin/rsvault.js');
      await deps.adminCopyStore(flags);
    });

  // ---- login / account -----------------------------------------------------------------------------------------
  program
    .command('login')
    .description('Sign in to an rsvault server and store the profile (in $RSVAULT_CONFIG_DIR or ~/.rsvault).')
    .option('--server <url>', 'server URL, e.g. https://localhost:8443 (env RSVAULT_SERVER)')
    .option('--service-principal', 'sign in as a service principal (-u APPID -p SECRET)')
    .option('-u, --username <name>', 'app id of the service principal, or a user principal name')
    .option('-p, --password <secret>', 'client secret or user password')
    .requiredOption('-t, --tenant <tenant>', 'tenant id (see credentials.json)')
    .option('--ca-file <file>', 'CA certificate to trust (the server data dir: tls/ca.pem)')
    .action(
      action(async (o: { server?: string; servicePrincipal?: boolean; username?: string; password?: string; tenant: string; caFile?: string }, cmd: Command) => {
        const server = o.server ?? process.env.RSVAULT_SERVER;
        if (!server) throw new UsageError('--server is required (or set RSVAULT_SERVER)');
        if (!o.username || !o.password) throw new UsageError('-u/--username and -p/--password are required');
        const profile: Profile = { server, tenantId: o.tenant, caFile: o.caFile };
        if (o.servicePrincipal) {
          profile.clientId = o.username;
          profile.clientSecret = o.password;
        } else {
          profile.username = o.username;
          profile.password = o.password;
        }
        const client = new RsvaultClient({ server, caFile: o.caFile, credentials: { tenantId: o.tenant, clientId: profile.clientId, clientSecret: profile.clientSecret, username: profile.username, password: profile.password } });
        try {
          const subs = await client.list<{ subscriptionId: string; displayName: string; state: string; tenantId: string }>('/subscriptions', { query: { 'api-version': '2019-11-01' } });
          profile.subscriptionId = subs[0]?.subscriptionId;
          saveProfile(profile);
          out(
            subs.map((s, i) => ({ cloudName: 'rsvault', id: s.subscriptionId, name: s.displayName, state: s.state, tenantId: s.tenantId, isDefault: i === 0, user: { name: o.username, type: o.servicePrincipal ? 'servicePrincipal' : 'user' } })),
            cmd,
          );
        } finally {
          client.close();
        }
      }),
    );
  program
    .command('logout')
    .description('Forget the stored profile.')
    .action(() => {
      clearProfile();
    });
  const account = program.command('account').description('The signed-in account and its subscription.');
  account
    .command('show')
    .description('Show the current profile (secrets omitted).')
    .action(
      action(async (_o: unknown, cmd: Command) => {
        const { profile } = connect();
        out({ server: profile.server, tenantId: profile.tenantId, id: profile.subscriptionId, user: profile.clientId ?? profile.username, profile: profilePath() }, cmd);
      }),
    );
  account
    .command('list')
    .description('List the subscriptions you can use.')
    .action(
      action(async (_o: unknown, cmd: Command) => {
        const { client } = connect();
        try {
          out(await client.list('/subscriptions', { query: { 'api-version': '2019-11-01' } }), cmd);
        } finally {
          client.close();
        }
      }),
    );

  // ---- group -----------------------------------------------------------------------------------------------------
  const group = program.command('group').description('Manage resource groups.');
  const withClient = async <T>(fn: (c: RsvaultClient, p: Profile) => Promise<T>): Promise<T> => {
    const { client, profile } = connect();
    try {
      return await fn(client, profile);
    } finally {
      client.close();
    }
  };
  group
    .command('create')
    .description('Create or update a resource group.')
    .requiredOption('-n, --name <name>', 'resource group name')
    .requiredOption('-l, --location <location>', 'location, e.g. local')
    .option('--tags <tags...>', 'space-separated tags: key[=value]')
    .action(
      action(async (o: { name: string; location: string; tags?: string[] }, cmd: Command) => {
        await withClient(async (c, p) => {
          out(await c.request('PUT', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.name)}`, { query: { 'api-version': ARM_RG_API }, body: { location: o.location, tags: parseTags(o.tags) } }), cmd);
        });
      }),
    );
  group
    .command('show')
    .description('Show a resource group.')
    .requiredOption('-n, --name <name>', 'resource group name')
    .action(
      action(async (o: { name: string }, cmd: Command) => {
        await withClient(async (c, p) => out(await c.request('GET', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.name)}`, { query: { 'api-version': ARM_RG_API } }), cmd));
      }),
    );
  group
    .command('list')
    .description('List resource groups.')
    .action(
      action(async (_o: unknown, cmd: Command) => {
        await withClient(async (c, p) => out(await c.list(`/subscriptions/${sub(p, cmd)}/resourcegroups`, { query: { 'api-version': ARM_RG_API } }), cmd));
      }),
    );
  group
    .command('delete')
    .description('Delete a resource group and every resource in it.')
    .requiredOption('-n, --name <name>', 'resource group name')
    .option('-y, --yes', 'do not prompt for confirmation')
    .option('--no-wait', 'do not wait for the delete to finish')
    .action(
      action(async (o: { name: string; yes?: boolean; wait: boolean }, cmd: Command) => {
        if (!o.yes && process.stdin.isTTY) {
          const { createInterface } = await import('node:readline/promises');
          const rl = createInterface({ input: process.stdin, output: process.stderr });
          const a = await rl.question(`Are you sure you want to delete resource group '${o.name}' and all its resources? (y/n): `);
          rl.close();
          if (!/^y(es)?$/i.test(a.trim())) return;
        }
        await withClient(async (c, p) => {
          const res = await c.send('DELETE', `/subscriptions/${sub(p, cmd)}/resourcegroups/${encodeURIComponent(o.name)}`, { query: { 'api-version': ARM_RG_API } });
          if (res.status >= 400) throw (await import('../client/index.js')).toApiError(res.status, res.body);
          if (res.status === 202 && o.wait) await c.waitForOperation(res);
        });
      }),
    );

  // ---- ad ----------------------------------------------------------------------------------------------------------
  const ad = program.command('ad').description('Manage directory objects: service principals and users.');
  const sp = ad.command('sp').description('Manage service principals.');
  type SpView = { id: string; appId: string; displayName: string; servicePrincipalType?: string; passwordCredentials?: { secretText: string }[] };
  sp.command('create-for-rbac')
    .description('Create a service principal with a client secret, optionally assigning it a role.')
    .requiredOption('-n, --name <name>', 'display name')
    .option('--role <role>', 'role to assign, e.g. Contributor, Reader, "Backup Operator"')
    .option('--scopes <scopes...>', 'scopes for the role assignment (default: the subscription)')
    .action(
      action(async (o: { name: string; role?: string; scopes?: string[] }, cmd: Command) => {
        await withClient(async (c, p) => {
          const created = await c.request<SpView>('POST', '/v1.0/servicePrincipals', { body: { displayName: o.name } });
          if (o.role) {
            for (const scope of o.scopes ?? [`/subscriptions/${sub(p, cmd)}`]) {
              await assignRole(c, p, cmd, { principalId: created.id, role: o.role, scope });
            }
          }
          out({ appId: created.appId, displayName: created.displayName, password: created.passwordCredentials?.[0]?.secretText, tenant: p.tenantId }, cmd);
        });
      }),
    );
  sp.command('list')
    .description('List service principals (the built-in "Backup Management Service" among them).')
    .option('--display-name <name>', 'filter by display name prefix')
    .option('--spn <appId>', 'filter by service principal name (app id)')
    .option('--filter <odata>', 'raw OData $filter')
    .option('--all', 'list all (default when no filter is given)')
    .action(
      action(async (o: { displayName?: string; spn?: string; filter?: string }, cmd: Command) => {
        const filter = o.filter ?? (o.displayName ? `startswith(displayName,'${o.displayName.replace(/'/g, "''")}')` : o.spn ? `servicePrincipalNames/any(c:c eq '${o.spn}')` : undefined);
        await withClient(async (c) => out((await c.request<{ value: SpView[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: filter } })).value, cmd));
      }),
    );
  sp.command('show')
    .description('Show a service principal by object id or app id.')
    .requiredOption('--id <id>', 'object id or app id')
    .action(
      action(async (o: { id: string }, cmd: Command) => {
        await withClient(async (c) => out(await c.request('GET', `/v1.0/servicePrincipals/${encodeURIComponent(o.id)}`), cmd));
      }),
    );
  sp.command('delete')
    .description('Delete a service principal.')
    .requiredOption('--id <id>', 'object id or app id')
    .action(
      action(async (o: { id: string }) => {
        await withClient(async (c) => {
          await c.request('DELETE', `/v1.0/servicePrincipals/${encodeURIComponent(o.id)}`);
        });
      }),
    );
  const user = ad.command('user').description('Manage users (portal sign-in).');
  user
    .command('create')
    .description('Create a user who can sign in to the portal.')
    .requiredOption('--display-name <name>', 'display name')
    .requiredOption('--user-principal-name <upn>', 'sign-in name, e.g. ops@rsvault.localhost')
    .requiredOption('--password <password>', 'password (at least 8 characters)')
    .action(
      action(async (o: { displayName: string; userPrincipalName: string; password: string }, cmd: Command) => {
        await withClient(async (c) => out(await c.request('POST', '/v1.0/users', { body: { displayName: o.displayName, userPrincipalName: o.userPrincipalName, accountEnabled: true, passwordProfile: { password: o.password } } }), cmd));
      }),
    );
  user
    .command('list')
    .description('List users.')
    .action(
      action(async (_o: unknown, cmd: Command) => {
        await withClient(async (c) => out((await c.request<{ value: unknown[] }>('GET', '/v1.0/users')).value, cmd));
      }),
    );

  // ---- role assignment ---------------------------------------------------------------------------------------------
  const role = program.command('role').description('Manage role-based access control.');
  const ra = role.command('assignment').description('Manage role assignments.');
  ra.command('create')
    .description('Assign a role to a principal at a scope.')
    .requiredOption('--assignee <id>', 'object id, app id or user principal name')
    .requiredOption('--role <role>', 'role name or id: Owner, Contributor, Reader, Virtual Machine Contributor, Backup Contributor, Backup Operator, Backup Reader, or a Key Vault data-plane role')
    .option('--scope <scope>', 'scope (default: the subscription)')
    .option('-g, --resource-group <rg>', 'resource group scope')
    .action(
      action(async (o: { assignee: string; role: string; scope?: string; resourceGroup?: string }, cmd: Command) => {
        await withClient(async (c, p) => {
          const principalId = await resolveAssignee(c, o.assignee);
          const scope = o.scope ?? (o.resourceGroup ? `/subscriptions/${sub(p, cmd)}/resourceGroups/${o.resourceGroup}` : `/subscriptions/${sub(p, cmd)}`);
          out(await assignRole(c, p, cmd, { principalId, role: o.role, scope }), cmd);
        });
      }),
    );
  ra.command('list')
    .description('List role assignments.')
    .option('--assignee <id>', 'object id, app id or user principal name')
    .option('--scope <scope>', 'scope (default: the subscription)')
    .option('--all', 'all assignments at and below the scope')
    .action(
      action(async (o: { assignee?: string; scope?: string; all?: boolean }, cmd: Command) => {
        await withClient(async (c, p) => {
          const scope = o.scope ?? `/subscriptions/${sub(p, cmd)}`;
          const filter = o.assignee ? `principalId eq '${await resolveAssignee(c, o.assignee)}'` : undefined;
          const list = await c.list<{ name: string; properties: { roleDefinitionId: string; principalId: string; scope: string; principalType: string } }>(`${scope}/providers/Microsoft.Authorization/roleAssignments`, { query: { 'api-version': AUTHZ_API, $filter: filter } });
          const roles = await c.request<{ value: { name: string; properties: { roleName: string } }[] }>('GET', `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': AUTHZ_API } });
          const nameOf = (id: string) => roles.value.find((r) => id.toLowerCase().endsWith(r.name))?.properties.roleName;
          out(list.map((a) => ({ ...a, roleDefinitionName: nameOf(a.properties.roleDefinitionId), principalId: a.properties.principalId, scope: a.properties.scope })), cmd);
        });
      }),
    );
  ra.command('delete')
    .description('Delete role assignments: by --ids, or by --assignee/--role/--scope.')
    .option('--ids <ids...>', 'role assignment ids')
    .option('--assignee <id>', 'object id, app id or user principal name')
    .option('--role <role>', 'role name')
    .option('--scope <scope>', 'scope (default: the subscription)')
    .action(
      action(async (o: { ids?: string[]; assignee?: string; role?: string; scope?: string }, cmd: Command) => {
        await withClient(async (c, p) => {
          let ids = o.ids ?? [];
          if (ids.length === 0) {
            if (!o.assignee) throw new UsageError('give --ids, or --assignee (with optional --role/--scope)');
            const principalId = await resolveAssignee(c, o.assignee);
            const scope = o.scope ?? `/subscriptions/${sub(p, cmd)}`;
            const list = await c.list<{ id: string; properties: { roleDefinitionId: string; scope: string } }>(`${scope}/providers/Microsoft.Authorization/roleAssignments`, { query: { 'api-version': AUTHZ_API, $filter: `principalId eq '${principalId}'` } });
            let roleId: string | undefined;
            if (o.role) {
              const roles = await c.request<{ value: { name: string }[] }>('GET', `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': AUTHZ_API, $filter: `roleName eq '${o.role}'` } });
              roleId = roles.value[0]?.name;
              if (!roleId) throw new ApiError(400, 'RoleDefinitionDoesNotExist', `The role '${o.role}' does not exist.`);
            }
            ids = list.filter((a) => (!roleId || a.properties.roleDefinitionId.endsWith(roleId)) && (!o.scope || a.properties.scope.toLowerCase() === o.scope.toLowerCase())).map((a) => a.id);
          }
          for (const id of ids) await c.request('DELETE', id, { query: { 'api-version': AUTHZ_API } });
        });
      }),
    );
  const helpers: CliHelpers = { action, out, withClient, sub, parseTags, usageError: (m) => new UsageError(m) };
  registerKeyvaultCommands(program, helpers);
  registerComputeCommands(program, helpers);
  registerBackupCommands(program, helpers);
  registerRestoreCommands(program, helpers);
  return program;
}

async function resolveAssignee(c: RsvaultClient, assignee: string): Promise<string> {
  const isGuid = /^[0-9a-f-]{36}$/i.test(assignee);
  if (isGuid) {
    const bySpn = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: `servicePrincipalNames/any(c:c eq '${assignee}')` } });
    if (bySpn.value[0]) return bySpn.value[0].id;
    return assignee;
  }
  const users = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/users', { query: { $filter: `userPrincipalName eq '${assignee.replace(/'/g, "''")}'` } });
  if (users.value[0]) return users.value[0].id;
  const sps = await c.request<{ value: { id: string }[] }>('GET', '/v1.0/servicePrincipals', { query: { $filter: `displayName eq '${assignee.replace(/'/g, "''")}'` } });
  if (sps.value[0]) return sps.value[0].id;
  throw new ApiError(400, 'PrincipalNotFound', `Cannot find user or service principal in graph database for '${assignee}'.`);
}

async function assignRole(c: RsvaultClient, p: Profile, cmd: Command, a: { principalId: string; role: string; scope: string }): Promise<unknown> {
  const roles = await c.request<{ value: { id: string; name: string }[] }>('GET', `/subscriptions/${sub(p, cmd)}/providers/Microsoft.Authorization/roleDefinitions`, { query: { 'api-version': AUTHZ_API, $filter: /^[0-9a-f-]{36}$/i.test(a.role) ? undefined : `roleName eq '${a.role.replace(/'/g, "''")}'` } });
  const def = /^[0-9a-f-]{36}$/i.test(a.role) ? roles.value.find((r) => r.name === a.role.toLowerCase()) : roles.value[0];
  if (!def) throw new ApiError(400, 'RoleDefinitionDoesNotExist', `The role '${a.role}' does not exist.`, 'Use a built-in role: Owner, Contributor, Reader, Virtual Machine Contributor, Backup Contributor, Backup Operator, Backup Reader, Key Vault Administrator, Key Vault Secrets User, Key Vault Crypto User, …');
  const scope = a.scope.replace(/\/+$/, '');
  return c.request('PUT', `${scope}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, { query: { 'api-version': AUTHZ_API }, body: { properties: { roleDefinitionId: def.id, principalId: a.principalId } } });
}

export async function runCli(argv: string[], deps: CliDeps): Promise<void> {
  const program = buildProgram(deps);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      process.exitCode = e.exitCode === 0 ? 0 : 2;
      return;
    }
    process.exitCode = printError(e);
  }
}
