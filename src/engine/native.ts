/**
 * Loader of the optional native AES-256-GCM addon (native/, built by scripts/build-native.mjs).
 * It runs the OpenSSL inside the node binary straight into caller-provided buffers, without the
 * per-update() allocation and copy of node:crypto. When the addon is absent, fails to load, or
 * RSVAULT_NATIVE=0 is set, `nativeGcm` is undefined and callers use node:crypto instead.
 * Each thread (main or worker_threads Worker) that imports this module loads its own instance.
 */
import { createRequire } from 'node:module';

export interface NativeGcm {
  /** out.length >= plain.length + 16: writes ciphertext to out[0..n) and the 16-byte tag to out[n..n+16). */
  seal(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, plain: Uint8Array, out: Uint8Array): void;
  /** Decrypts ct into out[0..ct.length); returns false when the tag does not authenticate (out is then unspecified). */
  open(key: Uint8Array, iv: Uint8Array, aad: Uint8Array, ct: Uint8Array, tag: Uint8Array, out: Uint8Array): boolean;
  /** The address of bytes[0] modulo m (absent in addons built before it existed). */
  addressMod?(bytes: Uint8Array, m: number): number;
  /** madvise(MADV_HUGEPAGE) over the 2 MiB-aligned interior of bytes; the bytes advised (absent in older addons). */
  adviseHugePages?(bytes: Uint8Array): number;
}

/** From this file (src/engine/ or dist/engine/) to the addon. */
const ADDON_PATH = '../../native/build/Release/rsvault_native.node';

let status: string;

function load(): NativeGcm | undefined {
  if (process.env.RSVAULT_NATIVE === '0') {
    status = 'node:crypto (native addon disabled by RSVAULT_NATIVE=0)';
    return undefined;
  }
  const require = createRequire(import.meta.url);
  let file: string;
  try {
    file = require.resolve(ADDON_PATH);
  } catch {
    status = 'node:crypto (native addon not built)';
    return undefined;
  }
  try {
    const mod = require(file) as Partial<NativeGcm>;
    if (typeof mod.seal !== 'function' || typeof mod.open !== 'function') throw new Error('unexpected exports');
    status = 'native AES-256-GCM (OpenSSL in node)';
    return mod as NativeGcm;
  } catch (err) {
    status = `node:crypto (native addon failed to load: ${err instanceof Error ? err.message.split('\n')[0] : String(err)})`;
    return undefined;
  }
}

export const nativeGcm: NativeGcm | undefined = load();

/**
 * The address of `bytes[0]` modulo `m`, or undefined without the addon. O_DIRECT needs aligned
 * buffers and JavaScript cannot see addresses: callers allocate `m` bytes more and start their view
 * at `(m - addressMod) % m`. An ArrayBuffer's memory never moves, not even when transferred.
 */
export function addressMod(bytes: Uint8Array, m: number): number | undefined {
  return typeof nativeGcm?.addressMod === 'function' ? nativeGcm.addressMod(bytes, m) : undefined;
}

/**
 * Ask for transparent huge pages over the 2 MiB-aligned interior of `bytes` (Linux, native addon;
 * else 0): for large buffers allocated once and reused, before their first touch. On the reference
 * VM a 4 KiB page fault costs ≈ 6 µs (a fresh 4 MiB slot ≈ 25 ms before the first byte lands in it);
 * one 2 MiB fault replaces 512 of them. Returns the bytes advised.
 */
export function adviseHugePages(bytes: Uint8Array): number {
  return typeof nativeGcm?.adviseHugePages === 'function' ? nativeGcm.adviseHugePages(bytes) : 0;
}

/** Which AES-GCM path is in use, for logs and bench output. */
export function nativeStatus(): string {
  return status;
}
