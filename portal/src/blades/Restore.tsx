/**
 * Restore blades of a backup item: Restore VM (Restore disks to a staging storage account, or Create virtual machine),
 * Restore keys and secrets (rsvault's one-step `restoreKeys`), and Deploy Template on a finished restore job.
 * Wire: shared/design/reference/azure-backup-api.md §1.5–1.7, §2.10; the server's src/recovery/restore.ts.
 */
import { useRef, useState, type ReactNode } from 'react';
import { API_VERSIONS, ApiError, listAll, parseId, blobRelative, relative, request, send, toApiError, waitForOperation, withVersion, type OperationStatus, type Response } from '../api';
import { session } from '../session';
import { Link, resourcePath } from '../router';
import type { BackupJob, GraphPrincipal, KeyVault, ProtectedItem, RecoveryPoint, StorageAccount } from '../wire';
import { ErrorBox, Field, Notice, Progress, Properties, Spinner, StatusBadge, fmtTime, useAsync, useInterval, ResourceGroupField } from '../ui';
import { listKeyVaults } from './KeyVaults';
import { listStorageAccounts } from './Storage';
import { useResourceGroups } from './ResourceGroups';
import { itemPath, jobPath, withJobRecommendation } from './RecoveryVaults';

const BK = API_VERSIONS.backup;
const BMS_NAME = 'Backup Management Service';
type Kind = 'RestoreDisks' | 'AlternateLocation';
type FieldKey = 'account' | 'vmName' | 'rg' | 'keys';

function listPoints(itemId: string): Promise<RecoveryPoint[]> {
  return listAll<RecoveryPoint>(withVersion(`${itemId}/recoveryPoints`, BK));
}

const pointLabel = (x: RecoveryPoint) => `${fmtTime(x.properties?.recoveryPointTime)} (${x.properties?.recoveryPointType ?? 'restore point'})`;

/**
 * A restore answers 202 + Azure-AsyncOperation; the operation lasts as long as its job, but its status names the job
 * as soon as the job exists, so the blade can hand over to the job at once.
 */
async function jobOfOperation(r: Response<unknown>): Promise<string> {
  const url = r.headers.get('azure-asyncoperation');
  if (!url) return 'unknown';
  for (let i = 0; i < 600; i++) {
    const st = await request<OperationStatus>('GET', relative(url));
    if (st.properties?.jobId) return st.properties.jobId;
    if (st.status === 'Failed' || st.status === 'Canceled') throw toApiError(200, { error: st.error ?? { code: 'OperationFailed', message: 'The restore failed to start.' } });
    if (st.status !== 'InProgress') return 'unknown';
    await new Promise((res) => setTimeout(res, 300));
  }
  return 'unknown';
}

/** Which control an API error of the restore request belongs to (its `target`, or its code). */
function fieldOf(e: ApiError): FieldKey | undefined {
  const t = (e.target ?? '').toLowerCase();
  if (e.code === 'UserErrorStorageAccountNotFound' || t === 'properties.storageaccountid') return 'account';
  if (e.code === 'UserErrorTargetVirtualMachineExists' || t === 'properties.targetvirtualmachineid') return 'vmName';
  if (e.code === 'UserErrorBackupServiceNotAuthorized' || e.code === 'ResourceGroupNotFound' || t === 'properties.targetresourcegroupid') return 'rg';
  if (t.startsWith('properties.encryptiondetails') || /^UserError(KeyAndSecretNotFound|KeyVaultNotFound|KeyVaultPermissionsNotConfigured)$/.test(e.code)) return 'keys';
  return undefined;
}

/** A restore job followed live from the blade that started it. */
export function JobWatch(props: { vaultId: string; jobId: string; label: string; children?: (job: BackupJob) => ReactNode }) {
  const path = withVersion(`${props.vaultId}/backupJobs/${props.jobId}`, BK);
  const job = useAsync(() => request<BackupJob>('GET', path), [path]);
  const p = job.data?.properties;
  const live = !p || p.status === 'InProgress' || p.status === 'Cancelling';
  useInterval(job.reload, 1000, live && !job.error);
  return (
    <Notice kind={p?.status === 'Failed' ? 'warning' : p?.status === 'Completed' ? 'success' : 'info'} role="status">
      <p>
        {props.label} <StatusBadge status={p?.status ?? 'InProgress'} /> <Link to={jobPath(props.vaultId, props.jobId)}>View the restore job</Link>
      </p>
      {live && <Progress label="Restore progress" value={p?.extendedInfo?.progressPercentage} />}
      {p?.status === 'Failed' && (p.errorDetails ?? []).map((e, i) => <ErrorBox key={i} title="Restore failed" error={new ApiError(400, e.errorTitle ?? 'Error', e.errorString ?? '', e.recommendations?.join(' '))} />)}
      {job.data && props.children?.(job.data)}
    </Notice>
  );
}

