/**
 * ARM surface of Microsoft.Compute (disks, virtualMachines, extensions) and Microsoft.ClassicCompute
 * (virtualMachines), plus rsvault's own actions: guest I/O, VM agent install/uninstall, disk unlock, changed blocks,
 * and the SAS endpoint serving/accepting raw image bytes. Any date api-version is accepted.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Readable } from 'node:stream';
import { open } from 'node:fs/promises';
import { ArmError, armErrors } from '../platform/http/errors.js';
import { requireArmApiVersion } from '../platform/http/api-version.js';
import { parseByteRange, unsatisfiableRange } from '../platform/http/range.js';
import { originOf } from '../platform/http/app.js';
import { paginate } from '../platform/http/paging.js';
import { accepted, type AsyncOperations } from '../platform/http/async-ops.js';
import type { KeyVaultService, KvPrincipal } from '../keyvault/index.js';
import { planAde, runAde, type AdeSettings } from './ade.js';
import { dirtyBlocks } from './disk-io.js';
import { ADE_EXTENSION_NAMES, CLASSIC_VM_TYPE, DISK_TYPE, EXT_TYPE, VM_TYPE, diskSizeGB, type Disk, type OsType, type Vm } from './model.js';
import type { ComputeService, DiskInput, VmInput, ClassicVm } from './service.js';

export interface ComputeRouteDeps {
  compute: ComputeService;
  ops: AsyncOperations;
  keyvault?: KeyVaultService | undefined;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const MAX_IO = 64 * 1024 * 1024;

function body(req: FastifyRequest): Obj {
  if (!isObj(req.body)) throw armErrors.invalidContent('The request body must be a JSON object.');
  return req.body;
}
function str(o: Obj | undefined, k: string, target: string, required = false): string | undefined {
  const v = o?.[k];
  if (v === undefined || v === null) {
    if (required) throw armErrors.invalidContent(`The request content was invalid: '${target}' a value is required.`, target);
    return undefined;
  }
  if (typeof v !== 'string') throw armErrors.invalidContent(`The request content was invalid: '${target}' must be a string.`, target);
  return v;
}
function int(o: Obj | undefined, k: string, target: string): number | undefined {
  const v = o?.[k];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw armErrors.invalidContent(`The request content was invalid: '${target}' must be a non-negative integer.`, target);
  return v;
}
function obj(o: Obj | undefined, k: string, target: string): Obj | undefined {
  const v = o?.[k];
  if (v === undefined || v === null) return undefined;
  if (!isObj(v)) throw armErrors.invalidContent(`The request content was invalid: '${target}' must be an object.`, target);
  return v;
}
function tags(o: Obj): Record<string, string> | undefined {
  const t = obj(o, 'tags', 'tags');
  if (!t) return undefined;
  for (const [k, v] of Object.entries(t)) if (typeof v !== 'string') throw armErrors.invalidContent(`The request content was invalid: 'tags.${k}' must be a string.`, `tags.${k}`);
  return t as Record<string, string>;
}
function osTypeOf(v: string | undefined, target: string): OsType | undefined {
  if (v === undefined) return undefined;
  if (v.toLowerCase() === 'linux') return 'Linux';
  if (v.toLowerCase() === 'windows') return 'Windows';
  throw armErrors.invalidContent(`The request content was invalid: '${target}' must be one of ["Windows","Linux"].`, target);
}
function queryOf(req: FastifyRequest): URLSearchParams {
  return new URL(req.url, 'https://x').searchParams;
}
function callerOf(req: FastifyRequest): KvPrincipal {
  const c = req.caller!;
  return { objectId: c.objectId, tenantId: c.tenantId, appId: c.appId };
}

async function readBody(req: FastifyRequest, limit: number): Promise<Buffer> {
  const b = req.body as unknown;
  if (Buffer.isBuffer(b)) return b;
  if (b === undefined || b === null) return Buffer.alloc(0);
  if (typeof (b as Readable).on === 'function') {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of b as Readable) {
      n += (c as Buffer).length;
      if (n > limit) throw new ArmError(413, 'RequestEntityTooLarge', `The request body exceeds ${limit} bytes; send the data in smaller pieces.`);
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks);
  }
  throw new ArmError(415, 'UnsupportedMediaType', 'Send the bytes as application/octet-stream.');
}

// ---- views -----------------------------------------------------------------------------------------------------
export function diskView(d: Disk, origin?: string): Obj {
  void origin;
  const p = d.props;
  return {
    id: d.id,
    name: d.name,
    type: DISK_TYPE,
    location: d.location,
    tags: d.tags,
    ...(d.managedBy ? { managedBy: d.managedBy } : {}),
    sku: { name: String(p.sku ?? 'Standard_LRS'), tier: String(p.sku ?? 'Standard_LRS').startsWith('Premium') ? 'Premium' : 'Standard' },
    properties: {
      ...(d.osType ? { osType: d.osType } : {}),
      hyperVGeneration: 'V1',
      creationData: { createOption: p.createOption ?? 'Empty', ...(p.sourceUri ? { sourceUri: p.sourceUri } : {}), ...(d.state === 'ReadyToUpload' || p.createOption === 'Upload' ? { uploadSizeBytes: d.sizeBytes } : {}) },
      diskSizeGB: diskSizeGB(d.sizeBytes),
      diskSizeBytes: d.sizeBytes,
      uniqueId: d.uniqueId,
      encryption: { type: 'EncryptionAtRestWithPlatformKey' },
      ...(d.encryptionSettingsCollection ? { encryptionSettingsCollection: d.encryptionSettingsCollection } : {}),
      provisioningState: 'Succeeded',
      diskState: d.state,
      timeCreated: new Date(d.createdAt).toISOString(),
      networkAccessPolicy: 'AllowAll',
      rsvault: { imagePath: d.imagePath, imageFormat: d.format, locked: d.locked, referencedInPlace: !d.owned },
    },
  };
}

async function vmView(compute: ComputeService, vm: Vm, withInstanceView: boolean): Promise<Obj> {
  const sp = vm.props.storageProfile;
  const os = await compute.getDisk(sp.osDisk.diskId);
  const data = await Promise.all(sp.dataDisks.map(async (d) => ({ d, disk: await compute.getDisk(d.diskId) })));
  const osProfile = vm.props.osProfile ? { ...vm.props.osProfile } : undefined;
  if (osProfile) delete osProfile.adminPassword;
  const exts = await compute.store.db.selectFrom('compute_vm_extensions').selectAll().where('vm_id_norm', '=', vm.id.toLowerCase()).execute();
  return {
    id: vm.id,
    name: vm.name,
    type: VM_TYPE,
    location: vm.location,
    tags: vm.tags,
    properties: {
      vmId: vm.vmId,
      hardwareProfile: vm.props.hardwareProfile,
      storageProfile: {
        ...(sp.imageReference ? { imageReference: sp.imageReference } : {}),
        osDisk: {
          osType: sp.osDisk.osType,
          name: sp.osDisk.name,
          createOption: sp.osDisk.createOption,
          caching: sp.osDisk.caching ?? 'ReadWrite',
          managedDisk: { id: sp.osDisk.diskId, storageAccountType: 'Standard_LRS' },
          ...(os ? { diskSizeGB: diskSizeGB(os.sizeBytes) } : {}),
          ...(sp.osDisk.encryptionSettings ? { encryptionSettings: sp.osDisk.encryptionSettings } : {}),
          deleteOption: sp.osDisk.deleteOption ?? 'Detach',
        },
        dataDisks: data.map(({ d, disk }) => ({
          lun: d.lun,
          name: d.name,
          createOption: d.createOption,
          caching: d.caching ?? 'None',
          managedDisk: { id: d.diskId, storageAccountType: 'Standard_LRS' },
          ...(disk ? { diskSizeGB: diskSizeGB(disk.sizeBytes) } : {}),
          toBeDetached: false,
          deleteOption: 'Detach',
        })),
      },
      ...(osProfile ? { osProfile } : {}),
      ...(vm.props.networkProfile ? { networkProfile: vm.props.networkProfile } : {}),
      ...(vm.props.diagnosticsProfile ? { diagnosticsProfile: vm.props.diagnosticsProfile } : {}),
      provisioningState: 'Succeeded',
      timeCreated: new Date(vm.createdAt).toISOString(),
      ...(withInstanceView ? { instanceView: await instanceView(compute, vm) } : {}),
    },
    // The VM's extensions, as Azure's VM GET lists them (az reads them to find Azure Disk Encryption).
    ...(exts.length ? { resources: exts.map((e) => extView(e)) } : {}),
  };
}

const POWER_DISPLAY: Record<string, string> = { running: 'VM running', stopped: 'VM stopped', deallocated: 'VM deallocated', starting: 'VM starting', stopping: 'VM stopping' };

async function instanceView(compute: ComputeService, vm: Vm): Promise<Obj> {
  const agent = compute.agentStatusOf(vm);
  const now = new Date().toISOString();
  const exts = await compute.store.db.selectFrom('compute_vm_extensions').selectAll().where('vm_id_norm', '=', vm.id.toLowerCase()).execute();
  const disks = [];
  for (const x of compute.vmDisks(vm)) {
    const d = await compute.getDisk(x.diskId);
    if (!d) continue;
    const es = d.encryptionSettingsCollection;
    const vmLevel = x.os ? vm.props.storageProfile.osDisk.encryptionSettings : undefined;
    const settings = es?.enabled ? es.encryptionSettings.map((s) => ({ ...s, enabled: true })) : vmLevel?.diskEncryptionKey ? [{ ...vmLevel, enabled: vmLevel.enabled ?? true }] : undefined;
    disks.push({
      name: d.name,
      ...(settings ? { encryptionSettings: settings } : {}),
      statuses: [{ code: 'ProvisioningState/succeeded', level: 'Info', displayStatus: 'Provisioning succeeded', time: now }, encryptionStatus(d.format === 'luks1')],
    });
  }
  return {
    computerName: (vm.props.osProfile as { computerName?: string } | undefined)?.computerName ?? vm.name,
    osName: vm.osType === 'Windows' ? 'Windows Server' : 'Linux',
    ...(agent.installed
      ? {
          vmAgent: {
            vmAgentVersion: agent.status === 'Ready' ? agent.version : 'Unknown',
            statuses: [
              agent.status === 'Ready'
                ? { code: 'ProvisioningState/succeeded', level: 'Info', displayStatus: 'Ready', message: 'Guest Agent is running', time: now }
                : { code: 'ProvisioningState/Unavailable', level: 'Warning', displayStatus: 'Not Ready', message: 'VM status blob is found but not yet populated.', time: now },
            ],
            extensionHandlers: exts.map((e) => ({ type: String((JSON.parse(e.props_json) as Obj).type ?? e.name), typeHandlerVersion: String((JSON.parse(e.props_json) as Obj).typeHandlerVersion ?? '1.0') })),
          },
        }
      : {
          vmAgent: {
            vmAgentVersion: 'Unknown',
            statuses: [{ code: 'ProvisioningState/Unavailable', level: 'Warning', displayStatus: 'Not Ready', message: 'VM Agent is not installed.', time: now }],
          },
        }),
    disks,
    extensions: await Promise.all(exts.map((e) => extInstanceView(compute, vm, e))),
    statuses: [
      { code: 'ProvisioningState/succeeded', level: 'Info', displayStatus: 'Provisioning succeeded', time: now },
      { code: `PowerState/${vm.powerState}`, level: 'Info', displayStatus: POWER_DISPLAY[vm.powerState] ?? vm.powerState },
    ],
  };
}

function extView(r: { id: string; name: string; location: string; props_json: string; state: string }, instance?: Obj): Obj {
  const p = JSON.parse(r.props_json) as Obj;
  return { id: r.id, name: r.name, type: EXT_TYPE, location: r.location, properties: { ...p, provisioningState: r.state, ...(instance ? { instanceView: instance } : {}) } };
}

/** A disk's `EncryptionState/…` status, as the ADE extension reports it in the VM instanceView (`az vm encryption show`). */
function encryptionStatus(encrypted: boolean): Obj {
  return encrypted
    ? { code: 'EncryptionState/encrypted', level: 'Info', displayStatus: 'Encryption is enabled on disk' }
    : { code: 'EncryptionState/notEncrypted', level: 'Info', displayStatus: 'Encryption is disabled on disk' };
}

