/**
 * Worker thread body: answers crypto requests (crypto-ops.ts) over shared memory, in order.
 * The main thread owns SharedArrayBuffer slot pools; a request names a slot (sab, offset, length)
 * and nothing is copied or transferred.
 */
import { parentPort } from 'node:worker_threads';
import { handleRequest, type WorkerRequest } from './crypto-ops.js';

const port = parentPort;
if (port) {
  port.on('message', (req: WorkerRequest) => {
    port.postMessage(handleRequest(req));
  });
}
