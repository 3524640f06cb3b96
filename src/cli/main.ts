/**
 * Entry of every CLI command but `serve` (bin/rsvault.js sends `serve` to the composition root, src/main.ts),
 * so client commands start fast without loading the server.
 */
import { runCli } from './index.js';

await runCli(process.argv, {
  serve: async () => {
    throw new Error('`rsvault serve` is started through bin/rsvault.js');
  },
});
