/**
 * The backup engine's public API: bytes only (chunks, manifests, stores, keys); no product words.
 * See README.md (concepts, concurrency matrix) and FORMAT.md (on-disk formats).
 */
export { ChunkStoreError, EngineError, isNotFound } from './errors.js';
export type { ChunkStoreErrorKind, EngineErrorCode, EngineErrorDetails } from './errors.js';
export { isChunkId, isMetaName } from './store.js';
export type { ChunkStore, ChunkStat, DeleteResult } from './store.js';
export { FsChunkStore, writeFileDurable } from './fs-store.js';
export type { FsChunkStoreOptions } from './fs-store.js';
export { withRetry, withConcurrencyLimit, Semaphore } from './store-wrappers.js';
export type { RetryOptions } from './store-wrappers.js';
export { runChunkStoreConformance } from './store-conformance.js';
export { ObjectChunkStore } from './object-store.js';
export type { ObjectBackend, ObjectHead } from './object-store.js';
export { AzureBlobBackend, openAzureBlobStore } from './azure-blob-store.js';
export type { AzureBlobOptions } from './azure-blob-store.js';
export { S3Backend, openS3Store } from './s3-store.js';
export type { S3Options } from './s3-store.js';
export { replicatedStore } from './replicate.js';
export { copyStore } from './copy-store.js';
export type { CopyStoreStats, CopyStoreOptions } from './copy-store.js';
export type { StoreFixture, TestApi } from './store-conformance.js';
export {
  generateStoreKeys,
  generateMasterKey,
  wrapStoreKeys,
  unwrapStoreKeys,
  storeKeysToBytes,
  storeKeysFromBytes,
  chunkHashOf,
  CHUNK_HASHES,
  chunkIdOf,
  chunkDigestOf,
  chunkIdFromDigest,
  imageDigestOf,
  zeroChunkDigest,
  seal,
  open as openSealed,
  SEAL_OVERHEAD,
  WRAPPED_KEYS_BYTES,
  WRAPPED_KEYS_V2_BYTES,
} from './seal.js';
export type { ChunkHash, StoreKeys } from './seal.js';
export { ChangedBlockBitmap, BITMAP_BLOCK_SIZE } from './bitmap.js';
export { Manifest, encodeManifest, decodeManifest, writeManifestFile, readManifestFile, writeManifest, readManifest, MIN_CHUNK_SIZE, MAX_CHUNK_SIZE, MANIFEST_VERSION, MANIFEST_VERSION_AUTH } from './manifest.js';
export type { WriteManifestOptions } from './manifest.js';
export { manifestKeyOf, bindingOf, writeFileExclusive } from './manifest-auth.js';
export type { MacContext } from './manifest-auth.js';
export { encodeIndexFile, decodeIndexFile, writeIndexFile, readIndexFile } from './index-file.js';
export { quarantineChunk, listQuarantine, QUARANTINE_DIR } from './quarantine.js';
export type { QuarantineResult } from './quarantine.js';
export { openFileSource, createSnapshot } from './snapshot.js';
export type { ImageSource, Snapshot, SnapshotMode, SnapshotOptions } from './snapshot.js';
export { backupImage, DEFAULT_CHUNK_SIZE } from './backup.js';
export type { BackupOptions, BackupResult, BackupStats } from './backup.js';
export { restoreImage, restoreToStream, ImageReader } from './restore.js';
export type { RestoreOptions, RestoreStats } from './restore.js';
export { verifyManifest, verifyStore } from './verify.js';
export type { ManifestVerifyReport, StoreVerifyReport, ChunkProblem, VerifyManifestOptions, VerifyStoreOptions } from './verify.js';
export { collectGarbage, FOSSIL_INDEX } from './gc.js';
export type { GcOptions, GcStats } from './gc.js';
export { CryptoPool, InlineCrypto, sharedCryptoPool, defaultWorkerCount } from './pool.js';
export type { CryptoRunner } from './pool.js';
export type { Progress, ProgressListener } from './progress.js';

// LUKS1 (header, PBKDF2, AF splitter, key slots, batched aes-xts-plain64): what compute's disk encryption writes.
export { Xts, SECTOR } from './luks/xts.js';
export { addKey, afMerge, afSplit, formatHeader, isLuksHeader, LuksError, LuksVolume, pbkdf2Speed, readHeader, removeKey, unlock, verifyMasterKey, type FormatOptions } from './luks/luks1.js';
