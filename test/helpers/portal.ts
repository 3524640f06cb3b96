/**
 * Browser helpers for the portal tests: Debian's Chromium driven by playwright-core (never a downloaded browser),
 * launched headless with the flags that work on this machine (shared/design/reference/interop-recipes.md §6), a
 * signed-in page, and a screenshot per blade under test-results/portal/.
 */
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { ROOT, type TestServer } from './server.js';

export const CHROMIUM = process.env.RSVAULT_CHROMIUM ?? '/usr/bin/chromium';
export const SHOTS = path.join(ROOT, 'test-results', 'portal');

export interface PortalBrowser {
  browser: Browser;
  close(): Promise<void>;
  /**
   * A fresh context (its own sessionStorage) and page. The server's certificate comes from rsvault's installation CA;
   * Chromium on Linux reads trust from an NSS database, so rather than building one per test run we accept the
   * certificate in this context (ignoreHTTPSErrors). Acceptable for a local test against a server we just started;
   * the Node-side tests check the CA chain itself.
   */
  page(opts?: { width?: number; height?: number }): Promise<{ context: BrowserContext; page: Page }>;
}

export async function launchBrowser(): Promise<PortalBrowser> {
  mkdirSync(SHOTS, { recursive: true });
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  const contexts: BrowserContext[] = [];
  return {
    browser,
    async page(o = {}) {
      const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: o.width ?? 1280, height: o.height ?? 800 } });
      contexts.push(context);
      context.setDefaultTimeout(20_000);
      const page = await context.newPage();
      return { context, page };
    },
    async close() {
      for (const c of contexts) await c.close().catch(() => undefined);
      await browser.close(); // playwright removes the fresh profile it made for this launch
    },
  };
}

/** Full-page screenshot of the current blade, named after it. */
export async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

/** Creates a directory user with a role on the subscription (as `rsvault ad user create` + role assignment do). */
export async function createUser(s: TestServer, name: string, role = 'Contributor'): Promise<{ upn: string; password: string; objectId: string }> {
  const upn = `${name}@rsvault.localhost`;
  const password = `Pw-${randomUUID()}`;
  const u = await s.client.request<{ id: string }>('POST', '/v1.0/users', { body: { displayName: name, userPrincipalName: upn, passwordProfile: { password } } });
  await s.client.request('PUT', `/subscriptions/${s.creds.subscriptionId}/providers/Microsoft.Authorization/roleAssignments/${randomUUID()}`, {
    query: { 'api-version': '2022-04-01' },
    body: { properties: { roleDefinitionId: role, principalId: u.id, principalType: 'User' } },
  });
  return { upn, password, objectId: u.id };
}

/** Signs in through the portal's sign-in page and waits for Home. */
export async function signInAsUser(page: Page, origin: string, upn: string, password: string): Promise<void> {
  await page.goto(`${origin}/`);
  await page.getByLabel('User name').fill(upn);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Home' }).waitFor();
}

export async function signInAsApp(page: Page, origin: string, clientId: string, secret: string): Promise<void> {
  await page.goto(`${origin}/`);
  await page.getByRole('radio', { name: 'Application (service principal)' }).check();
  await page.getByLabel('Application (client) ID').fill(clientId);
  await page.getByLabel('Client secret').fill(secret);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { level: 1, name: 'Home' }).waitFor();
}
