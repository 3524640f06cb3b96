/** Resource groups: list, create, and a group's resources. */
import { useState, type FormEvent } from 'react';
import { API_VERSIONS, listAll, parseId, request, send, toApiError, waitForOperation, withVersion } from '../api';
import { session } from '../session';
import { Link, navigate, resourcePath } from '../router';
import type { ArmResource, ResourceGroup } from '../wire';
import { Blade, DataTable, ErrorBox, Field, Progress, Properties, Spinner, useAsync, RegionField, ResourceGroupField } from '../ui';
import { resourceLink } from './Hub';

export function useLocations() {
  const s = session()!;
  return useAsync(() => listAll<{ name: string; displayName: string }>(withVersion(`/subscriptions/${s.subscriptionId}/locations`, API_VERSIONS.resources)), []);
}

export function useResourceGroups() {
  const s = session()!;
  return useAsync(() => listAll<ResourceGroup>(withVersion(`/subscriptions/${s.subscriptionId}/resourcegroups`, API_VERSIONS.resources)), []);
}

export function ResourceGroups() {
  const { data, error, loading, reload } = useResourceGroups();
  const [filter, setFilter] = useState('');
  const rows = (data ?? []).filter((g) => g.name.toLowerCase().includes(filter.toLowerCase()));
  return (
    <Blade
      title="Resource groups"
      crumbs={[{ label: 'Home', to: '/' }]}
      commands={
        <>
          <button type="button" onClick={() => navigate('/create/resourcegroup')}>
            Create
          </button>
          <button type="button" onClick={reload}>
            Refresh
          </button>
        </>
      }
    >
      <div className="field search">
        <label htmlFor="rg-filter">Filter by name</label>
        <input id="rg-filter" type="search" value={filter} onChange={(e) => setFilter(e.target.value)} />
      </div>
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Resource groups"
          rows={rows}
          rowKey={(r) => r.id}
          empty="No resource groups. Create one to hold your vaults and virtual machines."
          columns={[
            { header: 'Name', cell: (r) => <Link to={resourcePath(r.id)}>{r.name}</Link> },
            { header: 'Location', cell: (r) => r.location ?? '' },
            { header: 'State', cell: (r) => r.properties?.provisioningState ?? '' },
          ]}
        />
      )}
    </Blade>
  );
}

export function CreateResourceGroup() {
  const s = session()!;
  const locations = useLocations();
  const [name, setName] = useState('');
  const [loc, setLoc] = useState('');
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const nameError = name && !/^[-\w._()]{1,90}$/.test(name) ? 'Use 1–90 letters, digits, underscores, hyphens, periods or parentheses.' : undefined;
  const location = loc || locations.data?.[0]?.name || '';

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (nameError) return;
    setBusy(true);
    setError(undefined);
    try {
      const id = `/subscriptions/${s.subscriptionId}/resourcegroups/${encodeURIComponent(name)}`;
      const g = await request<ResourceGroup>('PUT', withVersion(id, API_VERSIONS.resources), { location });
      navigate(resourcePath(g.id));
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Blade title="Create a resource group" crumbs={[{ label: 'Home', to: '/' }, { label: 'Resource groups', to: '/browse/resourcegroups' }]}>
      <form onSubmit={(e) => void submit(e)} className="form">
        <Field label="Resource group name" error={nameError}>
          {(id, d) => <input id={id} aria-describedby={d} required value={name} onChange={(e) => setName(e.target.value)} aria-invalid={!!nameError} />}
        </Field>
        <RegionField locations={locations.data} value={location} onChange={setLoc} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !name || !!nameError}>
            {busy ? 'Creating…' : 'Create'}
          </button>
          <ErrorBox error={error} title="Could not create the resource group" />
        </div>
      </form>
    </Blade>
  );
}

