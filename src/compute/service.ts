/**
 * Compute use cases: managed disks as image files, VMs with power state and VM agent, classic VMs, guest I/O with
 * changed-block tracking and before-write hooks, disk access (SAS) grants. Azure Disk Encryption lives in ade.ts.
 */
import { mkdirSync } from 'node:fs';
import { open, unlink, stat, lstat, link, rename, realpath, readdir, readlink, type FileHandle } from 'node:fs/promises';
import { constants as fsConstants } from 'node:fs';
import path from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { ArmError, armErrors } from '../platform/http/errors.js';
import type { Sealer } from '../platform/crypto.js';
import type { Caller } from '../platform/auth/index.js';
import type { ResourceService } from '../resources/index.js';
import type { KeyVaultService, VaultUrls } from '../keyvault/index.js';
import { adeRefsOf, platformVolumeKey } from './platform-keys.js';
import { isLuksHeader, LuksError } from '../engine/index.js';
import {
  bitmapBytesFor, CONVERT_LEFTOVER, dirtyBlocks, fitBits, luksPayloadOffset, markBits, OpenDisk, recoverConversion, sameStamp, sparseCopy, stampOf, swapImage, unlockImage,
  writeDecryptedCopy, writeEncryptedCopy, type FileStamp,
} from './disk-io.js';
import {
  AGENT_VERSION, CBT_BLOCK_SIZE, CLASSIC_VM_TYPE, DISK_TYPE, GiB, VM_TYPE, requireName,
  type AgentStatus, type ChangedBlocks, type DataDiskRef, type Disk, type DiskEncryptionInfo, type EncryptionSettingsCollection, type OsType, type PowerState, type Vm, type VmProps,
} from './model.js';
import type { ComputeStore, DiskRow, VmRow, ClassicVmRow } from './store.js';

export type BeforeWriteHook = (offset: number, length: number) => Promise<void>;

export interface ComputeOptions {
  dataDir: string;
  sealer: Sealer;
  /** PBKDF2 iterations for LUKS key slots rsvault writes (tests: 1000); default: 2000 ms worth, as cryptsetup. */
  luksIterations?: number | undefined;
  /**
   * Resolves an https source URI of a disk import (a blob this installation serves) to a server file path, for
   * `caller`: it must be able to read the blob (RBAC read on the storage account, or a SAS in the URI), else this
   * throws 403. Undefined when the URI names no blob of this installation.
   */
  resolveSourceUri?: ((uri: string, caller: Caller | undefined) => Promise<string | undefined>) | undefined;
  /** Directories whose files may be imported by path (config `importDirs`); other server paths are refused. */
  importDirs?: string[] | undefined;
  /** Builds/normalizes Key Vault URLs (encryption settings are read in their reachable form). */
  vaultUrls?: VaultUrls | undefined;
  /** Where the platform fetches the BEK (and unwraps it with the KEK) of an encrypted disk at VM start / attach. */
  keyvault?: KeyVaultService | undefined;
  /** Test mode only: pause between a disk import's path check and its use (a test swaps the path in the window). */
  importCheckDelayMs?: number | undefined;
  /** Test mode only: told when an import passed its path check (before the delay), so a test knows when to swap. */
  onImportChecked?: ((src: string) => void) | undefined;
  /**
   * Scale-out (several processes on one PostgreSQL): cluster-wide disk leases (`disk:{id}`), held around every
   * `withDiskLock` and by `holdDisk`, so another process's backup snapshot, restore or conversion excludes this one.
   * Absent in embedded mode (one process: the in-process chain and copy-on-write hooks suffice).
   */
  diskLocks?: { hold(name: string): Promise<() => Promise<void>> } | undefined;
}

export interface DiskInput {
  location: string;
  tags?: Record<string, string> | undefined;
  sku?: { name?: string } | undefined;
  createOption: 'Empty' | 'Import' | 'Upload' | 'Attach' | 'FromImage';
  diskSizeGB?: number | undefined;
  /** For Empty/Upload: exact size in bytes (multiple of 512). */
  sizeBytes?: number | undefined;
  sourcePath?: string | undefined;
  /** The principal asking (HTTP routes; template deployments go through them with the deploying user's token). */
  caller?: Caller | undefined;
  /**
   * The server's own call with a file it made (restore): the source may lie inside the data directory. Requests from
   * principals may not import server files under the data directory (databases, keys, other accounts' blobs).
   */
  internal?: boolean | undefined;
  referenceInPlace?: boolean | undefined;
  /** Import: move the source file into the disk store instead of copying it (same filesystem; the caller's temp file). */
  moveSource?: boolean | undefined;
  osType?: OsType | undefined;
  encryptionSettingsCollection?: EncryptionSettingsCollection | undefined;
  props?: Record<string, unknown> | undefined;
}

export interface VmInput {
  location: string;
  tags?: Record<string, string> | undefined;
  vmSize: string;
  osType?: OsType | undefined;
  osDisk: { name?: string | undefined; createOption: string; managedDiskId?: string | undefined; diskSizeGB?: number | undefined; caching?: string | undefined; encryptionSettings?: VmProps['storageProfile']['osDisk']['encryptionSettings']; deleteOption?: string | undefined };
  dataDisks: { lun: number; name?: string | undefined; createOption: string; managedDiskId?: string | undefined; diskSizeGB?: number | undefined; caching?: string | undefined }[];
  imageReference?: unknown;
  osProfile?: Record<string, unknown> | undefined;
  networkProfile?: unknown;
  diagnosticsProfile?: unknown;
}

const norm = (id: string) => id.toLowerCase();
const parseTags = (s: string) => JSON.parse(s) as Record<string, string>;

function toDisk(r: DiskRow): Disk {
  return {
    id: r.id,
    name: r.name,
    subscriptionId: r.subscription_id,
    resourceGroup: r.resource_group,
    location: r.location,
    tags: parseTags(r.tags_json),
    uniqueId: r.unique_id,
    imagePath: r.image_path,
    owned: r.owned === 1,
    sizeBytes: Number(r.size_bytes),
    osType: (r.os_type ?? undefined) as OsType | undefined,
    state: r.state,
    managedBy: r.managed_by ?? undefined,
    format: r.format as 'raw' | 'luks1',
    locked: r.format === 'luks1' && !r.volume_key_sealed,
    encryptionSettingsCollection: r.encryption_json ? (JSON.parse(r.encryption_json) as EncryptionSettingsCollection) : undefined,
    props: JSON.parse(r.props_json) as Record<string, unknown>,
    createdAt: Number(r.created_at),
  };
}

function toVm(r: VmRow): Vm {
  return {
    id: r.id,
    name: r.name,
    subscriptionId: r.subscription_id,
    resourceGroup: r.resource_group,
    location: r.location,
    tags: parseTags(r.tags_json),
    vmId: r.vm_id,
    osType: r.os_type as OsType,
    powerState: r.power_state as PowerState,
    agentInstalled: r.agent_installed === 1,
    agentVersion: r.agent_version,
    props: JSON.parse(r.props_json) as VmProps,
    createdAt: Number(r.created_at),
  };
}

export interface ClassicVm {
  id: string;
  name: string;
  location: string;
  resourceGroup: string;
  props: Record<string, unknown>;
}

