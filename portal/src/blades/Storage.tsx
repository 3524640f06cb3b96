/** Storage accounts (restore staging targets): list and create. */
import { API_VERSIONS, listAll, send, toApiError, withVersion } from '../api';
import { session } from '../session';
import { navigate } from '../router';
import type { StorageAccount } from '../wire';
import { ResourceListBlade } from '../ui';
import { CreateInGroupBlade } from './ResourceGroups';

export function listStorageAccounts(): Promise<StorageAccount[]> {
  const s = session()!;
  return listAll<StorageAccount>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.Storage/storageAccounts`, API_VERSIONS.storage));
}

export function StorageAccounts() {
  return (
    <ResourceListBlade
      title="Storage accounts"
      load={listStorageAccounts}
      createPath="/create/storageaccount"
      linkNames={false}
      empty="No storage accounts. Select Create to make one (a restore writes its disks, VM configuration and template to one)."
      columns={[{ header: 'Kind', cell: (r) => r.kind ?? '' }]}
    />
  );
}

export const storageNameError = (n: string) => (n && !/^[a-z0-9]{3,24}$/.test(n) ? 'The name must be 3–24 characters: lowercase letters and digits only.' : undefined);

/** Create storage account; `?returnTo=` sends the user back (e.g. to the restore blade) with `?storageAccount=<id>`. */
export function CreateStorageAccount(props: { query: URLSearchParams }) {
  const s = session()!;
  const returnTo = props.query.get('returnTo');
  return (
    <CreateInGroupBlade
      title="Create storage account"
      crumbs={[{ label: 'Home', to: '/' }, { label: 'Storage accounts', to: '/browse/storageaccounts' }]}
      nameLabel="Storage account name"
      nameError={storageNameError}
      regionHint="A restore's staging account must be in the vault's region."
      progressLabel="Creating storage account"
      errorTitle="Could not create the storage account"
      initialGroup={props.query.get('resourceGroup') ?? ''}
      create={async ({ group, name, location }) => {
        const id = `/subscriptions/${s.subscriptionId}/resourceGroups/${encodeURIComponent(group)}/providers/Microsoft.Storage/storageAccounts/${encodeURIComponent(name)}`;
        const r = await send<StorageAccount>('PUT', withVersion(id, API_VERSIONS.storage), { location, sku: { name: 'Standard_LRS' }, kind: 'StorageV2' });
        if (r.status >= 400) throw toApiError(r.status, r.body);
        if (returnTo && returnTo.startsWith('/')) {
          const u = new URL(returnTo, window.location.origin);
          u.searchParams.set('storageAccount', r.body?.id ?? id);
          navigate(u.pathname + u.search);
        } else navigate('/browse/storageaccounts');
      }}
    />
  );
}
