/** Resource groups and the subscription-wide resource index. */
import { ArmError, armErrors } from '../platform/http/errors.js';
import type { AsyncOperations } from '../platform/http/async-ops.js';
import { resourceGroupNameError } from './model.js';
import { retryOnUniqueViolation } from '../platform/db/index.js';
import type { IndexedResource, ResourceGroupRow, ResourceStore } from './store.js';

export interface ResourceGroup {
  id: string;
  name: string;
  location: string;
  tags: Record<string, string>;
  managedBy?: string | undefined;
  provisioningState: string;
}

export interface IndexEntry {
  id: string;
  subscriptionId: string;
  resourceGroup: string;
  type: string;
  name: string;
  location: string;
  tags?: Record<string, string> | undefined;
}

/** A slice that owns a resource type deletes one of its resources when its group is deleted. */
export type ResourceDeleter = (id: string) => Promise<void>;

const toGroup = (r: ResourceGroupRow): ResourceGroup => ({
  id: `/subscriptions/${r.subscription_id}/resourceGroups/${r.name}`,
  name: r.name,
  location: r.location,
  tags: JSON.parse(r.tags_json) as Record<string, string>,
  managedBy: r.managed_by ?? undefined,
  provisioningState: r.state,
});

type GroupPut = { location: string; tags?: Record<string, string> | undefined; managedBy?: string | undefined };

export class ResourceService {
  private readonly deleters = new Map<string, ResourceDeleter>();

  constructor(
    private readonly store: ResourceStore,
    private readonly subscriptionId: () => string,
    private readonly ops: AsyncOperations,
  ) {}

  requireSubscription(sub: string): void {
    if (sub.toLowerCase() !== this.subscriptionId().toLowerCase()) throw armErrors.subscriptionNotFound(sub);
  }

  private key(sub: string, rg: string) {
    return `${sub}/${rg}`.toLowerCase();
  }

  async getGroup(sub: string, rg: string): Promise<ResourceGroup | undefined> {
    const r = await this.store.db.selectFrom('resource_groups').selectAll().where('id_norm', '=', this.key(sub, rg)).executeTakeFirst();
    return r ? toGroup(r) : undefined;
  }

  /** The group, or ResourceGroupNotFound: every slice calls this before creating a resource. */
  async requireGroup(sub: string, rg: string): Promise<ResourceGroup> {
    this.requireSubscription(sub);
    const g = await this.getGroup(sub, rg);
    if (!g || g.provisioningState === 'Deleting') throw armErrors.resourceGroupNotFound(rg);
    return g;
  }

  /** Create-or-update; concurrent PUTs of one new group (any process) create it once, the others update it. */
  createOrUpdateGroup(sub: string, rg: string, input: GroupPut): Promise<{ group: ResourceGroup; created: boolean }> {
    return retryOnUniqueViolation(() => this.createOrUpdateGroupOnce(sub, rg, input));
  }

  private async createOrUpdateGroupOnce(sub: string, rg: string, input: GroupPut): Promise<{ group: ResourceGroup; created: boolean }> {
    this.requireSubscription(sub);
    const err = resourceGroupNameError(rg);
    if (err) throw armErrors.invalidName('resource group', rg, err);
    const existing = await this.getGroup(sub, rg);
    if (existing?.provisioningState === 'Deleting') {
      throw new ArmError(409, 'ResourceGroupBeingDeleted', `The resource group '${rg}' is in deprovisioning state and cannot perform this operation.`, { recommendation: 'Wait for the delete to finish, then retry.' });
    }
    if (existing && existing.location.toLowerCase() !== input.location.toLowerCase()) {
      throw new ArmError(409, 'InvalidResourceGroupLocation', `Invalid resource group location '${input.location}'. The Resource group already exists in location '${existing.location}'.`, {
        recommendation: `Use location '${existing.location}', or pick another group name.`,
      });
    }
    const tags = JSON.stringify(input.tags ?? existing?.tags ?? {});
    if (existing) {
      await this.store.db.updateTable('resource_groups').set({ tags_json: tags, managed_by: input.managedBy ?? existing.managedBy ?? null }).where('id_norm', '=', this.key(sub, rg)).execute();
    } else {
      await this.store.db
        .insertInto('resource_groups')
        .values({ id_norm: this.key(sub, rg), subscription_id: sub, name: rg, location: input.location, tags_json: tags, managed_by: input.managedBy ?? null, state: 'Succeeded', created_at: Date.now() })
        .execute();
    }
    return { group: (await this.getGroup(sub, rg))!, created: !existing };
  }

  async listGroups(sub: string): Promise<ResourceGroup[]> {
    this.requireSubscription(sub);
    const rows = await this.store.db.selectFrom('resource_groups').selectAll().where('subscription_id', '=', sub).orderBy('name').execute();
    return rows.map(toGroup);
  }

  registerDeleter(type: string, deleter: ResourceDeleter): void {
    this.deleters.set(type.toLowerCase(), deleter);
  }

  /** Starts deleting a group and everything in it; returns the operation id. */
  async beginDeleteGroup(sub: string, rg: string): Promise<string | undefined> {
    const g = await this.getGroup(sub, rg);
    if (!g) return undefined;
    await this.store.db.updateTable('resource_groups').set({ state: 'Deleting' }).where('id_norm', '=', this.key(sub, rg)).execute();
    return this.ops.start('Microsoft.Resources/resourceGroups/delete', g.id, async () => {
      try {
        for (const r of await this.listIndexed(sub, { resourceGroup: rg })) {
          const del = this.deleters.get(r.type.toLowerCase());
          if (del) await del(r.id);
          await this.unindex(r.id);
        }
        await this.store.db.deleteFrom('resource_groups').where('id_norm', '=', this.key(sub, rg)).execute();
      } catch (e) {
        await this.store.db.updateTable('resource_groups').set({ state: 'Succeeded' }).where('id_norm', '=', this.key(sub, rg)).execute();
        throw e;
      }
    });
  }

  // ---- resource index ------------------------------------------------------------------------------------------
  async index(e: IndexEntry): Promise<void> {
    const row: IndexedResource = {
      id_norm: e.id.toLowerCase(),
      id: e.id,
      subscription_id: e.subscriptionId,
      resource_group: e.resourceGroup.toLowerCase(),
      type: e.type,
      name: e.name,
      location: e.location,
      tags_json: JSON.stringify(e.tags ?? {}),
      created_at: Date.now(),
    };
    await this.store.db
      .insertInto('resource_index')
      .values(row)
      .onConflict((oc) => oc.column('id_norm').doUpdateSet({ location: row.location, tags_json: row.tags_json }))
      .execute();
  }

  async unindex(id: string): Promise<void> {
    await this.store.db.deleteFrom('resource_index').where('id_norm', '=', id.toLowerCase()).execute();
  }

  async listIndexed(sub: string, filter: { resourceGroup?: string | undefined; type?: string | undefined } = {}): Promise<IndexEntry[]> {
    let q = this.store.db.selectFrom('resource_index').selectAll().where('subscription_id', '=', sub);
    if (filter.resourceGroup) q = q.where('resource_group', '=', filter.resourceGroup.toLowerCase());
    const rows = await q.orderBy('id_norm').execute();
    return rows
      .filter((r) => !filter.type || r.type.toLowerCase() === filter.type.toLowerCase())
      .map((r) => ({ id: r.id, subscriptionId: r.subscription_id, resourceGroup: r.resource_group, type: r.type, name: r.name, location: r.location, tags: JSON.parse(r.tags_json) as Record<string, string> }));
  }
}
