/** Storage slice: storage accounts as restore targets (directories), blob reads with a bearer token or a SAS. The only file other slices import. */
export { StorageService, BLOB_READ_ACTION, type StorageAccount, type AccountInput, type BlobReadAccess } from './service.js';
export { StorageStore, storageMigrations } from './store.js';
export { registerStorageRoutes, accountView, type StorageRouteDeps } from './routes.js';
export { STORAGE_TYPE, accountIdOf, parseAccountId, parseBlobUrl, blobUrlOf, containerNameError } from './model.js';
