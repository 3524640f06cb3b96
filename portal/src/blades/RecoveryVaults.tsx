/**
 * Recovery Services vaults: list, create, dashboard; Backup (goal → policy → VMs → Enable backup); Backup items with
 * Backup now and recovery points; Restore; Backup jobs with live progress and details; Backup policies.
 * Wire: /work/shared/design/reference/azure-backup-api.md §2.
 */
import { useEffect, useRef, useState, type ReactNode } from 'react';
import { API_VERSIONS, ApiError, errorOf, getPage, listAll, parseId, request, send, toApiError, waitForOperation, withVersion } from '../api';
import { session } from '../session';
import { Link, navigate, resourcePath } from '../router';
import type { BackupJob, BackupPolicy, GraphPrincipal, KeyVault, ProtectableItem, ProtectedItem, RecoveryPoint, RecoveryVault, VirtualMachine } from '../wire';
import { Blade, DataTable, ErrorBox, Field, Notice, Progress, Properties, Spinner, StatusBadge, fmtDuration, fmtTime, useAsync, useInterval, type Column, ResourceListBlade } from '../ui';
import { ResourceMenu } from './KeyVaults';
import { encryptionOf, listVms } from './VirtualMachines';
import { CreateInGroupBlade } from './ResourceGroups';
import { DeployTemplate, RestoreKeys, RestoreVm } from './Restore';

const RS = API_VERSIONS.recoveryServices;
const BK = API_VERSIONS.backup;
const IAAS = "backupManagementType eq 'AzureIaasVM'";
const BMS_NAME = 'Backup Management Service';

