import { describe, expect, it } from 'vitest';
import { generateKeyPairSync } from 'node:crypto';
import { applyPolicyChange, decodeB64, findTemplate, policyGrants, recoveryLevelOf, unknownPermission, vaultNameError, dataActionOf, actionMatches, parseObjectUrl, type AccessPolicyEntry } from './model.js';
import { exportRsa, privateKeyOf, publicKeyOf, rsaDecrypt, rsaEncrypt, rsaSign, rsaVerify } from './crypto.js';

const T = '11111111-1111-1111-1111-111111111111';
const e = (objectId: string, keys: string[], secrets: string[] = []): AccessPolicyEntry => ({ tenantId: T, objectId, permissions: { keys, secrets } });

describe('access-policy arithmetic', () => {
  it('add unions (case-insensitive, canonical names), replace sets, remove subtracts and drops empty entries', () => {
    let l = applyPolicyChange([], 'add', [e('a', ['Get', 'WRAPKEY'])]);
    expect(l[0]!.permissions.keys).toEqual(['get', 'wrapKey']);
    l = applyPolicyChange(l, 'add', [e('a', ['get', 'list'], ['get'])]);
    expect(l[0]!.permissions).toMatchObject({ keys: ['get', 'wrapKey', 'list'], secrets: ['get'] });
    l = applyPolicyChange(l, 'replace', [e('a', ['backup'])]);
    expect(l[0]!.permissions).toMatchObject({ keys: ['backup'], secrets: [] });
    l = applyPolicyChange(l, 'add', [e('b', ['get'])]);
    l = applyPolicyChange(l, 'remove', [e('a', ['backup'])]);
    expect(l.map((x) => x.objectId)).toEqual(['b']);
    expect(applyPolicyChange(l, 'remove', [e('b', [])])).toEqual([]);
  });
  it('grants by object id (and application id for compound entries); "all" grants everything', () => {
    const l = [e('a', ['all']), { ...e('b', ['get']), applicationId: 'app1' }];
    expect(policyGrants(l, { objectId: 'A' }, 'keys', 'unwrapKey')).toBe(true);
    expect(policyGrants(l, { objectId: 'a' }, 'secrets', 'get')).toBe(false);
    expect(policyGrants(l, { objectId: 'b' }, 'keys', 'get')).toBe(false);
    expect(policyGrants(l, { objectId: 'b', appId: 'app1' }, 'keys', 'get')).toBe(true);
  });
  it('rejects unknown permission names', () => {
    expect(unknownPermission({ keys: ['get', 'fly'] })).toBe('keys/fly');
    expect(unknownPermission({ keys: ['Get', 'all'], secrets: ['SET'] })).toBeUndefined();
  });
  it('"Azure Backup" template: keys get,list,backup; secrets get,list,backup (no unwrap/decrypt)', () => {
    expect(findTemplate('azure backup')!.permissions).toMatchObject({ keys: ['get', 'list', 'backup'], secrets: ['get', 'list', 'backup'] });
  });
});

describe('rules', () => {
  it('vault names', () => {
    expect(vaultNameError('kv1')).toBeUndefined();
    for (const bad of ['kv', 'k'.repeat(25), '1kv', 'kv-', 'k--v', 'k_v']) expect(vaultNameError(bad), bad).toBeDefined();
  });
  it('lenient base64', () => {
    const b = Buffer.from([0xfb, 0xff, 0xfe, 0x01]);
    for (const s of [b.toString('base64'), b.toString('base64url'), b.toString('base64').replace(/=+$/, '')]) expect(decodeB64(s)!.equals(b)).toBe(true);
    expect(decodeB64('!!')).toBeUndefined();
    expect(decodeB64('A')).toBeUndefined();
  });
  it('recovery levels', () => {
    expect(recoveryLevelOf({ enableSoftDelete: true, softDeleteRetentionInDays: 90, enablePurgeProtection: false })).toBe('Recoverable+Purgeable');
    expect(recoveryLevelOf({ enableSoftDelete: true, softDeleteRetentionInDays: 7, enablePurgeProtection: true })).toBe('CustomizedRecoverable');
    expect(recoveryLevelOf({ enableSoftDelete: false, softDeleteRetentionInDays: 90, enablePurgeProtection: false })).toBe('Purgeable');
  });
  it('RBAC data actions', () => {
    expect(dataActionOf('secrets', 'get')).toBe('Microsoft.KeyVault/vaults/secrets/getSecret/action');
    expect(dataActionOf('keys', 'unwrapKey')).toBe('Microsoft.KeyVault/vaults/keys/unwrap/action');
    expect(actionMatches('Microsoft.KeyVault/vaults/*', dataActionOf('keys', 'wrapKey'))).toBe(true);
    expect(actionMatches('Microsoft.KeyVault/vaults/secrets/*', dataActionOf('keys', 'get'))).toBe(false);
  });
  it('object URLs', () => {
    expect(parseObjectUrl('https://kv1.vault.localhost:8443/secrets/abc/0123')).toMatchObject({ vaultName: 'kv1', collection: 'secrets', name: 'abc', version: '0123' });
    expect(parseObjectUrl('https://kv1.vault.localhost/keys/k')).toMatchObject({ name: 'k', version: undefined });
  });
});

describe('RSA operations', () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const k = exportRsa(privateKey);
  const pub = publicKeyOf(k.n, k.e);
  const priv = privateKeyOf(k.privateDer);
  it.each(['RSA-OAEP', 'RSA-OAEP-256', 'RSA1_5'] as const)('%s round trip', (alg) => {
    const data = Buffer.from('a BEK of 32 bytes.............!!');
    expect(rsaDecrypt(priv, alg, rsaEncrypt(pub, alg, data)).equals(data)).toBe(true);
  });
  it('wrong algorithm fails cleanly', () => {
    expect(() => rsaDecrypt(priv, 'RSA-OAEP-256', rsaEncrypt(pub, 'RSA-OAEP', Buffer.from('x')))).toThrow(/cannot be decrypted/);
  });
  it('RS256 sign/verify over a digest', () => {
    const d = Buffer.alloc(32, 7);
    const sig = rsaSign(priv, 'RS256', d);
    expect(rsaVerify(pub, 'RS256', d, sig)).toBe(true);
    expect(rsaVerify(pub, 'RS256', Buffer.alloc(32, 8), sig)).toBe(false);
  });
});
