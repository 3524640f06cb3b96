/**
 * ARM actions on a vault for its data integrity (rsvault extensions, Azure has no equivalent):
 * - `POST …/vaults/{v}/verify`: starts (or joins) the vault's Verify job; 202 + Azure-AsyncOperation / Location,
 *   the operation status carries the job id (as backup does). Action `Microsoft.RecoveryServices/Vaults/backupVerify/action`
 *   (Backup Operator, Backup Contributor, Contributor, Owner).
 * - `POST …/vaults/{v}/recatalog`: rebuilds the recovery point rows from the vault directory's index files; 200 with
 *   what was recovered and skipped. Vault write (`Microsoft.RecoveryServices/Vaults/write`: Contributor, Owner).
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { originOf } from '../platform/http/app.js';
import { accepted } from '../platform/http/async-ops.js';
import type { RecoveryService } from './service.js';
import type { VaultIntegrity } from './verify-job.js';

const RS = 'Microsoft.RecoveryServices/Vaults';
const V = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.RecoveryServices/vaults/:vault';
type VP = { sub: string; rg: string; vault: string };

export function registerIntegrityRoutes(app: FastifyInstance, deps: { recovery: RecoveryService; integrity: VaultIntegrity }): void {
  const { recovery: svc, integrity } = deps;
  const vault = (req: FastifyRequest) => {
    const p = req.params as VP;
    return svc.requireVault(p.sub, p.rg, p.vault);
  };
  const link = (req: FastifyRequest, pathPart: string, api: string) => `${originOf(req)}${pathPart}?api-version=${encodeURIComponent(api)}`;

  app.post(`${V}/verify`, { config: { action: `${RS}/backupVerify/action` } }, async (req, reply) => {
    const api = requireArmApiVersion(req.url);
    const v = await vault(req);
    const opId = await integrity.beginVerify(v);
    return accepted(reply, { asyncOperation: link(req, `${v.id}/backupOperations/${opId}`, api), location: link(req, `${v.id}/backupOperationResults/${opId}`, api) }, 1);
  });

  app.post(`${V}/recatalog`, { config: { action: `${RS}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const v = await vault(req);
    return integrity.recatalog(v);
  });
}