export function listRecoveryVaults(): Promise<RecoveryVault[]> {
  const s = session()!;
  return listAll<RecoveryVault>(withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.RecoveryServices/vaults`, RS));
}

export function RsvList() {
  return (
    <ResourceListBlade
      title="Recovery Services vaults"
      load={listRecoveryVaults}
      createPath="/create/recoveryvault"
      empty="No Recovery Services vaults. Select Create to make one."
      columns={[{ header: 'State', cell: (r) => r.properties?.provisioningState ?? '' }]}
    />
  );
}

export function CreateRsv() {
  const s = session()!;
  return (
    <CreateInGroupBlade
      title="Create Recovery Services vault"
      crumbs={[{ label: 'Home', to: '/' }, { label: 'Recovery Services vaults', to: '/browse/recoveryvaults' }]}
      nameLabel="Vault name"
      nameError={(name) => (name && !/^[a-zA-Z][a-zA-Z0-9-]{1,49}$/.test(name) ? 'The name must be 2–50 characters, start with a letter, and contain only letters, digits and hyphens.' : undefined)}
      regionHint="The vault must be in the same region as the virtual machines it protects."
      progressLabel="Creating vault"
      errorTitle="Could not create the vault"
      create={async ({ group, name, location }) => {
        const id = `/subscriptions/${s.subscriptionId}/resourceGroups/${encodeURIComponent(group)}/providers/Microsoft.RecoveryServices/vaults/${encodeURIComponent(name)}`;
        const r = await send<RecoveryVault>('PUT', withVersion(id, RS), { location, sku: { name: 'Standard' }, properties: {} });
        if (r.status >= 400) throw toApiError(r.status, r.body);
        await waitForOperation(r);
        navigate(resourcePath(id));
      }}
    />
  );
}

// ---- vault blades -----------------------------------------------------------------------------------------------------

const RSV_BLADES: [string, string][] = [
  ['overview', 'Overview'],
  ['backup', 'Backup'],
  ['backup_items', 'Backup items'],
  ['backup_jobs', 'Backup jobs'],
  ['backup_policies', 'Backup policies'],
];

export function RsvBlade(props: { id: string; rest: string; query: URLSearchParams }) {
  const vault = useAsync(() => request<RecoveryVault>('GET', withVersion(props.id, RS)), [props.id]);
  const name = parseId(props.id).name;
  const segs = props.rest.split('/').filter(Boolean);
  const blade = (segs[0] ?? 'overview').toLowerCase();
  const crumbs = [
    { label: 'Home', to: '/' },
    { label: 'Recovery Services vaults', to: '/browse/recoveryvaults' },
  ];
  let content: ReactNode;
  let title = `${name} | ${RSV_BLADES.find(([b]) => b === blade)?.[1] ?? ''}`;
  if (blade === 'backup') content = <BackupWizard vaultId={props.id} vault={vault.data} query={props.query} />;
  else if (blade === 'backup_items' && segs.length >= 3) {
    crumbs.push({ label: name, to: resourcePath(props.id) }, { label: 'Backup items', to: resourcePath(props.id, 'backup_items') });
    const itemId = `${props.id}/backupFabrics/Azure/protectionContainers/${segs[1]}/protectedItems/${segs[2]}`;
    const sub = (segs[3] ?? '').toLowerCase();
    if (sub !== 'restore' && sub !== 'restore_keys') title = `${friendlyOfItemName(segs[2]!)} | Backup item`;
    else crumbs.push({ label: friendlyOfItemName(segs[2]!), to: itemPath(props.id, itemId) });
    if (sub === 'restore') title = 'Restore Virtual Machine';
    if (sub === 'restore_keys') title = 'Restore keys and secrets';
    content =
      sub === 'restore' ? (
        <RestoreVm vaultId={props.id} itemId={itemId} query={props.query} />
      ) : sub === 'restore_keys' ? (
        <RestoreKeys vaultId={props.id} itemId={itemId} query={props.query} />
      ) : (
        <BackupItem vaultId={props.id} itemId={itemId} />
      );
  } else if (blade === 'backup_items') content = <BackupItems vaultId={props.id} />;
  else if (blade === 'backup_jobs' && segs[1]) {
    crumbs.push({ label: name, to: resourcePath(props.id) }, { label: 'Backup jobs', to: resourcePath(props.id, 'backup_jobs') });
    title = 'Job details';
    content = segs[2]?.toLowerCase() === 'deploy' ? <DeployTemplate vaultId={props.id} jobName={segs[1]} /> : <JobDetails vaultId={props.id} jobName={segs[1]} />;
    if (segs[2]?.toLowerCase() === 'deploy') title = 'Deploy Template';
  } else if (blade === 'backup_jobs') content = <JobsList vaultIds={[props.id]} />;
  else if (blade === 'backup_policies') content = <PoliciesBlade vaultId={props.id} />;
  else {
    title = name;
    content = <RsvOverview vaultId={props.id} vault={vault.data} />;
  }
  const showMenu = RSV_BLADES.some(([b]) => b === blade) && segs.length <= 1;
  return (
    <Blade title={title} subtitle="Recovery Services vault" crumbs={crumbs}>
      {showMenu && <ResourceMenu id={props.id} blades={RSV_BLADES} current={blade} label="Recovery Services vault menu" />}
      <ErrorBox error={vault.error} />
      {content}
    </Blade>
  );
}

function friendlyOfItemName(n: string): string {
  return decodeURIComponent(n).split(';').pop() ?? n;
}

/** `{V}/backupFabrics/Azure/protectionContainers/{c}/protectedItems/{i}` → the portal's item path. */
export function itemPath(vaultId: string, itemId: string, sub?: string): string {
  const m = /\/protectionContainers\/([^/]+)\/protectedItems\/([^/]+)/i.exec(itemId);
  const c = m?.[1] ?? '';
  const i = m?.[2] ?? '';
  return resourcePath(vaultId, `backup_items/${encodeURIComponent(decodeURIComponent(c))}/${encodeURIComponent(decodeURIComponent(i))}${sub ? '/' + sub : ''}`);
}

export function jobPath(vaultId: string, jobName: string, sub?: string): string {
  return resourcePath(vaultId, `backup_jobs/${jobName}${sub ? '/' + sub : ''}`);
}

/**
 * A failed backup operation's status carries only {code, message} (as Azure's); its job has the recommendation.
 * Returns the error with the job's recommendation added.
 */
export async function withJobRecommendation(vaultId: string, e: unknown): Promise<ApiError> {
  const err = errorOf(e);
  const jobId = err.operation?.properties?.jobId;
  if (err.recommendation || !jobId) return err;
  try {
    const job = await request<BackupJob>('GET', withVersion(`${vaultId}/backupJobs/${jobId}`, BK));
    const d = job.properties?.errorDetails?.find((x) => x.recommendations?.length);
    return d ? new ApiError(err.status, err.code, err.message, d.recommendations!.join(' '), err.target, err.operation) : err;
  } catch {
    return err;
  }
}

function listItems(vaultId: string): Promise<ProtectedItem[]> {
  return listAll<ProtectedItem>(withVersion(`${vaultId}/backupProtectedItems`, BK, { $filter: `${IAAS} and itemType eq 'VM'` }));
}

function RsvOverview(props: { vaultId: string; vault: RecoveryVault | undefined }) {
  const items = useAsync(() => listItems(props.vaultId), [props.vaultId]);
  const jobs = useAsync(() => getPage<BackupJob>(withVersion(`${props.vaultId}/backupJobs`, BK)), [props.vaultId]);
  const v = props.vault;
  const inProgress = (jobs.data?.items ?? []).filter((j) => j.properties?.status === 'InProgress').length;
  const failed = (jobs.data?.items ?? []).filter((j) => j.properties?.status === 'Failed').length;
  return (
    <>
      <div role="toolbar" aria-label="Vault commands" className="commands">
        <button type="button" className="primary" onClick={() => navigate(resourcePath(props.vaultId, 'backup'))}>
          Backup
        </button>
      </div>
      <Properties
        label="Essentials"
        items={[
          ['Resource group', parseId(props.vaultId).resourceGroup],
          ['Location', v?.location],
          ['Provisioning state', v?.properties?.provisioningState],
          ['SKU', v?.sku?.name],
        ]}
      />
      <h2>Monitoring</h2>
      <ul className="tiles">
        <li>
          <Link to={resourcePath(props.vaultId, 'backup_items')}>
            Backup items <strong>{items.data ? items.data.length : '…'}</strong>
          </Link>
        </li>
        <li>
          <Link to={resourcePath(props.vaultId, 'backup_jobs')}>
            Jobs in progress <strong>{jobs.data ? inProgress : '…'}</strong>
          </Link>
        </li>
        <li>
          <Link to={resourcePath(props.vaultId, 'backup_jobs')}>
            Failed jobs <strong>{jobs.data ? failed : '…'}</strong>
          </Link>
        </li>
      </ul>
      <ErrorBox error={items.error ?? jobs.error} />
    </>
  );
}

// ---- policies ---------------------------------------------------------------------------------------------------------

function listPolicies(vaultId: string): Promise<BackupPolicy[]> {
  return listAll<BackupPolicy>(withVersion(`${vaultId}/backupPolicies`, BK, { $filter: IAAS }));
}

const hhmm = (t: string | undefined) => {
  if (!t) return '—';
  const m = /T(\d{2}):(\d{2})/.exec(t);
  return m ? `${m[1]}:${m[2]}` : t;
};

export function PolicyDetails(props: { policy: BackupPolicy }) {
  const p = props.policy.properties ?? {};
  const sp = p.schedulePolicy ?? {};
  const rp = p.retentionPolicy ?? {};
  const time = hhmm(sp.scheduleRunTimes?.[0]);
  const tz = p.timeZone ?? 'UTC';
  const freq = sp.scheduleRunFrequency === 'Weekly' ? `Weekly on ${(sp.scheduleRunDays ?? []).join(', ')} at ${time} ${tz}` : `${sp.scheduleRunFrequency ?? 'Daily'} at ${time} ${tz}`;
  const items: [string, ReactNode][] = [
    ['Policy name', props.policy.name],
    ['Backup frequency', freq],
    ['Instant restore', `Retain instant recovery snapshot(s) for ${p.instantRpRetentionRangeInDays ?? 2} day(s)`],
  ];
  if (rp.dailySchedule) items.push(['Retention of daily backup point', `Retain backup taken every day at ${hhmm(rp.dailySchedule.retentionTimes?.[0]) || time} for ${rp.dailySchedule.retentionDuration?.count ?? '?'} ${rp.dailySchedule.retentionDuration?.durationType ?? 'Days'}`]);
  if (rp.weeklySchedule) items.push(['Retention of weekly backup point', `Retain backup taken every week on ${(rp.weeklySchedule.daysOfTheWeek ?? []).join(', ')} for ${rp.weeklySchedule.retentionDuration?.count ?? '?'} ${rp.weeklySchedule.retentionDuration?.durationType ?? 'Weeks'}`]);
  if (p.protectedItemsCount !== undefined) items.push(['Protected items', String(p.protectedItemsCount)]);
  return <Properties items={items} label={`Policy ${props.policy.name}`} />;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const TIMES = Array.from({ length: 48 }, (_, i) => `${String(Math.floor(i / 2)).padStart(2, '0')}:${i % 2 ? '30' : '00'}`);

export interface PolicyDraft {
  name: string;
  frequency: 'Daily' | 'Weekly';
  day: string;
  time: string;
  instantDays: string;
  dailyCount: string;
  weeklyCount: string;
}

export function validatePolicy(d: PolicyDraft, existing: string[]): Partial<Record<keyof PolicyDraft, string>> {
  const e: Partial<Record<keyof PolicyDraft, string>> = {};
  if (!/^[A-Za-z][A-Za-z0-9_-]{2,149}$/.test(d.name)) e.name = 'The name must be 3–150 characters, start with a letter, and contain only letters, digits, hyphens and underscores.';
  else if (existing.some((n) => n.toLowerCase() === d.name.toLowerCase())) e.name = `A policy named ${d.name} already exists in this vault.`;
  const n = (s: string) => (/^\d+$/.test(s) ? Number(s) : NaN);
  const inst = n(d.instantDays);
  if (d.frequency === 'Daily' && !(inst >= 1 && inst <= 5)) e.instantDays = 'Instant restore snapshots are kept for 1 to 5 days.';
  if (d.frequency === 'Daily') {
    const c = n(d.dailyCount);
    if (!(c >= 7 && c <= 9999)) e.dailyCount = 'Daily backup points are retained for 7 to 9999 days.';
  }
  if (d.frequency === 'Weekly' || d.weeklyCount) {
    const w = n(d.weeklyCount);
    if (!(w >= 1 && w <= 5163)) e.weeklyCount = 'Weekly backup points are retained for 1 to 5163 weeks.';
  }
  return e;
}

export function policyBody(d: PolicyDraft): { properties: Record<string, unknown> } {
  const t = `2024-01-01T${d.time}:00Z`;
  const weekly = d.frequency === 'Weekly';
  return {
    properties: {
      backupManagementType: 'AzureIaasVM',
      timeZone: 'UTC',
      instantRpRetentionRangeInDays: weekly ? 5 : Number(d.instantDays),
      schedulePolicy: { schedulePolicyType: 'SimpleSchedulePolicy', scheduleRunFrequency: d.frequency, scheduleRunDays: weekly ? [d.day] : null, scheduleRunTimes: [t], scheduleWeeklyFrequency: 0 },
      retentionPolicy: {
        retentionPolicyType: 'LongTermRetentionPolicy',
        ...(weekly ? {} : { dailySchedule: { retentionTimes: [t], retentionDuration: { count: Number(d.dailyCount), durationType: 'Days' } } }),
        ...(weekly || d.weeklyCount ? { weeklySchedule: { daysOfTheWeek: [d.day], retentionTimes: [t], retentionDuration: { count: Number(d.weeklyCount), durationType: 'Weeks' } } } : {}),
      },
    },
  };
}

export const NEW_POLICY: PolicyDraft = { name: '', frequency: 'Daily', day: 'Sunday', time: '19:00', instantDays: '2', dailyCount: '30', weeklyCount: '' };

function PolicyForm(props: { draft: PolicyDraft; onChange: (d: PolicyDraft) => void; errors: Partial<Record<keyof PolicyDraft, string>>; showErrors: boolean }) {
  const d = props.draft;
  const err = (k: keyof PolicyDraft) => (props.showErrors ? props.errors[k] : undefined);
  const set = (k: keyof PolicyDraft) => (e: { target: { value: string } }) => props.onChange({ ...d, [k]: e.target.value });
  return (
    <fieldset className="policy-form">
      <legend>Create policy</legend>
      <Field label="Policy name" error={err('name')}>
        {(id, db) => <input id={id} aria-describedby={db} aria-invalid={!!err('name')} value={d.name} onChange={set('name')} />}
      </Field>
      <Field label="Frequency">
        {(id) => (
          <select id={id} value={d.frequency} onChange={set('frequency')}>
            <option value="Daily">Daily</option>
            <option value="Weekly">Weekly</option>
          </select>
        )}
      </Field>
      {d.frequency === 'Weekly' && (
        <Field label="Day">
          {(id) => (
            <select id={id} value={d.day} onChange={set('day')}>
              {DAYS.map((x) => (
                <option key={x}>{x}</option>
              ))}
            </select>
          )}
        </Field>
      )}
      <Field label="Time (UTC)">
        {(id) => (
          <select id={id} value={d.time} onChange={set('time')}>
            {TIMES.map((x) => (
              <option key={x}>{x}</option>
            ))}
          </select>
        )}
      </Field>
      {d.frequency === 'Daily' && (
        <Field label="Retain instant recovery snapshots (days)" error={err('instantDays')}>
          {(id, db) => <input id={id} inputMode="numeric" aria-describedby={db} aria-invalid={!!err('instantDays')} value={d.instantDays} onChange={set('instantDays')} />}
        </Field>
      )}
      {d.frequency === 'Daily' && (
        <Field label="Retain daily backup points (days)" error={err('dailyCount')}>
          {(id, db) => <input id={id} inputMode="numeric" aria-describedby={db} aria-invalid={!!err('dailyCount')} value={d.dailyCount} onChange={set('dailyCount')} />}
        </Field>
      )}
      <Field label="Retain weekly backup points (weeks)" error={err('weeklyCount')} hint={d.frequency === 'Daily' ? 'Optional' : undefined}>
        {(id, db) => <input id={id} inputMode="numeric" aria-describedby={db} aria-invalid={!!err('weeklyCount')} value={d.weeklyCount} onChange={set('weeklyCount')} />}
      </Field>
    </fieldset>
  );
}

async function createPolicy(vaultId: string, d: PolicyDraft): Promise<BackupPolicy> {
  const path = withVersion(`${vaultId}/backupPolicies/${encodeURIComponent(d.name)}`, BK);
  const r = await send<BackupPolicy>('PUT', path, policyBody(d));
  if (r.status >= 400) throw toApiError(r.status, r.body);
  await waitForOperation(r);
  return request<BackupPolicy>('GET', path);
}

function PoliciesBlade(props: { vaultId: string }) {
  const policies = useAsync(() => listPolicies(props.vaultId), [props.vaultId]);
  const [adding, setAdding] = useState(false);
  const [draft, setDraft] = useState<PolicyDraft>(NEW_POLICY);
  const [tried, setTried] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const errors = validatePolicy(
    draft,
    (policies.data ?? []).map((p) => p.name),
  );
  const save = async () => {
    setTried(true);
    if (Object.keys(errors).length) return;
    setBusy(true);
    setError(undefined);
    try {
      await createPolicy(props.vaultId, draft);
      setAdding(false);
      setDraft(NEW_POLICY);
      setTried(false);
      policies.reload();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <>
      <div role="toolbar" aria-label="Policy commands" className="commands">
        <button type="button" onClick={() => setAdding(true)} disabled={adding}>
          Add
        </button>
      </div>
      {adding && (
        <div className="form">
          <PolicyForm draft={draft} onChange={setDraft} errors={errors} showErrors={tried} />
          <div className="actions">
            <button type="button" className="primary" onClick={() => void save()} disabled={busy}>
              Create
            </button>
            <button type="button" onClick={() => setAdding(false)}>
              Cancel
            </button>
            {busy && <Progress label="Creating policy" />}
            <ErrorBox error={error} title="Could not create the policy" />
          </div>
        </div>
      )}
      <ErrorBox error={policies.error} />
      {(policies.data ?? []).map((p) => (
        <section key={p.id} className="card" aria-label={p.name}>
          <h2>{p.name}</h2>
          <PolicyDetails policy={p} />
        </section>
      ))}
      {policies.loading && !policies.data && <Spinner />}
    </>
  );
}

// ---- backup wizard ----------------------------------------------------------------------------------------------------

type Step = 'goal' | 'policy' | 'vms';

interface VmRow {
  item: ProtectableItem;
  vm?: VirtualMachine | undefined;
  key: string;
  name: string;
  rg: string;
  encryption: ReturnType<typeof encryptionOf> | undefined;
}

interface EnableState {
  status: 'pending' | 'running' | 'done' | 'failed';
  error?: ApiError;
  jobId?: string | undefined;
}

function BackupWizard(props: { vaultId: string; vault: RecoveryVault | undefined; query: URLSearchParams }) {
  const [step, setStep] = useState<Step>('goal');
  const [where, setWhere] = useState('Azure');
  const [what, setWhat] = useState('Virtual machine');
  const [policyChoice, setPolicyChoice] = useState('');
  const [draft, setDraft] = useState<PolicyDraft>(NEW_POLICY);
  const [tried, setTried] = useState(false);
  const [policy, setPolicy] = useState<BackupPolicy | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const policies = useAsync(() => listPolicies(props.vaultId), [props.vaultId]);
  const chosen = policyChoice || (policies.data?.find((p) => p.name === 'DefaultPolicy') ?? policies.data?.[0])?.name || '';
  const creating = chosen === '__new__';
  const errors = validatePolicy(
    draft,
    (policies.data ?? []).map((p) => p.name),
  );

  const goalOk = where === 'Azure' && what === 'Virtual machine';

  const confirmPolicy = async () => {
    setError(undefined);
    if (!creating) {
      const p = policies.data?.find((x) => x.name === chosen);
      if (!p) return setError(new ApiError(0, 'NoPolicy', 'Choose a backup policy.'));
      setPolicy(p);
      setStep('vms');
      return;
    }
    setTried(true);
    if (Object.keys(errors).length) return;
    setBusy(true);
    try {
      const p = await createPolicy(props.vaultId, draft);
      setPolicy(p);
      policies.reload();
      setPolicyChoice(p.name);
      setStep('vms');
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };

  return (
    <div className="wizard">
      <ol className="wizard-steps" aria-label="Steps">
        <li aria-current={step === 'goal' ? 'step' : undefined}>Backup goal</li>
        <li aria-current={step === 'policy' ? 'step' : undefined}>Backup policy</li>
        <li aria-current={step === 'vms' ? 'step' : undefined}>Items to back up</li>
      </ol>
      {step === 'goal' && (
        <section aria-labelledby="goal-title" className="card">
          <h2 id="goal-title">Backup goal</h2>
          <Field label="Where is your workload running?">
            {(id) => (
              <select id={id} value={where} onChange={(e) => setWhere(e.target.value)}>
                <option value="Azure">Azure</option>
                <option value="On-Premises">On-Premises</option>
              </select>
            )}
          </Field>
          <Field label="What do you want to back up?">
            {(id) => (
              <select id={id} value={what} onChange={(e) => setWhat(e.target.value)}>
                <option value="Virtual machine">Virtual machine</option>
                <option value="Azure FileShare">Azure FileShare</option>
                <option value="SQL Server in Azure VM">SQL Server in Azure VM</option>
              </select>
            )}
          </Field>
          {!goalOk && (
            <Notice kind="warning" role="alert">
              rsvault backs up Azure virtual machines only. Choose Azure and Virtual machine.
            </Notice>
          )}
          <div className="actions">
            <button type="button" className="primary" disabled={!goalOk} onClick={() => setStep('policy')}>
              OK
            </button>
          </div>
        </section>
      )}
      {step === 'policy' && (
        <section aria-labelledby="policy-title" className="card">
          <h2 id="policy-title">Backup policy</h2>
          <ErrorBox error={policies.error} />
          <Field label="Choose backup policy">
            {(id) => (
              <select id={id} value={chosen} onChange={(e) => setPolicyChoice(e.target.value)}>
                {(policies.data ?? []).map((p) => (
                  <option key={p.id} value={p.name}>
                    {p.name}
                  </option>
                ))}
                <option value="__new__">Create New</option>
              </select>
            )}
          </Field>
          {!creating && policies.data?.find((p) => p.name === chosen) && <PolicyDetails policy={policies.data.find((p) => p.name === chosen)!} />}
          {creating && <PolicyForm draft={draft} onChange={setDraft} errors={errors} showErrors={tried} />}
          <div className="actions">
            <button type="button" onClick={() => setStep('goal')}>
              Back
            </button>
            <button type="button" className="primary" onClick={() => void confirmPolicy()} disabled={busy || !chosen}>
              OK
            </button>
            {busy && <Progress label="Creating policy" />}
            <ErrorBox error={error} title="Could not use this policy" />
          </div>
        </section>
      )}
      {step === 'vms' && policy && <SelectVms vaultId={props.vaultId} vault={props.vault} policy={policy} onBack={() => setStep('policy')} />}
    </div>
  );
}

/** Discovery (refreshContainers), then the protectable VMs of the vault's region with their encryption state. */
async function discover(vaultId: string): Promise<VmRow[]> {
  const r = await send('POST', withVersion(`${vaultId}/backupFabrics/Azure/refreshContainers`, BK, { $filter: IAAS }));
  if (r.status >= 400) throw toApiError(r.status, r.body);
  await waitForOperation(r, { intervalMs: 500 });
  const [items, vms] = await Promise.all([listAll<ProtectableItem>(withVersion(`${vaultId}/backupProtectableItems`, BK, { $filter: IAAS })), listVms().catch(() => [] as VirtualMachine[])]);
  return items
    .filter((i) => (i.properties?.protectionState ?? 'NotProtected') !== 'Protected')
    .map((item) => {
      const vmId = item.properties?.virtualMachineId ?? '';
      const vm = vms.find((v) => v.id.toLowerCase() === vmId.toLowerCase());
      return { item, vm, key: item.id, name: item.properties?.friendlyName ?? parseId(vmId).name, rg: parseId(vmId).resourceGroup, encryption: vm ? encryptionOf(vm) : undefined };
    });
}

const NEEDED = ['get', 'list', 'backup'];

/** Whether the Backup Management Service holds keys and secrets get/list/backup on each key vault (by lower-case id). */
function useBackupAccess(vaultIds: string[]): Record<string, boolean | undefined> {
  const [out, setOut] = useState<Record<string, boolean | undefined>>({});
  const key = vaultIds.map((x) => x.toLowerCase()).sort().join('|');
  useEffect(() => {
    let live = true;
    void (async () => {
      const bms = await request<{ value: GraphPrincipal[] }>('GET', `/v1.0/servicePrincipals?$filter=${encodeURIComponent(`displayName eq '${BMS_NAME}'`)}`).catch(() => ({ value: [] as GraphPrincipal[] }));
      const oid = bms.value[0]?.id?.toLowerCase();
      const res: Record<string, boolean | undefined> = {};
      await Promise.all(
        key.split('|').filter(Boolean).map(async (id) => {
          try {
            const kv = await request<KeyVault>('GET', withVersion(id, API_VERSIONS.keyVault));
            const e = kv.properties?.accessPolicies?.find((p) => p.objectId.toLowerCase() === oid);
            const has = (ps: string[] | undefined) => NEEDED.every((n) => (ps ?? []).some((p) => p.toLowerCase() === n || p.toLowerCase() === 'all'));
            res[id] = !!e && has(e.permissions.keys) && has(e.permissions.secrets);
          } catch {
            res[id] = undefined; // unknown (no read access to the vault): offer the link
          }
        }),
      );
      if (live) setOut(res);
    })();
    return () => {
      live = false;
    };
  }, [key]);
  return out;
}

function SelectVms(props: { vaultId: string; vault: RecoveryVault | undefined; policy: BackupPolicy; onBack: () => void }) {
  const rows = useAsync(() => discover(props.vaultId), [props.vaultId]);
  const [selected, setSelected] = useState<Set<string>>(new Set());
  const [state, setState] = useState<Record<string, EnableState>>({});
  const [running, setRunning] = useState(false);
  const chosen = (rows.data ?? []).filter((r) => selected.has(r.key));
  const encryptedVaults = [...new Set(chosen.filter((r) => r.encryption?.encrypted).flatMap((r) => r.encryption!.keyVaultIds))];
  const finished = chosen.length > 0 && chosen.every((r) => state[r.key]?.status === 'done' || state[r.key]?.status === 'failed');
  const access = useBackupAccess(encryptedVaults);

  const enable = async () => {
    setRunning(true);
    const init: Record<string, EnableState> = {};
    for (const r of chosen) init[r.key] = { status: 'running' };
    setState(init);
    await Promise.all(
      chosen.map(async (r) => {
        const short = r.item.name.replace(/^vm;/i, '');
        const container = `iaasvmcontainer;${short}`;
        const itemName = `vm;${short}`;
        const path = withVersion(`${props.vaultId}/backupFabrics/Azure/protectionContainers/${encodeURIComponent(container)}/protectedItems/${encodeURIComponent(itemName)}`, BK);
        try {
          const res = await send('PUT', path, { properties: { protectedItemType: 'Microsoft.Compute/virtualMachines', sourceResourceId: r.item.properties?.virtualMachineId, policyId: props.policy.id } });
          if (res.status >= 400) throw toApiError(res.status, res.body);
          const out = await waitForOperation(res, { intervalMs: 500 });
          setState((s) => ({ ...s, [r.key]: { status: 'done', jobId: out.status?.properties?.jobId } }));
        } catch (e) {
          const err = await withJobRecommendation(props.vaultId, e);
          setState((s) => ({ ...s, [r.key]: { status: 'failed', error: err, jobId: err.operation?.properties?.jobId } }));
        }
      }),
    );
    setRunning(false);
  };

  const columns: Column<VmRow>[] = [
    { header: 'Virtual machine name', cell: (r) => r.name },
    { header: 'Resource group', cell: (r) => r.rg },
    {
      header: 'Encryption',
      cell: (r) => (r.encryption?.encrypted ? <span className="badge warn">{r.encryption.label}</span> : (r.encryption?.label ?? 'Unknown')),
    },
    {
      header: 'Status',
      cell: (r) => {
        const s = state[r.key];
        if (!s) return '';
        if (s.status === 'running') return <Progress label={`Enabling backup for ${r.name}`} />;
        if (s.status === 'done') return <StatusBadge status="Backup enabled" />;
        return (
          <>
            <ErrorBox error={s.error} title={`Enable backup failed for ${r.name}`} />
            {s.jobId && <Link to={jobPath(props.vaultId, s.jobId)}>Job details</Link>}
          </>
        );
      },
    },
  ];

  return (
    <section aria-labelledby="vms-title" className="card">
      <h2 id="vms-title">Select virtual machines</h2>
      <p>
        Policy: <strong>{props.policy.name}</strong>. Virtual machines in {props.vault?.location ?? 'the vault’s region'} that are not yet protected:
      </p>
      {rows.loading && <Progress label="Discovering virtual machines" />}
      <ErrorBox error={rows.error} title="Discovery failed" />
      {rows.data && (
        <DataTable
          label="Virtual machines to back up"
          rows={rows.data}
          rowKey={(r) => r.key}
          empty="No unprotected virtual machines in this region."
          columns={columns}
          selectable={{
            selected,
            rowLabel: (r) => `Select ${r.name}`,
            disabled: () => running,
            onToggle: (k, on) => {
              const n = new Set(selected);
              if (on) n.add(k);
              else n.delete(k);
              setSelected(n);
            },
          }}
        />
      )}
      {encryptedVaults.length > 0 || chosen.some((r) => r.encryption?.encrypted) ? (
        <Notice kind="warning">
          <p>
            <strong>Encrypted virtual machines selected.</strong> The backup service ({BMS_NAME}) needs read access to the keys and secrets of their key vault
            {encryptedVaults.length === 1 ? '' : 's'} (get, list and backup) to back them up.
          </p>
          <ul>
            {encryptedVaults.map((kv) => (
              <li key={kv}>
                {access[kv.toLowerCase()] === true ? (
                  <span>
                    {parseId(kv).name}: {BMS_NAME} has access
                  </span>
                ) : (
                  <Link to={resourcePath(kv, 'add_access_policy', { template: 'Azure Backup', principal: BMS_NAME })}>Grant {BMS_NAME} access to {parseId(kv).name}</Link>
                )}
              </li>
            ))}
          </ul>
        </Notice>
      ) : null}
      <div className="actions">
        <button type="button" onClick={props.onBack} disabled={running}>
          Back
        </button>
        <button type="button" className="primary" disabled={!chosen.length || running} onClick={() => void enable()}>
          Enable backup
        </button>
      </div>
      {finished && (
        <Notice kind={chosen.every((r) => state[r.key]?.status === 'done') ? 'success' : 'warning'} role="status">
          {chosen.filter((r) => state[r.key]?.status === 'done').length} of {chosen.length} virtual machine(s) configured for backup.{' '}
          <Link to={resourcePath(props.vaultId, 'backup_items')}>Backup items</Link> · <Link to={resourcePath(props.vaultId, 'backup_jobs')}>Backup jobs</Link>
        </Notice>
      )}
    </section>
  );
}

// ---- backup items -----------------------------------------------------------------------------------------------------

function BackupItems(props: { vaultId: string }) {
  const items = useAsync(() => listItems(props.vaultId), [props.vaultId]);
  return (
    <>
      <div role="toolbar" aria-label="Backup item commands" className="commands">
        <button type="button" onClick={items.reload}>
          Refresh
        </button>
      </div>
      <ErrorBox error={items.error} />
      {items.loading && !items.data ? (
        <Spinner />
      ) : (
        <DataTable
          label="Backup items"
          rows={items.data ?? []}
          rowKey={(r) => r.id}
          empty="No backup items. Select Backup on the vault to protect virtual machines."
          columns={[
            { header: 'Name', cell: (r) => <Link to={itemPath(props.vaultId, r.id)}>{r.properties?.friendlyName ?? r.name}</Link> },
            { header: 'Resource group', cell: (r) => parseId(r.properties?.sourceResourceId ?? r.properties?.virtualMachineId ?? '').resourceGroup },
            { header: 'Protection state', cell: (r) => <StatusBadge status={r.properties?.protectionState} /> },
            { header: 'Last backup status', cell: (r) => <StatusBadge status={r.properties?.lastBackupStatus || 'Not run yet'} /> },
            { header: 'Latest restore point', cell: (r) => fmtTime(r.properties?.lastRecoveryPoint) },
            { header: 'Policy', cell: (r) => r.properties?.policyName ?? '' },
          ]}
        />
      )}
    </>
  );
}

function defaultRetainUntil(): string {
  const d = new Date(Date.now() + 30 * 86400_000);
  return d.toISOString().slice(0, 10);
}

function BackupItem(props: { vaultId: string; itemId: string }) {
  const item = useAsync(() => request<ProtectedItem>('GET', withVersion(props.itemId, BK)), [props.itemId]);
  const rps = useAsync(() => listAll<RecoveryPoint>(withVersion(`${props.itemId}/recoveryPoints`, BK)), [props.itemId]);
  const [panel, setPanel] = useState(false);
  const [retain, setRetain] = useState(defaultRetainUntil);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [jobId, setJobId] = useState<string | undefined>();
  const p = item.data?.properties ?? {};
  const retainError = !/^\d{4}-\d{2}-\d{2}$/.test(retain) || Date.parse(`${retain}T23:59:59Z`) <= Date.now() ? 'Choose a date in the future.' : undefined;

  const backupNow = async () => {
    if (retainError) return;
    setBusy(true);
    setError(undefined);
    setJobId(undefined);
    try {
      const r = await send('POST', withVersion(`${props.itemId}/backup`, BK), { properties: { objectType: 'IaasVMBackupRequest', recoveryPointExpiryTimeInUTC: `${retain}T23:59:59Z` } });
      if (r.status >= 400) throw toApiError(r.status, r.body);
      const out = await waitForOperation(r, { intervalMs: 500 });
      setJobId(out.status?.properties?.jobId ?? 'unknown');
      setPanel(false);
      item.reload();
    } catch (e) {
      setError(await withJobRecommendation(props.vaultId, e));
    } finally {
      setBusy(false);
    }
  };

  return (
    <>
      <div role="toolbar" aria-label="Backup item commands" className="commands">
        <button type="button" className="primary" onClick={() => setPanel(true)} aria-expanded={panel}>
          Backup now
        </button>
        <button type="button" onClick={() => navigate(itemPath(props.vaultId, props.itemId, 'restore'))}>
          Restore VM
        </button>
        <button type="button" onClick={() => navigate(itemPath(props.vaultId, props.itemId, 'restore_keys'))}>
          Restore keys and secrets
        </button>
        <button type="button" onClick={() => (item.reload(), rps.reload())}>
          Refresh
        </button>
      </div>
      {panel && (
        <section className="card" aria-labelledby="bn-title" role="dialog" aria-modal="false">
          <h2 id="bn-title">Backup Now</h2>
          <Field label="Retain Backup Till" error={retainError}>
            {(id, d) => <input id={id} type="date" aria-describedby={d} value={retain} onChange={(e) => setRetain(e.target.value)} />}
          </Field>
          <div className="actions">
            <button type="button" className="primary" disabled={busy || !!retainError} onClick={() => void backupNow()}>
              OK
            </button>
            <button type="button" onClick={() => setPanel(false)} disabled={busy}>
              Cancel
            </button>
            {busy && <Progress label="Triggering backup" />}
            <ErrorBox error={error} title="Backup now failed" />
          </div>
        </section>
      )}
      {!panel && error ? <ErrorBox error={error} title="Backup now failed" /> : null}
      {jobId && (
        <Notice kind="success" role="status">
          Backup triggered. {jobId !== 'unknown' ? <Link to={jobPath(props.vaultId, jobId)}>View the backup job</Link> : <Link to={resourcePath(props.vaultId, 'backup_jobs')}>Backup jobs</Link>}
        </Notice>
      )}
      <ErrorBox error={item.error} />
      <Properties
        label="Backup item"
        items={[
          ['Virtual machine', p.friendlyName],
          ['Protection state', <StatusBadge key="s" status={p.protectionState} />],
          ['Health', p.healthStatus],
          ['Last backup status', p.lastBackupStatus || 'Not run yet'],
          ['Last backup time', fmtTime(p.lastBackupTime)],
          ['Backup policy', p.policyName],
          ['Recovery points', p.extendedInfo?.recoveryPointCount !== undefined ? String(p.extendedInfo.recoveryPointCount) : undefined],
        ]}
      />
      <h2>Restore points</h2>
      <ErrorBox error={rps.error} />
      <DataTable
        label="Restore points"
        rows={rps.data ?? []}
        rowKey={(r) => r.id}
        empty={rps.loading ? 'Loading…' : 'No restore points yet. Run Backup now.'}
        columns={[
          { header: 'Time', cell: (r) => fmtTime(r.properties?.recoveryPointTime) },
          { header: 'Consistency', cell: (r) => r.properties?.recoveryPointType ?? '' },
          { header: 'Encrypted', cell: (r) => (r.properties?.isSourceVMEncrypted ? 'Yes' : 'No') },
          { header: 'Tier', cell: (r) => (r.properties?.recoveryPointTierDetails ?? []).map((t) => t.type).join(', ') },
          {
            header: 'Actions',
            cell: (r) => (
              <span className="row-actions">
                <Link to={itemPath(props.vaultId, props.itemId, 'restore') + `?rp=${encodeURIComponent(r.name)}`}>Restore VM</Link>
                {r.properties?.isSourceVMEncrypted && <Link to={itemPath(props.vaultId, props.itemId, 'restore_keys') + `?rp=${encodeURIComponent(r.name)}`}>Restore keys</Link>}
              </span>
            ),
          },
        ]}
      />
    </>
  );
}

// ---- jobs -------------------------------------------------------------------------------------------------------------

const jobProgress = (j: BackupJob): number | undefined => {
  const x = j.properties?.extendedInfo;
  if (typeof x?.progressPercentage === 'number') return x.progressPercentage;
  const tasks = x?.tasksList ?? [];
  if (!tasks.length) return undefined;
  return tasks.reduce((a, t) => a + (t.status === 'Completed' ? 100 : (t.progressPercentage ?? 0)), 0) / tasks.length;
};

export function AllBackupJobs() {
  const vaults = useAsync(listRecoveryVaults, []);
  return (
    <Blade title="Backup jobs" subtitle="All Recovery Services vaults" crumbs={[{ label: 'Home', to: '/' }]}>
      <ErrorBox error={vaults.error} />
      {vaults.loading && !vaults.data ? <Spinner /> : <JobsList vaultIds={(vaults.data ?? []).map((v) => v.id)} />}
    </Blade>
  );
}

function JobsList(props: { vaultIds: string[] }) {
  const [jobs, setJobs] = useState<{ vaultId: string; job: BackupJob }[]>([]);
  const [next, setNext] = useState<Record<string, string | undefined>>({});
  const [error, setError] = useState<unknown>();
  const [loading, setLoading] = useState(true);
  const [status, setStatus] = useState('');
  const [operation, setOperation] = useState('');
  const key = props.vaultIds.join('|');

  const load = async () => {
    try {
      const pages = await Promise.all(props.vaultIds.map(async (v) => ({ v, p: await getPage<BackupJob>(withVersion(`${v}/backupJobs`, BK)) })));
      setJobs(pages.flatMap(({ v, p }) => p.items.map((job) => ({ vaultId: v, job }))));
      setNext(Object.fromEntries(pages.map(({ v, p }) => [v, p.next])));
      setError(undefined);
    } catch (e) {
      setError(e);
    } finally {
      setLoading(false);
    }
  };
  const loadMore = async () => {
    setLoading(true);
    try {
      for (const [v, n] of Object.entries(next)) {
        if (!n) continue;
        const p = await getPage<BackupJob>(n);
        setJobs((j) => [...j, ...p.items.map((job) => ({ vaultId: v, job }))]);
        setNext((x) => ({ ...x, [v]: p.next }));
      }
    } catch (e) {
      setError(e);
    } finally {
      setLoading(false);
    }
  };
  const loadRef = useRef(load);
  loadRef.current = load;
  useEffect(() => {
    setLoading(true);
    void loadRef.current();
  }, [key]);
  const live = jobs.some((j) => j.job.properties?.status === 'InProgress' || j.job.properties?.status === 'Cancelling');
  useInterval(() => void load(), 2000, live && !Object.values(next).some(Boolean));

  const rows = jobs
    .filter((j) => !status || j.job.properties?.status === status)
    .filter((j) => !operation || j.job.properties?.operation === operation)
    .sort((a, b) => Date.parse(b.job.properties?.startTime ?? '') - Date.parse(a.job.properties?.startTime ?? ''));
  return (
    <>
      <div className="filters">
        <Field label="Status">
          {(id) => (
            <select id={id} value={status} onChange={(e) => setStatus(e.target.value)}>
              <option value="">All</option>
              {['InProgress', 'Completed', 'Failed', 'CompletedWithWarnings', 'Cancelled'].map((x) => (
                <option key={x}>{x}</option>
              ))}
            </select>
          )}
        </Field>
        <Field label="Operation">
          {(id) => (
            <select id={id} value={operation} onChange={(e) => setOperation(e.target.value)}>
              <option value="">All</option>
              {['ConfigureBackup', 'Backup', 'Restore', 'DisableBackup', 'DeleteBackupData'].map((x) => (
                <option key={x}>{x}</option>
              ))}
            </select>
          )}
        </Field>
        <button type="button" onClick={() => void load()}>
          Refresh
        </button>
      </div>
      <ErrorBox error={error} />
      {loading && !jobs.length ? (
        <Spinner />
      ) : (
        <DataTable
          label="Backup jobs"
          rows={rows}
          rowKey={(r) => r.job.id}
          empty="No backup jobs."
          moreOnServer={Object.values(next).some(Boolean) ? { onLoadMore: () => void loadMore(), loading } : undefined}
          columns={[
            { header: 'Workload name', cell: (r) => <Link to={jobPath(r.vaultId, r.job.name)}>{r.job.properties?.entityFriendlyName ?? r.job.name}</Link> },
            { header: 'Operation', cell: (r) => r.job.properties?.operation ?? '' },
            { header: 'Status', cell: (r) => <StatusBadge status={r.job.properties?.status} /> },
            {
              header: 'Progress',
              cell: (r) => (r.job.properties?.status === 'InProgress' ? <Progress label={`${r.job.properties?.operation ?? 'Job'} ${r.job.properties?.entityFriendlyName ?? ''}`} value={jobProgress(r.job)} /> : ''),
            },
            { header: 'Start time', cell: (r) => fmtTime(r.job.properties?.startTime) },
            { header: 'Duration', cell: (r) => fmtDuration(r.job.properties?.duration) },
            ...(props.vaultIds.length > 1 ? [{ header: 'Vault', cell: (r: { vaultId: string }) => parseId(r.vaultId).name }] : []),
          ]}
        />
      )}
    </>
  );
}

function JobDetails(props: { vaultId: string; jobName: string }) {
  const path = withVersion(`${props.vaultId}/backupJobs/${props.jobName}`, BK);
  const job = useAsync(() => request<BackupJob>('GET', path), [path]);
  const [cancelError, setCancelError] = useState<unknown>();
  const p = job.data?.properties ?? {};
  const live = p.status === 'InProgress' || p.status === 'Cancelling';
  useInterval(job.reload, 1500, live);
  const bag = p.extendedInfo?.propertyBag ?? {};
  const template = bag['Template Blob Uri'];
  const cancellable = (p.actionsInfo ?? []).some((a) => a === 'Cancellable' || a === 1);
  const cancel = async () => {
    setCancelError(undefined);
    try {
      const r = await send('POST', withVersion(`${props.vaultId}/backupJobs/${props.jobName}/cancel`, BK));
      if (r.status >= 400) throw toApiError(r.status, r.body);
      job.reload();
    } catch (e) {
      setCancelError(e);
    }
  };
  return (
    <>
      <div role="toolbar" aria-label="Job commands" className="commands">
        <button type="button" onClick={job.reload}>
          Refresh
        </button>
        {cancellable && live && (
          <button type="button" onClick={() => void cancel()}>
            Cancel job
          </button>
        )}
        {p.operation === 'Restore' && p.status === 'Completed' && template && (
          <button type="button" className="primary" onClick={() => navigate(jobPath(props.vaultId, props.jobName, 'deploy'))}>
            Deploy Template
          </button>
        )}
      </div>
      <ErrorBox error={cancelError} title="Could not cancel the job" />
      <ErrorBox error={job.error} />
      {!job.data && job.loading && <Spinner />}
      {job.data && (
        <>
          <Properties
            label="Job"
            items={[
              ['Workload name', p.entityFriendlyName],
              ['Operation', p.operation],
              ['Status', <StatusBadge key="s" status={p.status} />],
              ['Start time', fmtTime(p.startTime)],
              ['End time', fmtTime(p.endTime)],
              ['Duration', fmtDuration(p.duration)],
              ['Activity ID', p.activityId],
            ]}
          />
          {live && <Progress label="Job progress" value={jobProgress(job.data)} />}
          {(p.errorDetails ?? []).length > 0 && (
            <section aria-labelledby="job-errors" className="card">
              <h2 id="job-errors">Error details</h2>
              {(p.errorDetails ?? []).map((e, i) => (
                <div key={i} className="error" role="alert">
                  <strong>{e.errorTitle ?? 'Error'}</strong>
                  {e.errorCode !== undefined && <span className="code"> ({e.errorCode})</span>}
                  <p className="message">{e.errorString}</p>
                  {(e.recommendations ?? []).map((r, k) => (
                    <p key={k} className="recommendation">
                      <strong>Recommendation: </strong>
                      {r}
                    </p>
                  ))}
                </div>
              ))}
            </section>
          )}
          <h2>Sub tasks</h2>
          <DataTable
            label="Sub tasks"
            rows={p.extendedInfo?.tasksList ?? []}
            rowKey={(t) => t.taskId ?? ''}
            empty="No sub tasks."
            columns={[
              { header: 'Name', cell: (t) => t.taskId ?? '' },
              { header: 'Status', cell: (t) => <StatusBadge status={t.status} /> },
              { header: 'Progress', cell: (t) => (t.status === 'InProgress' ? <Progress label={t.taskId ?? 'Task'} value={t.progressPercentage} /> : t.status === 'Completed' ? '100%' : '') },
              { header: 'Duration', cell: (t) => fmtDuration(t.duration) },
            ]}
          />
          {Object.keys(bag).length > 0 && (
            <>
              <h2>Details</h2>
              <Properties
                items={Object.entries(bag).map(([k, v]): [string, ReactNode] => [k, /^\/subscriptions\/[^/]+\/resourceGroups\/[^/]+\/providers\/Microsoft\.Compute\/virtualMachines\/[^/]+$/i.test(v) ? <Link to={resourcePath(v)}>{v}</Link> : v])}
                label="Job details"
              />
            </>
          )}
        </>
      )}
    </>
  );
}
