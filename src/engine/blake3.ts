/**
 * BLAKE3, the chunk hash of new stores (FORMAT.md), from the Rust `blake3` crate's prebuilt N-API
 * binding (napi-rs `@napi-rs/blake-hash`, SIMD, ≈ 4 GB/s per core on the reference VM).
 *
 * The project depends (optionally) on the binding package of its platform (`@napi-rs/blake-hash-linux-x64-gnu`)
 * rather than the `@napi-rs/blake-hash` wrapper: the wrapper lists a binding for every platform as
 * an optional dependency, and a registry that serves only some of them (this one) leaves
 * `package-lock.json` out of sync, so `npm ci` refuses to install. On another platform install
 * the wrapper (or that platform's binding): it is found here too. Where none loads, new stores
 * use SHA-256 (`generateStoreKeys`) and a BLAKE3 store fails with a message naming the package.
 * Loaded on first use, so hosts that never hash (the CLI) do not load it.
 */
import { createRequire } from 'node:module';
import { EngineError } from './errors.js';

interface Blake3Binding {
  blake3(input: Uint8Array): Buffer;
}

const CANDIDATES = ['@napi-rs/blake-hash-linux-x64-gnu', '@napi-rs/blake-hash'];
let binding: Blake3Binding | undefined;

function load(): Blake3Binding {
  const require = createRequire(import.meta.url);
  const reasons: string[] = [];
  for (const name of CANDIDATES) {
    try {
      const m = require(name) as Partial<Blake3Binding>;
      if (typeof m.blake3 === 'function') return m as Blake3Binding;
      reasons.push(`${name}: no blake3 export`);
    } catch (err) {
      reasons.push(`${name}: ${err instanceof Error ? err.message.split('\n')[0] : String(err)}`);
    }
  }
  throw new EngineError('InvalidArgument', `BLAKE3 is not available on ${process.platform}-${process.arch} (install @napi-rs/blake-hash): ${reasons.join('; ')}`);
}

/** Whether BLAKE3 can be used here (new stores choose SHA-256 when it cannot). */
export function blake3Available(): boolean {
  try {
    binding ??= load();
    return true;
  } catch {
    return false;
  }
}

/** BLAKE3-256 of `data` (32 bytes). */
export function blake3(data: Uint8Array): Buffer {
  binding ??= load();
  return binding.blake3(data);
}