type ExtRow = { id: string; name: string; location: string; props_json: string; state: string; status_json: string | null };

/**
 * An extension's instanceView (in the VM instanceView and in `GET …/extensions/{n}?$expand=instanceView`). For Azure
 * Disk Encryption, as the Linux extension reports it: the substatus message is JSON of the volumes' real state,
 * `{"os": "Encrypted"|"NotEncrypted", "data": "Encrypted"|"NotEncrypted"|"NotMounted"}`, read from the disks.
 */
async function extInstanceView(compute: ComputeService, vm: Vm, e: ExtRow): Promise<Obj> {
  const p = JSON.parse(e.props_json) as Obj;
  const st = e.status_json ? (JSON.parse(e.status_json) as { message?: string }) : {};
  const isAde = String(p.publisher ?? '').toLowerCase() === 'microsoft.azure.security' && ADE_EXTENSION_NAMES.some((n) => n.toLowerCase() === String(p.type ?? '').toLowerCase());
  const view: Obj = {
    name: e.name,
    type: `${String(p.publisher ?? '')}.${String(p.type ?? '')}`,
    typeHandlerVersion: String(p.typeHandlerVersion ?? '1.0'),
    statuses: [{ code: `ProvisioningState/${e.state.toLowerCase()}`, level: e.state === 'Failed' ? 'Error' : 'Info', displayStatus: e.state === 'Succeeded' ? 'Provisioning succeeded' : e.state, message: st.message ?? '' }],
  };
  if (isAde && e.state === 'Succeeded') {
    const formats = await Promise.all(compute.vmDisks(vm).map(async (x) => ({ os: x.os, enc: (await compute.getDisk(x.diskId))?.format === 'luks1' })));
    const os = formats.find((f) => f.os)?.enc ? 'Encrypted' : 'NotEncrypted';
    const data = formats.filter((f) => !f.os);
    const dataState = data.length === 0 ? 'NotMounted' : data.every((f) => f.enc) ? 'Encrypted' : 'NotEncrypted';
    view.substatuses = [{ code: 'ComponentStatus/EncryptionSummary/succeeded', level: 'Info', displayStatus: 'Provisioning succeeded', message: JSON.stringify({ os, data: dataState }) }];
  }
  return view;
}

