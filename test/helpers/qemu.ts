/**
 * Runs qemu-img for tests, retrying the one failure that is qemu's and not ours: when it formats a LUKS image it
 * times PBKDF2 with the thread's CPU clock, and on a loaded (or coarse-clocked) machine the first 32768 iterations
 * can measure 0 ms, which qemu reports as "Unable to get accurate CPU usage" (crypto/pbkdf.c) whatever iter-time says.
 * Any other failure is thrown at once.
 */
import { spawnSync } from 'node:child_process';

const QEMU_CLOCK_FLAKE = 'Unable to get accurate CPU usage';

export function qemuImg(args: string[], attempts = 5): string {
  let last = '';
  for (let i = 0; i < attempts; i++) {
    const r = spawnSync('qemu-img', args, { encoding: 'utf8' });
    if (r.status === 0) return r.stdout;
    last = r.stderr || String(r.error ?? `exit ${r.status}`);
    if (!last.includes(QEMU_CLOCK_FLAKE)) break;
  }
  throw new Error(`qemu-img ${args.join(' ')} failed: ${last}`);
}
