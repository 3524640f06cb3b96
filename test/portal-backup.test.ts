/**
 * The portal's backup walkthrough in a real browser (Debian Chromium + playwright-core, headless): create a Recovery
 * Services vault; Backup → Backup goal (Azure / Virtual machine) → Backup policy (DefaultPolicy's details; Create new
 * with validation) → select VMs (encrypted ones marked, with the key-vault access message and its link) → Enable backup,
 * where the missing key-vault permission and the BEK-only VM fail with their recommendation; the link grants the
 * "Azure Backup" template to the Backup Management Service; Enable backup again; Backup items → Backup now; the job
 * is watched to completion in Job details (tasks); the failed ConfigureBackup job shows its error and recommendation;
 * the restore point is listed. Then the restore: Restore VM → Restore disks with a staging storage account created from
 * the blade → the restore job completes (its property bag names the outputs) → Deploy Template → the VM exists,
 * encrypted with the recovery point's key and secret; Restore keys and secrets into another key vault; Create virtual
 * machine with those keys → UserErrorBackupServiceNotAuthorized with its recommendation next to the resource group →
 * grant the Backup Management Service access → Restore again → the VM is created. Screenshots of each blade go to
 * test-results/portal/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import type { Page } from 'playwright-core';
import { startTestServer, type TestServer } from './helpers/server.js';
import { createUser, launchBrowser, shot, signInAsUser, type PortalBrowser } from './helpers/portal.js';
import { Fixture, KV_API, env, MiB } from './recovery-fixture.js';

const RG = 'rg-bk-portal';
const sfx = randomBytes(3).toString('hex');
const KV = `kvbk${sfx}`; // holds vm-enc's BEK + KEK; the Backup Management Service has no access at first
const KV_GRANTED = `kvbek${sfx}`; // holds vm-bek's BEK; access granted up front
const RSV = `rsv-portal-${sfx}`;
const KV_RESTORE = `kvrst${sfx}`; // target of Restore keys and secrets
const SA = `stportal${sfx}`;
const CV_API = '2022-08-01';

let s: TestServer;
let f: Fixture;
let b: PortalBrowser;
let user: { upn: string; password: string; objectId: string };
let owner: { upn: string; password: string; objectId: string }; // may grant roles (Create virtual machine)

beforeAll(async () => {
  s = await startTestServer({ env });
  f = new Fixture(s, RG);
  b = await launchBrowser();
  user = await createUser(s, 'portal-bob');
  owner = await createUser(s, 'portal-olga', 'Owner');
  await f.group();
  await f.keyVault(KV);
  await f.keyVault(KV_GRANTED, false);
  await f.grantBackup(KV_GRANTED);
  await f.vm('vm-enc', 4 * MiB);
  await f.vm('vm-bek', 4 * MiB);
  await f.vm('vm-plain', 4 * MiB);
  await f.encrypt('vm-enc', KV, true);
  await f.encrypt('vm-bek', KV_GRANTED, false);
  await f.keyVault(KV_RESTORE, false);
  await s.client.request('PUT', `${f.kvId(KV_RESTORE)}/accessPolicies/add`, { query: { 'api-version': KV_API }, body: { properties: { accessPolicies: [{ tenantId: s.creds.tenantId, objectId: owner.objectId, permissions: { keys: ['all'], secrets: ['all'] } }] } } });
}, 240_000);

afterAll(async () => {
  await b?.close();
  await s?.stop();
  if (f) rmSync(f.tmp, { recursive: true, force: true });
});

const hub = (page: Page) => page.getByRole('navigation', { name: 'Hub menu' });
const h1 = (page: Page, name: string | RegExp) => page.getByRole('heading', { level: 1, name });
const vaultMenu = (page: Page) => page.getByRole('navigation', { name: 'Recovery Services vault menu' });

async function openItem(page: Page, vm = 'vm-enc') {
  await hub(page).getByRole('link', { name: 'Recovery Services vaults' }).click();
  await page.getByRole('link', { name: RSV }).click();
  await vaultMenu(page).getByRole('link', { name: 'Backup items' }).click();
  await page.getByRole('table', { name: 'Backup items' }).getByRole('link', { name: vm }).click();
  await h1(page, `${vm} | Backup item`).waitFor();
}

async function toPolicyStep(page: Page) {
  await vaultMenu(page).getByRole('link', { name: 'Backup', exact: true }).click();
  await page.getByRole('heading', { name: 'Backup goal' }).waitFor();
  expect(await page.getByLabel('Where is your workload running?').inputValue()).toBe('Azure');
  expect(await page.getByLabel('What do you want to back up?').inputValue()).toBe('Virtual machine');
  await page.getByRole('button', { name: 'OK' }).click();
  await page.getByRole('heading', { name: 'Backup policy' }).waitFor();
}

describe('portal: configure backup of an encrypted VM', () => {
  it('creates a vault, walks Backup goal → policy → VMs; errors with recommendations; grants access; enables; Backup now; job completes', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);

    // Create the vault.
    await hub(page).getByRole('link', { name: 'Recovery Services vaults' }).click();
    await h1(page, 'Recovery Services vaults').waitFor();
    await page.getByRole('button', { name: 'Create' }).click();
    await h1(page, 'Create Recovery Services vault').waitFor();
    await page.getByLabel('Resource group').selectOption(RG);
    await page.getByLabel('Vault name').fill('1-bad');
    await page.getByText('must be 2–50 characters, start with a letter').waitFor();
    await page.getByLabel('Vault name').fill(RSV);
    await page.getByLabel('Region').selectOption('local');
    await shot(page, '20-create-vault');
    await page.getByRole('button', { name: 'Create' }).click();
    await h1(page, RSV).waitFor();
    await shot(page, '21-vault-dashboard');

    // Backup goal → Backup policy: the default's details; Create new validates.
    await toPolicyStep(page);
    await expect.poll(() => page.getByLabel('Choose backup policy').inputValue()).toBe('DefaultPolicy');
    const details = page.getByRole('definition');
    await expect.poll(() => details.allTextContents()).toEqual(expect.arrayContaining(['DefaultPolicy', expect.stringMatching(/^Daily at \d\d:\d\d/), expect.stringMatching(/for 30 Days?$/)]));
    await shot(page, '22-backup-policy-default');
    await page.getByLabel('Choose backup policy').selectOption({ label: 'Create New' });
    await page.getByLabel('Policy name').fill('9x');
    await page.getByLabel('Retain daily backup points (days)').fill('3');
    await page.getByRole('button', { name: 'OK' }).click();
    await page.getByText('The name must be 3–150 characters').waitFor();
    await page.getByText('Daily backup points are retained for 7 to 9999 days.').waitFor();
    await page.getByLabel('Policy name').fill('DefaultPolicy');
    await page.getByText('A policy named DefaultPolicy already exists').waitFor();
    await shot(page, '23-backup-policy-validation');
    await page.getByLabel('Choose backup policy').selectOption('DefaultPolicy');
    await page.getByRole('button', { name: 'OK' }).click();

    // Select VMs: encrypted ones marked; the access message with its link.
    await page.getByRole('heading', { name: 'Select virtual machines' }).waitFor();
    const table = page.getByRole('table', { name: 'Virtual machines to back up' });
    const row = (vm: string) => table.getByRole('row').filter({ hasText: vm });
    await row('vm-plain').waitFor();
    await expect(row('vm-enc').textContent()).resolves.toContain('Encrypted (BEK + KEK)');
    await expect(row('vm-bek').textContent()).resolves.toContain('Encrypted (BEK only)');
    await expect(row('vm-plain').textContent()).resolves.toContain('Not encrypted');
    await page.getByRole('checkbox', { name: 'Select vm-enc' }).check();
    await page.getByRole('checkbox', { name: 'Select vm-bek' }).check();
    await page.getByText('needs read access to the keys and secrets').waitFor();
    const grant = page.getByRole('link', { name: `Grant Backup Management Service access to ${KV}` });
    await grant.waitFor();
    await page.getByText(`${KV_GRANTED}: Backup Management Service has access`).waitFor();
    expect(await page.getByRole('link', { name: `Grant Backup Management Service access to ${KV_GRANTED}` }).count()).toBe(0);
    await shot(page, '24-select-vms');

    // Enable backup: both fail, each with its code and recommendation next to its row.
    await page.getByRole('button', { name: 'Enable backup' }).click();
    const encErr = row('vm-enc').getByRole('alert');
    await expect(encErr.textContent()).resolves.toMatch(/UserErrorKeyVaultPermissionsNotConfigured.*Key Vault '.*'.*missing:.*Recommendation:.*Azure Backup/s);
    const bekErr = row('vm-bek').getByRole('alert');
    await expect(bekErr.textContent()).resolves.toMatch(/UserErrorBekOnlyEncryptionNotSupported.*BEK alone.*Recommendation:/s);
    await page.getByText('0 of 2 virtual machine(s) configured for backup.').waitFor();
    await shot(page, '25-enable-backup-errors');

    // Grant access from the link: the template is applied, the picker is pre-filled.
    await grant.click();
    await h1(page, 'Add access policy').waitFor();
    await expect.poll(() => page.getByLabel('Configure from template (optional)').inputValue()).toBe('Azure Backup'); // applied once the templates load
    await page.getByRole('button', { name: 'Select principal' }).click();
    await page.getByRole('option', { name: /Backup Management Service/ }).click();
    await page.getByRole('button', { name: 'OK' }).click();
    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Access policies saved.' }).waitFor();

    // Back to the vault: enable backup of the encrypted VM.
    await hub(page).getByRole('link', { name: 'Recovery Services vaults' }).click();
    await page.getByRole('link', { name: RSV }).click();
    await toPolicyStep(page);
    await page.getByRole('button', { name: 'OK' }).click();
    await page.getByRole('checkbox', { name: 'Select vm-enc' }).check();
    await page.getByRole('button', { name: 'Enable backup' }).click();
    await page.getByText('1 of 1 virtual machine(s) configured for backup.').waitFor();
    await shot(page, '26-enable-backup-done');

    // Backup items → item → Backup now.
    await page.getByRole('link', { name: 'Backup items' }).last().click();
    await h1(page, `${RSV} | Backup items`).waitFor();
    const items = page.getByRole('table', { name: 'Backup items' });
    await expect(items.getByRole('row').filter({ hasText: 'vm-enc' }).textContent()).resolves.toMatch(/IRPending.*DefaultPolicy/s);
    await shot(page, '27-backup-items');
    await items.getByRole('link', { name: 'vm-enc' }).click();
    await h1(page, 'vm-enc | Backup item').waitFor();
    await page.getByRole('button', { name: 'Backup now' }).click();
    const dialog = page.getByRole('dialog', { name: 'Backup Now' });
    expect(await dialog.getByLabel('Retain Backup Till').inputValue()).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    await shot(page, '28-backup-now');
    await dialog.getByRole('button', { name: 'OK' }).click();
    await page.getByRole('link', { name: 'View the backup job' }).click();

    // Job details: live until Completed, with the two tasks.
    await h1(page, 'Job details').waitFor();
    const props = page.getByRole('definition');
    await expect(props.first().textContent()).resolves.toBe('vm-enc');
    // While a task runs its progress bar (labelled with the task's name) makes a second cell of that name: first().
    await page.getByRole('table', { name: 'Sub tasks' }).getByRole('cell', { name: 'Take Snapshot' }).first().waitFor();
    await shot(page, '29-job-in-progress');
    await props.filter({ hasText: /^Completed$/ }).waitFor({ timeout: 60_000 });
    const tasks = page.getByRole('table', { name: 'Sub tasks' });
    await expect.poll(() => tasks.getByRole('row').allTextContents()).toEqual(expect.arrayContaining([expect.stringMatching(/Take Snapshot.*Completed/), expect.stringMatching(/Transfer data to vault.*Completed/)]));
    await shot(page, '30-job-completed');

    // Backup jobs: the failed ConfigureBackup shows its error and recommendation.
    await page.getByRole('link', { name: 'Backup jobs' }).last().click();
    const jobs = page.getByRole('table', { name: 'Backup jobs' });
    await jobs.getByRole('row').filter({ hasText: 'Backup' }).filter({ hasText: 'Completed' }).first().waitFor();
    await shot(page, '31-backup-jobs');
    await page.getByLabel('Status').selectOption('Failed');
    await jobs.getByRole('row').filter({ hasText: 'vm-enc' }).getByRole('link', { name: 'vm-enc' }).click();
    await page.getByRole('heading', { name: 'Error details' }).waitFor();
    await expect(page.locator('.card').getByRole('alert').first().textContent()).resolves.toMatch(/UserErrorKeyVaultPermissionsNotConfigured.*Recommendation:/s);
    await shot(page, '32-job-error-details');

    // The restore point is listed on the item.
    await hub(page).getByRole('link', { name: 'Recovery Services vaults' }).click();
    await page.getByRole('link', { name: RSV }).click();
    await vaultMenu(page).getByRole('link', { name: 'Backup items' }).click();
    await page.getByRole('table', { name: 'Backup items' }).getByRole('link', { name: 'vm-enc' }).click();
    const rps = page.getByRole('table', { name: 'Restore points' });
    await rps.getByRole('row').filter({ hasText: /AppConsistent|CrashConsistent|FileSystemConsistent/ }).filter({ hasText: 'Yes' }).waitFor();
    expect(await rps.getByRole('row').count()).toBe(2); // header + the one restore point
    await shot(page, '33-restore-points');

    // Backup policies: create a custom policy (validated in the form, then by the API).
    await page.getByRole('navigation', { name: 'Breadcrumb' }).getByRole('link', { name: RSV }).click();
    await vaultMenu(page).getByRole('link', { name: 'Backup policies' }).click();
    await page.getByRole('region', { name: 'DefaultPolicy' }).waitFor();
    await page.getByRole('button', { name: 'Add' }).click();
    await page.getByLabel('Policy name').fill('Nightly-14d');
    await page.getByLabel('Time (UTC)').selectOption('02:30');
    await page.getByLabel('Retain daily backup points (days)').fill('14');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    const created = page.getByRole('region', { name: 'Nightly-14d' });
    await expect.poll(() => created.getByRole('definition').allTextContents()).toEqual(expect.arrayContaining(['Daily at 02:30 UTC', 'Retain backup taken every day at 02:30 for 14 Days']));
    await shot(page, '34-backup-policies');
  }, 240_000);

  it('Restore VM → Restore disks (staging storage account) → the restore job completes → Deploy Template → the VM exists', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);
    await openItem(page);
    await page.getByRole('button', { name: 'Restore VM' }).click();
    await h1(page, 'Restore Virtual Machine').waitFor();
    await expect.poll(() => page.getByLabel('Restore point').locator('option').count()).toBe(1);
    expect(await page.getByRole('radio', { name: 'Restore disks' }).isChecked()).toBe(true);
    expect(await page.getByLabel('Restore disks as').inputValue()).toBe('managed');
    await expect.poll(() => page.getByLabel('Resource group').inputValue()).toBe(RG);
    await page.getByRole('group', { name: 'Encryption keys' }).getByRole('radio', { name: 'Key and secret recorded in the restore point' }).waitFor();
    const restoreBtn = page.getByRole('button', { name: 'Restore', exact: true });
    expect(await restoreBtn.isDisabled()).toBe(true); // no staging location yet

    // No storage account yet: create one from the blade, which comes back with it picked.
    await page.getByRole('link', { name: 'Create a storage account' }).click();
    await h1(page, 'Create storage account').waitFor();
    await page.getByLabel('Storage account name').fill('Bad_Name');
    await page.getByText('3–24 characters: lowercase letters and digits only').waitFor();
    await page.getByLabel('Storage account name').fill(SA);
    expect(await page.getByLabel('Resource group').inputValue()).toBe(RG);
    await shot(page, '35-create-storage-account');
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    await h1(page, 'Restore Virtual Machine').waitFor();
    await expect.poll(() => page.getByLabel('Staging location').inputValue()).toMatch(new RegExp(`/storageAccounts/${SA}$`, 'i'));
    await shot(page, '36-restore-disks');
    await restoreBtn.click();
    await page.getByRole('status').filter({ hasText: 'Restoring the disks…' }).waitFor();
    await page.getByRole('link', { name: 'Deploy Template' }).waitFor({ timeout: 60_000 }); // the job, followed on the blade
    await shot(page, '37-restore-disks-completed');

    // The restore job: Completed, its property bag names the outputs, then Deploy Template.
    await page.getByRole('link', { name: 'View the restore job' }).click();
    await h1(page, 'Job details').waitFor();
    await page.getByRole('definition').filter({ hasText: /^Completed$/ }).waitFor({ timeout: 60_000 });
    await expect.poll(() => page.getByRole('term').allTextContents()).toEqual(
      expect.arrayContaining(['Target Storage Account Name', 'Config Blob Container Name', 'Config Blob Name', 'Encryption Info Blob Name', 'Template Blob Uri']),
    );
    expect(await page.getByRole('table', { name: 'Sub tasks' }).getByRole('row').filter({ hasText: 'Transfer data' }).textContent()).toMatch(/Completed/);
    await shot(page, '38-restore-job');
    await page.getByRole('button', { name: 'Deploy Template' }).click();
    await h1(page, 'Deploy Template').waitFor();
    const vmName = page.getByLabel('Virtual machine name');
    await expect.poll(() => vmName.inputValue()).toBe('vm-enc'); // the template's default: the original VM, which still exists
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    await page.getByText('A virtual machine named vm-enc already exists').waitFor();
    await vmName.fill('vm-enc-restored');
    await page.getByRole('button', { name: 'Deploy', exact: true }).click();
    const ok = page.getByRole('status').filter({ hasText: 'Deployment succeeded.' });
    await ok.waitFor({ timeout: 60_000 });
    await shot(page, '39-deploy-template');
    await ok.getByRole('link', { name: 'vm-enc-restored' }).click();
    await h1(page, 'vm-enc-restored').waitFor();
    await page.getByRole('definition').filter({ hasText: 'Encrypted (BEK + KEK)' }).waitFor();
    await shot(page, '40-restored-vm');

    // The VM exists and its OS disk carries the recovery point's key and secret.
    const rp = await s.client.request<{ value: { properties: { keyAndSecret?: unknown } ; id: string }[] }>('GET', `${f.itemPath(RSV, 'vm-enc')}/recoveryPoints`, { query: { 'api-version': '2023-02-01' } });
    const full = await s.client.request<{ properties: { keyAndSecret: { bekDetails: { secretUrl: string }; kekDetails: { keyUrl: string } } } }>('GET', rp.value[0]!.id, { query: { 'api-version': '2023-02-01' } });
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { encryptionSettings: { diskEncryptionKey: { secretUrl: string }; keyEncryptionKey: { keyUrl: string } } } } } }>('GET', f.vmId('vm-enc-restored'), { query: { 'api-version': CV_API } });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings.diskEncryptionKey.secretUrl).toBe(full.properties.keyAndSecret.bekDetails.secretUrl);
    expect(vm.properties.storageProfile.osDisk.encryptionSettings.keyEncryptionKey.keyUrl).toBe(full.properties.keyAndSecret.kekDetails.keyUrl);

    // Restore keys and secrets runs as the user: without rights on the target vault, the error names the fix.
    await openItem(page);
    await page.getByRole('table', { name: 'Restore points' }).getByRole('link', { name: 'Restore keys' }).click();
    await h1(page, 'Restore keys and secrets').waitFor();
    await page.getByLabel('Target key vault').selectOption({ label: KV_RESTORE });
    await page.getByRole('button', { name: 'Restore keys and secrets' }).click();
    await expect(page.locator('.actions').getByRole('alert').textContent()).resolves.toMatch(new RegExp(`KeyVaultAccessDenied.*${KV_RESTORE}.*Recommendation:.*keyvault set-policy -n ${KV_RESTORE} --object-id ${user.objectId}`, 's'));
    await shot(page, '40b-restore-keys-denied');
  }, 120_000);

  it('Restore keys and secrets; Create virtual machine → UserErrorBackupServiceNotAuthorized with its recommendation → grant → the VM is created', async () => {
    // The staging account the previous walk created from the portal (idempotent, so this walk also runs on its own).
    await s.client.request('PUT', `${f.rgPath()}/providers/Microsoft.Storage/storageAccounts/${SA}`, { query: { 'api-version': '2023-01-01' }, body: { location: 'local', sku: { name: 'Standard_LRS' }, kind: 'StorageV2' } });
    const { page } = await b.page();
    await signInAsUser(page, s.origin, owner.upn, owner.password);
    await openItem(page);
    await page.getByRole('button', { name: 'Restore keys and secrets' }).click();
    await h1(page, 'Restore keys and secrets').waitFor();
    await expect.poll(() => page.getByLabel('Restore point').locator('option').count()).toBe(1);
    await page.getByLabel('Target key vault').selectOption({ label: KV_RESTORE });
    await page.getByRole('button', { name: 'Restore keys and secrets' }).click();
    const restored = page.getByRole('status').filter({ hasText: `Key and secret restored into ${KV_RESTORE}` });
    await restored.waitFor();
    const urls = await restored.getByRole('definition').allTextContents();
    expect(urls[0]).toMatch(new RegExp(`^https://${KV_RESTORE}\\.vault\\.localhost:${s.port}/keys/kek/\\w+$`));
    expect(urls[1]).toMatch(new RegExp(`^https://${KV_RESTORE}\\.vault\\.localhost:${s.port}/secrets/[^/]+/\\w+$`));
    await shot(page, '41-restore-keys');

    // Create virtual machine with the restored key and secret: the Backup Management Service is not authorized yet.
    await restored.getByRole('link', { name: 'Restore VM with this key and secret' }).click();
    await h1(page, 'Restore Virtual Machine').waitFor();
    expect(await page.getByRole('radio', { name: 'Restored key and secret' }).isChecked()).toBe(true);
    expect(await page.getByLabel('Secret URL').inputValue()).toBe(urls[1]);
    await expect.poll(() => page.getByLabel('Key vault', { exact: true }).inputValue()).toBe(f.kvId(KV_RESTORE));
    await page.getByRole('radio', { name: 'Create virtual machine' }).check();
    await page.getByLabel('Virtual machine name').fill('vm-alt');
    await page.getByLabel('Staging location').selectOption({ label: `${SA} (${RG}, local)` });
    await page.getByRole('button', { name: 'Restore', exact: true }).click();
    const denied = page.locator('.field-problem').getByRole('alert').first(); // right under the Resource group picker
    await expect(denied.textContent()).resolves.toMatch(/UserErrorBackupServiceNotAuthorized.*Backup Service does not have authorization.*Recommendation:.*restore-disks/s);
    expect((await s.client.send('GET', f.vmId('vm-alt'), { query: { 'api-version': CV_API } })).status).toBe(404);
    await shot(page, '42-create-vm-not-authorized');
    await page.getByRole('button', { name: 'Grant the Backup Management Service access' }).click();
    await page.getByRole('status').filter({ hasText: 'Access granted' }).waitFor();
    await page.getByRole('button', { name: 'Restore', exact: true }).click();
    await page.getByRole('status').filter({ hasText: 'Creating the virtual machine…' }).waitFor();
    await page.getByRole('link', { name: 'Open the virtual machine' }).waitFor({ timeout: 60_000 });
    await shot(page, '43-create-vm-completed');
    await page.getByRole('link', { name: 'Open the virtual machine' }).click();
    await h1(page, 'vm-alt').waitFor();
    await page.getByRole('definition').filter({ hasText: 'Encrypted (BEK + KEK)' }).waitFor();
    const vm = await s.client.request<{ properties: { storageProfile: { osDisk: { encryptionSettings: { diskEncryptionKey: { secretUrl: string } } } } } }>('GET', f.vmId('vm-alt'), { query: { 'api-version': CV_API } });
    expect(vm.properties.storageProfile.osDisk.encryptionSettings.diskEncryptionKey.secretUrl).toBe(urls[1]);
    await shot(page, '44-created-vm');
  }, 120_000);
});
