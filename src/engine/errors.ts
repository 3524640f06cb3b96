/**
 * Errors of the engine.
 *
 * Two families:
 * - {@link ChunkStoreError}: what a chunk store reports. Its `kind` says what a caller may do:
 *   `NotFound` (the object does not exist), `Transient` (retrying the same call may succeed:
 *   throttling, timeouts, too many open files), `Permanent` (retrying will not help: bad id,
 *   no space, permission denied, corrupt backend). The retry wrapper relies on this and never guesses.
 * - {@link EngineError}: what an engine operation (backup, restore, verify, gc) reports. Its `code`
 *   is stable and user-facing codes follow the product's error catalogue (`UserError*`).
 */

export type ChunkStoreErrorKind = 'NotFound' | 'Transient' | 'Permanent';

export class ChunkStoreError extends Error {
  override readonly name = 'ChunkStoreError';
  constructor(
    readonly kind: ChunkStoreErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof ChunkStoreError && err.kind === 'NotFound';
}

export type EngineErrorCode =
  /** A chunk's content does not match its id (GCM tag or HMAC check failed). Names the image offset. */
  | 'UserErrorChunkCorrupted'
  /** A manifest references a chunk the store does not have. Names the image offset. */
  | 'UserErrorChunkMissing'
  /** A manifest file is truncated, has a bad checksum or an unknown version. */
  | 'ManifestCorrupted'
  /** An authenticated (version 2) manifest or index file failed its MAC: changed, swapped or moved to another place, or the key was not given. */
  | 'ManifestAuthenticationFailed'
  /** An exclusive create found the name taken (a recovery point id or manifest collision): nothing was overwritten. */
  | 'AlreadyExists'
  /** Wrapped keys could not be unwrapped (wrong master key or damaged blob). */
  | 'KeyUnwrapFailed'
  /** A snapshot could not be taken (e.g. reflink forced where unsupported). */
  | 'SnapshotFailed'
  /** The source changed size or returned a short read during a backup. */
  | 'SourceChanged'
  /** Bad arguments (sizes, chunk size, bitmap not matching the image). */
  | 'InvalidArgument'
  /** The operation was aborted through its AbortSignal. */
  | 'Aborted'
  /** A chunk store call failed (see `cause`, a ChunkStoreError). */
  | 'StoreFailure';

export interface EngineErrorDetails {
  /** Byte offset in the image of the chunk concerned. */
  offset?: number;
  chunkIndex?: number;
  chunkId?: string;
}

export class EngineError extends Error {
  override readonly name = 'EngineError';
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly details: EngineErrorDetails = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Wrap any error thrown while talking to a store into an EngineError (keeps EngineErrors as they are). */
export function asEngineError(err: unknown, context: string): EngineError {
  if (err instanceof EngineError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  return new EngineError('StoreFailure', `${context}: ${msg}`, {}, { cause: err });
}
