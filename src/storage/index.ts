/** Storage slice: storage accounts as restore targets (directories), blob reads with a bearer token, Shared Key or a SAS (path-based and the Azure-shaped blob plane). The only file other slices import. */
export { StorageService, BLOB_READ_ACTION, CONTAINER_READ_ACTION, type StorageAccount, type AccountInput, type BlobReadAccess } from './service.js';
export { StorageStore, storageMigrations } from './store.js';
export { registerStorageRoutes, accountView, type StorageRouteDeps } from './routes.js';
export { STORAGE_TYPE, accountIdOf, parseAccountId, parseBlobUrl, blobUrlOf, blobPathUrlOf, blobEndpointOf, containerNameError } from './model.js';
export { registerBlobPlane, StorageXmlError, type BlobPlaneDeps } from './blob-plane.js';
export { STORAGE_SERVICE_VERSION } from './azure-auth.js';
