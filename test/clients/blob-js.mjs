// The official JavaScript Storage SDK (@azure/storage-blob) against rsvault's blob plane, as a user runs it:
// `NODE_EXTRA_CA_CERTS=<data dir>/tls/ca.pem node blob-js.mjs '<json>'`. Prints one JSON object of what it saw.
/* global console */
import { Buffer } from 'node:buffer';
import { createHash } from 'node:crypto';
import process from 'node:process';
import { BlobServiceClient, BlobClient, StorageSharedKeyCredential, generateBlobSASQueryParameters, BlobSASPermissions } from '@azure/storage-blob';
import { ClientSecretCredential } from '@azure/identity';

const a = JSON.parse(process.argv[2]);
const sha = (b) => createHash('sha256').update(b).digest('hex');
const out = {};
const err = (e) => ({ statusCode: e.statusCode, code: e.code ?? e.details?.errorCode });

async function exercise(label, service, container) {
  const r = {};
  const names = [];
  for await (const c of service.listContainers()) names.push(c.name);
  r.containers = names;
  const cc = service.getContainerClient(container);
  r.containerExists = await cc.exists();
  const blobs = [];
  for await (const b of cc.listBlobsFlat()) blobs.push({ name: b.name, size: b.properties.contentLength, etag: b.properties.etag, type: b.properties.blobType });
  r.blobs = blobs;
  // paging with a marker: one blob per page
  const pages = [];
  for await (const p of cc.listBlobsFlat().byPage({ maxPageSize: 1 })) pages.push(p.segment.blobItems.map((b) => b.name));
  r.pages = pages;
  const prefixed = [];
  for await (const b of cc.listBlobsFlat({ prefix: 'azuredeploy-' })) prefixed.push(b.name);
  r.prefixed = prefixed;
  const tree = [];
  for await (const x of cc.listBlobsByHierarchy('-', { prefix: 'azuredeploy' })) tree.push({ kind: x.kind, name: x.name });
  r.tree = tree;
  r.skuName = (await service.getAccountInfo()).skuName;
  const disk = cc.getBlobClient(a.osBlob);
  const props = await disk.getProperties();
  r.props = { contentLength: props.contentLength, etag: props.etag, blobType: props.blobType, lastModified: props.lastModified?.toISOString(), version: props.version };
  r.diskSha = sha(await disk.downloadToBuffer());
  const part = await disk.download(a.offset, a.count);
  const chunks = [];
  for await (const c of part.readableStreamBody) chunks.push(c);
  r.range = { contentRange: part.contentRange, contentLength: part.contentLength, hex: Buffer.concat(chunks).toString('hex') };
  r.template = (await cc.getBlobClient(a.templateBlob).downloadToBuffer()).toString('utf8');
  try {
    await disk.download(a.size + 100, 10);
    r.badRange = 'no error';
  } catch (e) {
    r.badRange = err(e);
  }
  try {
    await cc.getBlobClient('no-such-blob').getProperties();
    r.missing = 'no error';
  } catch (e) {
    r.missing = err(e);
  }
  out[label] = r;
}

const cred = new ClientSecretCredential(a.tenantId, a.clientId, a.clientSecret, { authorityHost: a.authority, disableInstanceDiscovery: true });
await exercise('bearer', new BlobServiceClient(a.endpoint, cred), a.container);
const keyCred = new StorageSharedKeyCredential(a.account, a.accountKey);
await exercise('sharedKey', new BlobServiceClient(a.endpoint, keyCred), a.container);

// SAS URLs: the one the server handed out (listServiceSas), and one this SDK signs with the listed account key.
const sas = {};
const viaServer = new BlobClient(a.osSasUrl);
sas.serverSha = sha(await viaServer.downloadToBuffer());
const part = await viaServer.download(a.offset, a.count);
const chunks = [];
for await (const c of part.readableStreamBody) chunks.push(c);
sas.serverRange = { contentRange: part.contentRange, hex: Buffer.concat(chunks).toString('hex') };
sas.templateViaServerSas = (await new BlobClient(a.templateSasUrl).downloadToBuffer()).toString('utf8');
const q = generateBlobSASQueryParameters({ containerName: a.container, blobName: a.osBlob, permissions: BlobSASPermissions.parse('r'), expiresOn: new Date(Date.now() + 3600_000) }, keyCred).toString();
sas.sdkSha = sha(await new BlobClient(`${a.endpoint}${a.container}/${a.osBlob}?${q}`).downloadToBuffer());
try {
  await new BlobClient(`${a.endpoint}${a.container}/${a.templateBlob}?${q}`).getProperties();
  sas.otherBlob = 'no error';
} catch (e) {
  sas.otherBlob = err(e);
}
try {
  await new BlobClient(`${a.endpoint}${a.container}/${a.osBlob}`).getProperties();
  sas.anonymous = 'no error';
} catch (e) {
  sas.anonymous = err(e);
}
out.sas = sas;
console.log(JSON.stringify(out));
