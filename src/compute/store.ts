/** Compute tables: managed disks, VMs (+ extensions), classic VMs, changed-block bitmaps, disk access grants (SAS). */
import type { Kysely } from 'kysely';
import { trackedResourceColumns, type Db, type Migration, type TrackedResourceRow } from '../platform/db/index.js';

export type ComputeTables = {
  compute_disks: TrackedResourceRow & {
    unique_id: string;
    image_path: string;
    /** 1 = the file lives under the data dir and is deleted with the disk; 0 = referenced in place. */
    owned: number;
    /** Guest-visible size in bytes. */
    size_bytes: number;
    os_type: string | null;
    state: string;
    managed_by: string | null;
    /** 'raw' | 'luks1' */
    format: string;
    /** The unlocked volume key, sealed with the installation master key (the host's "BEK volume"). */
    volume_key_sealed: string | null;
    encryption_json: string | null;
    props_json: string;
    created_at: number;
  };
  compute_vms: TrackedResourceRow & {
    vm_id: string;
    os_type: string;
    power_state: string;
    agent_installed: number;
    agent_version: string;
    props_json: string;
    created_at: number;
  };
  compute_vm_extensions: { id_norm: string; vm_id_norm: string; id: string; name: string; location: string; props_json: string; state: string; status_json: string | null; created_at: number };
  compute_classic_vms: { id_norm: string; id: string; subscription_id: string; resource_group: string; name: string; location: string; props_json: string; created_at: number };
  compute_bitmaps: { disk_id_norm: string; valid: number; bits: string; generation: number; pending_bits: string | null; stamp_json: string; reason: string | null; updated_at: number };
  compute_disk_access: { token: string; disk_id_norm: string; access: string; expires_at: number; created_at: number };
};

export const computeMigrations: Migration[] = [
  {
    name: '0401_compute_init',
    async up(db: Kysely<unknown>) {
      await db.schema
        .createTable('compute_disks')
        .$call(trackedResourceColumns)
        .addColumn('unique_id', 'text', (c) => c.notNull())
        .addColumn('image_path', 'text', (c) => c.notNull())
        .addColumn('owned', 'integer', (c) => c.notNull())
        .addColumn('size_bytes', 'bigint', (c) => c.notNull())
        .addColumn('os_type', 'text')
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('managed_by', 'text')
        .addColumn('format', 'text', (c) => c.notNull())
        .addColumn('volume_key_sealed', 'text')
        .addColumn('encryption_json', 'text')
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('compute_disks_rg').on('compute_disks').columns(['subscription_id', 'resource_group']).execute();
      await db.schema
        .createTable('compute_vms')
        .$call(trackedResourceColumns)
        .addColumn('vm_id', 'text', (c) => c.notNull())
        .addColumn('os_type', 'text', (c) => c.notNull())
        .addColumn('power_state', 'text', (c) => c.notNull())
        .addColumn('agent_installed', 'integer', (c) => c.notNull())
        .addColumn('agent_version', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema.createIndex('compute_vms_rg').on('compute_vms').columns(['subscription_id', 'resource_group']).execute();
      await db.schema
        .createTable('compute_vm_extensions')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('vm_id_norm', 'text', (c) => c.notNull())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('state', 'text', (c) => c.notNull())
        .addColumn('status_json', 'text')
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('compute_classic_vms')
        .addColumn('id_norm', 'text', (c) => c.primaryKey())
        .addColumn('id', 'text', (c) => c.notNull())
        .addColumn('subscription_id', 'text', (c) => c.notNull())
        .addColumn('resource_group', 'text', (c) => c.notNull())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('location', 'text', (c) => c.notNull())
        .addColumn('props_json', 'text', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('compute_bitmaps')
        .addColumn('disk_id_norm', 'text', (c) => c.primaryKey())
        .addColumn('valid', 'integer', (c) => c.notNull())
        .addColumn('bits', 'text', (c) => c.notNull())
        .addColumn('generation', 'bigint', (c) => c.notNull())
        .addColumn('pending_bits', 'text')
        .addColumn('stamp_json', 'text', (c) => c.notNull())
        .addColumn('reason', 'text')
        .addColumn('updated_at', 'bigint', (c) => c.notNull())
        .execute();
      await db.schema
        .createTable('compute_disk_access')
        .addColumn('token', 'text', (c) => c.primaryKey())
        .addColumn('disk_id_norm', 'text', (c) => c.notNull())
        .addColumn('access', 'text', (c) => c.notNull())
        .addColumn('expires_at', 'bigint', (c) => c.notNull())
        .addColumn('created_at', 'bigint', (c) => c.notNull())
        .execute();
    },
  },
];

export type DiskRow = ComputeTables['compute_disks'];
export type VmRow = ComputeTables['compute_vms'];
export type ExtensionRow = ComputeTables['compute_vm_extensions'];
export type ClassicVmRow = ComputeTables['compute_classic_vms'];
export type BitmapRow = ComputeTables['compute_bitmaps'];

export class ComputeStore {
  readonly db: Kysely<ComputeTables>;
  constructor(db: Db) {
    this.db = db.withTables<ComputeTables>();
  }
}
