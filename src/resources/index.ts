/** Resources slice: resource groups, ARM ids, the resource index. The only file other slices import. */
export { ResourceService, type ResourceGroup, type IndexEntry, type ResourceDeleter } from './service.js';
export { ResourceStore, resourceMigrations } from './store.js';
export { registerResourceRoutes } from './routes.js';
export { parseResourceId, formatResourceId, sameId, type ResourceId } from './model.js';
export { registerDeploymentRoutes, deploymentMigrations, failInterruptedDeployments, type DeploymentRouteDeps } from './deployments.js';
