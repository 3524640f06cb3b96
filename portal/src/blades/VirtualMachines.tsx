/**
 * Virtual machines: list with encryption state, disks and agent; a VM's overview and disks; Disk encryption (ADE) with
 * key vault and key pickers, sent as the ADE extension (`AzureDiskEncryptionForLinux`/`AzureDiskEncryption`) the way
 * `az vm encryption enable` does.
 */
import { useState, type ReactNode } from 'react';
import { API_VERSIONS, listAll, parseId, request, send, toApiError, waitForOperation, withVersion } from '../api';
import { session } from '../session';
import type { DiskEncryptionSettings, KeyVault, ManagedDisk, VaultKey, VirtualMachine, VmDiskRef } from '../wire';
import { Blade, DataTable, ErrorBox, Field, Notice, Progress, Properties, Spinner, StatusBadge, useAsync, ResourceListBlade } from '../ui';
import { listKeyVaults, ResourceMenu } from './KeyVaults';

const CV = API_VERSIONS.compute;

export async function getVm(id: string): Promise<VirtualMachine> {
  return request<VirtualMachine>('GET', withVersion(id, CV, { $expand: 'instanceView' }));
}

/** Every VM of the subscription with its instance view (encryption and agent state live there). */
export async function listVms(): Promise<VirtualMachine[]> {
  const s = session()!;
  const list = await listAll<VirtualMachine>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.Compute/virtualMachines`, CV));
  return Promise.all(list.map((vm) => (vm.properties?.instanceView ? vm : getVm(vm.id).catch(() => vm))));
}

export interface EncryptionState {
  encrypted: boolean;
  kek: boolean;
  label: string;
  keyVaultIds: string[];
  secretUrl?: string | undefined;
  keyUrl?: string | undefined;
}

/** Encryption of a VM from its disks' settings (VM model, instance view, or the ADE extension status). */
export function encryptionOf(vm: VirtualMachine, disks: ManagedDisk[] = []): EncryptionState {
  const settings: DiskEncryptionSettings[] = [];
  const os = vm.properties?.storageProfile?.osDisk;
  if (os?.encryptionSettings) settings.push(os.encryptionSettings);
  for (const d of vm.properties?.instanceView?.disks ?? []) settings.push(...(d.encryptionSettings ?? []));
  for (const d of disks) if (d.properties?.encryptionSettingsCollection?.enabled) settings.push(...(d.properties.encryptionSettingsCollection.encryptionSettings ?? []).map((x) => ({ ...x, enabled: true })));
  const on = settings.filter((s) => s.enabled !== false && (s.enabled || s.diskEncryptionKey?.secretUrl));
  if (!on.length) {
    const ext = vm.properties?.instanceView?.extensions?.find((e) => /AzureDiskEncryption/i.test(e.type ?? e.name ?? ''));
    const st = ext?.statuses?.[0]?.displayStatus ?? ext?.statuses?.[0]?.code;
    if (ext && st && /progress|transition/i.test(st)) return { encrypted: false, kek: false, label: 'Encryption in progress', keyVaultIds: [] };
    return { encrypted: false, kek: false, label: 'Not encrypted', keyVaultIds: [] };
  }
  const kek = on.some((s) => !!s.keyEncryptionKey?.keyUrl);
  const ids = new Set<string>();
  for (const s of on) {
    if (s.diskEncryptionKey?.sourceVault?.id) ids.add(s.diskEncryptionKey.sourceVault.id);
    if (s.keyEncryptionKey?.sourceVault?.id) ids.add(s.keyEncryptionKey.sourceVault.id);
  }
  return { encrypted: true, kek, label: kek ? 'Encrypted (BEK + KEK)' : 'Encrypted (BEK only)', keyVaultIds: [...ids], secretUrl: on[0]?.diskEncryptionKey?.secretUrl, keyUrl: on.find((s) => s.keyEncryptionKey?.keyUrl)?.keyEncryptionKey?.keyUrl };
}

export function agentOf(vm: VirtualMachine): string {
  const a = vm.properties?.instanceView?.vmAgent;
  if (!a) return 'Unknown';
  const st = a.statuses?.[0]?.displayStatus ?? a.statuses?.[0]?.code?.split('/').pop();
  return [st, a.vmAgentVersion].filter(Boolean).join(' · ') || 'Unknown';
}

export function powerOf(vm: VirtualMachine): string {
  const st = vm.properties?.instanceView?.statuses?.find((s) => s.code?.startsWith('PowerState/'));
  return st?.displayStatus ?? st?.code?.replace('PowerState/', '') ?? '';
}

const diskCount = (vm: VirtualMachine) => (vm.properties?.storageProfile?.osDisk ? 1 : 0) + (vm.properties?.storageProfile?.dataDisks?.length ?? 0);

export function VmList() {
  return (
    <ResourceListBlade
      title="Virtual machines"
      load={listVms}
      empty="No virtual machines. Create one with `rsvault vm create`."
      columns={[
        { header: 'Status', cell: (r) => <StatusBadge status={powerOf(r)} /> },
        { header: 'Disks', cell: (r) => String(diskCount(r)) },
        { header: 'Encryption', cell: (r) => <StatusBadge status={encryptionOf(r).label} /> },
        { header: 'Agent', cell: (r) => agentOf(r) },
      ]}
    />
  );
}

export function DiskList() {
  const s = session()!;
  const { data, error, loading } = useAsync(() => listAll<ManagedDisk>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.Compute/disks`, CV)), []);
  return (
    <Blade title="Disks" crumbs={[{ label: 'Home', to: '/' }]}>
      <ErrorBox error={error} />
      {loading && !data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Disks"
          rows={data ?? []}
          rowKey={(r) => r.id}
          columns={[
            { header: 'Name', cell: (r) => r.name },
            { header: 'Resource group', cell: (r) => parseId(r.id).resourceGroup },
            { header: 'Size', cell: (r) => (r.properties?.diskSizeGB ? `${r.properties.diskSizeGB} GiB` : '') },
            { header: 'State', cell: (r) => r.properties?.diskState ?? '' },
            { header: 'Encryption', cell: (r) => (r.properties?.encryptionSettingsCollection?.enabled ? 'ADE' : 'None') },
          ]}
        />
      )}
    </Blade>
  );
}

