/**
 * api-version handling. ARM requires the parameter (MissingApiVersionParameter) and refuses versions it does not know
 * (InvalidApiVersionParameter, listing what it supports). rsvault answers every version a known client sends of a
 * provider it implements, so a version is known when it is a real calendar date (optional -preview/-beta suffix)
 * between ARM's first version and the newest version of that provider's API rsvault implements; the message lists
 * the versions rsvault's own clients and the tested SDKs use. Clients may percent-encode the key itself
 * (`api%2Dversion`), which URLSearchParams decodes.
 */
import { ArmError } from './errors.js';

const DATE_VERSION = /^\d{4}-\d{2}-\d{2}(-(preview|beta|privatepreview|alpha))?$/i;

export function readApiVersion(rawUrl: string): string | undefined {
  const q = rawUrl.indexOf('?');
  if (q < 0) return undefined;
  const params = new URLSearchParams(rawUrl.slice(q + 1));
  return params.get('api-version') ?? undefined;
}

/** ARM's first api-version: nothing older exists. */
const OLDEST = '2014-04-01';

/** Per provider namespace: the newest version rsvault implements, and the versions its clients and tested SDKs use. */
const PROVIDERS: Record<string, { newest: string; known: string[] }> = {
  'microsoft.resources': { newest: '2026-06-01', known: ['2019-11-01', '2021-04-01', '2022-09-01', '2022-12-01', '2025-04-01', '2026-06-01'] },
  'microsoft.authorization': { newest: '2022-05-01-preview', known: ['2015-07-01', '2018-01-01-preview', '2020-10-01', '2022-04-01'] },
  'microsoft.compute': { newest: '2026-03-01', known: ['2022-03-02', '2022-08-01', '2022-11-01', '2025-03-03', '2026-03-01'] },
  'microsoft.keyvault': { newest: '2024-11-01', known: ['2019-09-01', '2022-07-01', '2023-02-01', '2023-07-01', '2024-11-01'] },
  'microsoft.storage': { newest: '2025-08-01', known: ['2021-09-01', '2022-09-01', '2023-01-01', '2025-08-01'] },
  'microsoft.recoveryservices': { newest: '2024-04-01', known: ['2022-10-01', '2023-01-01', '2023-02-01', '2023-04-01', '2023-06-01', '2024-04-01'] },
};

/** The resource types of each provider namespace rsvault serves (Providers_Get / Providers_List). */
const RESOURCE_TYPES: Record<string, { namespace: string; types: string[] }> = {
  'microsoft.resources': { namespace: 'Microsoft.Resources', types: ['deployments', 'deployments/operations', 'resourceGroups', 'subscriptions', 'tenants', 'operationresults'] },
  'microsoft.authorization': { namespace: 'Microsoft.Authorization', types: ['roleAssignments', 'roleDefinitions'] },
  'microsoft.compute': { namespace: 'Microsoft.Compute', types: ['virtualMachines', 'virtualMachines/extensions', 'disks', 'locations', 'locations/operations'] },
  'microsoft.keyvault': { namespace: 'Microsoft.KeyVault', types: ['vaults', 'vaults/accessPolicies', 'deletedVaults', 'managedHSMs', 'deletedManagedHSMs', 'locations'] },
  'microsoft.storage': { namespace: 'Microsoft.Storage', types: ['storageAccounts', 'locations'] },
  'microsoft.recoveryservices': { namespace: 'Microsoft.RecoveryServices', types: ['vaults', 'locations', 'operations'] },
};

export interface ProviderInfo {
  namespace: string;
  resourceTypes: { resourceType: string; apiVersions: string[] }[];
}

/**
 * What `GET /subscriptions/{s}/providers[/{ns}]` tells clients: each served namespace, its resource types and their
 * api-versions newest first (az picks the first non-preview one for generic commands such as `az resource`).
 */
export function providerInfo(ns?: string): ProviderInfo[] {
  const keys = ns ? [ns.toLowerCase()] : Object.keys(RESOURCE_TYPES);
  return keys.flatMap((k) => {
    const t = RESOURCE_TYPES[k];
    const v = PROVIDERS[k];
    if (!t || !v) return [];
    const apiVersions = [...new Set([v.newest, ...v.known])].sort().reverse();
    return [{ namespace: t.namespace, resourceTypes: t.types.map((resourceType) => ({ resourceType, apiVersions })) }];
  });
}

/** The provider namespace a request path addresses (its last `/providers/{ns}`); subscriptions and groups are Microsoft.Resources. */
function namespaceOf(rawUrl: string): string {
  const p = rawUrl.replace(/\?.*$/, '').toLowerCase();
  const all = [...p.matchAll(/\/providers\/([a-z0-9.]+)/g)];
  return all.length ? all[all.length - 1]![1]! : 'microsoft.resources';
}

function isCalendarDate(v: string): boolean {
  const d = v.slice(0, 10);
  const t = Date.parse(`${d}T00:00:00Z`);
  return !Number.isNaN(t) && new Date(t).toISOString().slice(0, 10) === d;
}

export function requireArmApiVersion(rawUrl: string, supported?: readonly string[]): string {
  const v = readApiVersion(rawUrl);
  if (v === undefined || v === '') {
    throw new ArmError(400, 'MissingApiVersionParameter', "The api-version query parameter (?api-version=) is required for all requests.", {
      recommendation: 'Add ?api-version=<version>, for example api-version=2021-04-01.',
    });
  }
  const ns = namespaceOf(rawUrl);
  const provider = PROVIDERS[ns];
  const date = v.slice(0, 10);
  const known = DATE_VERSION.test(v) && isCalendarDate(v) && (supported ? supported.includes(v) : date >= OLDEST && (!provider || v.toLowerCase() <= provider.newest));
  if (!known) {
    const list = supported ?? provider?.known ?? [];
    throw new ArmError(400, 'InvalidApiVersionParameter', `The api-version '${v}' is invalid. The supported versions are '${list.join(',') || 'YYYY-MM-DD[-preview]'}'${supported || !provider ? '' : ` (and the versions from ${OLDEST} to ${provider.newest})`}.`, {
      recommendation: `Use a supported api-version${list.length ? `, for example ${list[list.length - 1]}` : ''}.`,
    });
  }
  return v;
}
