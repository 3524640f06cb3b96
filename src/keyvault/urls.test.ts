import { describe, it, expect } from 'vitest';
import { VaultUrls } from './urls.js';

describe('VaultUrls: the one builder of Key Vault URLs', () => {
  const u = new VaultUrls({ hostSuffix: 'vault.localhost', publicPort: () => 8443 });
  it('builds vault URIs and object URLs with the port unless it is 443', () => {
    expect(u.vaultUri('KV1')).toBe('https://kv1.vault.localhost:8443/');
    expect(u.objectUrl('kv1', 'secrets', 's', 'abc')).toBe('https://kv1.vault.localhost:8443/secrets/s/abc');
    expect(u.resource()).toBe('https://vault.localhost:8443');
    const p = new VaultUrls({ hostSuffix: 'vault.example.com', publicPort: () => 443 });
    expect(p.vaultUri('kv1')).toBe('https://kv1.vault.example.com/');
    expect(p.resource()).toBe('https://vault.example.com');
  });
  it('normalizes stored URLs (no port, another port, the legacy suffix) to the reachable one; leaves other hosts alone', () => {
    expect(u.canonical('https://kv1.vault.localhost/keys/kek/v1')).toBe('https://kv1.vault.localhost:8443/keys/kek/v1');
    expect(u.canonical('https://kv1.vault.localhost:9999/secrets/s/v')).toBe('https://kv1.vault.localhost:8443/secrets/s/v');
    expect(u.canonical('https://kv1.vault.azure.net/secrets/s/v')).toBe('https://kv1.vault.azure.net/secrets/s/v');
    expect(u.canonical('not a url')).toBe('not a url');
    const moved = new VaultUrls({ hostSuffix: 'vault.example.com', publicPort: () => 443 });
    expect(moved.canonical('https://kv1.vault.localhost:8443/secrets/s/v')).toBe('https://kv1.vault.example.com/secrets/s/v');
    expect(u.canonicalDeep({ a: ['https://kv1.vault.localhost/secrets/s/v', 3], b: { c: 'x' } })).toEqual({ a: ['https://kv1.vault.localhost:8443/secrets/s/v', 3], b: { c: 'x' } });
  });
  it('parses vault name and object path whatever the port; only {name}.{suffix} hosts are vault hosts', () => {
    expect(u.parse('https://KV1.vault.localhost/secrets/s/v')).toEqual(u.parse('https://kv1.vault.localhost:8443/Secrets/s/v'));
    expect(u.parse('https://kv1.vault.localhost:8443/keys/k')).toEqual({ vaultName: 'kv1', collection: 'keys', name: 'k', version: undefined });
    expect(u.isVaultHost('a.b.vault.localhost')).toBe(false);
    expect(u.isVaultHost('kv1.vault.localhost')).toBe(true);
  });
});
