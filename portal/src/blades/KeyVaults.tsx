/**
 * Key vaults: list → vault → Access policies → Add → Configure from template (Azure Backup) → Select principal (Graph
 * search) → OK → Add → Save. Added policies stay pending (shown as unsaved) until Save sends them with
 * `PUT …/accessPolicies/add`, as the Azure portal's Save does.
 */
import { useEffect, useMemo, useState, type ReactNode } from 'react';
import { API_VERSIONS, ApiError, errorOf, listAll, parseId, request, routeExists, withVersion } from '../api';
import { session } from '../session';
import { Link, navigate, resourcePath } from '../router';
import type { AccessPolicyEntry, AccessPolicyTemplate, GraphPrincipal, KeyVault, Permissions, ArmResource } from '../wire';
import { Blade, DataTable, ErrorBox, Notice, Progress, Properties, Spinner, useAsync, ResourceListBlade } from '../ui';

const KV = API_VERSIONS.keyVault;

export async function listKeyVaults(): Promise<KeyVault[]> {
  const s = session()!;
  try {
    return await listAll<KeyVault>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.KeyVault/vaults`, KV));
  } catch (e) {
    if (routeExists(e)) throw e;
    // Older servers: the generic resource list.
    const list = await listAll<ArmResource>(withVersion(`/subscriptions/${s.subscriptionId}/resources`, API_VERSIONS.resources, { $filter: "resourceType eq 'Microsoft.KeyVault/vaults'" }));
    return list as KeyVault[];
  }
}

export function KeyVaultList() {
  return <ResourceListBlade title="Key vaults" load={listKeyVaults} empty="No key vaults. Create one with `rsvault keyvault create`." />;
}

// ---- principals (Graph) -----------------------------------------------------------------------------------------------

const principalCache = new Map<string, Promise<GraphPrincipal | undefined>>();

/** Display name of an object id: a service principal or a user (cached). */
export function resolvePrincipal(objectId: string): Promise<GraphPrincipal | undefined> {
  const k = objectId.toLowerCase();
  let p = principalCache.get(k);
  if (!p) {
    p = request<GraphPrincipal>('GET', `/v1.0/servicePrincipals/${encodeURIComponent(objectId)}`)
      .catch(() => request<GraphPrincipal>('GET', `/v1.0/users/${encodeURIComponent(objectId)}`))
      .catch(() => undefined);
    principalCache.set(k, p);
  }
  return p;
}

export async function searchPrincipals(q: string): Promise<(GraphPrincipal & { kind: 'Application' | 'User' })[]> {
  const v = q.trim().replace(/'/g, "''");
  const filter = encodeURIComponent(`startswith(displayName,'${v}')`);
  const [sps, users] = await Promise.all([
    request<{ value: GraphPrincipal[] }>('GET', `/v1.0/servicePrincipals?$filter=${filter}`),
    request<{ value: GraphPrincipal[] }>('GET', `/v1.0/users?$filter=${filter}`).catch(() => ({ value: [] as GraphPrincipal[] })),
  ]);
  return [...sps.value.map((p) => ({ ...p, kind: 'Application' as const })), ...users.value.map((p) => ({ ...p, kind: 'User' as const }))];
}

function PrincipalName(props: { objectId: string }) {
  const [p, setP] = useState<GraphPrincipal | undefined | null>(null);
  useEffect(() => {
    let live = true;
    void resolvePrincipal(props.objectId).then((x) => live && setP(x));
    return () => {
      live = false;
    };
  }, [props.objectId]);
  if (p === null) return <span>…</span>;
  return <span>{p?.displayName ?? props.objectId}</span>;
}

// ---- templates and permission names -----------------------------------------------------------------------------------

/** Used when the server has no template endpoint; same lists as the Key Vault slice's ACCESS_POLICY_TEMPLATES. */
const BUILT_IN_TEMPLATES: AccessPolicyTemplate[] = [
  { name: 'Azure Backup', description: 'Keys and secrets: get, list, backup (what the Backup Management Service needs).', permissions: { keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'], certificates: [] } },
  {
    name: 'Key, Secret, & Certificate Management',
    permissions: {
      keys: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore'],
      secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'],
      certificates: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore', 'managecontacts', 'manageissuers', 'getissuers', 'listissuers', 'setissuers', 'deleteissuers'],
    },
  },
  { name: 'Key & Secret Management', permissions: { keys: ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore'], secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'], certificates: [] } },
  { name: 'Secret Management', permissions: { keys: [], secrets: ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore'], certificates: [] } },
  { name: 'Azure Disk Encryption', permissions: { keys: ['get', 'list', 'wrapKey', 'unwrapKey'], secrets: ['get', 'list', 'set'], certificates: [] } },
];

async function loadTemplates(): Promise<AccessPolicyTemplate[]> {
  try {
    const r = await request<{ value?: AccessPolicyTemplate[] } | AccessPolicyTemplate[]>('GET', withVersion('/providers/Microsoft.KeyVault/accessPolicyTemplates', KV));
    const list = Array.isArray(r) ? r : (r.value ?? []);
    return list.length ? list : BUILT_IN_TEMPLATES;
  } catch {
    return BUILT_IN_TEMPLATES;
  }
}

const KEY_PERMS: [string, string[]][] = [
  ['Key Management Operations', ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore']],
  ['Cryptographic Operations', ['decrypt', 'encrypt', 'unwrapKey', 'wrapKey', 'verify', 'sign']],
  ['Privileged Key Operations', ['purge', 'release', 'rotate', 'getrotationpolicy', 'setrotationpolicy']],
];
const SECRET_PERMS: [string, string[]][] = [
  ['Secret Management Operations', ['get', 'list', 'set', 'delete', 'recover', 'backup', 'restore']],
  ['Privileged Secret Operations', ['purge']],
];
const CERT_PERMS: [string, string[]][] = [
  ['Certificate Management Operations', ['get', 'list', 'update', 'create', 'import', 'delete', 'recover', 'backup', 'restore', 'managecontacts', 'manageissuers', 'getissuers', 'listissuers', 'setissuers', 'deleteissuers']],
  ['Privileged Certificate Operations', ['purge']],
];

const LABELS: Record<string, string> = {
  unwrapkey: 'Unwrap Key',
  wrapkey: 'Wrap Key',
  getrotationpolicy: 'Get Rotation Policy',
  setrotationpolicy: 'Set Rotation Policy',
  managecontacts: 'Manage Contacts',
  manageissuers: 'Manage Certificate Authorities',
  getissuers: 'Get Certificate Authorities',
  listissuers: 'List Certificate Authorities',
  setissuers: 'Set Certificate Authorities',
  deleteissuers: 'Delete Certificate Authorities',
};
const label = (p: string) => LABELS[p.toLowerCase()] ?? p.charAt(0).toUpperCase() + p.slice(1);
const summary = (ps: string[] | undefined) => (ps && ps.length ? ps.map(label).join(', ') : '—');

// ---- pending (unsaved) access policies, per vault ---------------------------------------------------------------------

const pending = new Map<string, AccessPolicyEntry[]>();
const pendingOf = (id: string) => pending.get(id.toLowerCase()) ?? [];

// ---- blades -----------------------------------------------------------------------------------------------------------

const BLADES: [string, string][] = [
  ['overview', 'Overview'],
  ['access_policies', 'Access policies'],
];

export function KeyVaultBlade(props: { id: string; blade: string; query: URLSearchParams }) {
  const vault = useAsync(() => request<KeyVault>('GET', withVersion(props.id, KV)), [props.id]);
  const name = parseId(props.id).name;
  const blade = props.blade.toLowerCase();
  const crumbs = [
    { label: 'Home', to: '/' },
    { label: 'Key vaults', to: '/browse/keyvaults' },
  ];
  let content: ReactNode;
  let title = name;
  if (blade === 'access_policies') {
    title = `${name} | Access policies`;
    content = <AccessPolicies id={props.id} vault={vault.data} reload={vault.reload} />;
  } else if (blade === 'add_access_policy') {
    title = 'Add access policy';
    crumbs.push({ label: name, to: resourcePath(props.id) }, { label: 'Access policies', to: resourcePath(props.id, 'access_policies') });
    content = <AddAccessPolicy id={props.id} vault={vault.data} query={props.query} />;
  } else {
    content = <VaultOverview vault={vault.data} />;
  }
  return (
    <Blade title={title} subtitle="Key vault" crumbs={crumbs}>
      {blade !== 'add_access_policy' && <ResourceMenu id={props.id} blades={BLADES} current={blade} label="Key vault menu" />}
      <ErrorBox error={vault.error} />
      {vault.loading && !vault.data ? <Spinner /> : content}
    </Blade>
  );
}

export function ResourceMenu(props: { id: string; blades: [string, string][]; current: string; label: string }) {
  return (
    <nav aria-label={props.label} className="resource-menu">
      {props.blades.map(([b, text]) => (
        <Link key={b} to={resourcePath(props.id, b === 'overview' ? undefined : b)} aria-current={props.current === b ? 'page' : undefined}>
          {text}
        </Link>
      ))}
    </nav>
  );
}

function VaultOverview(props: { vault: KeyVault | undefined }) {
  const v = props.vault;
  if (!v) return null;
  const p = v.properties ?? {};
  return (
    <Properties
      label="Essentials"
      items={[
        ['Resource group', parseId(v.id).resourceGroup],
        ['Location', v.location],
        ['Vault URI', p.vaultUri],
        ['Pricing tier', p.sku?.name],
        ['Permission model', p.enableRbacAuthorization ? 'Azure role-based access control' : 'Vault access policy'],
        ['Azure Disk Encryption for volume encryption', p.enabledForDiskEncryption ? 'Enabled' : 'Disabled'],
        ['Soft-delete', p.enableSoftDelete === false ? 'Disabled' : `Enabled (${p.softDeleteRetentionInDays ?? 90} days)`],
        ['Purge protection', p.enablePurgeProtection ? 'Enabled' : 'Disabled'],
        ['Access policies', String(p.accessPolicies?.length ?? 0)],
      ]}
    />
  );
}

function AccessPolicies(props: { id: string; vault: KeyVault | undefined; reload: () => void }) {
  const [unsaved, setUnsaved] = useState<AccessPolicyEntry[]>(() => pendingOf(props.id));
  const [error, setError] = useState<unknown>();
  const [saving, setSaving] = useState(false);
  const [saved, setSaved] = useState(false);
  const existing = props.vault?.properties?.accessPolicies ?? [];
  const rows = [...existing.map((e) => ({ e, pending: false })), ...unsaved.map((e) => ({ e, pending: true }))];
  const rbac = props.vault?.properties?.enableRbacAuthorization;

  const save = async () => {
    setSaving(true);
    setError(undefined);
    setSaved(false);
    try {
      await request('PUT', withVersion(`${props.id}/accessPolicies/add`, KV), { properties: { accessPolicies: unsaved } });
      pending.delete(props.id.toLowerCase());
      setUnsaved([]);
      setSaved(true);
      props.reload();
    } catch (e) {
      setError(e);
    } finally {
      setSaving(false);
    }
  };
  const discard = () => {
    pending.delete(props.id.toLowerCase());
    setUnsaved([]);
    setError(undefined);
  };
  const remove = async (e: AccessPolicyEntry) => {
    setError(undefined);
    try {
      await request('PUT', withVersion(`${props.id}/accessPolicies/remove`, KV), { properties: { accessPolicies: [e] } });
      props.reload();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <>
      <div role="toolbar" aria-label="Access policy commands" className="commands">
        <button type="button" onClick={() => navigate(resourcePath(props.id, 'add_access_policy'))}>
          Add
        </button>
        <button type="button" className="primary" onClick={() => void save()} disabled={!unsaved.length || saving}>
          {saving ? 'Saving…' : 'Save'}
        </button>
        <button type="button" onClick={discard} disabled={!unsaved.length || saving}>
          Discard
        </button>
      </div>
      {rbac && <Notice kind="warning">This vault uses Azure role-based access control; access policies are ignored.</Notice>}
      {unsaved.length > 0 && <Notice kind="warning">You have unsaved changes. Select Save to apply them to the vault.</Notice>}
      {saving && <Progress label="Saving access policies" />}
      <ErrorBox error={error} title="Could not save the access policies" />
      {saved && (
        <Notice kind="success" role="status">
          Access policies saved.
        </Notice>
      )}
      <DataTable
        label="Access policies"
        rows={rows}
        rowKey={(r) => `${r.pending ? 'p' : 's'}:${r.e.objectId}:${r.e.applicationId ?? ''}`}
        empty="No access policies."
        columns={[
          {
            header: 'Name',
            cell: (r) => (
              <>
                <PrincipalName objectId={r.e.objectId} />
                {r.pending && <span className="badge busy"> unsaved</span>}
              </>
            ),
          },
          { header: 'Key permissions', cell: (r) => summary(r.e.permissions.keys) },
          { header: 'Secret permissions', cell: (r) => summary(r.e.permissions.secrets) },
          { header: 'Certificate permissions', cell: (r) => summary(r.e.permissions.certificates) },
          {
            header: 'Actions',
            cell: (r) =>
              r.pending ? null : (
                <button type="button" className="link-button" onClick={() => void remove(r.e)} aria-label={`Delete access policy ${r.e.objectId}`}>
                  Delete
                </button>
              ),
          },
        ]}
      />
    </>
  );
}

function PermissionGroup(props: { legend: string; groups: [string, string[]][]; value: string[]; onChange: (v: string[]) => void }) {
  const has = (p: string) => props.value.some((x) => x.toLowerCase() === p.toLowerCase() || x.toLowerCase() === 'all');
  const toggle = (p: string, on: boolean) => {
    const rest = props.value.filter((x) => x.toLowerCase() !== p.toLowerCase() && x.toLowerCase() !== 'all');
    props.onChange(on ? [...rest, p] : rest);
  };
  const all = props.groups.flatMap(([, ps]) => ps);
  const allOn = all.every(has);
  return (
    <fieldset className="perm-group">
      <legend>{props.legend}</legend>
      <label className="select-all">
        <input type="checkbox" checked={allOn} onChange={(e) => props.onChange(e.target.checked ? [...all] : [])} /> Select all
      </label>
      {props.groups.map(([g, ps]) => (
        <div key={g} role="group" aria-label={`${props.legend}: ${g}`} className="perm-sub">
          <span className="perm-sub-title">{g}</span>
          {ps.map((p) => (
            <label key={p}>
              <input type="checkbox" checked={has(p)} onChange={(e) => toggle(p, e.target.checked)} /> {label(p)}
            </label>
          ))}
        </div>
      ))}
    </fieldset>
  );
}

function AddAccessPolicy(props: { id: string; vault: KeyVault | undefined; query: URLSearchParams }) {
  const templates = useAsync(loadTemplates, []);
  const [template, setTemplate] = useState('');
  const [perms, setPerms] = useState<Required<Pick<Permissions, 'keys' | 'secrets' | 'certificates'>>>({ keys: [], secrets: [], certificates: [] });
  const [principal, setPrincipal] = useState<GraphPrincipal | undefined>();
  const [picking, setPicking] = useState(false);
  const [error, setError] = useState<string | undefined>();

  const applyTemplate = (name: string, list = templates.data) => {
    setTemplate(name);
    const t = (list ?? []).find((x) => x.name === name);
    if (t) setPerms({ keys: [...(t.permissions.keys ?? [])], secrets: [...(t.permissions.secrets ?? [])], certificates: [...(t.permissions.certificates ?? [])] });
  };

  // Deep link from the backup wizard: ?template=Azure%20Backup&principal=Backup%20Management%20Service
  const wanted = props.query.get('template');
  const [applied, setApplied] = useState(false);
  if (wanted && templates.data && !applied) {
    setApplied(true);
    applyTemplate(wanted, templates.data);
  }

  const add = () => {
    if (!principal) {
      setError('Select a principal first.');
      return;
    }
    if (!perms.keys.length && !perms.secrets.length && !perms.certificates.length) {
      setError('Select at least one permission.');
      return;
    }
    const tenantId = props.vault?.properties?.tenantId ?? session()!.tenantId;
    const entry: AccessPolicyEntry = { tenantId, objectId: principal.id, permissions: { keys: perms.keys, secrets: perms.secrets, certificates: perms.certificates, storage: [] } };
    pending.set(props.id.toLowerCase(), [...pendingOf(props.id).filter((e) => e.objectId !== principal.id), entry]);
    navigate(resourcePath(props.id, 'access_policies'));
  };

  return (
    <div className="form">
      <div className="field">
        <label htmlFor="ap-template">Configure from template (optional)</label>
        <select id="ap-template" value={template} onChange={(e) => applyTemplate(e.target.value)}>
          <option value="">Select a template</option>
          {(templates.data ?? []).map((t) => (
            <option key={t.name} value={t.name}>
              {t.name}
            </option>
          ))}
        </select>
        {template && <small className="hint">{(templates.data ?? []).find((t) => t.name === template)?.description}</small>}
      </div>
      <div className="perm-groups">
        <PermissionGroup legend="Key permissions" groups={KEY_PERMS} value={perms.keys} onChange={(keys) => setPerms({ ...perms, keys })} />
        <PermissionGroup legend="Secret permissions" groups={SECRET_PERMS} value={perms.secrets} onChange={(secrets) => setPerms({ ...perms, secrets })} />
        <PermissionGroup legend="Certificate permissions" groups={CERT_PERMS} value={perms.certificates} onChange={(certificates) => setPerms({ ...perms, certificates })} />
      </div>
      <div className="field">
        <span className="label" id="ap-principal-label">
          Principal
        </span>
        <div className="principal-row">
          <span aria-labelledby="ap-principal-label" data-testid="selected-principal">
            {principal ? principal.displayName : 'None selected'}
          </span>
          <button type="button" onClick={() => setPicking(true)} aria-expanded={picking}>
            Select principal
          </button>
        </div>
      </div>
      {picking && (
        <PrincipalPicker
          initial={props.query.get('principal') ?? ''}
          onCancel={() => setPicking(false)}
          onSelect={(p) => {
            setPrincipal(p);
            setPicking(false);
            setError(undefined);
          }}
        />
      )}
      <div className="actions">
        <button type="button" className="primary" onClick={add}>
          Add
        </button>
        <button type="button" onClick={() => navigate(resourcePath(props.id, 'access_policies'))}>
          Cancel
        </button>
        {error && (
          <p className="field-error" role="alert">
            {error}
          </p>
        )}
      </div>
    </div>
  );
}

function PrincipalPicker(props: { initial: string; onSelect: (p: GraphPrincipal) => void; onCancel: () => void }) {
  const [q, setQ] = useState(props.initial);
  const [results, setResults] = useState<(GraphPrincipal & { kind: string })[] | undefined>();
  const [error, setError] = useState<ApiError | undefined>();
  const [chosen, setChosen] = useState<string | undefined>();
  useEffect(() => {
    if (!q.trim()) {
      setResults(undefined);
      return;
    }
    let live = true;
    const t = setTimeout(() => {
      searchPrincipals(q).then(
        (r) => live && (setResults(r), setError(undefined)),
        (e: unknown) => live && setError(errorOf(e)),
      );
    }, 200);
    return () => {
      live = false;
      clearTimeout(t);
    };
  }, [q]);
  const picked = useMemo(() => results?.find((r) => r.id === chosen), [results, chosen]);
  return (
    <section className="picker" role="dialog" aria-modal="false" aria-labelledby="picker-title">
      <h2 id="picker-title">Principal</h2>
      <div className="field search">
        <label htmlFor="picker-search">Search by name</label>
        <input id="picker-search" type="search" autoFocus value={q} onChange={(e) => setQ(e.target.value)} placeholder="Start typing a name" />
      </div>
      <ErrorBox error={error} />
      {results && (
        <ul role="listbox" aria-label="Search results" className="results">
          {results.length === 0 && <li className="empty">No principals match “{q}”.</li>}
          {results.map((r) => (
            <li
              key={r.id}
              role="option"
              aria-selected={chosen === r.id}
              tabIndex={0}
              onClick={() => setChosen(r.id)}
              onKeyDown={(e) => {
                if (e.key === 'Enter' || e.key === ' ') {
                  e.preventDefault();
                  setChosen(r.id);
                }
              }}
            >
              <strong>{r.displayName}</strong>
              <small>
                {' '}
                {r.kind}
                {r.appId ? ` · ${r.appId}` : r.userPrincipalName ? ` · ${r.userPrincipalName}` : ''}
              </small>
            </li>
          ))}
        </ul>
      )}
      <p>
        Selected item: <strong>{picked?.displayName ?? 'none'}</strong>
      </p>
      <div className="actions">
        <button type="button" className="primary" disabled={!picked} onClick={() => picked && props.onSelect(picked)}>
          OK
        </button>
        <button type="button" onClick={props.onCancel}>
          Cancel
        </button>
      </div>
    </section>
  );
}
