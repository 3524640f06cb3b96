/** Identity: principals, built-in roles (Azure's ids and meanings) and the pure rules of role matching. */

export const BACKUP_MANAGEMENT_SERVICE_APP_ID = '262044b1-e2ce-469f-a196-69ab7ada62d3';
export const BACKUP_MANAGEMENT_SERVICE_NAME = 'Backup Management Service';

export type PrincipalType = 'ServicePrincipal' | 'User';

export interface Principal {
  objectId: string;
  tenantId: string;
  type: PrincipalType;
  displayName: string;
  appId?: string | undefined;
  userPrincipalName?: string | undefined;
  builtIn: boolean;
  createdAt: number;
}

export interface RoleDefinition {
  /** GUID, the same as Azure's built-in role ids. */
  id: string;
  roleName: string;
  description: string;
  actions: string[];
  notActions: string[];
  dataActions: string[];
  notDataActions: string[];
}

export interface RoleAssignment {
  id: string;
  name: string;
  scope: string;
  roleDefinitionId: string;
  principalId: string;
  principalType: PrincipalType;
  createdAt: number;
}

const RS = 'Microsoft.RecoveryServices';
const BACKUP_READS = [
  'Microsoft.Authorization/*/read',
  'Microsoft.Resources/*/read',
  'Microsoft.Compute/*/read',
  'Microsoft.ClassicCompute/*/read',
  'Microsoft.KeyVault/vaults/read',
  'Microsoft.Storage/storageAccounts/read',
  `${RS}/*/read`,
  `${RS}/locations/*`,
];

export const BUILT_IN_ROLES: readonly RoleDefinition[] = [
  {
    id: '8e3af657-a8ff-443c-a75c-2fe8c4bcb635',
    roleName: 'Owner',
    description: 'Grants full access to manage all resources, including the ability to assign roles.',
    actions: ['*'],
    notActions: [],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: 'b24988ac-6180-42a0-ab88-20f7382dd24c',
    roleName: 'Contributor',
    description: 'Grants full access to manage all resources, but does not allow you to assign roles.',
    actions: ['*'],
    notActions: ['Microsoft.Authorization/*/Delete', 'Microsoft.Authorization/*/Write', 'Microsoft.Authorization/elevateAccess/Action'],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: 'acdd72a7-3385-48ef-bd42-f606fba81ae7',
    roleName: 'Reader',
    description: 'View all resources, but does not allow you to make any changes.',
    actions: ['*/read'],
    notActions: [],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: '9980e02c-c2be-4d73-94e8-173b1dc7cf3c',
    roleName: 'Virtual Machine Contributor',
    description: 'Create and manage virtual machines and their disks, but not access to them, and not the virtual network or storage account they connect to.',
    actions: [
      'Microsoft.Authorization/*/read',
      'Microsoft.Compute/*',
      'Microsoft.Resources/deployments/*',
      'Microsoft.Resources/subscriptions/resourceGroups/read',
      'Microsoft.Storage/storageAccounts/listKeys/action',
      'Microsoft.Storage/storageAccounts/read',
    ],
    notActions: [],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: '5e467623-bb1f-42f4-a55d-6e525e11384b',
    roleName: 'Backup Contributor',
    description: 'Lets you manage backup service, but cannot create vaults and give access to others.',
    actions: [...BACKUP_READS, `${RS}/Vaults/backup*`, `${RS}/Vaults/backup*/*`, `${RS}/Vaults/backupPolicies/*`, `${RS}/Vaults/backupconfig/*`, `${RS}/Vaults/backupstorageconfig/*`],
    notActions: [],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: '00c29273-979b-4161-815c-10b084fb9324',
    roleName: 'Backup Operator',
    description: 'Lets you manage backup services, except removal of backup, vault creation and giving access to others.',
    actions: [...BACKUP_READS, `${RS}/Vaults/backup*/*`],
    notActions: [
      `${RS}/Vaults/backupFabrics/protectionContainers/protectedItems/delete`,
      `${RS}/Vaults/backupPolicies/write`,
      `${RS}/Vaults/backupPolicies/delete`,
      `${RS}/Vaults/backupstorageconfig/*`,
      `${RS}/Vaults/backupconfig/*`,
    ],
    dataActions: [],
    notDataActions: [],
  },
  {
    id: 'a795c7a0-776e-4e42-8b41-8b48fd3e9d54',
    roleName: 'Backup Reader',
    description: 'Can view backup services, but cannot make changes.',
    actions: [...BACKUP_READS],
    notActions: [],
    dataActions: [],
    notDataActions: [],
  },
  // Key Vault data-plane roles (Azure's ids), used by vaults with enableRbacAuthorization.
  ...(
    [
      ['00482a5a-887f-4fb3-b363-3b7fe8e74483', 'Key Vault Administrator', 'Perform all data plane operations on a key vault and all objects in it.', ['Microsoft.KeyVault/vaults/*']],
      ['4633458b-17de-408a-b874-0445c86b69e6', 'Key Vault Secrets User', 'Read secret contents.', ['Microsoft.KeyVault/vaults/secrets/getSecret/action', 'Microsoft.KeyVault/vaults/secrets/readMetadata/action']],
      ['b86a8fe4-44ce-4948-aee5-eccb2c155cd7', 'Key Vault Secrets Officer', 'Perform any action on the secrets of a key vault.', ['Microsoft.KeyVault/vaults/secrets/*']],
      ['12338af0-0e69-4776-bea7-57ae8d297424', 'Key Vault Crypto User', 'Perform cryptographic operations using keys.', ['Microsoft.KeyVault/vaults/keys/read', 'Microsoft.KeyVault/vaults/keys/update/action', 'Microsoft.KeyVault/vaults/keys/backup/action', 'Microsoft.KeyVault/vaults/keys/encrypt/action', 'Microsoft.KeyVault/vaults/keys/decrypt/action', 'Microsoft.KeyVault/vaults/keys/wrap/action', 'Microsoft.KeyVault/vaults/keys/unwrap/action', 'Microsoft.KeyVault/vaults/keys/sign/action', 'Microsoft.KeyVault/vaults/keys/verify/action']],
      ['14b46e9e-c2b7-41b4-b07b-48a6ebf60603', 'Key Vault Crypto Officer', 'Perform any action on the keys of a key vault.', ['Microsoft.KeyVault/vaults/keys/*']],
      ['21090545-7ca7-4776-b22c-e363652d74d2', 'Key Vault Reader', 'Read metadata of key vaults and their keys and secrets (not secret values).', ['Microsoft.KeyVault/vaults/keys/read', 'Microsoft.KeyVault/vaults/secrets/readMetadata/action']],
    ] as const
  ).map(([id, roleName, description, dataActions]) => ({ id, roleName, description, actions: ['Microsoft.Authorization/*/read', 'Microsoft.Resources/subscriptions/resourceGroups/read', 'Microsoft.KeyVault/vaults/read'], notActions: [], dataActions: [...dataActions], notDataActions: [] })),
];

