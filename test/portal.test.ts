/**
 * The portal in a real browser (Debian Chromium + playwright-core, headless) against the real server: sign in (user and
 * bootstrap admin), the hub menu and "More services" search, resource groups, API errors with their recommendation
 * next to the control, narrow windows and keyboard use; Key vaults → Access policies → Add → "Azure Backup" template →
 * Backup Management Service → Save; Virtual machines with encryption, disks and agent → Disk encryption.
 * Every step finds controls by role and visible name, and saves a screenshot under test-results/portal/.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { startTestServer, type TestServer } from './helpers/server.js';
import { createUser, launchBrowser, shot, signInAsApp, signInAsUser, type PortalBrowser } from './helpers/portal.js';

const RG = 'rg-portal';
const sfx = randomBytes(3).toString('hex');
const KV = `kvportal${sfx}`;
const KV_OFF = `kvnoade${sfx}`;
const VM = 'vm-portal';
const KV_API = '2023-07-01';
const CV_API = '2022-08-01';
const BMS_APP_ID = '262044b1-e2ce-469f-a196-69ab7ada62d3';

let s: TestServer;
let b: PortalBrowser;
let tmp: string;
let user: { upn: string; password: string; objectId: string };

const rgPath = () => `/subscriptions/${s.creds.subscriptionId}/resourceGroups/${RG}`;
const vaultPath = (n: string) => `${rgPath()}/providers/Microsoft.KeyVault/vaults/${n}`;
const vmPath = (n: string) => `${rgPath()}/providers/Microsoft.Compute/virtualMachines/${n}`;

beforeAll(async () => {
  tmp = mkdtempSync(path.join(os.tmpdir(), 'portal-test-'));
  s = await startTestServer({ env: { RSVAULT_LUKS_ITERATIONS: '1000' } });
  b = await launchBrowser();
  user = await createUser(s, 'portal-alice');
  await s.client.request('PUT', rgPath(), { query: { 'api-version': '2021-04-01' }, body: { location: 'local' } });
  const everything = { keys: ['all'], secrets: ['all'] };
  const policies = [
    { tenantId: s.creds.tenantId, objectId: s.creds.objectId, permissions: everything },
    { tenantId: s.creds.tenantId, objectId: user.objectId, permissions: everything },
  ];
  for (const [name, ade] of [[KV, true], [KV_OFF, false]] as const) {
    await s.client.request('PUT', vaultPath(name), { query: { 'api-version': KV_API }, body: { location: 'local', properties: { tenantId: s.creds.tenantId, sku: { family: 'A', name: 'standard' }, accessPolicies: policies, enabledForDiskEncryption: ade } } });
  }
  await s.client.request('POST', '/keys/kek/create', { baseUrl: `https://${KV}.vault.localhost:${s.port}`, resource: 'https://vault.localhost', query: { 'api-version': '7.4' }, body: { kty: 'RSA', key_size: 2048 } });
  writeFileSync(path.join(tmp, 'os.raw'), randomBytes(4 * 1024 * 1024));
  await s.client.request('PUT', `${rgPath()}/providers/Microsoft.Compute/disks/${VM}-os`, { query: { 'api-version': CV_API }, body: { location: 'local', properties: { creationData: { createOption: 'Import', sourceUri: path.join(tmp, 'os.raw') } } } });
  await s.client.request('PUT', vmPath(VM), {
    query: { 'api-version': CV_API },
    body: {
      location: 'local',
      properties: {
        hardwareProfile: { vmSize: 'Standard_DS1_v2' },
        osProfile: { computerName: VM, adminUsername: 'azureuser', linuxConfiguration: { disablePasswordAuthentication: true } },
        storageProfile: { osDisk: { osType: 'Linux', createOption: 'Attach', managedDisk: { id: `${rgPath()}/providers/Microsoft.Compute/disks/${VM}-os` } } },
      },
    },
  });
}, 180_000);

afterAll(async () => {
  await b?.close();
  await s?.stop();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const hub = (page: Page) => page.getByRole('navigation', { name: 'Hub menu' });
const h1 = (page: Page, name: string | RegExp) => page.getByRole('heading', { level: 1, name });

describe('portal: sign-in, hub, resource groups', () => {
  it('serves the portal at / and deep links, with the API paths untouched', async () => {
    const { page } = await b.page();
    const res = await page.goto(`${s.origin}/browse/resourcegroups`);
    expect(res?.status()).toBe(200);
    expect(res?.headers()['content-type']).toMatch(/text\/html/);
    await page.getByRole('heading', { name: 'Sign in to rsvault' }).waitFor();
    const cfg = await page.evaluate(async () => (await fetch('/portal/config')).json());
    expect(cfg).toEqual({ tenantId: s.creds.tenantId });
    const api = await page.evaluate(async () => {
      const r = await fetch('/subscriptions/x/nothing?api-version=2021-04-01');
      return { status: r.status, type: r.headers.get('content-type') };
    });
    expect(api).toEqual({ status: 404, type: expect.stringMatching(/application\/json/) }); // ARM's own 404, not the portal's HTML
    await shot(page, '01-sign-in');
  });

  it('rejects a wrong password next to the form, then signs a user in and remembers the page asked for', async () => {
    const { page } = await b.page();
    await page.goto(`${s.origin}/browse/resourcegroups`);
    await page.getByLabel('User name').fill(user.upn);
    await page.getByLabel('Password').fill('wrong');
    await page.getByRole('button', { name: 'Sign in' }).click();
    const alert = page.getByRole('alert');
    await expect(alert.textContent()).resolves.toMatch(/Sign-in failed.*invalid_grant.*invalid username or password/s);
    await shot(page, '02-sign-in-error');
    await page.getByLabel('Password').fill(user.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await h1(page, 'Resource groups').waitFor();
    await page.getByRole('table', { name: 'Resource groups' }).getByRole('link', { name: RG }).waitFor();
    await expect(page.getByLabel('Signed in as').textContent()).resolves.toBe('portal-alice');
    await shot(page, '03-resource-groups');
  });

  it('signs in the bootstrap admin with its application id and secret', async () => {
    const { page } = await b.page();
    await signInAsApp(page, s.origin, s.creds.clientId, s.creds.clientSecret);
    await expect(page.getByLabel('Signed in as').textContent()).resolves.toBe('rsvault-bootstrap-admin');
    await page.getByRole('button', { name: 'Sign out' }).click();
    await page.getByRole('heading', { name: 'Sign in to rsvault' }).waitFor();
  });

  it('hub menu and "More services" filter the resource types as you type; keyboard reaches the result', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);
    await shot(page, '04-home');
    for (const name of ['Home', 'Resource groups', 'Virtual machines', 'Key vaults', 'Recovery Services vaults', 'More services']) {
      await hub(page).getByRole('link', { name, exact: true }).waitFor();
    }
    await hub(page).getByRole('link', { name: 'More services' }).click();
    await h1(page, 'More services').waitFor();
    const results = page.locator('#svc-results');
    const filter = page.getByLabel('Filter services');
    await filter.pressSequentially('vau', { delay: 30 });
    await results.getByRole('link', { name: 'Key vaults' }).waitFor();
    await results.getByRole('link', { name: 'Recovery Services vaults' }).waitFor();
    expect(await results.getByRole('link', { name: 'Virtual machines' }).count()).toBe(0);
    await filter.pressSequentially('lts rec', { delay: 30 }); // "vaults rec"
    await expect.poll(() => results.getByRole('link').allTextContents()).toEqual(['Recovery Services vaults']);
    await shot(page, '05-more-services');
    await filter.fill('key');
    await page.getByRole('status').filter({ hasText: '1 service' }).waitFor();
    await filter.press('Tab');
    await expect(page.evaluate('document.activeElement?.textContent')).resolves.toBe('Key vaults'); // (a string: the root tsconfig has no DOM lib)
    await page.keyboard.press('Enter');
    await h1(page, 'Key vaults').waitFor();
  });

  it('shows an API error with its recommendation next to Create; creates a resource group', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);
    await hub(page).getByRole('link', { name: 'Resource groups' }).click();
    await page.getByRole('toolbar', { name: 'Commands' }).getByRole('button', { name: 'Create' }).click();
    await h1(page, 'Create a resource group').waitFor();
    await page.getByLabel('Resource group name').fill('bad name!');
    await page.getByText('Use 1–90 letters').waitFor(); // client-side validation before any request
    expect(await page.getByRole('button', { name: 'Create' }).isDisabled()).toBe(true);
    // Server-side error: the group exists in another region.
    await page.getByLabel('Resource group name').fill(RG);
    await page.getByLabel('Region').selectOption('eastus');
    await page.getByRole('button', { name: 'Create' }).click();
    const err = page.locator('.actions').getByRole('alert');
    await expect(err.textContent()).resolves.toMatch(/InvalidResourceGroupLocation.*already exists in location 'local'.*Recommendation:/s);
    await shot(page, '06-create-rg-error');
    await page.getByLabel('Resource group name').fill('rg-created-in-portal');
    await page.getByRole('button', { name: 'Create' }).click();
    await h1(page, 'rg-created-in-portal').waitFor();
    await shot(page, '07-resource-group');
    const g = await s.client.request<{ location: string }>('GET', `/subscriptions/${s.creds.subscriptionId}/resourcegroups/rg-created-in-portal`, { query: { 'api-version': '2021-04-01' } });
    expect(g.location).toBe('eastus');
  });

  it('is usable in a narrow window: the menu folds behind a Menu button', async () => {
    const { page } = await b.page({ width: 390, height: 800 });
    await signInAsUser(page, s.origin, user.upn, user.password);
    expect(await hub(page).isVisible()).toBe(false);
    await shot(page, '08-narrow-home');
    await page.getByRole('button', { name: 'Menu' }).click();
    await hub(page).getByRole('link', { name: 'Key vaults' }).click();
    await h1(page, 'Key vaults').waitFor();
    expect(await hub(page).isVisible()).toBe(false);
    const overflow = await page.evaluate<number>('document.documentElement.scrollWidth - document.documentElement.clientWidth');
    expect(overflow).toBeLessThanOrEqual(0);
    await shot(page, '09-narrow-key-vaults');
  });
});

describe('portal: key vault access policy for Azure Backup', () => {
  it('Access policies → Add → Azure Backup template → Backup Management Service → OK → Add → Save; the policy is listed', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);
    await hub(page).getByRole('link', { name: 'Key vaults' }).click();
    await page.getByRole('table', { name: 'Key vaults' }).getByRole('link', { name: KV }).click();
    await h1(page, KV).waitFor();
    await page.getByText('Azure Disk Encryption for volume encryption').waitFor();
    await shot(page, '10-key-vault');
    await page.getByRole('navigation', { name: 'Key vault menu' }).getByRole('link', { name: 'Access policies' }).click();
    await h1(page, `${KV} | Access policies`).waitFor();
    await page.getByRole('table', { name: 'Access policies' }).getByRole('cell', { name: 'portal-alice' }).waitFor();
    await shot(page, '11-access-policies');

    await page.getByRole('button', { name: 'Add', exact: true }).click();
    await h1(page, 'Add access policy').waitFor();
    await page.getByLabel('Configure from template (optional)').selectOption('Azure Backup');
    const keys = page.getByRole('group', { name: 'Key permissions: Key Management Operations' });
    const secrets = page.getByRole('group', { name: 'Secret permissions: Secret Management Operations' });
    for (const p of ['Get', 'List', 'Backup']) {
      expect(await keys.getByRole('checkbox', { name: p, exact: true }).isChecked()).toBe(true);
      expect(await secrets.getByRole('checkbox', { name: p, exact: true }).isChecked()).toBe(true);
    }
    expect(await keys.getByRole('checkbox', { name: 'Delete', exact: true }).isChecked()).toBe(false);
    expect(await page.getByRole('group', { name: 'Key permissions: Cryptographic Operations' }).getByRole('checkbox', { name: 'Unwrap Key' }).isChecked()).toBe(false);

    await page.getByRole('button', { name: 'Select principal' }).click();
    const picker = page.getByRole('dialog', { name: 'Principal' });
    await picker.getByLabel('Search by name').pressSequentially('Backup Management Service', { delay: 10 });
    const option = picker.getByRole('option', { name: /Backup Management Service/ });
    await option.waitFor();
    await expect(option.textContent()).resolves.toContain(BMS_APP_ID);
    await option.click();
    await shot(page, '12-select-principal');
    await picker.getByRole('button', { name: 'OK' }).click();
    await expect(page.getByTestId('selected-principal').textContent()).resolves.toBe('Backup Management Service');
    await shot(page, '13-add-access-policy');
    await page.getByRole('button', { name: 'Add', exact: true }).click();

    await h1(page, `${KV} | Access policies`).waitFor();
    const table = page.getByRole('table', { name: 'Access policies' });
    const row = table.getByRole('row').filter({ hasText: 'Backup Management Service' });
    await expect(row.textContent()).resolves.toMatch(/unsaved.*Get, List, Backup.*Get, List, Backup/s);
    await page.getByText('You have unsaved changes').waitFor();
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('status').filter({ hasText: 'Access policies saved.' }).waitFor();
    await row.filter({ hasNotText: 'unsaved' }).waitFor();
    await shot(page, '14-access-policies-saved');

    const bms = await s.client.request<{ value: { id: string }[] }>('GET', `/v1.0/servicePrincipals?$filter=${encodeURIComponent(`appId eq '${BMS_APP_ID}'`)}`);
    const vault = await s.client.request<{ properties: { accessPolicies: { objectId: string; permissions: { keys: string[]; secrets: string[] } }[] } }>('GET', vaultPath(KV), { query: { 'api-version': KV_API } });
    const entry = vault.properties.accessPolicies.find((p) => p.objectId === bms.value[0]!.id);
    expect(entry?.permissions.keys.map((x) => x.toLowerCase()).sort()).toEqual(['backup', 'get', 'list']);
    expect(entry?.permissions.secrets.map((x) => x.toLowerCase()).sort()).toEqual(['backup', 'get', 'list']);
  });
});

describe('portal: virtual machines and disk encryption', () => {
  it('lists VMs with encryption state, disks and agent; Disk encryption shows the API error with its recommendation, then encrypts with BEK + KEK', async () => {
    const { page } = await b.page();
    await signInAsUser(page, s.origin, user.upn, user.password);
    await hub(page).getByRole('link', { name: 'Virtual machines' }).click();
    const row = page.getByRole('table', { name: 'Virtual machines' }).getByRole('row').filter({ hasText: VM });
    await expect(row.textContent()).resolves.toMatch(/Not encrypted/);
    expect(await row.getByRole('cell').allTextContents()).toEqual([VM, RG, 'local', expect.stringMatching(/running/i), '1', 'Not encrypted', expect.stringMatching(/^Ready · \S+/)]);
    await shot(page, '15-virtual-machines');
    await row.getByRole('link', { name: VM }).click();
    await h1(page, VM).waitFor();
    await shot(page, '16-vm-overview');
    await page.getByRole('navigation', { name: 'Virtual machine menu' }).getByRole('link', { name: 'Disk encryption' }).click();
    await h1(page, `${VM} | Disk encryption`).waitFor();

    // A vault that is not enabled for disk encryption: warned in the form, refused by the API with a recommendation.
    await page.getByLabel('Key vault').selectOption({ label: KV_OFF });
    await page.getByText('not enabled for Azure Disk Encryption').waitFor();
    await page.getByLabel('Key', { exact: true }).fill('kek');
    await page.getByRole('button', { name: 'Save' }).click();
    const err = page.locator('.actions').getByRole('alert');
    await expect(err.textContent()).resolves.toMatch(/Could not enable disk encryption.*\(KeyVaultNotEnabledForDiskEncryption\).*Recommendation:.*enabled-for-disk-encryption/s);
    await shot(page, '17-disk-encryption-error');

    await page.getByLabel('Key vault').selectOption({ label: KV });
    await page.getByLabel('Key', { exact: true }).fill('kek');
    await page.getByRole('button', { name: 'Save' }).click();
    await page.getByRole('progressbar', { name: 'Enabling disk encryption' }).waitFor();
    await page.getByText('Disk encryption enabled.').waitFor({ timeout: 60_000 });
    await page.getByText('Encrypted (BEK + KEK)').first().waitFor();
    await shot(page, '18-disk-encryption-done');

    await hub(page).getByRole('link', { name: 'Virtual machines' }).click();
    await expect(row.getByRole('cell').nth(5).textContent()).resolves.toBe('Encrypted (BEK + KEK)');
    await page.getByRole('link', { name: VM }).click();
    await page.getByRole('navigation', { name: 'Virtual machine menu' }).getByRole('link', { name: 'Disks' }).click();
    await expect(page.getByRole('table', { name: 'Disks' }).getByRole('row').nth(1).textContent()).resolves.toMatch(/OS disk.*ADE \(BEK \+ KEK\)/);
    await shot(page, '19-vm-disks');
  }, 120_000);
});
