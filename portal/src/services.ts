/** The resource types the hub knows: the left menu and the "More services" list, filtered as you type. */
export interface Service {
  name: string;
  path: string;
  category: string;
  keywords: string;
  /** Shown in the left menu (favorites), not only under More services. */
  favorite?: boolean;
}

export const SERVICES: Service[] = [
  { name: 'Resource groups', path: '/browse/resourcegroups', category: 'General', keywords: 'rg group resource', favorite: true },
  { name: 'Virtual machines', path: '/browse/virtualmachines', category: 'Compute', keywords: 'vm compute server linux windows', favorite: true },
  { name: 'Disks', path: '/browse/disks', category: 'Compute', keywords: 'managed disk vhd' },
  { name: 'Key vaults', path: '/browse/keyvaults', category: 'Security', keywords: 'kv secret key certificate access policy', favorite: true },
  { name: 'Recovery Services vaults', path: '/browse/recoveryvaults', category: 'Management + governance', keywords: 'backup restore rsv vault site recovery', favorite: true },
  { name: 'Backup jobs', path: '/browse/backupjobs', category: 'Management + governance', keywords: 'backup job restore monitor' },
  { name: 'Storage accounts', path: '/browse/storageaccounts', category: 'Storage', keywords: 'blob container restore staging' },
  { name: 'Subscriptions', path: '/browse/subscriptions', category: 'General', keywords: 'billing tenant' },
  { name: 'All resources', path: '/browse/resources', category: 'General', keywords: 'everything list' },
];

/** Case-insensitive match on the name, the category and the keywords; every word of the query must match. */
export function filterServices(query: string, list: Service[] = SERVICES): Service[] {
  const words = query.toLowerCase().split(/\s+/).filter(Boolean);
  if (!words.length) return list;
  return list.filter((s) => {
    const hay = `${s.name} ${s.category} ${s.keywords}`.toLowerCase();
    return words.every((w) => hay.includes(w));
  });
}