function classicView(v: ClassicVm): Obj {
  return { id: v.id, name: v.name, type: CLASSIC_VM_TYPE, location: v.location, properties: { ...v.props, provisioningState: 'Succeeded' } };
}

// ---- input parsing -------------------------------------------------------------------------------------------------
function parseDiskInput(b: Obj): DiskInput {
  const location = str(b, 'location', 'location', true)!;
  const p = obj(b, 'properties', 'properties') ?? {};
  const cd = obj(p, 'creationData', 'properties.creationData');
  const createOption = (str(cd, 'createOption', 'properties.creationData.createOption') ?? 'Empty') as DiskInput['createOption'];
  const co = ['Empty', 'Import', 'Upload'].find((x) => x.toLowerCase() === createOption.toLowerCase());
  if (!co) throw armErrors.invalidContent(`The value '${createOption}' of 'properties.creationData.createOption' is not supported; use Empty, Import or Upload.`, 'properties.creationData.createOption');
  let sourcePath = str(cd, 'sourceUri', 'properties.creationData.sourceUri');
  if (sourcePath?.startsWith('file://')) sourcePath = decodeURIComponent(new URL(sourcePath).pathname);
  if (sourcePath !== undefined && !sourcePath.startsWith('/') && !/^https:\/\//i.test(sourcePath)) throw armErrors.invalidContent(`'properties.creationData.sourceUri' must be an absolute path or file:// URL on the server, or the https URI of a blob this rsvault serves (got '${sourcePath}').`, 'properties.creationData.sourceUri');
  const ref = cd?.referenceInPlace;
  if (ref !== undefined && typeof ref !== 'boolean') throw armErrors.invalidContent("'properties.creationData.referenceInPlace' must be a boolean.", 'properties.creationData.referenceInPlace');
  const esc = obj(p, 'encryptionSettingsCollection', 'properties.encryptionSettingsCollection');
  return {
    location,
    tags: tags(b),
    sku: obj(b, 'sku', 'sku') as { name?: string } | undefined,
    createOption: co as DiskInput['createOption'],
    diskSizeGB: int(p, 'diskSizeGB', 'properties.diskSizeGB'),
    sizeBytes: co === 'Upload' ? int(cd, 'uploadSizeBytes', 'properties.creationData.uploadSizeBytes') : undefined,
    sourcePath,
    referenceInPlace: ref as boolean | undefined,
    osType: osTypeOf(str(p, 'osType', 'properties.osType'), 'properties.osType'),
    encryptionSettingsCollection: esc as DiskInput['encryptionSettingsCollection'],
  };
}

function parseVmInput(b: Obj): VmInput {
  const location = str(b, 'location', 'location', true)!;
  const p = obj(b, 'properties', 'properties');
  if (!p) throw armErrors.invalidContent("The request content was invalid: 'properties' a value is required.", 'properties');
  const hw = obj(p, 'hardwareProfile', 'properties.hardwareProfile');
  const sp = obj(p, 'storageProfile', 'properties.storageProfile');
  if (!sp) throw armErrors.invalidContent("The request content was invalid: 'properties.storageProfile' a value is required.", 'properties.storageProfile');
  const od = obj(sp, 'osDisk', 'properties.storageProfile.osDisk') ?? {};
  const osProfile = obj(p, 'osProfile', 'properties.osProfile');
  const dd = sp.dataDisks;
  if (dd !== undefined && !Array.isArray(dd)) throw armErrors.invalidContent("'properties.storageProfile.dataDisks' must be an array.", 'properties.storageProfile.dataDisks');
  const odCreate = str(od, 'createOption', 'properties.storageProfile.osDisk.createOption') ?? (obj(od, 'managedDisk', 'x')?.id ? 'Attach' : 'FromImage');
  return {
    location,
    tags: tags(b),
    vmSize: str(hw, 'vmSize', 'properties.hardwareProfile.vmSize') ?? 'Standard_DS1_v2',
    osType: osTypeOf(str(od, 'osType', 'properties.storageProfile.osDisk.osType'), 'properties.storageProfile.osDisk.osType'),
    osDisk: {
      name: str(od, 'name', 'properties.storageProfile.osDisk.name'),
      createOption: odCreate,
      managedDiskId: str(obj(od, 'managedDisk', 'properties.storageProfile.osDisk.managedDisk'), 'id', 'properties.storageProfile.osDisk.managedDisk.id'),
      diskSizeGB: int(od, 'diskSizeGB', 'properties.storageProfile.osDisk.diskSizeGB'),
      caching: str(od, 'caching', 'properties.storageProfile.osDisk.caching'),
      encryptionSettings: obj(od, 'encryptionSettings', 'properties.storageProfile.osDisk.encryptionSettings') as VmInput['osDisk']['encryptionSettings'],
      deleteOption: str(od, 'deleteOption', 'properties.storageProfile.osDisk.deleteOption'),
    },
    dataDisks: ((dd as unknown[] | undefined) ?? []).map((x, i) => {
      const t = `properties.storageProfile.dataDisks[${i}]`;
      if (!isObj(x)) throw armErrors.invalidContent(`'${t}' must be an object.`, t);
      const lun = x.lun;
      if (typeof lun !== 'number') throw armErrors.invalidContent(`The request content was invalid: '${t}.lun' a value is required.`, `${t}.lun`);
      const md = obj(x, 'managedDisk', `${t}.managedDisk`);
      return { lun, name: str(x, 'name', `${t}.name`), createOption: str(x, 'createOption', `${t}.createOption`) ?? (md?.id ? 'Attach' : 'Empty'), managedDiskId: str(md, 'id', `${t}.managedDisk.id`), diskSizeGB: int(x, 'diskSizeGB', `${t}.diskSizeGB`), caching: str(x, 'caching', `${t}.caching`) };
    }),
    imageReference: sp.imageReference,
    osProfile,
    networkProfile: p.networkProfile,
    diagnosticsProfile: p.diagnosticsProfile,
  };
}

function guestSel(q: URLSearchParams): { lun?: number; osDisk?: boolean } {
  const lun = q.get('lun');
  const os = q.get('osDisk');
  if ((lun === null) === (os === null || os === 'false')) throw new ArmError(400, 'InvalidParameter', 'Give exactly one of ?lun=N or ?osDisk=true.', { target: 'lun' });
  if (lun !== null) {
    if (!/^\d+$/.test(lun)) throw new ArmError(400, 'InvalidParameter', `lun '${lun}' is not an integer.`, { target: 'lun' });
    return { lun: Number(lun) };
  }
  return { osDisk: true };
}
function numParam(q: URLSearchParams, k: string, required: boolean): number | undefined {
  const v = q.get(k);
  if (v === null) {
    if (required) throw new ArmError(400, 'InvalidParameter', `The query parameter '${k}' is required.`, { target: k });
    return undefined;
  }
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v))) throw new ArmError(400, 'InvalidParameter', `The query parameter '${k}' must be a non-negative integer (got '${v}').`, { target: k });
  return Number(v);
}