const VM_BLADES: [string, string][] = [
  ['overview', 'Overview'],
  ['disks', 'Disks'],
  ['disk_encryption', 'Disk encryption'],
];

export function VmBlade(props: { id: string; blade: string; query: URLSearchParams }) {
  const vm = useAsync(() => getVm(props.id), [props.id]);
  const name = parseId(props.id).name;
  const blade = props.blade.toLowerCase();
  let content: ReactNode = null;
  if (vm.data) {
    if (blade === 'disks') content = <VmDisks vm={vm.data} />;
    else if (blade === 'disk_encryption') content = <DiskEncryption vm={vm.data} reload={vm.reload} />;
    else content = <VmOverview vm={vm.data} />;
  }
  return (
    <Blade
      title={blade === 'overview' ? name : `${name} | ${VM_BLADES.find(([b]) => b === blade)?.[1] ?? blade}`}
      subtitle="Virtual machine"
      crumbs={[
        { label: 'Home', to: '/' },
        { label: 'Virtual machines', to: '/browse/virtualmachines' },
      ]}
    >
      <ResourceMenu id={props.id} blades={VM_BLADES} current={blade} label="Virtual machine menu" />
      <ErrorBox error={vm.error} />
      {vm.loading && !vm.data ? <Spinner /> : content}
    </Blade>
  );
}

function VmOverview(props: { vm: VirtualMachine }) {
  const vm = props.vm;
  const enc = encryptionOf(vm);
  return (
    <Properties
      label="Essentials"
      items={[
        ['Resource group', parseId(vm.id).resourceGroup],
        ['Location', vm.location],
        ['Status', powerOf(vm)],
        ['Size', vm.properties?.hardwareProfile?.vmSize],
        ['Operating system', vm.properties?.storageProfile?.osDisk?.osType],
        ['Disks', String(diskCount(vm))],
        ['Encryption', enc.label],
        ['Key vault', enc.keyVaultIds.map((id) => parseId(id).name).join(', ')],
        ['Agent status', agentOf(vm)],
      ]}
    />
  );
}

function VmDisks(props: { vm: VirtualMachine }) {
  const sp = props.vm.properties?.storageProfile;
  const rows: (VmDiskRef & { role: string })[] = [...(sp?.osDisk ? [{ ...sp.osDisk, role: 'OS disk' }] : []), ...(sp?.dataDisks ?? []).map((d) => ({ ...d, role: `Data disk (LUN ${d.lun ?? '?'})` }))];
  const iv = props.vm.properties?.instanceView?.disks ?? [];
  const encOf = (n: string | undefined) => {
    const d = iv.find((x) => x.name === n);
    const s = d?.encryptionSettings?.find((e) => e.enabled);
    return s ? (s.keyEncryptionKey?.keyUrl ? 'ADE (BEK + KEK)' : 'ADE (BEK)') : 'None';
  };
  return (
    <DataTable
      label="Disks"
      rows={rows}
      rowKey={(r) => r.name ?? r.role}
      columns={[
        { header: 'Disk name', cell: (r) => r.name ?? '' },
        { header: 'Role', cell: (r) => r.role },
        { header: 'Size', cell: (r) => (r.diskSizeGB ? `${r.diskSizeGB} GiB` : '') },
        { header: 'Encryption', cell: (r) => (r.encryptionSettings?.enabled ? (r.encryptionSettings.keyEncryptionKey ? 'ADE (BEK + KEK)' : 'ADE (BEK)') : encOf(r.name)) },
      ]}
    />
  );
}

