/** The CLI's stored login: $RSVAULT_CONFIG_DIR/profile.json or ~/.rsvault/profile.json (0600, holds the SP secret like az does). */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export interface Profile {
  server: string;
  tenantId: string;
  subscriptionId?: string | undefined;
  clientId?: string | undefined;
  clientSecret?: string | undefined;
  username?: string | undefined;
  password?: string | undefined;
  caFile?: string | undefined;
}

export function configDir(): string {
  return process.env.RSVAULT_CONFIG_DIR || path.join(os.homedir(), '.rsvault');
}

export function profilePath(): string {
  return path.join(configDir(), 'profile.json');
}

export function loadProfile(): Profile | undefined {
  const p = profilePath();
  if (!existsSync(p)) return undefined;
  const prof = JSON.parse(readFileSync(p, 'utf8')) as Profile;
  if (process.env.RSVAULT_SERVER) prof.server = process.env.RSVAULT_SERVER;
  return prof;
}

export function saveProfile(p: Profile): void {
  const dir = configDir();
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const tmp = profilePath() + '.tmp';
  writeFileSync(tmp, JSON.stringify(p, null, 2) + '\n', { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, profilePath());
}

export function clearProfile(): void {
  rmSync(profilePath(), { force: true });
}