// ---- Restore VM -------------------------------------------------------------------------------------------------------

export function RestoreVm(props: { vaultId: string; itemId: string; query: URLSearchParams }) {
  const s = session()!;
  const q = props.query;
  const item = useAsync(() => request<ProtectedItem>('GET', withVersion(props.itemId, BK)), [props.itemId]);
  const rps = useAsync(() => listPoints(props.itemId), [props.itemId]);
  const accounts = useAsync(listStorageAccounts, []);
  const vaults = useAsync(listKeyVaults, []);
  const groups = useResourceGroups();
  const [rp, setRp] = useState(q.get('rp') ?? '');
  const [kind, setKind] = useState<Kind>(q.get('type') === 'AlternateLocation' ? 'AlternateLocation' : 'RestoreDisks');
  const [asBlobs, setAsBlobs] = useState(false);
  const [account, setAccount] = useState(q.get('storageAccount') ?? '');
  const [targetRg, setTargetRg] = useState('');
  const [vmName, setVmName] = useState('');
  const [keys, setKeys] = useState<'recorded' | 'restored'>(q.get('secretUrl') ? 'restored' : 'recorded');
  const [secretUrl, setSecretUrl] = useState(q.get('secretUrl') ?? '');
  const [kekUrl, setKekUrl] = useState(q.get('kekUrl') ?? '');
  const [keyVault, setKeyVault] = useState(q.get('keyVault') ?? '');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<ApiError | undefined>();
  const [jobId, setJobId] = useState<string | undefined>();
  const [grant, setGrant] = useState<{ busy?: boolean; error?: unknown; done?: string[] }>({});

  const point = (rps.data ?? []).find((x) => x.name === rp) ?? rps.data?.[0];
  const encrypted = !!point?.properties?.isSourceVMEncrypted;
  const sourceId = item.data?.properties?.sourceResourceId ?? item.data?.properties?.virtualMachineId ?? '';
  const vmFriendly = item.data?.properties?.friendlyName ?? parseId(sourceId).name;
  const rgName = targetRg || parseId(sourceId).resourceGroup || groups.data?.[0]?.name || '';
  const rgId = `/subscriptions/${s.subscriptionId}/resourceGroups/${rgName}`;
  const keyVaultId = keyVault || vaults.data?.find((v) => secretUrl.toLowerCase().startsWith(`https://${v.name.toLowerCase()}.`))?.id || '';
  const restoredKeys = encrypted && keys === 'restored';

  const vmNameError = kind === 'AlternateLocation' && vmName && !/^[a-zA-Z0-9][a-zA-Z0-9-_.]{0,62}$/.test(vmName) ? 'Use 1–63 letters, digits, hyphens, underscores or periods.' : undefined;
  const secretError = restoredKeys && secretUrl && !/^https:\/\/[^/]+\/secrets\/[^/]+\/[^/]+$/i.test(secretUrl) ? 'A versioned secret URL: https://<vault>.vault…/secrets/<name>/<version>.' : undefined;
  const kekError = restoredKeys && kekUrl && !/^https:\/\/[^/]+\/keys\/[^/]+\/[^/]+$/i.test(kekUrl) ? 'A versioned key URL: https://<vault>.vault…/keys/<name>/<version>.' : undefined;
  const ready =
    !!point && !!account && (kind === 'RestoreDisks' || (!!vmName && !vmNameError)) && (!restoredKeys || (!!secretUrl && !secretError && !kekError && !!keyVaultId)) && !!rgName;
  const errAt = (k: FieldKey | undefined) => (error && fieldOf(error) === k ? error : undefined);
  const restoreKeysLink = itemPath(props.vaultId, props.itemId, 'restore_keys') + (point ? `?rp=${encodeURIComponent(point.name)}` : '');

  const restore = async () => {
    if (!point || !ready) return;
    setBusy(true);
    setError(undefined);
    setJobId(undefined);
    try {
      const body = {
        properties: {
          objectType: 'IaasVMRestoreRequest',
          recoveryPointId: point.name,
          recoveryType: kind,
          sourceResourceId: sourceId,
          storageAccountId: account,
          ...(kind === 'AlternateLocation' || !asBlobs ? { targetResourceGroupId: rgId } : {}),
          ...(kind === 'AlternateLocation' ? { targetVirtualMachineId: `${rgId}/providers/Microsoft.Compute/virtualMachines/${vmName}` } : {}),
          region: item.data?.location ?? point.location,
          createNewCloudService: false,
          originalStorageAccountOption: false,
          // Encrypted: the key and secret recorded in the restore point unless restored ones are given.
          encryptionDetails: !encrypted
            ? { encryptionEnabled: false }
            : restoredKeys
              ? { encryptionEnabled: true, secretKeyUrl: secretUrl, secretKeyVaultId: keyVaultId, ...(kekUrl ? { kekUrl, kekVaultId: keyVaultId } : {}) }
              : undefined,
        },
      };
      const r = await send('POST', withVersion(`${point.id}/restore`, BK), body);
      if (r.status >= 400) throw toApiError(r.status, r.body);
      setJobId(await jobOfOperation(r));
      setGrant({});
    } catch (e) {
      setError(await withJobRecommendation(props.vaultId, e));
    } finally {
      setBusy(false);
    }
  };

  /** Contributor for the Backup Management Service on the target group and on key vaults outside it (Create VM). */
  const grantAccess = async () => {
    setGrant({ busy: true });
    try {
      const bms = await request<{ value: GraphPrincipal[] }>('GET', `/v1.0/servicePrincipals?$filter=${encodeURIComponent(`displayName eq '${BMS_NAME}'`)}`);
      const principalId = bms.value[0]?.id;
      if (!principalId) throw new ApiError(404, 'PrincipalNotFound', `The service principal '${BMS_NAME}' was not found in the directory.`);
      const roles = await request<{ value: { id: string }[] }>('GET', withVersion(`/subscriptions/${s.subscriptionId}/providers/Microsoft.Authorization/roleDefinitions`, API_VERSIONS.authorization, { $filter: "roleName eq 'Contributor'" }));
      const roleDefinitionId = roles.value[0]?.id;
      if (!roleDefinitionId) throw new ApiError(404, 'RoleDefinitionDoesNotExist', 'The Contributor role definition was not found.');
      let vaultIds: string[] = [];
      if (restoredKeys) vaultIds = [keyVaultId];
      else if (encrypted && point) {
        const full = await request<RecoveryPoint>('GET', withVersion(point.id, BK));
        const ks = full.properties?.keyAndSecret;
        vaultIds = [ks?.bekDetails?.secretVaultId, ks?.kekDetails?.keyVaultId].filter((x): x is string => !!x && x.startsWith('/'));
      }
      const scopes = [rgId, ...new Set(vaultIds.filter((v) => !v.toLowerCase().startsWith(`${rgId.toLowerCase()}/`)))];
      for (const scope of scopes) {
        await request('PUT', withVersion(`${scope}/providers/Microsoft.Authorization/roleAssignments/${crypto.randomUUID()}`, API_VERSIONS.authorization), {
          properties: { roleDefinitionId, principalId, principalType: 'ServicePrincipal' },
        });
      }
      setGrant({ done: scopes });
    } catch (e) {
      setGrant({ error: e });
    }
  };

  const returnHere = () => {
    const qs = new URLSearchParams({ type: kind, ...(point ? { rp: point.name } : {}), ...(restoredKeys ? { secretUrl, kekUrl, keyVault: keyVaultId } : {}) });
    return `${itemPath(props.vaultId, props.itemId, 'restore')}?${qs.toString()}`;
  };

  const rgError = errAt('rg');
  return (
    <div className="form">
      <ErrorBox error={item.error ?? rps.error} />
      <p>
        Restore <strong>{vmFriendly || '…'}</strong> from a restore point. <em>Restore disks</em> writes the disks, the VM configuration, the encryption
        details and a template to a staging storage account; <em>Deploy Template</em> on the finished job creates the VM. <em>Create virtual machine</em>{' '}
        does both, as the {BMS_NAME}.
      </p>
      <Field label="Restore point">
        {(id) => (
          <select id={id} value={point?.name ?? ''} onChange={(e) => setRp(e.target.value)}>
            {(rps.data ?? []).map((x) => (
              <option key={x.id} value={x.name}>
                {pointLabel(x)}
              </option>
            ))}
          </select>
        )}
      </Field>
      {rps.loading && !rps.data && <Spinner label="Loading restore points…" />}
      {rps.data && rps.data.length === 0 && <Notice kind="warning">No restore points yet. Run Backup now first.</Notice>}
      <fieldset>
        <legend>Restore configuration</legend>
        <label className="check-row">
          <input type="radio" name="restore-kind" checked={kind === 'AlternateLocation'} onChange={() => setKind('AlternateLocation')} /> Create virtual machine
        </label>
        <label className="check-row">
          <input type="radio" name="restore-kind" checked={kind === 'RestoreDisks'} onChange={() => setKind('RestoreDisks')} /> Restore disks
        </label>
      </fieldset>
      {encrypted && kind === 'AlternateLocation' && (
        <Notice kind="warning">
          This virtual machine is encrypted. Creating a VM from its backup needs the {BMS_NAME} to have a role on the target resource group and deploy access
          to the key vault; <em>Restore disks</em> then <em>Deploy Template</em> needs neither.
        </Notice>
      )}
      {kind === 'AlternateLocation' && (
        <Field label="Virtual machine name" error={vmNameError}>
          {(id, d) => <input id={id} aria-describedby={d} aria-invalid={!!vmNameError || !!errAt('vmName')} value={vmName} onChange={(e) => setVmName(e.target.value)} />}
        </Field>
      )}
      <ErrorBox error={errAt('vmName')} title="Restore failed" />
      {kind === 'RestoreDisks' && (
        <Field label="Restore disks as">
          {(id) => (
            <select id={id} value={asBlobs ? 'blobs' : 'managed'} onChange={(e) => setAsBlobs(e.target.value === 'blobs')}>
              <option value="managed">Managed disks in a resource group</option>
              <option value="blobs">Blobs in the staging storage account</option>
            </select>
          )}
        </Field>
      )}
      {(kind === 'AlternateLocation' || !asBlobs) && (
        <ResourceGroupField groups={groups.data} value={rgName} onChange={setTargetRg} hint={kind === 'AlternateLocation' ? 'Where the new VM and its disks are created.' : 'Where the restored managed disks are created.'} />
      )}
      {rgError && (
        <div className="field-problem">
          <ErrorBox error={rgError} title="Restore failed" />
          {rgError.code === 'UserErrorBackupServiceNotAuthorized' && (
            <div className="actions">
              <button type="button" onClick={() => void grantAccess()} disabled={grant.busy || !!grant.done}>
                Grant the {BMS_NAME} access
              </button>
              <span className="hint">Contributor on {rgName} (and on key vaults outside it). Or restore the disks instead.</span>
              {grant.busy && <Progress label="Granting access" />}
              <ErrorBox error={grant.error} title="Could not grant access" />
              {grant.done && (
                <Notice kind="success" role="status">
                  Access granted: {BMS_NAME} is Contributor on {grant.done.map((x) => parseId(x).name).join(', ')}. Select Restore again.
                </Notice>
              )}
            </div>
          )}
        </div>
      )}
      <Field label="Staging location" hint="The storage account that receives the VM configuration, the encryption details and the template (and the disks when restored as blobs).">
        {(id, d) => (
          <select id={id} aria-describedby={d} aria-invalid={!!errAt('account')} value={account} onChange={(e) => setAccount(e.target.value)}>
            <option value="">Select a storage account</option>
            {(accounts.data ?? []).map((a: StorageAccount) => (
              <option key={a.id} value={a.id}>
                {a.name} ({parseId(a.id).resourceGroup}, {a.location})
              </option>
            ))}
          </select>
        )}
      </Field>
      <p className="hint">
        <Link to={`/create/storageaccount?${new URLSearchParams({ returnTo: returnHere(), resourceGroup: rgName }).toString()}`}>Create a storage account</Link>
      </p>
      <ErrorBox error={accounts.error} title="Storage accounts are not available" />
      <ErrorBox error={errAt('account')} title="Restore failed" />
      {encrypted && (
        <fieldset>
          <legend>Encryption keys</legend>
          <label className="check-row">
            <input type="radio" name="restore-keys" checked={keys === 'recorded'} onChange={() => setKeys('recorded')} /> Key and secret recorded in the restore point
          </label>
          <label className="check-row">
            <input type="radio" name="restore-keys" checked={keys === 'restored'} onChange={() => setKeys('restored')} /> Restored key and secret
          </label>
          {restoredKeys && (
            <>
              <Field label="Secret URL" error={secretError}>
                {(id, d) => <input id={id} aria-describedby={d} aria-invalid={!!secretError} value={secretUrl} onChange={(e) => setSecretUrl(e.target.value.trim())} />}
              </Field>
              <Field label="Key encryption key URL" hint="Leave empty for a VM encrypted with a BEK only." error={kekError}>
                {(id, d) => <input id={id} aria-describedby={d} aria-invalid={!!kekError} value={kekUrl} onChange={(e) => setKekUrl(e.target.value.trim())} />}
              </Field>
              <Field label="Key vault">
                {(id) => (
                  <select id={id} value={keyVaultId} onChange={(e) => setKeyVault(e.target.value)}>
                    <option value="">Select a key vault</option>
                    {(vaults.data ?? []).map((v: KeyVault) => (
                      <option key={v.id} value={v.id}>
                        {v.name}
                      </option>
                    ))}
                  </select>
                )}
              </Field>
            </>
          )}
          <p className="hint">
            Key or secret deleted, or the key vault gone? <Link to={restoreKeysLink}>Restore keys and secrets</Link> from the restore point first.
          </p>
          <ErrorBox error={errAt('keys')} title="Restore failed" />
          {errAt('keys') && <Link to={restoreKeysLink}>Restore keys and secrets from this restore point</Link>}
        </fieldset>
      )}
      <div className="actions">
        <button type="button" className="primary" disabled={!ready || busy} onClick={() => void restore()}>
          Restore
        </button>
        {busy && <Progress label="Triggering restore" />}
        <ErrorBox error={error && !fieldOf(error) ? error : undefined} title="Restore failed" />
        {jobId && jobId !== 'unknown' && (
          <JobWatch vaultId={props.vaultId} jobId={jobId} label={kind === 'AlternateLocation' ? 'Creating the virtual machine…' : 'Restoring the disks…'}>
            {(j) =>
              j.properties?.status === 'Completed' ? (
                <p>
                  {j.properties.extendedInfo?.propertyBag?.['Target VM Id'] ? (
                    <Link to={resourcePath(j.properties.extendedInfo.propertyBag['Target VM Id'])}>Open the virtual machine</Link>
                  ) : j.properties.extendedInfo?.propertyBag?.['Template Blob Uri'] ? (
                    <Link to={jobPath(props.vaultId, j.name, 'deploy')}>Deploy Template</Link>
                  ) : null}
                </p>
              ) : null
            }
          </JobWatch>
        )}
        {jobId === 'unknown' && (
          <Notice kind="success" role="status">
            Restore triggered. <Link to={resourcePath(props.vaultId, 'backup_jobs')}>Backup jobs</Link>
          </Notice>
        )}
      </div>
    </div>
  );
}

