/** Storage accounts (restore staging targets): list and create. */
import { useState, type FormEvent } from 'react';
import { API_VERSIONS, listAll, send, toApiError, withVersion } from '../api';
import { session } from '../session';
import { navigate } from '../router';
import type { StorageAccount } from '../wire';
import { Blade, ErrorBox, Field, Progress, RegionField, ResourceGroupField, ResourceListBlade } from '../ui';
import { useLocations, useResourceGroups } from './ResourceGroups';

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
  const groups = useResourceGroups();
  const locations = useLocations();
  const [name, setName] = useState('');
  const [rg, setRg] = useState(props.query.get('resourceGroup') ?? '');
  const [loc, setLoc] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const group = rg || groups.data?.[0]?.name || '';
  const location = loc || groups.data?.find((g) => g.name === group)?.location || locations.data?.[0]?.name || '';
  const nameError = storageNameError(name);
  const returnTo = props.query.get('returnTo');

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (nameError || !group) return;
    setBusy(true);
    setError(undefined);
    try {
      const id = `/subscriptions/${s.subscriptionId}/resourceGroups/${encodeURIComponent(group)}/providers/Microsoft.Storage/storageAccounts/${encodeURIComponent(name)}`;
      const r = await send<StorageAccount>('PUT', withVersion(id, API_VERSIONS.storage), { location, sku: { name: 'Standard_LRS' }, kind: 'StorageV2' });
      if (r.status >= 400) throw toApiError(r.status, r.body);
      if (returnTo && returnTo.startsWith('/')) {
        const u = new URL(returnTo, window.location.origin);
        u.searchParams.set('storageAccount', r.body?.id ?? id);
        navigate(u.pathname + u.search);
      } else navigate('/browse/storageaccounts');
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Blade title="Create storage account" crumbs={[{ label: 'Home', to: '/' }, { label: 'Storage accounts', to: '/browse/storageaccounts' }]}>
      <form className="form" onSubmit={(e) => void submit(e)}>
        <ResourceGroupField groups={groups.data} value={group} onChange={setRg} required offerCreate />
        <Field label="Storage account name" error={nameError}>
          {(id, d) => <input id={id} aria-describedby={d} aria-invalid={!!nameError} required value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <RegionField locations={locations.data} value={location} onChange={setLoc} hint="A restore's staging account must be in the vault's region." />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !name || !!nameError || !group}>
            {busy ? 'Creating…' : 'Create'}
          </button>
          {busy && <Progress label="Creating storage account" />}
          <ErrorBox error={error} title="Could not create the storage account" />
        </div>
      </form>
    </Blade>
  );
}
