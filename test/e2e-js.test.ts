/**
 * The JavaScript Azure SDKs (@azure/*), unmodified, run the whole encrypted-VM backup-and-restore flow against the real
 * server: test/clients/e2e-js.mjs with NODE_EXTRA_CA_CERTS only. The flow and its checks: test/helpers/e2e-client.ts.
 */
import path from 'node:path';
import { ROOT } from './helpers/server.js';
import { clientFlowSuite } from './helpers/e2e-client.js';

clientFlowSuite({
  title: '@azure/* SDKs: create → encrypt → protect → backup → incremental → restore disks → download → deploy → start → read',
  tag: 'js',
  command: (s) => ({ cmd: process.execPath, args: [path.join(ROOT, 'test', 'clients', 'e2e-js.mjs')], env: { NODE_EXTRA_CA_CERTS: s.creds.caPath } }),
});