export function registerComputeRoutes(app: FastifyInstance, deps: ComputeRouteDeps): void {
  const { compute, ops, keyvault } = deps;
  const RG = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.Compute';
  const DISK = `${RG}/disks/:name`;
  const VM = `${RG}/virtualMachines/:name`;
  type P = { sub: string; rg: string; name: string };
  const D = 'Microsoft.Compute/disks';
  const V = 'Microsoft.Compute/virtualMachines';
  const dId = (p: P) => `/subscriptions/${p.sub}/resourceGroups/${p.rg}/providers/Microsoft.Compute/disks/${p.name}`;
  const vId = (p: P) => `/subscriptions/${p.sub}/resourceGroups/${p.rg}/providers/Microsoft.Compute/virtualMachines/${p.name}`;
  const opUrl = (req: FastifyRequest, sub: string, loc: string, op: string, api = '2022-08-01') => `${originOf(req)}/subscriptions/${sub}/providers/Microsoft.Compute/locations/${encodeURIComponent(loc)}/operationStatuses/${op}?api-version=${encodeURIComponent(api)}`;
  const notFound = (type: string, p: P) => armErrors.notFound(type, p.name, p.rg);

  // ---- disks ----
  app.put(DISK, { config: { action: `${D}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const { disk } = await compute.createOrUpdateDisk(p.sub, p.rg, p.name, { ...parseDiskInput(body(req)), caller: req.caller });
    // Disks_CreateOrUpdate (DiskRP 2022-07-02 and later) answers 200 or 202 with the Disk, never 201: a 202 with
    // Azure-AsyncOperation + Location as Azure does; the disk is complete when the PUT returns, so the operation has
    // already succeeded and the client's final GET reads it.
    const op = await ops.start(`${D}/write`, disk.id, async () => undefined);
    const api = queryOf(req).get('api-version') ?? '2022-07-02';
    return accepted(reply, { asyncOperation: opUrl(req, p.sub, disk.location, op, api), location: `${originOf(req)}/subscriptions/${p.sub}/operationresults/${op}?api-version=${encodeURIComponent(api)}` }, 1, diskView(disk));
  });
  app.get(DISK, { config: { action: `${D}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const d = await compute.getDisk(dId(p));
    if (!d) throw notFound(D, p);
    return diskView(d);
  });
  app.delete(DISK, { config: { action: `${D}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    return reply.code((await compute.deleteDisk(dId(p))) ? 200 : 204).send();
  });
  app.get(`${RG}/disks`, { config: { action: `${D}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    return paginate((await compute.listDisks(sub, rg)).map((d) => diskView(d)), new URL(req.url, originOf(req)));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.Compute/disks', { config: { action: `${D}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as P;
    return paginate((await compute.listDisks(sub)).map((d) => diskView(d)), new URL(req.url, originOf(req)));
  });
  app.post(`${DISK}/beginGetAccess`, { config: { action: `${D}/beginGetAccess/action` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const b = body(req);
    const access = str(b, 'access', 'access', true)!;
    const acc = ['Read', 'Write'].find((x) => x.toLowerCase() === access.toLowerCase()) as 'Read' | 'Write' | undefined;
    if (!acc) throw armErrors.invalidContent(`The value '${access}' of 'access' is invalid; use Read or Write.`, 'access');
    const dur = int(b, 'durationInSeconds', 'durationInSeconds') ?? 3600;
    if (dur < 1 || dur > 5 * 86400) throw armErrors.invalidContent("'durationInSeconds' must be between 1 and 432000.", 'durationInSeconds');
    const token = await compute.grantAccess(dId(p), acc, dur);
    const exp = new Date(Date.now() + dur * 1000).toISOString();
    return { accessSAS: `${originOf(req)}/diskaccess/${token}/abcd?sv=2018-03-28&sr=b&se=${encodeURIComponent(exp)}&sp=${acc === 'Read' ? 'r' : 'w'}` };
  });
  app.post(`${DISK}/endGetAccess`, { config: { action: `${D}/endGetAccess/action` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    await compute.revokeAccess(dId(req.params as P));
    return reply.code(200).send();
  });
  app.post(`${DISK}/unlock`, { config: { action: `${D}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const b = body(req);
    const pass = str(b, 'passphrase', 'passphrase');
    const b64 = str(b, 'passphraseBase64', 'passphraseBase64');
    if ((pass === undefined) === (b64 === undefined)) throw armErrors.invalidContent("Give exactly one of 'passphrase' or 'passphraseBase64'.", 'passphrase');
    const buf = pass !== undefined ? Buffer.from(pass, 'utf8') : Buffer.from(b64!, 'base64');
    return diskView(await compute.unlockDisk(dId(req.params as P), buf));
  });
  app.get(`${DISK}/changedBlocks`, { config: { action: `${D}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const cb = await compute.changedBlocks(dId(req.params as P));
    return { valid: cb.valid, blockSize: cb.blockSize, imageSize: cb.imageSize, generation: cb.generation, ...(cb.reason ? { reason: cb.reason } : {}), dirtyBlocks: dirtyBlocks(cb.bitmap), bitmap: cb.bitmap.toString('base64') };
  });
  app.post(`${DISK}/markBackedUp`, { config: { action: `${D}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    await compute.requireDisk(dId(req.params as P));
    await compute.markBackedUp(dId(req.params as P));
    return reply.code(204).send();
  });

  // ---- SAS endpoint: raw image bytes ----
  const sas = async (req: FastifyRequest, want: 'Read' | 'Write') => {
    const { token } = req.params as { token: string };
    const g = await compute.diskForToken(token);
    if (!g) throw new ArmError(403, 'AuthenticationFailed', 'Server failed to authenticate the request: the access signature is unknown, revoked or expired.');
    if (g.access !== want) throw new ArmError(403, 'AuthorizationPermissionMismatch', `This request is not authorized to perform this operation using this permission (the SAS grants ${g.access}).`);
    return g;
  };
  const serve = async (req: FastifyRequest, reply: FastifyReply, head: boolean) => {
    const g = await sas(req, 'Read');
    const size = (await open(g.disk.imagePath, 'r').then(async (fh) => { try { return (await fh.stat()).size; } finally { await fh.close(); } }));
    let start = 0;
    let end = size - 1;
    const range = req.headers['x-ms-range'] ?? req.headers.range;
    const r = parseByteRange(range, size);
    if (r === 'unsatisfiable') {
      const u = unsatisfiableRange(size, range!);
      return reply.code(u.status).headers(u.headers).send(u.body);
    }
    if (r) {
      ({ start, end } = r);
      void reply.code(206).header('content-range', `bytes ${start}-${end}/${size}`);
    }
    void reply.header('accept-ranges', 'bytes').header('content-type', 'application/octet-stream').header('x-ms-blob-type', 'PageBlob').header('content-length', String(end - start + 1));
    if (head || size === 0) return reply.send();
    const fh = await open(g.disk.imagePath, 'r');
    const stream = fh.createReadStream({ start, end });
    stream.on('close', () => void fh.close().catch(() => undefined));
    return reply.send(stream);
  };
  app.get('/diskaccess/:token/:blob', { config: { plane: 'public' } }, (req, reply) => serve(req, reply, false));
  app.head('/diskaccess/:token/:blob', { config: { plane: 'public' } }, (req, reply) => serve(req, reply, true));
  app.put('/diskaccess/:token/:blob', { config: { plane: 'public' } }, async (req, reply) => {
    const g = await sas(req, 'Write');
    const range = String(req.headers['x-ms-range'] ?? req.headers.range ?? '');
    const m = /^bytes=(\d+)-(\d+)$/.exec(range.trim());
    if (!m) throw new ArmError(400, 'InvalidHeaderValue', "Upload pages with 'x-ms-range: bytes=START-END' (512-byte aligned).");
    const start = Number(m[1]);
    const len = Number(m[2]) - start + 1;
    const clear = String(req.headers['x-ms-page-write'] ?? 'update').toLowerCase() === 'clear';
    const data = clear ? Buffer.alloc(Math.max(0, len)) : await readBody(req, 4 * 1024 * 1024 + 1);
    if (data.length !== len) throw new ArmError(400, 'InvalidHeaderValue', `The body has ${data.length} bytes but the range covers ${len}.`);
    await compute.uploadPages(g.disk.id, start, data);
    return reply.code(201).send();
  });

  // ---- VMs ----
  app.put(VM, { config: { action: `${V}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const { vm, created } = await compute.createOrUpdateVm(p.sub, p.rg, p.name, parseVmInput(body(req)));
    return reply.code(created ? 201 : 200).send(await vmView(compute, vm, false));
  });
  app.get(VM, { config: { action: `${V}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const vm = await compute.getVm(vId(p));
    if (!vm) throw notFound(V, p);
    return vmView(compute, vm, /instanceView/i.test(queryOf(req).get('$expand') ?? ''));
  });
  app.get(`${VM}/instanceView`, { config: { action: `${V}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    return instanceView(compute, await compute.requireVm(vId(req.params as P)));
  });
  app.delete(VM, { config: { action: `${V}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return reply.code((await compute.deleteVm(vId(req.params as P))) ? 200 : 204).send();
  });
  app.get(`${RG}/virtualMachines`, { config: { action: `${V}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    const vms = await compute.listVms(sub, rg);
    return paginate(await Promise.all(vms.map((v) => vmView(compute, v, false))), new URL(req.url, originOf(req)));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.Compute/virtualMachines', { config: { action: `${V}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as P;
    const vms = await compute.listVms(sub);
    return paginate(await Promise.all(vms.map((v) => vmView(compute, v, false))), new URL(req.url, originOf(req)));
  });
  for (const action of ['start', 'powerOff', 'deallocate', 'restart'] as const) {
    app.post(`${VM}/${action}`, { config: { action: `${V}/${action}/action` } }, async (req, reply) => {
      requireArmApiVersion(req.url);
      const p = req.params as P;
      const vm = await compute.requireVm(vId(p));
      const op = await ops.start(`${V}/${action}/action`, vm.id, async () => {
        await compute.setPowerState(vm.id, action);
      });
      return accepted(reply, { asyncOperation: opUrl(req, p.sub, vm.location, op), location: opUrl(req, p.sub, vm.location, op) });
    });
  }
  app.post(`${VM}/vmAgent/:op`, { config: { action: `${V}/write` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P & { op: string };
    if (p.op !== 'install' && p.op !== 'uninstall') throw new ArmError(404, 'InvalidResourceType', `Unknown VM agent operation '${p.op}'; use install or uninstall.`);
    const b = isObj(req.body) ? req.body : {};
    const vm = await compute.setAgent(vId(p), p.op === 'install', str(b, 'version', 'version'));
    return { ...compute.agentStatusOf(vm), vmId: vm.id };
  });

  // ---- guest I/O ----
  app.post(`${VM}/guestIo/write`, { config: { action: `${V}/guestIo/action`, body: 'bytes' } }, async (req) => {
    requireArmApiVersion(req.url);
    const q = queryOf(req);
    const sel = guestSel(q);
    const offset = numParam(q, 'offset', true)!;
    const vm = await compute.requireVm(vId(req.params as P));
    const data = await readBody(req, MAX_IO);
    return compute.guestWrite(vm.id, sel, offset, data);
  });
  app.post(`${VM}/guestIo/read`, { config: { action: `${V}/guestIo/action` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const q = queryOf(req);
    const sel = guestSel(q);
    const offset = numParam(q, 'offset', true)!;
    const length = numParam(q, 'length', false);
    if (length !== undefined && length > MAX_IO) throw new ArmError(400, 'InvalidParameter', `length ${length} exceeds ${MAX_IO} bytes; read in pieces.`, { target: 'length' });
    const buf = await compute.guestRead(vId(req.params as P), sel, offset, length);
    if (buf.length > MAX_IO) throw new ArmError(400, 'InvalidParameter', `The read would return ${buf.length} bytes (more than ${MAX_IO}); give a length.`, { target: 'length' });
    return reply.type('application/octet-stream').send(buf);
  });

  // ---- extensions (Azure Disk Encryption) ----
  const EXT = `${VM}/extensions/:ext`;
  type EP = P & { ext: string };
  const extId = (p: EP) => `${vId(p)}/extensions/${p.ext}`;
  app.put(EXT, { config: { action: `${V}/extensions/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as EP;
    const b = body(req);
    const vm = await compute.requireVm(vId(p));
    const props = obj(b, 'properties', 'properties');
    if (!props) throw armErrors.invalidContent("The request content was invalid: 'properties' a value is required.", 'properties');
    const publisher = str(props, 'publisher', 'properties.publisher', true)!;
    const type = str(props, 'type', 'properties.type', true)!;
    const settings = obj(props, 'settings', 'properties.settings') ?? {};
    const isAde = ADE_EXTENSION_NAMES.some((n) => n.toLowerCase() === type.toLowerCase()) && publisher.toLowerCase() === 'microsoft.azure.security';
    const id = extId(p);
    const location = str(b, 'location', 'location') ?? vm.location;
    const stored = { publisher, type, typeHandlerVersion: str(props, 'typeHandlerVersion', 'properties.typeHandlerVersion') ?? (isAde ? (vm.osType === 'Linux' ? '1.1' : '2.2') : '1.0'), autoUpgradeMinorVersion: props.autoUpgradeMinorVersion ?? true, settings };
    const existing = await compute.store.db.selectFrom('compute_vm_extensions').selectAll().where('id_norm', '=', id.toLowerCase()).executeTakeFirst();
    if (existing?.state === 'Creating' || existing?.state === 'Updating') throw new ArmError(409, 'OperationNotAllowed', `Extension '${p.ext}' of VM '${vm.name}' is still being provisioned; wait for it to finish.`);
    let work: () => Promise<{ message: string }>;
    if (isAde) {
      if (type.toLowerCase() === 'azurediskencryptionforlinux' && vm.osType !== 'Linux') throw armErrors.invalidContent(`Extension type '${type}' is for Linux; VM '${vm.name}' runs ${vm.osType} (use AzureDiskEncryption).`, 'properties.type');
      if (type.toLowerCase() === 'azurediskencryption' && vm.osType !== 'Windows') throw armErrors.invalidContent(`Extension type '${type}' is for Windows; VM '${vm.name}' runs ${vm.osType} (use AzureDiskEncryptionForLinux).`, 'properties.type');
      for (const k of ['EncryptionOperation', 'KeyVaultURL', 'KeyVaultResourceId', 'KeyEncryptionKeyURL', 'KekVaultResourceId', 'KeyEncryptionAlgorithm', 'VolumeType']) str(settings, k, `properties.settings.${k}`);
      const caller = callerOf(req);
      const plan = await planAde(compute, keyvault, vm, settings as unknown as AdeSettings, caller);
      work = () => runAde(compute, keyvault, vm, plan, caller);
    } else {
      work = async () => ({ message: 'Enable succeeded' });
    }
    const row = { id_norm: id.toLowerCase(), vm_id_norm: vm.id.toLowerCase(), id, name: p.ext, location, props_json: JSON.stringify(stored), state: existing ? 'Updating' : 'Creating', status_json: null, created_at: Date.now() };
    if (existing) await compute.store.db.updateTable('compute_vm_extensions').set({ props_json: row.props_json, state: row.state, status_json: null }).where('id_norm', '=', row.id_norm).execute();
    else await compute.store.db.insertInto('compute_vm_extensions').values(row).execute();
    const setState = (state: string, message: string) => compute.store.db.updateTable('compute_vm_extensions').set({ state, status_json: JSON.stringify({ message }) }).where('id_norm', '=', row.id_norm).execute();
    const op = await ops.start(`${V}/extensions/write`, id, async () => {
      try {
        const r = await work();
        await setState('Succeeded', r.message);
        return r;
      } catch (e) {
        await setState('Failed', (e as Error).message);
        throw e;
      }
    });
    void reply.header('azure-asyncoperation', opUrl(req, p.sub, vm.location, op)).header('retry-after', '1');
    return reply.code(existing ? 200 : 201).send(extView(row));
  });
  app.get(EXT, { config: { action: `${V}/extensions/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as EP;
    const r = await compute.store.db.selectFrom('compute_vm_extensions').selectAll().where('id_norm', '=', extId(p).toLowerCase()).executeTakeFirst();
    if (!r) throw armErrors.notFound(EXT_TYPE, `${p.name}/${p.ext}`, p.rg);
    if (!/instanceView/i.test(queryOf(req).get('$expand') ?? '')) return extView(r);
    return extView(r, await extInstanceView(compute, await compute.requireVm(vId(p)), r));
  });
  app.get(`${VM}/extensions`, { config: { action: `${V}/extensions/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const vm = await compute.requireVm(vId(req.params as P));
    const rows = await compute.store.db.selectFrom('compute_vm_extensions').selectAll().where('vm_id_norm', '=', vm.id.toLowerCase()).execute();
    return { value: rows.map((r) => extView(r)) };
  });
  app.delete(EXT, { config: { action: `${V}/extensions/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as EP;
    const r = await compute.store.db.deleteFrom('compute_vm_extensions').where('id_norm', '=', extId(p).toLowerCase()).executeTakeFirst();
    return reply.code(Number(r.numDeletedRows) ? 200 : 204).send();
  });

  // ---- classic VMs ----
  const CL = '/subscriptions/:sub/resourceGroups/:rg/providers/Microsoft.ClassicCompute/virtualMachines';
  const C = 'Microsoft.ClassicCompute/virtualMachines';
  const cId = (p: P) => `/subscriptions/${p.sub}/resourceGroups/${p.rg}/providers/Microsoft.ClassicCompute/virtualMachines/${p.name}`;
  app.put(`${CL}/:name`, { config: { action: `${C}/write` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const b = body(req);
    const location = str(b, 'location', 'location', true)!;
    const props = obj(b, 'properties', 'properties') ?? {};
    const { vm, created } = await compute.putClassicVm(p.sub, p.rg, p.name, location, props);
    return reply.code(created ? 201 : 200).send(classicView(vm));
  });
  app.get(`${CL}/:name`, { config: { action: `${C}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const p = req.params as P;
    const v = await compute.getClassicVm(cId(p));
    if (!v) throw notFound(C, p);
    return classicView(v);
  });
  app.delete(`${CL}/:name`, { config: { action: `${C}/delete` } }, async (req, reply) => {
    requireArmApiVersion(req.url);
    return reply.code((await compute.deleteClassicVm(cId(req.params as P))) ? 200 : 204).send();
  });
  app.get(CL, { config: { action: `${C}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub, rg } = req.params as P;
    return paginate((await compute.listClassicVms(sub, rg)).map(classicView), new URL(req.url, originOf(req)));
  });
  app.get('/subscriptions/:sub/providers/Microsoft.ClassicCompute/virtualMachines', { config: { action: `${C}/read` } }, async (req) => {
    requireArmApiVersion(req.url);
    const { sub } = req.params as P;
    return paginate((await compute.listClassicVms(sub)).map(classicView), new URL(req.url, originOf(req)));
  });
}
