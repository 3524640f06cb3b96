/** Home, "More services" (all resource types, filtered as you type), subscriptions and all resources. */
import { useState } from 'react';
import { API_VERSIONS, listAll, withVersion } from '../api';
import { session } from '../session';
import { Link, resourcePath } from '../router';
import { SERVICES, filterServices } from '../services';
import type { ArmResource } from '../wire';
import { Blade, DataTable, ErrorBox, Spinner, useAsync } from '../ui';

export function Home() {
  const s = session()!;
  return (
    <Blade title="Home" subtitle={`Signed in as ${s.displayName} · subscription ${s.subscriptionName}`}>
      <h2>Services</h2>
      <ul className="tiles">
        {SERVICES.filter((x) => x.favorite).map((x) => (
          <li key={x.path}>
            <Link to={x.path}>{x.name}</Link>
          </li>
        ))}
        <li>
          <Link to="/browse/services">More services</Link>
        </li>
      </ul>
      <h2>Back up an encrypted VM</h2>
      <ol className="steps">
        <li>
          <Link to="/browse/keyvaults">Key vaults</Link> → your vault → Access policies → Add → Configure from template: Azure Backup → Select principal: Backup
          Management Service → Save.
        </li>
        <li>
          <Link to="/browse/recoveryvaults">Recovery Services vaults</Link> → your vault → Backup → Azure / Virtual machine → policy → select VMs → Enable backup.
        </li>
        <li>Backup items → Backup now; follow it in Backup jobs.</li>
      </ol>
    </Blade>
  );
}

export function MoreServices() {
  const [q, setQ] = useState('');
  const list = filterServices(q);
  const categories = [...new Set(list.map((x) => x.category))];
  return (
    <Blade title="More services" subtitle="All resource types. Type to filter.">
      <div className="field search">
        <label htmlFor="svc-filter">Filter services</label>
        <input id="svc-filter" type="search" autoFocus value={q} placeholder="Search services" onChange={(e) => setQ(e.target.value)} aria-controls="svc-results" />
      </div>
      <p className="count" role="status" aria-live="polite">
        {list.length} {list.length === 1 ? 'service' : 'services'}
      </p>
      <div id="svc-results">
        {categories.map((c) => (
          <section key={c} aria-label={c}>
            <h2>{c}</h2>
            <ul className="services" aria-label={`${c} services`}>
              {list
                .filter((x) => x.category === c)
                .map((x) => (
                  <li key={x.path}>
                    <Link to={x.path}>{x.name}</Link>
                  </li>
                ))}
            </ul>
          </section>
        ))}
        {list.length === 0 && <p>No services match “{q}”.</p>}
      </div>
    </Blade>
  );
}

export function Subscriptions() {
  const { data, error, loading } = useAsync(() => listAll<{ subscriptionId: string; displayName: string; state: string }>(withVersion('/subscriptions', API_VERSIONS.resources)), []);
  return (
    <Blade title="Subscriptions" crumbs={[{ label: 'Home', to: '/' }]}>
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Subscriptions"
          rows={data ?? []}
          rowKey={(r) => r.subscriptionId}
          columns={[
            { header: 'Subscription name', cell: (r) => r.displayName },
            { header: 'Subscription ID', cell: (r) => <code>{r.subscriptionId}</code> },
            { header: 'State', cell: (r) => r.state },
          ]}
        />
      )}
    </Blade>
  );
}

/** Blade link for any resource the portal has blades for; plain text otherwise. */
export function resourceLink(r: { id: string; name: string; type: string }) {
  const t = r.type.toLowerCase();
  if (['microsoft.keyvault/vaults', 'microsoft.compute/virtualmachines', 'microsoft.recoveryservices/vaults'].includes(t)) {
    return <Link to={resourcePath(r.id)}>{r.name}</Link>;
  }
  return r.name;
}

export function AllResources() {
  const s = session()!;
  const { data, error, loading } = useAsync(() => listAll<ArmResource>(withVersion(`/subscriptions/${s.subscriptionId}/resources`, API_VERSIONS.resources)), []);
  return (
    <Blade title="All resources" crumbs={[{ label: 'Home', to: '/' }]}>
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Resources"
          rows={data ?? []}
          rowKey={(r) => r.id}
          columns={[
            { header: 'Name', cell: (r) => resourceLink(r) },
            { header: 'Type', cell: (r) => r.type },
            { header: 'Resource group', cell: (r) => r.id.split('/')[4] ?? '' },
            { header: 'Location', cell: (r) => r.location ?? '' },
          ]}
        />
      )}
    </Blade>
  );
}