export function findRole(nameOrId: string): RoleDefinition | undefined {
  const key = nameOrId.toLowerCase().replace(/^.*\/roledefinitions\//, '');
  return BUILT_IN_ROLES.find((r) => r.id === key || r.roleName.toLowerCase() === key);
}

/** Azure action patterns: case-insensitive, `*` matches any run of characters. */
export function actionMatches(pattern: string, action: string): boolean {
  const re = new RegExp('^' + pattern.split('*').map((p) => p.replace(/[.+?^${}()|[\]\\/]/g, '\\$&')).join('.*') + '$', 'i');
  return re.test(action);
}

export function roleAllows(role: RoleDefinition, action: string): boolean {
  return role.actions.some((p) => actionMatches(p, action)) && !role.notActions.some((p) => actionMatches(p, action));
}

/** Normalises an ARM scope: lower-case, single slashes, no trailing slash. */
export function normScope(scope: string): string {
  return ('/' + scope.split('/').filter(Boolean).join('/')).toLowerCase();
}

/** True when a scope has `.` or `..` segments: such a scope is never resolved, it matches nothing. */
export function hasDotSegments(scope: string): boolean {
  return scope.split('/').some((p) => p === '.' || p === '..');
}

/** True when `assignmentScope` contains `requestScope` (same or ancestor, on path-segment boundaries). */
export function scopeCovers(assignmentScope: string, requestScope: string): boolean {
  if (hasDotSegments(assignmentScope) || hasDotSegments(requestScope)) return false;
  const a = normScope(assignmentScope);
  const r = normScope(requestScope);
  return a === '/' || r === a || r.startsWith(a + '/');
}

export const OWNER_ROLE_ID = '8e3af657-a8ff-443c-a75c-2fe8c4bcb635';

export const isGuid = (s: string): boolean => /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(s);
