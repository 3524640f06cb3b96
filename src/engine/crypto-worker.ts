/**
 * Worker thread body: answers crypto requests (crypto-ops.ts), in order. The main thread owns the
 * slot pools; a request names a slot (buffer, offset, length). Shared slots are not copied; an
 * ordinary output buffer is transferred here with the request and back with the response.
 */
import { parentPort } from 'node:worker_threads';
import { handleRequest, type WorkerRequest } from './crypto-ops.js';

const port = parentPort;
if (port) {
  port.on('message', (req: WorkerRequest) => {
    const res = handleRequest(req);
    port.postMessage(res, res.out ? [res.out] : []);
  });
  // Booted (modules loaded): seq 0 is never a request's. Until a worker says so, a backup hashes and
  // seals on its own thread instead of queueing behind the boot (pool.ts `ready`).
  port.postMessage({ seq: 0, ok: true });
}
