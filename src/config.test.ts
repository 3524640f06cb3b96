import { describe, it, expect } from 'vitest';
import path from 'node:path';
import { ConfigError, loadConfig } from './config.js';

describe('loadConfig', () => {
  it('applies defaults, then env, then flags', () => {
    const d = loadConfig({}, {});
    expect(d).toMatchObject({ port: 8443, listen: ['127.0.0.1', '::1'], vaultHostSuffix: 'vault.localhost', logLevel: 'info', roles: ['api', 'worker', 'scheduler'] });
    expect(d.dataDir).toBe(path.resolve('.rsvault'));
    expect(d.dbUrl).toBe(path.join(d.dataDir, 'rsvault.db'));
    const e = loadConfig({}, { RSVAULT_PORT: '9000', RSVAULT_DATA_DIR: '/tmp/x', RSVAULT_LOG_LEVEL: 'debug' });
    expect(e).toMatchObject({ port: 9000, dataDir: '/tmp/x', dbUrl: '/tmp/x/rsvault.db', logLevel: 'debug' });
    expect(loadConfig({ port: '7000' }, { RSVAULT_PORT: '9000' }).port).toBe(7000);
    expect(d.importDirs).toEqual([path.join(d.dataDir, 'import')]);
    expect(loadConfig({}, { RSVAULT_IMPORT_DIRS: '/srv/images,/mnt/vm' }).importDirs).toEqual(['/srv/images', '/mnt/vm']);
    expect(d.scheduleCatchUpHours).toBe(168);
    expect(loadConfig({ scheduleCatchUpHours: '0' }, { RSVAULT_SCHEDULE_CATCHUP_HOURS: '24' }).scheduleCatchUpHours).toBe(0);
    expect(loadConfig({}, { RSVAULT_SCHEDULE_CATCHUP_HOURS: '24' }).scheduleCatchUpHours).toBe(24);
    expect(d.verifySchedule).toBe('0 0 3 * * 0');
    expect(loadConfig({ verifySchedule: 'off' }, {}).verifySchedule).toBeUndefined();
    expect(loadConfig({}, { RSVAULT_VERIFY_SCHEDULE: '0 30 2 * * *' }).verifySchedule).toBe('0 30 2 * * *');
  });
  it('Key Vault hosts: --keyvault-host-suffix (alias --vault-host-suffix) and --keyvault-public-port', () => {
    expect(loadConfig({}, {}).keyvaultPublicPort).toBeUndefined();
    expect(loadConfig({}, { RSVAULT_KEYVAULT_HOST_SUFFIX: 'vault.example.com', RSVAULT_KEYVAULT_PUBLIC_PORT: '443' })).toMatchObject({ vaultHostSuffix: 'vault.example.com', keyvaultPublicPort: 443 });
    expect(loadConfig({ keyvaultHostSuffix: 'kv.test', keyvaultPublicPort: '9443' }, { RSVAULT_VAULT_HOST_SUFFIX: 'other.test' })).toMatchObject({ vaultHostSuffix: 'kv.test', keyvaultPublicPort: 9443 });
    expect(loadConfig({ vaultHostSuffix: 'old.test' }, {}).vaultHostSuffix).toBe('old.test');
    expect(() => loadConfig({ keyvaultPublicPort: '0' }, {})).toThrow(/invalid Key Vault public port '0'/);
    expect(() => loadConfig({}, { RSVAULT_KEYVAULT_PUBLIC_PORT: 'x' })).toThrow(ConfigError);
  });
  it('rejects bad values with one clear message', () => {
    expect(() => loadConfig({ port: '70000' }, {})).toThrow(ConfigError);
    expect(() => loadConfig({ scheduleCatchUpHours: '-1' }, {})).toThrow(/schedule catch-up/);
    expect(() => loadConfig({ listen: 'not an address' }, {})).toThrow(/invalid listen address/);
    expect(() => loadConfig({ dbUrl: 'mysql://u:pw@h/db' }, {})).toThrow(/invalid database URL scheme/);
    expect(() => loadConfig({ dbUrl: 'mysql://u:pw@h/db' }, {})).not.toThrow(/pw/);
    expect(() => loadConfig({ vaultHostSuffix: 'bad suffix' }, {})).toThrow(/host suffix/);
    expect(() => loadConfig({ role: 'boss' }, {})).toThrow(/invalid role/);
    expect(() => loadConfig({ role: 'api,boss' }, {})).toThrow(/invalid role 'boss'/);
    expect(loadConfig({}, {}).roles).toEqual(['api', 'worker', 'scheduler']);
    expect(loadConfig({ role: 'worker' }, {}).roles).toEqual(['worker']);
    expect(loadConfig({}, { RSVAULT_ROLE: 'scheduler, API' }).roles).toEqual(['api', 'scheduler']);
    expect(loadConfig({ dbUrl: 'postgres://rsv:pw@db.example:5432/rsvault' }, {}).dbUrl).toBe('postgres://rsv:pw@db.example:5432/rsvault');
    expect(loadConfig({}, { RSVAULT_DB_URL: 'postgresql://h/rsvault' }).dbUrl).toBe('postgresql://h/rsvault');
    expect(() => loadConfig({ importDirs: 'relative/dir' }, {})).toThrow(/invalid import directory/);
    expect(() => loadConfig({ verifySchedule: 'every tuesday' }, {})).toThrow(/invalid verify schedule/);
  });

  it('accepts test-only knobs only with RSVAULT_TEST_MODE=1, and LUKS iterations never below 1000', () => {
    expect(() => loadConfig({}, { RSVAULT_LUKS_ITERATIONS: '1000' })).toThrow(/test-only setting.*RSVAULT_TEST_MODE=1/);
    expect(() => loadConfig({}, { RSVAULT_CLOCK_OFFSET_MS: '86400000' })).toThrow(/RSVAULT_CLOCK_OFFSET_MS is a test-only setting/);
    expect(() => loadConfig({}, { RSVAULT_TEST_MODE: '1', RSVAULT_LUKS_ITERATIONS: '999' })).toThrow(/at least 1000/);
    const t = loadConfig({}, { RSVAULT_TEST_MODE: '1', RSVAULT_LUKS_ITERATIONS: '1000', RSVAULT_CLOCK_OFFSET_MS: '-5' }).test;
    expect(t).toMatchObject({ enabled: true, luksIterations: 1000, clockOffsetMs: -5 });
    expect(loadConfig({}, {}).test).toMatchObject({ enabled: false, luksIterations: undefined, clockOffsetMs: 0 });
  });

  it('token throttling: flags and env, defaults that leave room for many logins', () => {
    expect(loadConfig({}, {})).toMatchObject({ tokenRateLimit: 600, tokenFailureLimit: 20, tokenFailureWindowSec: 300 });
    expect(loadConfig({ tokenFailureLimit: '5' }, { RSVAULT_TOKEN_FAILURE_LIMIT: '9', RSVAULT_TOKEN_RATE_LIMIT: '50' })).toMatchObject({ tokenRateLimit: 50, tokenFailureLimit: 5 });
    expect(() => loadConfig({ tokenRateLimit: '0' }, {})).toThrow(/token rate limit/);
  });
});
