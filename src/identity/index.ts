/** Identity slice: the only file other slices import. */
export { IdentityService, graphNotFound, type BootstrapResult } from './service.js';
export { IdentityStore, identityMigrations } from './store.js';
export { registerIdentityRoutes, LOCATIONS } from './routes.js';
export { BACKUP_MANAGEMENT_SERVICE_APP_ID, BACKUP_MANAGEMENT_SERVICE_NAME, BUILT_IN_ROLES, findRole, isGuid, type Principal, type RoleAssignment } from './model.js';