// ---- Restore keys and secrets -----------------------------------------------------------------------------------------

interface RestoreKeysResult {
  keyVaultId: string;
  keyUrl?: string;
  secretUrl: string;
  nextCommand?: string;
}

/** rsvault: the recovery point's KEK (then its BEK secret, wrapped, with the ADE tags) into a key vault, as the caller. */
export function RestoreKeys(props: { vaultId: string; itemId: string; query: URLSearchParams }) {
  const rps = useAsync(() => listPoints(props.itemId), [props.itemId]);
  const vaults = useAsync(listKeyVaults, []);
  const [rp, setRp] = useState(props.query.get('rp') ?? '');
  const [kv, setKv] = useState('');
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [result, setResult] = useState<RestoreKeysResult | undefined>();
  const points = (rps.data ?? []).filter((x) => x.properties?.isSourceVMEncrypted);
  const point = points.find((x) => x.name === rp) ?? points[0];

  const run = async () => {
    if (!point || !kv) return;
    setBusy(true);
    setError(undefined);
    setResult(undefined);
    try {
      setResult(await request<RestoreKeysResult>('POST', withVersion(`${point.id}/restoreKeys`, BK), { targetKeyVaultId: kv }));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const next = result && point ? `${itemPath(props.vaultId, props.itemId, 'restore')}?${new URLSearchParams({ rp: point.name, secretUrl: result.secretUrl, kekUrl: result.keyUrl ?? '', keyVault: result.keyVaultId }).toString()}` : '';

  return (
    <div className="form">
      <ErrorBox error={rps.error} />
      <p>
        Restores the key encryption key of an encrypted VM's restore point (from its Key Vault backup), then its disk encryption secret (the wrapped BEK, content
        type <code>Wrapped BEK</code>, with the ADE tags) into a key vault, in that order. It runs as you: you need keys get/restore and secrets get/set/restore
        on the target vault. Use it when the original key, secret or key vault is gone, then restore with the URLs it gives.
      </p>
      <Field label="Restore point">
        {(id) => (
          <select id={id} value={point?.name ?? ''} onChange={(e) => setRp(e.target.value)}>
            {points.map((x) => (
              <option key={x.id} value={x.name}>
                {pointLabel(x)}
              </option>
            ))}
          </select>
        )}
      </Field>
      {rps.data && points.length === 0 && <Notice kind="warning">No restore point of this item is of an encrypted VM: there is no key or secret to restore.</Notice>}
      <Field label="Target key vault">
        {(id) => (
          <select id={id} value={kv} onChange={(e) => setKv(e.target.value)}>
            <option value="">Select a key vault</option>
            {(vaults.data ?? []).map((v) => (
              <option key={v.id} value={v.id}>
                {v.name}
              </option>
            ))}
          </select>
        )}
      </Field>
      <ErrorBox error={vaults.error} title="Key vaults are not available" />
      <div className="actions">
        <button type="button" className="primary" disabled={!point || !kv || busy} onClick={() => void run()}>
          Restore keys and secrets
        </button>
        {busy && <Progress label="Restoring the key and secret" />}
        <ErrorBox error={error} title="Could not restore the key and secret" />
        {result && (
          <Notice kind="success" role="status">
            <p>
              Key and secret restored into <strong>{parseId(result.keyVaultId).name}</strong>.
            </p>
            <Properties
              label="Restored key and secret"
              items={[
                ['Key URL', result.keyUrl ?? 'None (BEK only)'],
                ['Secret URL', result.secretUrl],
                ['Key vault', result.keyVaultId],
              ]}
            />
            <Link to={next}>Restore VM with this key and secret</Link>
          </Notice>
        )}
      </div>
    </div>
  );
}

// ---- Deploy Template --------------------------------------------------------------------------------------------------

interface Template {
  parameters?: Record<string, { type?: string; defaultValue?: unknown; metadata?: { description?: string } }>;
  resources?: { type?: string; name?: string }[];
}
interface Deployment {
  id: string;
  properties?: { provisioningState?: string; outputResources?: { id: string }[]; error?: { code?: string; message?: string; details?: unknown[] } };
}

/** Deploy Template on a finished restore job: an ARM deployment of the template the restore wrote (templateLink). */
export function DeployTemplate(props: { vaultId: string; jobName: string }) {
  const s = session()!;
  const job = useAsync(() => request<BackupJob>('GET', withVersion(`${props.vaultId}/backupJobs/${props.jobName}`, BK)), [props.jobName]);
  const bag = job.data?.properties?.extendedInfo?.propertyBag ?? {};
  const uri = bag['Template Blob Uri'];
  const template = useAsync(() => (uri ? request<Template>('GET', blobRelative(uri)) : Promise.resolve(undefined)), [uri]);
  const groups = useResourceGroups();
  const [rg, setRg] = useState('');
  const [values, setValues] = useState<Record<string, string>>({});
  const [nameError, setNameError] = useState<string | undefined>();
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>();
  const [details, setDetails] = useState<ApiError[]>([]);
  const [done, setDone] = useState<Deployment | undefined>();
  const started = useRef(false);
  const group = rg || bag['Target Resource Group'] || parseId(props.vaultId).resourceGroup || groups.data?.[0]?.name || '';
  const params = Object.entries(template.data?.parameters ?? {}).filter(([, p]) => !p.type || /^string$/i.test(p.type));
  const value = (k: string) => values[k] ?? String(template.data?.parameters?.[k]?.defaultValue ?? '');
  const vmName = value('VirtualMachineName');

  const deploy = async () => {
    if (!uri || started.current) return;
    started.current = true;
    setBusy(true);
    setError(undefined);
    setDetails([]);
    setNameError(undefined);
    setDone(undefined);
    try {
      if (vmName) {
        const existing = await send('GET', withVersion(`/subscriptions/${s.subscriptionId}/resourceGroups/${encodeURIComponent(group)}/providers/Microsoft.Compute/virtualMachines/${encodeURIComponent(vmName)}`, API_VERSIONS.compute));
        if (existing.status === 200) {
          setNameError(`A virtual machine named ${vmName} already exists in ${group}. Choose another name: the template creates a new VM.`);
          return;
        }
      }
      const name = `restore-${props.jobName.slice(0, 8)}-${Date.now().toString(36)}`;
      const path = withVersion(`/subscriptions/${s.subscriptionId}/resourcegroups/${encodeURIComponent(group)}/providers/Microsoft.Resources/deployments/${name}`, API_VERSIONS.resources);
      const parameters = Object.fromEntries(params.map(([k]) => [k, { value: value(k) }]).filter(([, v]) => (v as { value: string }).value !== ''));
      const r = await send<Deployment>('PUT', path, { properties: { mode: 'Incremental', templateLink: { uri }, parameters } });
      if (r.status >= 400) throw toApiError(r.status, r.body);
      try {
        await waitForOperation(r, { intervalMs: 500 });
      } catch (e) {
        const d = await request<Deployment>('GET', path).catch(() => undefined);
        setDetails((d?.properties?.error?.details ?? []).map((x) => toApiError(400, { error: x })));
        throw e;
      }
      setDone(await request<Deployment>('GET', path));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
      started.current = false;
    }
  };

  const download = () => {
    if (!template.data) return;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([JSON.stringify(template.data, null, 2)], { type: 'application/json' }));
    a.download = uri?.split('/').pop() ?? 'template.json';
    a.click();
    URL.revokeObjectURL(a.href);
  };

  return (
    <div className="form">
      <ErrorBox error={job.error} />
      {job.data && !uri && <Notice kind="warning">This job has no template: only a completed Restore disks job writes one.</Notice>}
      <Properties
        label="Template"
        items={[
          ['Restored from', job.data?.properties?.entityFriendlyName],
          ['Restore job', job.data ? <Link to={jobPath(props.vaultId, props.jobName)}>{fmtTime(job.data.properties?.startTime)}</Link> : undefined],
          ['Template', uri],
          ['Resources', (template.data?.resources ?? []).map((x) => x.type?.split('/').pop()).join(', ')],
        ]}
      />
      <ErrorBox error={template.error} title="Could not read the template" />
      {template.data && (
        <div className="actions">
          <button type="button" onClick={download}>
            Download template
          </button>
        </div>
      )}
      <ResourceGroupField groups={groups.data} value={group} onChange={setRg} />
      {params.map(([k, p]) => (
        <Field key={k} label={k === 'VirtualMachineName' ? 'Virtual machine name' : k === 'location' ? 'Location' : k} hint={p.metadata?.description} error={k === 'VirtualMachineName' ? nameError : undefined}>
          {(id, d) => (
            <input
              id={id}
              aria-describedby={d}
              aria-invalid={k === 'VirtualMachineName' && !!nameError}
              value={value(k)}
              onChange={(e) => {
                setValues((v) => ({ ...v, [k]: e.target.value }));
                if (k === 'VirtualMachineName') setNameError(undefined);
              }}
            />
          )}
        </Field>
      ))}
      <div className="actions">
        <button type="button" className="primary" disabled={!uri || !template.data || busy || !group} onClick={() => void deploy()}>
          Deploy
        </button>
        {busy && <Progress label="Deploying template" />}
        <ErrorBox error={error} title="Deployment failed" />
        {details.map((d, i) => (
          <ErrorBox key={i} error={d} title={d.target ? `Resource ${d.target}` : 'Resource failed'} />
        ))}
        {done && (
          <Notice kind="success" role="status">
            <p>Deployment succeeded.</p>
            <ul>
              {(done.properties?.outputResources ?? []).map((r) => (
                <li key={r.id}>
                  {/\/virtualMachines\//i.test(r.id) ? <Link to={resourcePath(r.id)}>{parseId(r.id).name}</Link> : `${parseId(r.id).type}/${parseId(r.id).name}`}
                </li>
              ))}
            </ul>
          </Notice>
        )}
      </div>
    </div>
  );
}