export function ResourceGroupOverview(props: { id: string }) {
  const { name, subscription } = parseId(props.id);
  const group = useAsync(() => request<ResourceGroup>('GET', withVersion(props.id, API_VERSIONS.resources)), [props.id]);
  const resources = useAsync(() => listAll<ArmResource>(withVersion(`${props.id}/resources`, API_VERSIONS.resources)), [props.id]);
  const [deleting, setDeleting] = useState(false);
  const [error, setError] = useState<unknown>();
  const del = async () => {
    if (!confirm(`Delete resource group ${name} and everything in it?`)) return;
    setDeleting(true);
    setError(undefined);
    try {
      const r = await send('DELETE', withVersion(props.id, API_VERSIONS.resources));
      if (r.status >= 400) throw toApiError(r.status, r.body);
      await waitForOperation(r);
      navigate('/browse/resourcegroups');
    } catch (e) {
      setError(e);
      setDeleting(false);
    }
  };
  return (
    <Blade
      title={name}
      subtitle="Resource group"
      crumbs={[
        { label: 'Home', to: '/' },
        { label: 'Resource groups', to: '/browse/resourcegroups' },
      ]}
      commands={
        <button type="button" onClick={() => void del()} disabled={deleting}>
          Delete resource group
        </button>
      }
    >
      {deleting && <Progress label="Deleting resource group" />}
      <ErrorBox error={error ?? group.error} />
      <Properties
        items={[
          ['Subscription ID', subscription],
          ['Location', group.data?.location],
          ['Provisioning state', group.data?.properties?.provisioningState],
        ]}
      />
      <h2>Resources</h2>
      <ErrorBox error={resources.error} />
      {resources.loading && !resources.data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Resources"
          rows={resources.data ?? []}
          rowKey={(r) => r.id}
          empty="This resource group is empty."
          columns={[
            { header: 'Name', cell: (r) => resourceLink(r) },
            { header: 'Type', cell: (r) => r.type },
            { header: 'Location', cell: (r) => r.location ?? '' },
          ]}
        />
      )}
    </Blade>
  );
}

/**
 * The create blade of a resource that lives in a resource group and a region (Recovery Services vault, storage
 * account): resource group (with "Create new"), name with its rule, region defaulting to the group's, Create with
 * progress and the API's error. `create` does the PUT (and what follows); it throws to show an error.
 */
export function CreateInGroupBlade(props: {
  title: string;
  crumbs: Array<{ label: string; to: string }>;
  nameLabel: string;
  nameError: (name: string) => string | undefined;
  regionHint: string;
  progressLabel: string;
  errorTitle: string;
  initialGroup?: string;
  create: (target: { group: string; name: string; location: string }) => Promise<void>;
}) {
  const groups = useResourceGroups();
  const locations = useLocations();
  const [name, setName] = useState('');
  const [rg, setRg] = useState(props.initialGroup ?? '');
  const [loc, setLoc] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const group = rg || groups.data?.[0]?.name || '';
  const location = loc || groups.data?.find((g) => g.name === group)?.location || locations.data?.[0]?.name || '';
  const nameError = props.nameError(name);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (nameError || !group) return;
    setBusy(true);
    setError(undefined);
    try {
      await props.create({ group, name, location });
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Blade title={props.title} crumbs={props.crumbs}>
      <form className="form" onSubmit={(e) => void submit(e)}>
        <ResourceGroupField groups={groups.data} value={group} onChange={setRg} required offerCreate />
        <Field label={props.nameLabel} error={nameError}>
          {(id, d) => <input id={id} aria-describedby={d} aria-invalid={!!nameError} required value={name} onChange={(e) => setName(e.target.value)} />}
        </Field>
        <RegionField locations={locations.data} value={location} onChange={setLoc} hint={props.regionHint} />
        <div className="actions">
          <button type="submit" className="primary" disabled={busy || !name || !!nameError || !group}>
            {busy ? 'Creating…' : 'Create'}
          </button>
          {busy && <Progress label={props.progressLabel} />}
          <ErrorBox error={error} title={props.errorTitle} />
        </div>
      </form>
    </Blade>
  );
}
