/** Storage accounts (restore targets). */
import { API_VERSIONS, listAll, parseId, withVersion } from '../api';
import { session } from '../session';
import type { StorageAccount } from '../wire';
import { Blade, DataTable, ErrorBox, Spinner, useAsync } from '../ui';

export function listStorageAccounts(): Promise<StorageAccount[]> {
  const s = session()!;
  return listAll<StorageAccount>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.Storage/storageAccounts`, API_VERSIONS.storage));
}

export function StorageAccounts() {
  const { data, error, loading } = useAsync(listStorageAccounts, []);
  return (
    <Blade title="Storage accounts" crumbs={[{ label: 'Home', to: '/' }]}>
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Storage accounts"
          rows={data ?? []}
          rowKey={(r) => r.id}
          columns={[
            { header: 'Name', cell: (r) => r.name },
            { header: 'Resource group', cell: (r) => parseId(r.id).resourceGroup },
            { header: 'Location', cell: (r) => r.location ?? '' },
            { header: 'Kind', cell: (r) => r.kind ?? '' },
          ]}
        />
      )}
    </Blade>
  );
}
