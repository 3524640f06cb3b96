/**
 * The Python Azure SDKs (Debian python3-azure, /usr/bin/python3), unmodified, run the whole encrypted-VM
 * backup-and-restore flow against the real server: test/clients/e2e_py.py with REQUESTS_CA_BUNDLE only. The flow and
 * its checks: test/helpers/e2e-client.ts.
 */
import path from 'node:path';
import { ROOT } from './helpers/server.js';
import { clientFlowSuite } from './helpers/e2e-client.js';

clientFlowSuite({
  title: 'azure.* Python SDKs: create → encrypt → protect → backup → incremental → restore disks → download → deploy → start → read',
  tag: 'py',
  // PYTHONPATH cleared: the Debian interpreter with its own dist-packages only.
  command: (s) => ({ cmd: '/usr/bin/python3', args: [path.join(ROOT, 'test', 'clients', 'e2e_py.py')], env: { REQUESTS_CA_BUNDLE: s.creds.caPath, PYTHONPATH: '' } }),
});
