/** ARM resource ids: parse and format, case-insensitive, and the naming rules for resource groups. */

export interface ResourceId {
  subscriptionId: string;
  resourceGroup?: string | undefined;
  /** e.g. Microsoft.Compute */
  provider?: string | undefined;
  /** e.g. virtualMachines (nested types joined with '/') */
  type?: string | undefined;
  /** e.g. vm1 (nested names joined with '/') */
  name?: string | undefined;
}

export function parseResourceId(id: string): ResourceId | undefined {
  const parts = id.split('/').filter(Boolean).map((p) => decodeURIComponent(p));
  if (parts.length < 2 || parts[0]!.toLowerCase() !== 'subscriptions') return undefined;
  const out: ResourceId = { subscriptionId: parts[1]! };
  let i = 2;
  if (parts[i]?.toLowerCase() === 'resourcegroups') {
    if (!parts[i + 1]) return undefined;
    out.resourceGroup = parts[i + 1];
    i += 2;
  }
  if (i === parts.length) return out;
  if (parts[i]?.toLowerCase() !== 'providers' || !parts[i + 1]) return undefined;
  out.provider = parts[i + 1];
  const rest = parts.slice(i + 2);
  if (rest.length === 0 || rest.length % 2 !== 0) return undefined;
  out.type = rest.filter((_, k) => k % 2 === 0).join('/');
  out.name = rest.filter((_, k) => k % 2 === 1).join('/');
  return out;
}

export function formatResourceId(r: ResourceId): string {
  let s = `/subscriptions/${r.subscriptionId}`;
  if (r.resourceGroup) s += `/resourceGroups/${r.resourceGroup}`;
  if (r.provider && r.type && r.name) {
    const types = r.type.split('/');
    const names = r.name.split('/');
    s += `/providers/${r.provider}` + types.map((t, k) => `/${t}/${names[k] ?? ''}`).join('');
  }
  return s;
}

export const sameId = (a: string, b: string): boolean => a.toLowerCase() === b.toLowerCase();

/** Azure's resource group rule: 1-90 chars of letters, digits, _ - . ( ) and unicode letters; not ending in '.'. */
export function resourceGroupNameError(name: string): string | undefined {
  if (name.length < 1 || name.length > 90) return 'it must be 1-90 characters long';
  if (!/^[-\w._()\p{L}]+$/u.test(name)) return 'only letters, digits, underscores, hyphens, periods and parentheses are allowed';
  if (name.endsWith('.')) return 'it cannot end with a period';
  return undefined;
}