const diskId = (sub: string, rg: string, name: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.Compute/disks/${name}`;
const vmIdOf = (sub: string, rg: string, name: string) => `/subscriptions/${sub}/resourceGroups/${rg}/providers/Microsoft.Compute/virtualMachines/${name}`;

export class ComputeService {
  private readonly hooks = new Map<string, Set<BeforeWriteHook>>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly keyCache = new Map<string, Buffer>();
  readonly disksDir: string;

  constructor(
    readonly store: ComputeStore,
    private readonly resources: ResourceService,
    private readonly opts: ComputeOptions,
  ) {
    this.disksDir = path.join(opts.dataDir, 'disks');
    mkdirSync(this.disksDir, { recursive: true, mode: 0o700 });
  }

  /**
   * Key Vault URLs as clients can reach them (keyvault urls.ts): encryption settings stored before without the port
   * (or on another vault host suffix) are read as the same vault + object on the current host and port.
   */
  canonicalVaultUrl(url: string): string {
    return this.opts.vaultUrls ? this.opts.vaultUrls.canonical(url) : url;
  }

  private canonDisk(d: Disk): Disk {
    if (!d.encryptionSettingsCollection || !this.opts.vaultUrls) return d;
    return { ...d, encryptionSettingsCollection: this.opts.vaultUrls.canonicalDeep(d.encryptionSettingsCollection) };
  }

  private canonVm(vm: Vm): Vm {
    const es = vm.props.storageProfile.osDisk.encryptionSettings;
    if (!es || !this.opts.vaultUrls) return vm;
    const osDisk = { ...vm.props.storageProfile.osDisk, encryptionSettings: this.opts.vaultUrls.canonicalDeep(es) };
    return { ...vm, props: { ...vm.props, storageProfile: { ...vm.props.storageProfile, osDisk } } };
  }

  get luksIterations(): number | undefined {
    return this.opts.luksIterations;
  }

  /** Serializes work on one disk (guest I/O, conversion, access grants); across processes too with `diskLocks`. */
  async withDiskLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const key = norm(id);
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = async () => {
      const release = await this.holdDisk(id);
      try {
        return await fn();
      } finally {
        await release();
      }
    };
    const next = prev.then(run, run);
    const tail = next.catch(() => undefined);
    this.locks.set(key, tail);
    try {
      return await next;
    } finally {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    }
  }

  /**
   * Keeps other rsvault processes off a disk until the returned function is called (a backup holds it while its
   * copy-on-write snapshot lives). Holds of this process share one cluster lease; no-op in embedded mode.
   */
  async holdDisk(id: string): Promise<() => Promise<void>> {
    if (!this.opts.diskLocks) return async () => undefined;
    try {
      return await this.opts.diskLocks.hold(`disk:${norm(id)}`);
    } catch (e) {
      if ((e as Error).name !== 'LockTimeoutError') throw e;
      throw new ArmError(409, 'DiskInUseByAnotherProcess', `The disk '${id.split('/').pop()}' is in use by another rsvault process (a backup, restore or conversion); retry when it ends.`, { recommendation: 'Retry in a minute; rsvault backup job list --status InProgress shows the running jobs.' });
    }
  }

  // ---- disks ------------------------------------------------------------------------------------------------------
  async getDisk(id: string): Promise<Disk | undefined> {
    const r = await this.store.db.selectFrom('compute_disks').selectAll().where('id_norm', '=', norm(id)).executeTakeFirst();
    return r ? this.canonDisk(toDisk(r)) : undefined;
  }

  async requireDisk(id: string): Promise<Disk> {
    const d = await this.getDisk(id);
    if (!d) throw armErrors.notFoundById(DISK_TYPE, id);
    return d;
  }

  async listDisks(sub: string, rg?: string): Promise<Disk[]> {
    let q = this.store.db.selectFrom('compute_disks').selectAll().where('subscription_id', '=', sub);
    if (rg) q = q.where('resource_group', '=', rg.toLowerCase());
    return (await q.orderBy('id_norm').execute()).map((r) => this.canonDisk(toDisk(r)));
  }

  /** Path of the disk's image file (raw, or a LUKS1 volume with the header at the start). */
  async diskImagePath(id: string): Promise<string> {
    return (await this.requireDisk(id)).imagePath;
  }

  async createOrUpdateDisk(sub: string, rg: string, name: string, input: DiskInput): Promise<{ disk: Disk; created: boolean }> {
    const g = await this.resources.requireGroup(sub, rg);
    requireName('disk', name);
    const id = diskId(sub, g.name, name);
    const existing = await this.getDisk(id);
    if (existing) {
      if (existing.location.toLowerCase() !== input.location.toLowerCase()) {
        throw new ArmError(409, 'InvalidResourceLocation', `The resource '${name}' already exists in location '${existing.location}'.`, { recommendation: `Use location '${existing.location}'.` });
      }
      let size = existing.sizeBytes;
      if (input.diskSizeGB !== undefined && input.diskSizeGB * GiB !== size && Math.ceil(size / GiB) !== input.diskSizeGB) {
        if (input.diskSizeGB * GiB < size) throw new ArmError(409, 'BadRequest', `Disk '${name}' cannot be shrunk from ${Math.ceil(size / GiB)} GB to ${input.diskSizeGB} GB.`);
        if (existing.managedBy) throw new ArmError(409, 'OperationNotAllowed', `Disk '${name}' is attached to VM '${existing.managedBy}'; resize it while detached.`);
        if (existing.format !== 'raw') throw new ArmError(409, 'OperationNotAllowed', `Disk '${name}' is encrypted; resizing encrypted disks is not supported.`);
        size = input.diskSizeGB * GiB;
        const fh = await open(existing.imagePath, 'r+');
        await fh.truncate(size).finally(() => fh.close());
        await this.restamp(existing.id, existing.imagePath);
      }
      await this.store.db
        .updateTable('compute_disks')
        .set({
          tags_json: JSON.stringify(input.tags ?? existing.tags),
          size_bytes: size,
          os_type: input.osType ?? existing.osType ?? null,
          ...(input.encryptionSettingsCollection !== undefined ? { encryption_json: JSON.stringify(input.encryptionSettingsCollection) } : {}),
        })
        .where('id_norm', '=', norm(id))
        .execute();
      await this.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: DISK_TYPE, name, location: existing.location, tags: input.tags ?? existing.tags });
      return { disk: (await this.getDisk(id))!, created: false };
    }

    const uniqueId = randomUUID();
    const imagePath = path.join(this.disksDir, `${uniqueId}.img`);
    let owned = 1;
    let format: 'raw' | 'luks1' = 'raw';
    let size: number;
    let state = 'Unattached';
    switch (input.createOption) {
      case 'Empty':
      case 'Upload': {
        size = input.sizeBytes ?? (input.diskSizeGB ?? 0) * GiB;
        if (!Number.isSafeInteger(size) || size <= 0) {
          throw armErrors.invalidContent(input.createOption === 'Upload' ? "Disk creation with createOption 'Upload' requires 'creationData.uploadSizeBytes' (a positive multiple of 512)." : "Disk creation with createOption 'Empty' requires 'diskSizeGB' (a positive integer).", input.createOption === 'Upload' ? 'properties.creationData.uploadSizeBytes' : 'properties.diskSizeGB');
        }
        if (size % 512 !== 0) throw armErrors.invalidContent(`The disk size ${size} bytes is not a multiple of 512.`, 'properties.creationData.uploadSizeBytes');
        if (size > 32 * 1024 * GiB) throw armErrors.invalidContent(`The disk size ${size} bytes exceeds the 32 TiB maximum.`, 'properties.diskSizeGB');
        const fh = await open(imagePath, 'wx', 0o600);
        await fh.truncate(size).finally(() => fh.close());
        if (input.createOption === 'Upload') state = 'ReadyToUpload';
        break;
      }
      case 'Import': {
        let src = input.sourcePath;
        if (src && /^https?:\/\//i.test(src)) {
          const resolved = await this.opts.resolveSourceUri?.(src, input.caller);
          if (!resolved) throw new ArmError(400, 'InvalidParameter', `The source blob '${src}' does not exist (or is not a blob served by this rsvault).`, { target: 'properties.creationData.sourceUri', recommendation: 'Use the blob URI a restore job names (rsvault backup job show), or an absolute file path on the server.' });
          src = resolved;
        }
        if (!src) throw armErrors.invalidContent("Disk creation with createOption 'Import' requires 'creationData.sourceUri' (an absolute file path or file:// URL on the server).", 'properties.creationData.sourceUri');
        const checked = !input.internal && src === input.sourcePath;
        const dirs = (this.opts.importDirs ?? []).join(', ') || '(none configured)';
        const notAllowed = (why: string) =>
          new ArmError(403, 'ImportPathNotAllowed', `The source image '${src}' ${why}; other server files cannot be imported by path.`, {
            target: 'properties.creationData.sourceUri',
            recommendation: `Copy the image into an import directory (${dirs}; set by rsvault serve --import-dirs / RSVAULT_IMPORT_DIRS), or upload it: rsvault disk create --for-upload --upload-size-bytes <n>, then grant-access --access-level Write.`,
          });
        // Pin the file before checking it: one descriptor opened without following a final symbolic link; the check
        // looks at the path of what that descriptor really is, and every later read uses the descriptor (or, in place,
        // a hard link proven to be the same inode). A path swapped after the check cannot change what is imported.
        let fh: FileHandle;
        try {
          fh = await open(src, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code === 'ELOOP') throw checked ? notAllowed('is a symbolic link (links are not followed)') : new ArmError(400, 'InvalidParameter', `The source image '${src}' is a symbolic link.`, { target: 'properties.creationData.sourceUri' });
          throw new ArmError(400, 'InvalidParameter', `The source image '${src}' does not exist or cannot be read by the server.`, { target: 'properties.creationData.sourceUri', recommendation: 'Give an absolute path of a raw or LUKS1 image file readable by the rsvault server.' });
        }
        try {
          const st = await fh.stat();
          if (!st.isFile()) throw new ArmError(400, 'InvalidParameter', `The source image '${src}' is not a regular file.`, { target: 'properties.creationData.sourceUri' });
          if (checked) {
            const real = await pathOfOpenFile(fh, src);
            if (real !== path.resolve(src)) throw notAllowed('has a symbolic link in its path (links are not followed)');
            if (!(await this.importablePath(real))) throw notAllowed(`is not inside an import directory of this server (${dirs})`);
            // Test mode only (RSVAULT_TEST_IMPORT_CHECK_DELAY_MS): widen the window between check and use so a test can swap the path.
            if (this.opts.importCheckDelayMs) {
              this.opts.onImportChecked?.(src);
              await new Promise((r) => setTimeout(r, this.opts.importCheckDelayMs));
            }
          }
          if (st.size === 0 || st.size % 512 !== 0) throw new ArmError(400, 'InvalidParameter', `The source image '${src}' has ${st.size} bytes; a disk image must be a non-empty multiple of 512 bytes.`, { target: 'properties.creationData.sourceUri' });
          const head = Buffer.alloc(8);
          await fh.read(head, 0, 8, 0);
          if (isLuksHeader(head)) {
            if (head.readUInt16BE(6) !== 1) throw new ArmError(400, 'UnsupportedDiskFormat', `The source image '${src}' is LUKS version ${head.readUInt16BE(6)}; only LUKS1 (and raw) images can be imported.`, { recommendation: 'Convert it: cryptsetup convert --type luks1 <image> (needs --pbkdf pbkdf2 and 512-byte sectors).' });
            format = 'luks1';
          }
          const sameInode = async (file: string) => {
            const l = await lstat(file).catch(() => undefined);
            return l !== undefined && l.isFile() && l.ino === st.ino && l.dev === st.dev;
          };
          if (input.referenceInPlace) {
            // In place = a hard link in the disk store to the checked inode (no copy; the source path keeps showing the
            // same data). Later reads go through the link, which nobody but rsvault can replace.
            owned = 0;
            for (const other of await this.store.db.selectFrom('compute_disks').select(['id', 'image_path']).where('owned', '=', 0).execute()) {
              if (path.resolve(other.image_path) === path.resolve(src) || (await sameInode(other.image_path))) throw new ArmError(409, 'Conflict', `The image '${path.resolve(src)}' is already used by disk '${other.id}'.`);
            }
            try {
              await link(src, imagePath);
            } catch (e) {
              throw new ArmError(409, 'ImportInPlaceNotPossible', `The source image '${src}' cannot be referenced in place: ${(e as NodeJS.ErrnoException).code === 'EXDEV' ? "it is on another filesystem than the server's disk store" : 'the server cannot link it'} (${this.disksDir}).`, {
                target: 'properties.creationData.referenceInPlace',
                recommendation: 'Import it without referenceInPlace (the image is copied), or keep import directories on the data directory\'s filesystem.',
              });
            }
            if (!(await sameInode(imagePath))) {
              await unlink(imagePath).catch(() => undefined);
              throw notAllowed('was replaced while it was being imported');
            }
          } else if (input.moveSource) {
            await rename(src, imagePath);
            if (!(await sameInode(imagePath))) {
              await unlink(imagePath).catch(() => undefined);
              throw new ArmError(409, 'Conflict', `The source image '${src}' was replaced while it was being imported.`);
            }
          } else {
            await sparseCopy(fh, imagePath);
          }
          size = st.size;
        } finally {
          await fh.close();
        }
        const payload = format === 'luks1' ? await luksPayloadOffset(imagePath) : 0;
        if (payload === undefined) throw new ArmError(400, 'UnsupportedDiskFormat', `The source image '${src}' has a LUKS header rsvault cannot read.`);
        size -= payload;
        break;
      }
      default:
        throw armErrors.invalidContent(`createOption '${input.createOption}' is not supported for disks; use Empty, Import or Upload.`, 'properties.creationData.createOption');
    }
    const now = Date.now();
    await this.store.db
      .insertInto('compute_disks')
      .values({
        id_norm: norm(id), id, subscription_id: sub, resource_group: g.name.toLowerCase(), name, location: input.location, tags_json: JSON.stringify(input.tags ?? {}),
        unique_id: uniqueId, image_path: imagePath, owned, size_bytes: size, os_type: input.osType ?? null, state, managed_by: null, format, volume_key_sealed: null,
        encryption_json: input.encryptionSettingsCollection ? JSON.stringify(input.encryptionSettingsCollection) : null,
        props_json: JSON.stringify({ ...(input.props ?? {}), sku: input.sku?.name ?? 'Standard_LRS', createOption: input.createOption, ...(input.sourcePath ? { sourceUri: withoutSas(input.sourcePath) } : {}) }),
        created_at: now,
      })
      .execute();
    // An empty disk's bitmap is valid from birth (nothing written); an imported one's content is unknown to CBT.
    await this.initBitmap(id, imagePath, input.createOption === 'Empty', input.createOption === 'Empty' ? undefined : 'disk imported or uploaded; no backup yet');
    await this.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: DISK_TYPE, name, location: input.location, tags: input.tags });
    return { disk: (await this.getDisk(id))!, created: true };
  }

  /** True when `file` (symlinks resolved) is the data directory or lies under it. */
  private insideDataDir(file: string): Promise<boolean> {
    return insideDir(file, this.opts.dataDir);
  }

  /**
   * May a principal import `file` by path? Only from a configured import directory, and never a file of the data
   * directory (database, keys, other tenants' blobs) unless it sits in `<dataDir>/import` itself.
   */
  private async importablePath(file: string): Promise<boolean> {
    let inImportDir = false;
    for (const d of this.opts.importDirs ?? []) if (await insideDir(file, d)) inImportDir = true;
    if (!inImportDir) return false;
    return !(await this.insideDataDir(file)) || (await insideDir(file, path.join(this.opts.dataDir, 'import')));
  }

  /** Every disk of the installation (all subscriptions). */
  async allDisks(): Promise<Disk[]> {
    return (await this.store.db.selectFrom('compute_disks').selectAll().orderBy('id_norm').execute()).map((r) => this.canonDisk(toDisk(r)));
  }

  /**
   * Converts a disk raw → LUKS1 (`to.passphrase`, encryption settings) or LUKS1 → raw, crash-safely: the new image is
   * written beside the old one and swapped in with the disk row (format, sealed volume key, encryption settings) and,
   * for an OS disk, the VM's osDisk.encryptionSettings committed in one transaction (disk-io `swapImage`). A crash
   * leaves the original image with its old row, or the new image with its new row; `recoverInterrupted` settles
   * the leftovers at start-up. Call under `withDiskLock`.
   */
  async convertDisk(
    disk: Disk,
    to: { format: 'luks1'; passphrase: Buffer; esc: EncryptionSettingsCollection; osOfVm?: string | undefined } | { format: 'raw'; osOfVm?: string | undefined },
  ): Promise<void> {
    await this.runHooks(disk.id, 0, Number.MAX_SAFE_INTEGER);
    let tmp: string;
    let mk: Buffer | undefined;
    if (to.format === 'luks1') {
      const r = await writeEncryptedCopy(disk.imagePath, to.passphrase, { iterations: this.opts.luksIterations });
      tmp = r.tmp;
      mk = r.masterKey;
    } else {
      const cur = await this.volumeKey(disk);
      if (!cur) throw new ArmError(409, 'DiskLocked', `Disk '${disk.name}' is encrypted and rsvault has no key for it; unlock it first.`);
      tmp = await writeDecryptedCopy(disk.imagePath, cur);
    }
    const esc = to.format === 'luks1' ? to.esc : undefined;
    await swapImage(disk.imagePath, tmp, disk.format, async () => {
      await this.store.db.transaction().execute(async (tx) => {
        await tx
          .updateTable('compute_disks')
          .set({ format: to.format, volume_key_sealed: mk ? this.opts.sealer.seal(mk, `compute-volume-key:${disk.uniqueId}`) : null, encryption_json: esc ? JSON.stringify(esc) : null })
          .where('id_norm', '=', norm(disk.id))
          .execute();
        if (to.osOfVm) {
          const vm = await tx.selectFrom('compute_vms').select('props_json').where('id_norm', '=', norm(to.osOfVm)).executeTakeFirst();
          if (vm) {
            const p = JSON.parse(vm.props_json) as VmProps;
            const es = esc?.encryptionSettings[0];
            const osDisk = { ...p.storageProfile.osDisk, encryptionSettings: es ? { enabled: true, diskEncryptionKey: es.diskEncryptionKey, ...(es.keyEncryptionKey ? { keyEncryptionKey: es.keyEncryptionKey } : {}) } : undefined };
            await tx.updateTable('compute_vms').set({ props_json: JSON.stringify({ ...p, storageProfile: { ...p.storageProfile, osDisk } }) }).where('id_norm', '=', norm(to.osOfVm)).execute();
          }
        }
      });
    });
    if (mk) this.keyCache.set(norm(disk.id), mk);
    else this.keyCache.delete(norm(disk.id));
    // The image's inode changed: changed-block tracking starts over (also detected from the stamp after a crash here).
    await this.invalidate(disk.id, to.format === 'luks1' ? 'disk encrypted in place (Azure Disk Encryption)' : 'disk decrypted (Azure Disk Encryption disabled)');
  }

  /**
   * Start-up (before serving): settles what a crash left behind. Conversion leftovers next to disk images are rolled
   * back or removed (`{image}.convert-*`: the disk keeps the image its row describes), and VM extensions still
   * `Creating`/`Updating` are marked `Failed` (their async operations were failed by the platform). Assumes no other
   * process converts disks of this data directory (only the api role runs conversions).
   */
  async recoverInterrupted(): Promise<{ leftovers: number; rolledBack: number; extensionsFailed: number }> {
    const disks = await this.allDisks();
    const byImage = new Map(disks.map((d) => [path.resolve(d.imagePath), d]));
    const dirs = new Set([this.disksDir, ...disks.map((d) => path.dirname(path.resolve(d.imagePath)))]);
    let leftovers = 0;
    let rolledBack = 0;
    for (const dir of dirs) {
      const names = (await readdir(dir).catch(() => [] as string[])).filter((n) => CONVERT_LEFTOVER.test(n));
      // Originals kept during a swap first (they may need to go back), then the new images never swapped in.
      names.sort((a, b) => Number(/\.orig-/.test(b)) - Number(/\.orig-/.test(a)));
      for (const n of names) {
        const image = path.join(dir, CONVERT_LEFTOVER.exec(n)![1]!);
        const d = byImage.get(image);
        // Leftovers of an image no disk uses are left alone outside the disk store (they are not ours to judge).
        if (!d && dir !== this.disksDir) continue;
        const r = await recoverConversion(path.join(dir, n), image, d?.format);
        leftovers++;
        if (r === 'rolled-back') {
          rolledBack++;
          if (d) await this.invalidate(d.id, 'an interrupted disk conversion was rolled back');
        }
      }
    }
    const ext = await this.store.db
      .updateTable('compute_vm_extensions')
      .set({ state: 'Failed', status_json: JSON.stringify({ message: 'The server restarted while the extension was being provisioned; a disk whose conversion was interrupted keeps its previous image and settings. Retry the operation.' }) })
      .where('state', 'in', ['Creating', 'Updating'])
      .executeTakeFirst();
    return { leftovers, rolledBack, extensionsFailed: Number(ext.numUpdatedRows) };
  }

  /** Unlocks an imported LUKS1 disk with its passphrase; rsvault keeps the volume key sealed (the host's key store). */
  async unlockDisk(id: string, passphrase: Buffer): Promise<Disk> {
    const d = await this.requireDisk(id);
    if (d.format !== 'luks1') throw new ArmError(409, 'DiskNotEncrypted', `Disk '${d.name}' is not a LUKS volume; there is nothing to unlock.`);
    return this.withDiskLock(id, async () => {
      let mk: Buffer;
      try {
        mk = (await unlockImage(d.imagePath, passphrase)).masterKey;
      } catch (e) {
        if (e instanceof LuksError && e.kind === 'BadPassphrase') throw new ArmError(400, 'InvalidPassphrase', `No LUKS key slot of disk '${d.name}' opens with the given passphrase.`, { recommendation: 'Check the passphrase (or key file) and retry.' });
        if (e instanceof LuksError) throw new ArmError(400, 'UnsupportedDiskFormat', `Disk '${d.name}': ${e.message}`);
        throw e;
      }
      await this.setVolumeKey(d, mk);
      return (await this.getDisk(id))!;
    });
  }

  async setVolumeKey(d: Disk, mk: Buffer | undefined, format?: 'raw' | 'luks1'): Promise<void> {
    await this.store.db
      .updateTable('compute_disks')
      .set({ volume_key_sealed: mk ? this.opts.sealer.seal(mk, `compute-volume-key:${d.uniqueId}`) : null, ...(format ? { format } : {}) })
      .where('id_norm', '=', norm(d.id))
      .execute();
    if (mk) this.keyCache.set(norm(d.id), mk);
    else this.keyCache.delete(norm(d.id));
  }

  async volumeKey(d: Disk): Promise<Buffer | undefined> {
    if (d.format !== 'luks1') return undefined;
    const cached = this.keyCache.get(norm(d.id));
    if (cached) return cached;
    const r = await this.store.db.selectFrom('compute_disks').select('volume_key_sealed').where('id_norm', '=', norm(d.id)).executeTakeFirst();
    if (!r?.volume_key_sealed) return undefined;
    const mk = this.opts.sealer.open(r.volume_key_sealed, `compute-volume-key:${d.uniqueId}`);
    this.keyCache.set(norm(d.id), mk);
    return mk;
  }

  /**
   * Replaces a disk's content with an image file (restore to the original location): under the disk lock, the file is
   * renamed over the image (same filesystem), the size/format follow the new image, and changed-block tracking is
   * invalidated. The caller's file is consumed.
   */
  async replaceDiskImage(id: string, file: string, format: 'raw' | 'luks1'): Promise<Disk> {
    const d = await this.requireDisk(id);
    if (!d.owned) throw new ArmError(409, 'OperationNotAllowed', `Disk '${d.name}' references an image outside rsvault's disk store; it cannot be replaced.`);
    return this.withDiskLock(id, async () => {
      await this.runHooks(d.id, 0, Number.MAX_SAFE_INTEGER);
      const st = await stat(file);
      await rename(file, d.imagePath);
      const payload = format === 'luks1' ? ((await luksPayloadOffset(d.imagePath)) ?? 0) : 0;
      await this.store.db.updateTable('compute_disks').set({ size_bytes: st.size - payload, format, volume_key_sealed: null }).where('id_norm', '=', norm(id)).execute();
      this.keyCache.delete(norm(id));
      await this.invalidate(d.id, 'disk content replaced by a restore');
      return (await this.getDisk(id))!;
    });
  }

  async deleteDisk(id: string): Promise<boolean> {
    const d = await this.getDisk(id);
    if (!d) return false;
    if (d.managedBy) {
      throw new ArmError(409, 'OperationNotAllowed', `Disk ${d.name} is attached to VM ${d.managedBy}.`, { recommendation: 'Detach the disk from the VM (or delete the VM) first.' });
    }
    await this.withDiskLock(id, async () => {
      await this.store.db.deleteFrom('compute_disks').where('id_norm', '=', norm(id)).execute();
      await this.store.db.deleteFrom('compute_bitmaps').where('disk_id_norm', '=', norm(id)).execute();
      await this.store.db.deleteFrom('compute_disk_access').where('disk_id_norm', '=', norm(id)).execute();
      // Owned images, and the store's hard link of an image referenced in place (the source path keeps its data).
      if (d.owned || path.dirname(path.resolve(d.imagePath)) === path.resolve(this.disksDir)) await unlink(d.imagePath).catch(() => undefined);
      this.keyCache.delete(norm(id));
    });
    await this.resources.unindex(d.id);
    return true;
  }

  // ---- disk access (SAS) ----------------------------------------------------------------------------------------
  async grantAccess(id: string, access: 'Read' | 'Write', seconds: number): Promise<string> {
    const d = await this.requireDisk(id);
    if (access === 'Write' && d.state !== 'ReadyToUpload' && d.state !== 'ActiveUpload') {
      throw new ArmError(409, 'OperationNotAllowed', `Write access can only be granted to a disk created with createOption 'Upload' (disk '${d.name}' is ${d.state}).`);
    }
    if (access === 'Read' && d.managedBy) {
      // As in Azure: the disk of a deallocated VM can be exported (the VM cannot start while the SAS is active);
      // a running or merely stopped VM still holds it.
      const vm = await this.getVm(d.managedBy);
      if (vm && vm.powerState !== 'deallocated') {
        throw new ArmError(409, 'OperationNotAllowed', `Disk '${d.name}' is attached to VM '${d.managedBy}', which is ${vm.powerState}; deallocate the VM (rsvault vm deallocate) or detach the disk before exporting it.`);
      }
    }
    const token = randomBytes(24).toString('base64url');
    await this.store.db.insertInto('compute_disk_access').values({ token, disk_id_norm: norm(id), access, expires_at: Date.now() + seconds * 1000, created_at: Date.now() }).execute();
    await this.store.db.updateTable('compute_disks').set({ state: access === 'Write' ? 'ActiveUpload' : 'ActiveSAS' }).where('id_norm', '=', norm(id)).execute();
    return token;
  }

  async revokeAccess(id: string): Promise<void> {
    const d = await this.requireDisk(id);
    await this.store.db.deleteFrom('compute_disk_access').where('disk_id_norm', '=', norm(id)).execute();
    const next = d.state === 'ActiveUpload' || d.state === 'ReadyToUpload' ? 'Unattached' : d.managedBy ? 'Attached' : 'Unattached';
    await this.store.db.updateTable('compute_disks').set({ state: next }).where('id_norm', '=', norm(id)).execute();
    if (d.state === 'ActiveUpload') await this.invalidate(id, 'disk uploaded');
  }

  /** The disk behind a SAS token, or undefined when unknown/expired. */
  async diskForToken(token: string): Promise<{ disk: Disk; access: string; expiresAt: number } | undefined> {
    const r = await this.store.db.selectFrom('compute_disk_access').selectAll().where('token', '=', token).executeTakeFirst();
    if (!r || r.expires_at < Date.now()) return undefined;
    const d = await this.getDisk(r.disk_id_norm);
    return d ? { disk: d, access: r.access, expiresAt: Number(r.expires_at) } : undefined;
  }

  /** Upload: writes raw image bytes (no LUKS layer: the uploader sends the image as it is stored). */
  async uploadPages(id: string, offset: number, data: Buffer): Promise<void> {
    const d = await this.requireDisk(id);
    await this.withDiskLock(id, async () => {
      const size = (await stat(d.imagePath)).size;
      if (offset % 512 !== 0 || data.length % 512 !== 0 || offset + data.length > size) {
        throw new ArmError(416, 'InvalidPageRange', `The page range ${offset}-${offset + data.length - 1} is invalid for a ${size}-byte disk (512-byte aligned, within the disk).`);
      }
      await this.runHooks(id, offset, data.length);
      const fh = await open(d.imagePath, 'r+');
      try {
        let done = 0;
        while (done < data.length) done += (await fh.write(data, done, data.length - done, offset + done)).bytesWritten;
      } finally {
        await fh.close();
      }
    });
  }

  // ---- VMs ----------------------------------------------------------------------------------------------------
  async getVm(id: string): Promise<Vm | undefined> {
    const r = await this.store.db.selectFrom('compute_vms').selectAll().where('id_norm', '=', norm(id)).executeTakeFirst();
    return r ? this.canonVm(toVm(r)) : undefined;
  }

  async requireVm(id: string): Promise<Vm> {
    const v = await this.getVm(id);
    if (!v) throw armErrors.notFoundById(VM_TYPE, id);
    return v;
  }

  async listVms(sub: string, rg?: string): Promise<Vm[]> {
    let q = this.store.db.selectFrom('compute_vms').selectAll().where('subscription_id', '=', sub);
    if (rg) q = q.where('resource_group', '=', rg.toLowerCase());
    return (await q.orderBy('id_norm').execute()).map((r) => this.canonVm(toVm(r)));
  }

  private async attachable(diskIdIn: string, vmId: string, target: string): Promise<Disk> {
    const d = await this.getDisk(diskIdIn);
    if (!d) throw new ArmError(404, 'NotFound', `Disk '${diskIdIn}' referenced by ${target} was not found.`, { target, recommendation: 'Create or import the disk first: rsvault disk create|import' });
    if (d.managedBy && norm(d.managedBy) !== norm(vmId)) throw new ArmError(409, 'OperationNotAllowed', `Disk '${d.name}' is already attached to VM '${d.managedBy}'.`, { target });
    if (d.state === 'ReadyToUpload' || d.state === 'ActiveUpload' || d.state === 'ActiveSAS') throw new ArmError(409, 'OperationNotAllowed', `Disk '${d.name}' is in state ${d.state}; revoke its access first.`, { target });
    return d;
  }

  async createOrUpdateVm(sub: string, rg: string, name: string, input: VmInput): Promise<{ vm: Vm; created: boolean }> {
    const g = await this.resources.requireGroup(sub, rg);
    requireName('virtual machine', name, 64);
    const id = vmIdOf(sub, g.name, name);
    const existing = await this.getVm(id);
    if (existing && existing.location.toLowerCase() !== input.location.toLowerCase()) {
      throw new ArmError(409, 'InvalidResourceLocation', `The resource '${name}' already exists in location '${existing.location}'.`);
    }
    const luns = new Set<number>();
    for (const [i, dd] of input.dataDisks.entries()) {
      if (!Number.isInteger(dd.lun) || dd.lun < 0 || dd.lun > 63) throw armErrors.invalidContent(`Data disk lun ${dd.lun} is invalid: a lun is an integer 0-63.`, `properties.storageProfile.dataDisks[${i}].lun`);
      if (luns.has(dd.lun)) throw new ArmError(400, 'InvalidParameter', `Two data disks use lun ${dd.lun}.`, { target: `properties.storageProfile.dataDisks[${i}].lun` });
      luns.add(dd.lun);
    }
    // Resolve the OS disk.
    let osDisk: Disk | undefined;
    let createdDisks: string[] = [];
    const osType: OsType = input.osType ?? (input.osProfile?.windowsConfiguration ? 'Windows' : input.osProfile?.linuxConfiguration ? 'Linux' : undefined) ?? 'Linux';
    try {
      if (existing) {
        osDisk = await this.requireDisk(existing.props.storageProfile.osDisk.diskId);
        if (input.osDisk.managedDiskId && norm(input.osDisk.managedDiskId) !== norm(osDisk.id)) {
          throw new ArmError(409, 'PropertyChangeNotAllowed', "Changing property 'osDisk.managedDisk.id' is not allowed.", { target: 'properties.storageProfile.osDisk.managedDisk.id' });
        }
      } else if (input.osDisk.createOption.toLowerCase() === 'attach') {
        if (!input.osDisk.managedDiskId) throw armErrors.invalidContent("osDisk.createOption 'Attach' requires 'osDisk.managedDisk.id'.", 'properties.storageProfile.osDisk.managedDisk.id');
        osDisk = await this.attachable(input.osDisk.managedDiskId, id, 'properties.storageProfile.osDisk.managedDisk.id');
      } else {
        const osName = input.osDisk.name ?? `${name}_OsDisk_1_${randomBytes(16).toString('hex')}`;
        const r = await this.createOrUpdateDisk(sub, g.name, osName, { location: input.location, createOption: 'Empty', diskSizeGB: input.osDisk.diskSizeGB ?? 30, osType });
        osDisk = r.disk;
        createdDisks.push(osDisk.id);
      }
      const dataDisks: DataDiskRef[] = [];
      for (const [i, dd] of input.dataDisks.entries()) {
        const target = `properties.storageProfile.dataDisks[${i}]`;
        let d: Disk;
        if (dd.createOption.toLowerCase() === 'attach') {
          if (!dd.managedDiskId) throw armErrors.invalidContent("dataDisks createOption 'Attach' requires 'managedDisk.id'.", `${target}.managedDisk.id`);
          d = await this.attachable(dd.managedDiskId, id, target);
        } else if (dd.createOption.toLowerCase() === 'empty') {
          const prior = existing?.props.storageProfile.dataDisks.find((x) => x.lun === dd.lun);
          if (prior) d = await this.requireDisk(prior.diskId);
          else {
            if (!dd.diskSizeGB) throw armErrors.invalidContent("dataDisks createOption 'Empty' requires 'diskSizeGB'.", `${target}.diskSizeGB`);
            const r = await this.createOrUpdateDisk(sub, g.name, dd.name ?? `${name}_disk${dd.lun + 2}_${randomBytes(16).toString('hex')}`, { location: input.location, createOption: 'Empty', diskSizeGB: dd.diskSizeGB });
            d = r.disk;
            createdDisks.push(d.id);
          }
        } else {
          throw armErrors.invalidContent(`dataDisks createOption '${dd.createOption}' is not supported; use Empty or Attach.`, `${target}.createOption`);
        }
        if (norm(d.id) === norm(osDisk.id) || dataDisks.some((x) => norm(x.diskId) === norm(d.id))) {
          throw new ArmError(400, 'InvalidParameter', `Disk '${d.name}' is attached twice.`, { target });
        }
        dataDisks.push({ lun: dd.lun, name: d.name, diskId: d.id, createOption: dd.createOption, caching: dd.caching });
      }
      const props: VmProps = {
        hardwareProfile: { vmSize: input.vmSize },
        storageProfile: {
          ...(input.imageReference ? { imageReference: input.imageReference } : {}),
          osDisk: {
            name: osDisk.name,
            diskId: osDisk.id,
            osType: existing?.osType ?? osDisk.osType ?? osType,
            createOption: existing?.props.storageProfile.osDisk.createOption ?? input.osDisk.createOption,
            caching: input.osDisk.caching ?? 'ReadWrite',
            deleteOption: input.osDisk.deleteOption ?? 'Detach',
            encryptionSettings: input.osDisk.encryptionSettings ?? existing?.props.storageProfile.osDisk.encryptionSettings,
          },
          dataDisks,
        },
        ...(input.osProfile ? { osProfile: input.osProfile } : existing?.props.osProfile ? { osProfile: existing.props.osProfile } : {}),
        ...(input.networkProfile ? { networkProfile: input.networkProfile } : {}),
        ...(input.diagnosticsProfile ? { diagnosticsProfile: input.diagnosticsProfile } : {}),
      };
      const provision = provisionAgent(input.osProfile);
      // A running VM (new VMs start running) opens its encrypted disks now, as Azure's platform does: fetched before
      // anything is written, so a missing or not-permitted BEK/KEK fails the PUT and leaves nothing behind.
      const running = !existing || existing.powerState === 'running';
      const platformKeys = running ? await this.platformKeys(name, [{ disk: osDisk, os: true }, ...dataDisks.map((x) => ({ disk: undefined as Disk | undefined, id: x.diskId, os: false }))], props.storageProfile.osDisk.encryptionSettings) : [];
      if (existing) {
        // Detach data disks no longer listed.
        for (const old of existing.props.storageProfile.dataDisks) {
          if (!dataDisks.some((x) => norm(x.diskId) === norm(old.diskId))) await this.setAttachment(old.diskId, undefined);
        }
        await this.store.db.updateTable('compute_vms').set({ tags_json: JSON.stringify(input.tags ?? existing.tags), props_json: JSON.stringify(props) }).where('id_norm', '=', norm(id)).execute();
      } else {
        await this.store.db
          .insertInto('compute_vms')
          .values({
            id_norm: norm(id), id, subscription_id: sub, resource_group: g.name.toLowerCase(), name, location: input.location, tags_json: JSON.stringify(input.tags ?? {}),
            vm_id: randomUUID(), os_type: props.storageProfile.osDisk.osType, power_state: 'running', agent_installed: provision ? 1 : 0, agent_version: AGENT_VERSION,
            props_json: JSON.stringify(props), created_at: Date.now(),
          })
          .execute();
      }
      await this.setAttachment(osDisk.id, id, props.storageProfile.osDisk.osType);
      for (const dd of dataDisks) await this.setAttachment(dd.diskId, id);
      for (const k of platformKeys) await this.setVolumeKey(k.disk, k.key);
      if (!existing) await this.recordAdeExtension(id, name, input.location, props);
      createdDisks = [];
      await this.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: VM_TYPE, name, location: input.location, tags: input.tags ?? existing?.tags });
      return { vm: (await this.getVm(id))!, created: !existing };
    } finally {
      // A failed create leaves nothing behind.
      for (const d of createdDisks) await this.deleteDisk(d).catch(() => undefined);
    }
  }

  private async setAttachment(diskIdIn: string, vmId: string | undefined, osType?: OsType): Promise<void> {
    await this.store.db
      .updateTable('compute_disks')
      .set({ managed_by: vmId ?? null, state: vmId ? 'Attached' : 'Unattached', ...(osType ? { os_type: osType } : {}) })
      .where('id_norm', '=', norm(diskIdIn))
      .execute();
  }

  async deleteVm(id: string): Promise<boolean> {
    const vm = await this.getVm(id);
    if (!vm) return false;
    const sp = vm.props.storageProfile;
    await this.store.db.deleteFrom('compute_vms').where('id_norm', '=', norm(id)).execute();
    await this.store.db.deleteFrom('compute_vm_extensions').where('vm_id_norm', '=', norm(id)).execute();
    for (const d of [sp.osDisk.diskId, ...sp.dataDisks.map((x) => x.diskId)]) await this.setAttachment(d, undefined);
    if (sp.osDisk.deleteOption === 'Delete') await this.deleteDisk(sp.osDisk.diskId).catch(() => undefined);
    await this.resources.unindex(vm.id);
    return true;
  }

  /**
   * Start / restart open the VM's encrypted disks whose key the platform does not hold (restored disks, or after a
   * deallocation) through Key Vault as the disk-encryption platform principal; a missing vault, key or secret, or a
   * vault not enabled for disk encryption, fails the start with an ADE error and the VM keeps its state. Deallocation
   * releases those keys (the host forgets them, as Azure's does): the next start fetches them again.
   */
  async setPowerState(id: string, action: 'start' | 'powerOff' | 'deallocate' | 'restart'): Promise<Vm> {
    const vm = await this.requireVm(id);
    const state: PowerState = action === 'start' || action === 'restart' ? 'running' : action === 'powerOff' ? 'stopped' : 'deallocated';
    if (state === 'running') {
      for (const x of this.vmDisks(vm)) {
        const d = await this.getDisk(x.diskId);
        const sas = d?.state === 'ActiveSAS' ? await this.store.db.selectFrom('compute_disk_access').select('token').where('disk_id_norm', '=', norm(d.id)).where('expires_at', '>', Date.now()).executeTakeFirst() : undefined;
        if (d && sas) throw new ArmError(409, 'OperationNotAllowed', `VM '${vm.name}' cannot start while its disk '${d.name}' is being exported (an access SAS is active).`, { recommendation: `End the export first: rsvault disk revoke-access -g ${d.resourceGroup} -n ${d.name}` });
      }
      const keys = await this.platformKeys(vm.name, this.vmDisks(vm).map((x) => ({ id: x.diskId, os: x.os })), vm.props.storageProfile.osDisk.encryptionSettings);
      for (const k of keys) await this.withDiskLock(k.disk.id, () => this.setVolumeKey(k.disk, k.key));
    }
    if (state === 'deallocated') {
      for (const x of this.vmDisks(vm)) {
        const d = await this.getDisk(x.diskId);
        if (d && d.format === 'luks1' && !d.locked && adeRefsOf(d, x.os ? vm.props.storageProfile.osDisk.encryptionSettings : undefined)) await this.withDiskLock(d.id, () => this.setVolumeKey(d, undefined));
      }
    }
    await this.store.db.updateTable('compute_vms').set({ power_state: state }).where('id_norm', '=', norm(id)).execute();
    return (await this.getVm(id))!;
  }

  /**
   * A VM created from disks that carry Azure Disk Encryption settings (restored disks, a template) gets the ADE
   * extension's record (Succeeded, settings derived from the disks: the vaults, the KEK, the encrypted volume types),
   * as a VM restored by Azure Backup carries its extensions: its instanceView then reports the disks' real state
   * (`az vm encryption show`). Nothing is converted: the disks already are encrypted.
   */
  private async recordAdeExtension(vmId: string, vmName: string, location: string, props: VmProps): Promise<void> {
    const sp = props.storageProfile;
    const all = [{ diskId: sp.osDisk.diskId, os: true }, ...sp.dataDisks.map((d) => ({ diskId: d.diskId, os: false }))];
    let refs: ReturnType<typeof adeRefsOf>;
    const kinds = new Set<string>();
    for (const x of all) {
      const d = await this.getDisk(x.diskId);
      const r = d && d.format === 'luks1' ? adeRefsOf(d, x.os ? sp.osDisk.encryptionSettings : undefined) : undefined;
      if (!r) continue;
      refs ??= r;
      kinds.add(x.os ? 'OS' : 'Data');
    }
    if (!refs) return;
    const linux = sp.osDisk.osType !== 'Windows';
    const extName = linux ? 'AzureDiskEncryptionForLinux' : 'AzureDiskEncryption';
    const id = `${vmId}/extensions/${extName}`;
    const vaultUrl = (u: string | undefined) => (u ? this.canonicalVaultUrl(u).replace(/^(https:\/\/[^/]+\/).*$/, '$1') : undefined);
    const settings = {
      EncryptionOperation: 'EnableEncryption',
      KeyVaultURL: vaultUrl(refs.secretUrl),
      ...(refs.secretVaultId ? { KeyVaultResourceId: refs.secretVaultId } : {}),
      ...(refs.keyUrl ? { KeyEncryptionKeyURL: this.canonicalVaultUrl(refs.keyUrl), ...(refs.kekVaultId ? { KekVaultResourceId: refs.kekVaultId } : {}), KeyEncryptionAlgorithm: 'RSA-OAEP' } : {}),
      VolumeType: kinds.size === 2 ? 'All' : kinds.has('OS') ? 'OS' : 'Data',
    };
    const stored = { publisher: 'Microsoft.Azure.Security', type: extName, typeHandlerVersion: linux ? '1.1' : '2.2', autoUpgradeMinorVersion: true, settings };
    await this.store.db
      .insertInto('compute_vm_extensions')
      .values({ id_norm: norm(id), vm_id_norm: norm(vmId), id, name: extName, location, props_json: JSON.stringify(stored), state: 'Succeeded', status_json: JSON.stringify({ message: `Encryption settings taken over from the encrypted disks of VM '${vmName}'.` }), created_at: Date.now() })
      .onConflict((oc) => oc.column('id_norm').doNothing())
      .execute();
  }

  /** Volume keys for the locked encrypted disks among `disks` whose ADE settings name a BEK (see ade.ts platformVolumeKey). */
  private async platformKeys(vmName: string, disks: { disk?: Disk | undefined; id?: string | undefined; os: boolean }[], vmOsSettings: VmProps['storageProfile']['osDisk']['encryptionSettings']): Promise<{ disk: Disk; key: Buffer }[]> {
    const out: { disk: Disk; key: Buffer }[] = [];
    for (const x of disks) {
      const d = x.disk ? await this.getDisk(x.disk.id) : await this.getDisk(x.id!);
      if (!d || d.format !== 'luks1' || !d.locked) continue;
      const refs = adeRefsOf(d, x.os ? vmOsSettings : undefined);
      if (!refs) continue; // an imported LUKS volume without ADE settings: only `disk unlock` can open it
      out.push({ disk: d, key: await platformVolumeKey(this.opts.keyvault, d, refs, vmName) });
    }
    return out;
  }

  async setAgent(id: string, installed: boolean, version?: string): Promise<Vm> {
    await this.requireVm(id);
    await this.store.db.updateTable('compute_vms').set({ agent_installed: installed ? 1 : 0, ...(version ? { agent_version: version } : {}) }).where('id_norm', '=', norm(id)).execute();
    return (await this.getVm(id))!;
  }

  agentStatusOf(vm: Vm): AgentStatus {
    if (!vm.agentInstalled) return { installed: false, status: 'NotInstalled' };
    return { installed: true, status: vm.powerState === 'running' ? 'Ready' : 'NotReady', version: vm.agentVersion };
  }

  async agentStatus(vmId: string): Promise<AgentStatus> {
    return this.agentStatusOf(await this.requireVm(vmId));
  }

  async updateVmProps(id: string, fn: (p: VmProps) => VmProps): Promise<void> {
    const vm = await this.requireVm(id);
    await this.store.db.updateTable('compute_vms').set({ props_json: JSON.stringify(fn(vm.props)) }).where('id_norm', '=', norm(id)).execute();
  }

  async setDiskEncryption(id: string, esc: EncryptionSettingsCollection | undefined): Promise<void> {
    await this.store.db.updateTable('compute_disks').set({ encryption_json: esc ? JSON.stringify(esc) : null }).where('id_norm', '=', norm(id)).execute();
  }

  /** Disk ids of a VM: OS first, then data disks by lun. */
  vmDisks(vm: Vm): { diskId: string; lun?: number | undefined; os: boolean }[] {
    const sp = vm.props.storageProfile;
    return [{ diskId: sp.osDisk.diskId, os: true }, ...[...sp.dataDisks].sort((a, b) => a.lun - b.lun).map((d) => ({ diskId: d.diskId, lun: d.lun, os: false }))];
  }

  /** The VM configuration as the engine stores it with a recovery point. */
  async vmConfig(id: string): Promise<Record<string, unknown>> {
    const vm = await this.requireVm(id);
    const disks = await Promise.all(this.vmDisks(vm).map(async (x) => ({ ...x, disk: await this.requireDisk(x.diskId) })));
    return {
      id: vm.id, name: vm.name, location: vm.location, tags: vm.tags, vmId: vm.vmId, osType: vm.osType,
      hardwareProfile: vm.props.hardwareProfile,
      osProfile: vm.props.osProfile,
      storageProfile: vm.props.storageProfile,
      disks: disks.map((d) => ({ id: d.disk.id, name: d.disk.name, lun: d.lun, os: d.os, sizeBytes: d.disk.sizeBytes, format: d.disk.format, encryptionSettingsCollection: d.disk.encryptionSettingsCollection })),
    };
  }

  async encryptionInfo(vmId: string): Promise<DiskEncryptionInfo[]> {
    const vm = await this.requireVm(vmId);
    const out: DiskEncryptionInfo[] = [];
    for (const x of this.vmDisks(vm)) {
      const d = await this.requireDisk(x.diskId);
      const s = d.encryptionSettingsCollection?.enabled ? d.encryptionSettingsCollection.encryptionSettings[0] : undefined;
      const legacy = x.os ? vm.props.storageProfile.osDisk.encryptionSettings : undefined;
      out.push({
        diskId: d.id,
        encrypted: d.format === 'luks1' || !!s || !!legacy?.enabled,
        format: d.format,
        secretUrl: s?.diskEncryptionKey.secretUrl ?? legacy?.diskEncryptionKey?.secretUrl,
        secretVaultId: s?.diskEncryptionKey.sourceVault.id ?? legacy?.diskEncryptionKey?.sourceVault.id,
        keyUrl: s?.keyEncryptionKey?.keyUrl ?? legacy?.keyEncryptionKey?.keyUrl,
        keyVaultId: s?.keyEncryptionKey?.sourceVault.id ?? legacy?.keyEncryptionKey?.sourceVault.id,
      });
    }
    return out;
  }

  // ---- classic VMs --------------------------------------------------------------------------------------------
  async putClassicVm(sub: string, rg: string, name: string, location: string, props: Record<string, unknown>): Promise<{ vm: ClassicVm; created: boolean }> {
    const g = await this.resources.requireGroup(sub, rg);
    requireName('virtual machine', name, 64);
    const id = `/subscriptions/${sub}/resourceGroups/${g.name}/providers/Microsoft.ClassicCompute/virtualMachines/${name}`;
    const existing = await this.store.db.selectFrom('compute_classic_vms').select('id').where('id_norm', '=', norm(id)).executeTakeFirst();
    if (existing) await this.store.db.updateTable('compute_classic_vms').set({ props_json: JSON.stringify(props) }).where('id_norm', '=', norm(id)).execute();
    else await this.store.db.insertInto('compute_classic_vms').values({ id_norm: norm(id), id, subscription_id: sub, resource_group: g.name.toLowerCase(), name, location, props_json: JSON.stringify(props), created_at: Date.now() }).execute();
    await this.resources.index({ id, subscriptionId: sub, resourceGroup: g.name, type: CLASSIC_VM_TYPE, name, location });
    return { vm: (await this.getClassicVm(id))!, created: !existing };
  }

  async getClassicVm(id: string): Promise<ClassicVm | undefined> {
    const r = await this.store.db.selectFrom('compute_classic_vms').selectAll().where('id_norm', '=', norm(id)).executeTakeFirst();
    return r ? toClassic(r) : undefined;
  }

  async listClassicVms(sub: string, rg?: string): Promise<ClassicVm[]> {
    let q = this.store.db.selectFrom('compute_classic_vms').selectAll().where('subscription_id', '=', sub);
    if (rg) q = q.where('resource_group', '=', rg.toLowerCase());
    return (await q.orderBy('id_norm').execute()).map(toClassic);
  }

  async deleteClassicVm(id: string): Promise<boolean> {
    const r = await this.store.db.deleteFrom('compute_classic_vms').where('id_norm', '=', norm(id)).executeTakeFirst();
    await this.resources.unindex(id);
    return Number(r.numDeletedRows) > 0;
  }

  // ---- guest I/O ---------------------------------------------------------------------------------------------
  /** Which disk a guest sees at `lun` (or the OS disk). */
  async guestDisk(vmId: string, sel: { lun?: number | undefined; osDisk?: boolean | undefined }): Promise<{ vm: Vm; disk: Disk }> {
    const vm = await this.requireVm(vmId);
    let id: string | undefined;
    if (sel.osDisk) id = vm.props.storageProfile.osDisk.diskId;
    else id = vm.props.storageProfile.dataDisks.find((d) => d.lun === sel.lun)?.diskId;
    if (!id) throw new ArmError(404, 'NotFound', `VM '${vm.name}' has no data disk at lun ${sel.lun}.`, { recommendation: `List its disks: rsvault vm show -g ${vm.resourceGroup} -n ${vm.name}` });
    return { vm, disk: await this.requireDisk(id) };
  }

  private async openForIo(vm: Vm, d: Disk, writable: boolean): Promise<OpenDisk> {
    if (vm.powerState !== 'running') throw new ArmError(409, 'OperationNotAllowed', `VM '${vm.name}' is ${vm.powerState}; guest I/O needs a running VM.`, { recommendation: `Start it: rsvault vm start -g ${vm.resourceGroup} -n ${vm.name}` });
    if (d.locked) {
      // ADE disks are opened by the platform at VM start; only LUKS volumes without encryption settings need a passphrase.
      const ade = adeRefsOf(d, norm(vm.props.storageProfile.osDisk.diskId) === norm(d.id) ? vm.props.storageProfile.osDisk.encryptionSettings : undefined);
      throw new ArmError(409, 'DiskLocked', `Disk '${d.name}' is a LUKS volume rsvault has no key for.`, {
        recommendation: ade ? `Restart the VM so the platform opens it with its BEK: rsvault vm restart -g ${vm.resourceGroup} -n ${vm.name}` : `Unlock it with its passphrase: rsvault disk unlock -g ${d.resourceGroup} -n ${d.name} --passphrase ...`,
      });
    }
    return OpenDisk.open(d.imagePath, await this.volumeKey(d), writable);
  }

  async guestRead(vmId: string, sel: { lun?: number | undefined; osDisk?: boolean | undefined }, offset: number, length?: number): Promise<Buffer> {
    const { vm, disk } = await this.guestDisk(vmId, sel);
    return this.withDiskLock(disk.id, async () => {
      const od = await this.openForIo(vm, disk, false);
      try {
        const size = await od.guestSize();
        const len = length ?? size - offset;
        checkRange(offset, len, size, disk.name);
        return await od.read(offset, len);
      } finally {
        await od.close();
      }
    });
  }

  async guestWrite(vmId: string, sel: { lun?: number | undefined; osDisk?: boolean | undefined }, offset: number, data: Buffer): Promise<{ diskId: string; bytes: number }> {
    const { vm, disk } = await this.guestDisk(vmId, sel);
    return this.withDiskLock(disk.id, async () => {
      const od = await this.openForIo(vm, disk, true);
      try {
        const size = await od.guestSize();
        checkRange(offset, data.length, size, disk.name);
        if (data.length === 0) return { diskId: disk.id, bytes: 0 };
        const fr = od.fileRange(offset, data.length);
        // Check the image is still what we last saw before changing it (else the bitmap cannot be trusted).
        await this.checkStamp(disk.id, disk.imagePath);
        await this.runHooks(disk.id, fr.offset, fr.length);
        await od.write(offset, data);
        await od.fh.sync();
        await this.recordWrite(disk.id, disk.imagePath, fr.offset, fr.length);
        return { diskId: disk.id, bytes: data.length };
      } finally {
        await od.close();
      }
    });
  }

  // ---- before-write hooks (copy-on-write snapshots) ----------------------------------------------------------
  /** `hook(offset, length)` runs before rsvault overwrites image-file bytes [offset, offset+length). Returns the unregister function. */
  onBeforeWrite(diskIdIn: string, hook: BeforeWriteHook): () => void {
    const key = norm(diskIdIn);
    let set = this.hooks.get(key);
    if (!set) this.hooks.set(key, (set = new Set()));
    set.add(hook);
    return () => {
      set.delete(hook);
      if (set.size === 0) this.hooks.delete(key);
    };
  }

  async runHooks(diskIdIn: string, offset: number, length: number): Promise<void> {
    for (const h of this.hooks.get(norm(diskIdIn)) ?? []) await h(offset, length);
  }

  // ---- changed-block tracking ---------------------------------------------------------------------------------
  private async initBitmap(id: string, file: string, valid: boolean, reason?: string): Promise<void> {
    const st = await stampOf(file);
    await this.store.db
      .insertInto('compute_bitmaps')
      .values({ disk_id_norm: norm(id), valid: valid ? 1 : 0, bits: Buffer.alloc(bitmapBytesFor(st?.size ?? 0)).toString('base64'), generation: 0, pending_bits: null, stamp_json: JSON.stringify(st ?? {}), reason: reason ?? null, updated_at: Date.now() })
      .onConflict((oc) => oc.column('disk_id_norm').doNothing())
      .execute();
  }

  private async bitmapRow(id: string) {
    const d = await this.requireDisk(id);
    let r = await this.store.db.selectFrom('compute_bitmaps').selectAll().where('disk_id_norm', '=', norm(id)).executeTakeFirst();
    if (!r) {
      await this.initBitmap(id, d.imagePath, false, 'no changed-block record');
      r = (await this.store.db.selectFrom('compute_bitmaps').selectAll().where('disk_id_norm', '=', norm(id)).executeTakeFirst())!;
    }
    return { d, r };
  }

  /** Invalidates the bitmap when the image changed outside rsvault since rsvault last wrote it. */
  private async checkStamp(id: string, file: string): Promise<void> {
    const r = await this.store.db.selectFrom('compute_bitmaps').select(['stamp_json', 'valid']).where('disk_id_norm', '=', norm(id)).executeTakeFirst();
    if (!r || r.valid === 0) return;
    const now = await stampOf(file);
    if (!sameStamp(JSON.parse(r.stamp_json) as FileStamp, now)) await this.invalidate(id, describeChange(JSON.parse(r.stamp_json) as FileStamp, now));
  }

  private async recordWrite(id: string, file: string, offset: number, length: number): Promise<void> {
    const r = await this.store.db.selectFrom('compute_bitmaps').selectAll().where('disk_id_norm', '=', norm(id)).executeTakeFirst();
    const st = await stampOf(file);
    const bits = fitBits(markBits(Buffer.from(r?.bits ?? '', 'base64'), offset, length), st?.size ?? 0);
    await this.store.db
      .updateTable('compute_bitmaps')
      .set({ bits: bits.toString('base64'), generation: Number(r?.generation ?? 0) + 1, stamp_json: JSON.stringify(st ?? {}), updated_at: Date.now() })
      .where('disk_id_norm', '=', norm(id))
      .execute();
  }

  /** Marks the bitmap invalid (the next backup reads everything) and records the new file stamp. */
  async invalidate(id: string, reason: string): Promise<void> {
    const d = await this.getDisk(id);
    const st = d ? await stampOf(d.imagePath) : undefined;
    await this.store.db
      .updateTable('compute_bitmaps')
      .set({ valid: 0, reason, stamp_json: JSON.stringify(st ?? {}), bits: Buffer.alloc(bitmapBytesFor(st?.size ?? 0)).toString('base64'), pending_bits: null, updated_at: Date.now() })
      .where('disk_id_norm', '=', norm(id))
      .execute();
  }

  private async restamp(id: string, file: string): Promise<void> {
    await this.invalidate(id, 'disk resized');
    void file;
  }

  /**
   * The blocks of the image file changed since the last successful backup. `valid: false` means: read everything
   * (never backed up after import, changed outside rsvault — size, mtime or inode differ —, re-encrypted, uploaded).
   */
  async changedBlocks(id: string): Promise<ChangedBlocks> {
    const { d, r } = await this.bitmapRow(id);
    const now = await stampOf(d.imagePath);
    const then = JSON.parse(r.stamp_json) as FileStamp;
    let valid = r.valid === 1;
    let reason = r.reason ?? undefined;
    if (valid && !sameStamp(then, now)) {
      reason = describeChange(then, now);
      await this.invalidate(id, reason);
      valid = false;
    }
    const size = now?.size ?? 0;
    let bits = fitBits(Buffer.from(r.bits, 'base64'), size);
    if (r.pending_bits) {
      const p = fitBits(Buffer.from(r.pending_bits, 'base64'), size);
      bits = Buffer.from(bits.map((b, i) => b | p[i]!));
    }
    if (!valid) bits = Buffer.alloc(bitmapBytesFor(size));
    return { valid, blockSize: CBT_BLOCK_SIZE, bitmap: bits, imageSize: size, generation: Number(r.generation), ...(valid ? {} : { reason }) };
  }

  /**
   * Starts a backup's view of the bitmap: the current bits move to "pending" and tracking continues in a fresh set,
   * so writes during the backup are kept for the next one. Call `markBackedUp` on success, `abortBackup` on failure.
   */
  async beginBackup(id: string): Promise<ChangedBlocks> {
    return this.withDiskLock(id, async () => {
      const cb = await this.changedBlocks(id);
      const { r } = await this.bitmapRow(id);
      await this.store.db
        .updateTable('compute_bitmaps')
        .set({ pending_bits: cb.bitmap.toString('base64'), bits: Buffer.alloc(cb.bitmap.length).toString('base64'), updated_at: Date.now() })
        .where('disk_id_norm', '=', norm(id))
        .execute();
      void r;
      return cb;
    });
  }

  async abortBackup(id: string): Promise<void> {
    await this.withDiskLock(id, async () => {
      const { r } = await this.bitmapRow(id);
      if (!r.pending_bits) return;
      const p = Buffer.from(r.pending_bits, 'base64');
      const b = fitBits(Buffer.from(r.bits, 'base64'), p.length * 8 * CBT_BLOCK_SIZE);
      await this.store.db.updateTable('compute_bitmaps').set({ bits: Buffer.from(b.map((x, i) => x | (p[i] ?? 0))).toString('base64'), pending_bits: null }).where('disk_id_norm', '=', norm(id)).execute();
    });
  }

  /**
   * A backup of the disk succeeded: the bitmap becomes valid and starts afresh from this point. With a prior
   * `beginBackup`, writes made since then stay dirty; without one, every bit is cleared.
   */
  async markBackedUp(id: string, _o: { recoveryPointId?: string | undefined } = {}): Promise<void> {
    await this.withDiskLock(id, async () => {
      const { d, r } = await this.bitmapRow(id);
      const st = await stampOf(d.imagePath);
      const bits = r.pending_bits ? fitBits(Buffer.from(r.bits, 'base64'), st?.size ?? 0) : Buffer.alloc(bitmapBytesFor(st?.size ?? 0));
      await this.store.db
        .updateTable('compute_bitmaps')
        .set({ valid: 1, reason: null, pending_bits: null, bits: bits.toString('base64'), stamp_json: JSON.stringify(st ?? {}), updated_at: Date.now() })
        .where('disk_id_norm', '=', norm(id))
        .execute();
    });
  }

  dirtyBlockList(cb: ChangedBlocks): number[] {
    return dirtyBlocks(cb.bitmap);
  }
}

