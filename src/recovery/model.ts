/** Recovery Services names and pure rules: container / item naming, vault names, OData $filter. */
import { ArmError, armErrors } from '../platform/http/errors.js';

export const VAULT_TYPE = 'Microsoft.RecoveryServices/vaults';
export const LAST_BACKUP_SENTINEL = '2001-01-01T00:00:00Z';
export const SOFT_DELETE_DAYS = 14;

export interface VmRef {
  resourceGroup: string;
  vmName: string;
  classic: boolean;
}

/** `IaasVMContainer;iaasvmcontainerv2;{rg};{vm}` (how responses spell it). */
export const containerName = (r: VmRef) => `IaasVMContainer;${r.classic ? 'iaasvmcontainer' : 'iaasvmcontainerv2'};${r.resourceGroup};${r.vmName}`;
/** `VM;iaasvmcontainerv2;{rg};{vm}`. */
export const itemName = (r: VmRef) => `VM;${r.classic ? 'iaasvmcontainer' : 'iaasvmcontainerv2'};${r.resourceGroup};${r.vmName}`;
/** The short form in `properties.containerName`: `iaasvmcontainerv2;{rg};{vm}`. */
export const shortContainerName = (r: VmRef) => `${r.classic ? 'iaasvmcontainer' : 'iaasvmcontainerv2'};${r.resourceGroup};${r.vmName}`;

function parseParts(raw: string, head: string): VmRef | undefined {
  let s = raw;
  try {
    s = decodeURIComponent(raw);
  } catch {
    /* keep raw */
  }
  const parts = s.split(';');
  if (parts.length === 4) {
    if (parts[0]!.toLowerCase() !== head) return undefined;
    parts.shift();
  }
  if (parts.length !== 3) return undefined;
  const kind = parts[0]!.toLowerCase();
  if (kind !== 'iaasvmcontainerv2' && kind !== 'iaasvmcontainer') return undefined;
  if (!parts[1] || !parts[2]) return undefined;
  return { resourceGroup: parts[1], vmName: parts[2], classic: kind === 'iaasvmcontainer' };
}

/** Parses a container name, case-insensitively and percent-decoded (4-part or short 3-part form). */
export function parseContainerName(raw: string): VmRef | undefined {
  return parseParts(raw, 'iaasvmcontainer');
}

/** Parses a protected/protectable item name (`vm;iaasvmcontainerv2;rg;vm`, any case, or the short form). */
export function parseItemName(raw: string): VmRef | undefined {
  return parseParts(raw, 'vm');
}

export function sameVmRef(a: VmRef, b: VmRef): boolean {
  return a.classic === b.classic && a.resourceGroup.toLowerCase() === b.resourceGroup.toLowerCase() && a.vmName.toLowerCase() === b.vmName.toLowerCase();
}

/** Container + item path segments must name the same VM, or the request is malformed. */
export function requireNames(container: string, item: string): VmRef {
  const c = parseContainerName(container);
  if (!c) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The container name '${container}' is invalid: expected 'IaasVMContainer;iaasvmcontainerv2;{resourceGroup};{vmName}'.`, { target: 'containerName' });
  const i = parseItemName(item);
  if (!i) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The protected item name '${item}' is invalid: expected 'VM;iaasvmcontainerv2;{resourceGroup};{vmName}'.`, { target: 'protectedItemName' });
  if (!sameVmRef(c, i)) throw new ArmError(400, 'BMSUserErrorInvalidInput', `The protected item '${item}' does not belong to the container '${container}'.`, { target: 'protectedItemName' });
  return i;
}

/** Vault names: 2–50 characters, start with a letter, letters, digits and hyphens only. */
export function requireVaultName(name: string): void {
  if (!/^[A-Za-z][A-Za-z0-9-]{1,49}$/.test(name)) {
    throw armErrors.invalidName('Recovery Services vault', name, 'it must be 2-50 characters long, start with a letter and contain only letters, digits and hyphens.');
  }
}

export const normLocation = (l: string) => l.toLowerCase().replace(/\s+/g, '');

export interface FilterClause {
  field: string;
  op: 'eq' | 'ne' | 'ge' | 'gt' | 'le' | 'lt';
  value: string;
}

/** A tiny OData `$filter` parser: `a eq 'x' and b ge 'y'` (and-ed clauses only, as the backup APIs use). */
export function parseFilter(f: string | undefined | null): FilterClause[] {
  if (!f || !f.trim()) return [];
  const out: FilterClause[] = [];
  const re = /\s*([A-Za-z_][\w.]*)\s+(eq|ne|ge|gt|le|lt)\s+('(?:[^']|'')*'|[^\s')]+)\s*(?:\band\b|$)/giy;
  let m: RegExpExecArray | null;
  let pos = 0;
  const text = f.trim();
  while (pos < text.length && (m = re.exec(text))) {
    let v = m[3]!;
    if (v.startsWith("'")) v = v.slice(1, -1).replace(/''/g, "'");
    out.push({ field: m[1]!.toLowerCase(), op: m[2]!.toLowerCase() as FilterClause['op'], value: v });
    pos = re.lastIndex;
  }
  if (pos < text.length) {
    throw new ArmError(400, 'InvalidQueryParameterValue', `The $filter '${f}' could not be parsed near '${text.slice(pos, pos + 30)}': use clauses like status eq 'InProgress' joined with 'and'.`, { target: '$filter' });
  }
  return out;
}

/** Parses a filter date: ISO, or az's `2024-01-31 10:00:00 AM` form; throws a 400 naming the field. */
export function filterDate(field: string, v: string): number {
  let t = NaN;
  const m = /^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?\s*(AM|PM)?$/i.exec(v.trim());
  if (m) {
    // az's `2024-01-31 10:00:00 AM` and zone-less ISO: both UTC
    let h = Number(m[2]);
    if (m[5]?.toUpperCase() === 'PM' && h < 12) h += 12;
    if (m[5]?.toUpperCase() === 'AM' && h === 12) h = 0;
    t = Date.parse(`${m[1]}T${String(h).padStart(2, '0')}:${m[3]}:${m[4] ?? '00'}Z`);
  } else if (/^\d{4}-\d{2}-\d{2}(T.*(Z|[+-]\d{2}:?\d{2}))?$/i.test(v.trim())) {
    t = Date.parse(v.trim());
  }
  if (Number.isNaN(t)) throw new ArmError(400, 'InvalidQueryParameterValue', `The $filter value of '${field}' ('${v}') is not a valid date-time.`, { target: '$filter' });
  return t;
}

/** ISO-8601 duration, e.g. PT12.427S. */
export function isoDuration(ms: number): string {
  const s = Math.max(0, ms) / 1000;
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.round((s % 60) * 1000) / 1000;
  return `PT${h ? `${h}H` : ''}${m ? `${m}M` : ''}${sec}S`;
}
