import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import { BlobSASPermissions, ContainerSASPermissions, StorageSharedKeyCredential, generateBlobSASQueryParameters } from '@azure/storage-blob';
import { hmac, serviceSasStringToSign, sharedKeyStringToSign } from './azure-auth.js';

const key = randomBytes(32);
const cred = new StorageSharedKeyCredential('acct1', key.toString('base64'));

describe('service SAS string-to-sign: what the official SDK signs, per signed version', () => {
  for (const version of ['2015-04-05', '2018-11-09', '2020-12-06', '2021-12-02', '2026-04-06']) {
    it(`sv=${version}: blob SAS and container SAS verify with the account key`, () => {
      const q = new URLSearchParams(generateBlobSASQueryParameters({ version, containerName: 'cont1', blobName: 'disk.vhd', permissions: BlobSASPermissions.parse('r'), startsOn: new Date(Date.now() - 60_000), expiresOn: new Date(Date.now() + 3600_000), contentType: 'application/octet-stream' }, cred).toString());
      expect(hmac(key, serviceSasStringToSign(q, '/blob/acct1/cont1/disk.vhd')!)).toBe(q.get('sig'));
      expect(hmac(key, serviceSasStringToSign(q, '/blob/acct1/cont1/other.vhd')!)).not.toBe(q.get('sig'));
      const c = new URLSearchParams(generateBlobSASQueryParameters({ version, containerName: 'cont1', permissions: ContainerSASPermissions.parse('rl'), expiresOn: new Date(Date.now() + 3600_000) }, cred).toString());
      expect(hmac(key, serviceSasStringToSign(c, '/blob/acct1/cont1')!)).toBe(c.get('sig'));
    });
  }
  it('versions before 2015-04-05 and malformed ones are not accepted', () => {
    expect(serviceSasStringToSign(new URLSearchParams({ sv: '2013-08-15', sp: 'r' }), '/blob/a/c/b')).toBeUndefined();
    expect(serviceSasStringToSign(new URLSearchParams({ sv: 'x', sp: 'r' }), '/blob/a/c/b')).toBeUndefined();
  });
});

describe('Shared Key string-to-sign', () => {
  it('canonical headers (x-ms-*, sorted, folded) and resource (path + sorted, decoded query)', () => {
    const s = sharedKeyStringToSign('acct1', {
      method: 'get',
      rawUrl: '/cont1?restype=container&comp=list&prefix=a%20b&Marker=m',
      headers: { 'x-ms-version': '2021-12-02', 'x-ms-date': 'Fri, 04 Dec 2026 16:00:00 GMT', 'x-ms-client-request-id': ' id  1 ', 'content-length': '0', date: 'ignored', range: 'bytes=0-1' },
    });
    expect(s).toBe(['GET', '', '', '', '', '', '', '', '', '', '', 'bytes=0-1', 'x-ms-client-request-id:id 1', 'x-ms-date:Fri, 04 Dec 2026 16:00:00 GMT', 'x-ms-version:2021-12-02', '/acct1/cont1', 'comp:list', 'marker:m', 'prefix:a b', 'restype:container'].join('\n'));
  });
});
