// Links this package's own `rsvault` binary into node_modules/.bin, so `npx rsvault …` works in a fresh clone
// right after `npm ci` (npm links the bins of dependencies only, not of the package being installed).
import { mkdirSync, rmSync, symlinkSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const binDir = path.join(root, 'node_modules', '.bin');
mkdirSync(binDir, { recursive: true });
const link = path.join(binDir, 'rsvault');
rmSync(link, { force: true });
symlinkSync(path.relative(binDir, path.join(root, 'bin', 'rsvault.js')), link);
chmodSync(path.join(root, 'bin', 'rsvault.js'), 0o755);