/** A source URI as stored and shown on the disk: a SAS signature in it is a secret (anyone who reads the disk would get it). */
function withoutSas(uri: string): string {
  if (!/^https?:\/\//i.test(uri)) return uri;
  try {
    const u = new URL(uri);
    if (!u.searchParams.has('sig')) return uri;
    u.search = '';
    return u.toString();
  } catch {
    return uri;
  }
}

function toClassic(r: ClassicVmRow): ClassicVm {
  return { id: r.id, name: r.name, location: r.location, resourceGroup: r.resource_group, props: JSON.parse(r.props_json) as Record<string, unknown> };
}

function provisionAgent(osProfile: Record<string, unknown> | undefined): boolean {
  for (const k of ['linuxConfiguration', 'windowsConfiguration']) {
    const c = osProfile?.[k] as { provisionVMAgent?: boolean } | undefined;
    if (c && c.provisionVMAgent === false) return false;
  }
  return true;
}

function checkRange(offset: number, length: number, size: number, name: string): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0 || offset + length > size) {
    throw new ArmError(400, 'InvalidParameter', `The range offset=${offset} length=${length} is outside disk '${name}' (${size} bytes as the guest sees it).`, { target: 'offset' });
  }
}

function describeChange(a: FileStamp | undefined, b: FileStamp | undefined): string {
  if (!b) return 'image file missing';
  if (!a || a.ino !== b.ino) return 'image file replaced outside rsvault (inode changed)';
  if (a.size !== b.size) return `image size changed outside rsvault (${a.size} → ${b.size} bytes)`;
  return 'image modified outside rsvault (mtime changed)';
}

/** The path an open file really has (Linux: /proc/self/fd), so a check looks at what was opened, not at a name. */
async function pathOfOpenFile(fh: FileHandle, fallback: string): Promise<string> {
  return readlink(`/proc/self/fd/${fh.fd}`).catch(() => realpath(fallback));
}

/** True when `file` is `dir` or lies under it, both with symlinks resolved. */
async function insideDir(file: string, dir: string): Promise<boolean> {
  const [f, root] = await Promise.all([realpath(file).catch(() => path.resolve(file)), realpath(dir).catch(() => path.resolve(dir))]);
  const rel = path.relative(root, f);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}