function DiskEncryption(props: { vm: VirtualMachine; reload: () => void }) {
  const vm = props.vm;
  const enc = encryptionOf(vm);
  const vaults = useAsync(listKeyVaults, []);
  const [vaultId, setVaultId] = useState('');
  const [useKek, setUseKek] = useState(true);
  const [keyUrl, setKeyUrl] = useState('');
  const [volumeType, setVolumeType] = useState('All');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [done, setDone] = useState(false);
  const vault = (vaults.data ?? []).find((v) => v.id === vaultId);
  const keys = useAsync(async () => (vaultId ? listAll<VaultKey>(withVersion(`${vaultId}/keys`, API_VERSIONS.keyVault)) : []), [vaultId]);
  const linux = !/windows/i.test(vm.properties?.storageProfile?.osDisk?.osType ?? 'Linux');

  const save = async () => {
    setBusy(true);
    setError(undefined);
    setDone(false);
    try {
      const full = vault ?? (await request<KeyVault>('GET', withVersion(vaultId, API_VERSIONS.keyVault)));
      const vaultUrl = (full.properties?.vaultUri ?? '').replace(/\/$/, '');
      const extName = linux ? 'AzureDiskEncryptionForLinux' : 'AzureDiskEncryption';
      const settings: Record<string, string> = {
        EncryptionOperation: 'EnableEncryption',
        KeyVaultURL: vaultUrl,
        KeyVaultResourceId: full.id,
        VolumeType: volumeType,
      };
      if (useKek && keyUrl) {
        // The picker gives a key URL; typed text may be a key name in the chosen vault.
        settings.KeyEncryptionKeyURL = /^https:\/\//i.test(keyUrl.trim()) ? keyUrl.trim() : `${vaultUrl}/keys/${encodeURIComponent(keyUrl.trim())}`;
        settings.KekVaultResourceId = full.id;
        settings.KeyEncryptionAlgorithm = 'RSA-OAEP';
      }
      const body = {
        location: vm.location,
        properties: { publisher: 'Microsoft.Azure.Security', type: extName, typeHandlerVersion: linux ? '1.1' : '2.2', autoUpgradeMinorVersion: true, settings },
      };
      const r = await send('PUT', withVersion(`${vm.id}/extensions/${extName}`, CV), body);
      if (r.status >= 400) throw toApiError(r.status, r.body);
      await waitForOperation(r);
      setDone(true);
      props.reload();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  const keyOptions = keys.data ?? [];
  return (
    <div className="form">
      <Properties items={[['Current encryption', enc.label], ['Key vault', enc.keyVaultIds.map((id) => parseId(id).name).join(', ')]]} />
      <Field label="Disks to encrypt">
        {(id) => (
          <select id={id} value={volumeType} onChange={(e) => setVolumeType(e.target.value)}>
            <option value="All">OS and data disks</option>
            <option value="OS">OS disk</option>
            <option value="Data">Data disks</option>
          </select>
        )}
      </Field>
      <Field label="Key vault" hint="The vault that stores the disk encryption secret (BEK). It must allow Azure Disk Encryption for volume encryption.">
        {(id, d) => (
          <select id={id} aria-describedby={d} value={vaultId} onChange={(e) => (setVaultId(e.target.value), setKeyUrl(''))}>
            <option value="">Select a key vault</option>
            {(vaults.data ?? []).map((v) => (
              <option key={v.id} value={v.id}>
                {v.name}
              </option>
            ))}
          </select>
        )}
      </Field>
      <ErrorBox error={vaults.error} />
      {vault && vault.properties && vault.properties.enabledForDiskEncryption === false && (
        <Notice kind="warning">This key vault is not enabled for Azure Disk Encryption; enabling encryption will fail until it is.</Notice>
      )}
      <label className="check-row">
        <input type="checkbox" checked={useKek} onChange={(e) => setUseKek(e.target.checked)} /> Use a key encryption key (KEK)
      </label>
      {useKek && (
        <Field label="Key" hint={keys.error || (!keys.loading && vaultId && keyOptions.length === 0) ? 'The key encryption key (KEK) that wraps the disk encryption secret: its name in the chosen vault, or its key URL.' : 'The key encryption key (KEK) that wraps the disk encryption secret.'}>
          {(id, d) =>
            keys.error || (!keys.loading && vaultId && keyOptions.length === 0) ? (
              <input id={id} aria-describedby={d} value={keyUrl} onChange={(e) => setKeyUrl(e.target.value)} placeholder="key name or https://<vault>.vault.localhost:8443/keys/<name>" />
            ) : (
              <select id={id} aria-describedby={d} value={keyUrl} onChange={(e) => setKeyUrl(e.target.value)} disabled={!vaultId}>
                <option value="">Select a key</option>
                {keyOptions.map((k) => (
                  <option key={k.id} value={k.properties?.keyUriWithVersion ?? k.properties?.keyUri ?? ''}>
                    {k.name}
                  </option>
                ))}
              </select>
            )
          }
        </Field>
      )}
      <div className="actions">
        <button type="button" className="primary" disabled={busy || !vaultId || (useKek && !keyUrl)} onClick={() => void save()}>
          {busy ? 'Encrypting…' : 'Save'}
        </button>
        {busy && <Progress label="Enabling disk encryption" />}
        <ErrorBox error={error} title="Could not enable disk encryption" />
        {done && <Notice kind="success">Disk encryption enabled.</Notice>}
      </div>
    </div>
  );
}
