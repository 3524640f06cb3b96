/**
 * LUKS1 in TypeScript: the on-disk header (592-byte phdr + 8 key slots), PBKDF2 key slots with the AF splitter
 * (4000 stripes), aes-xts-plain64 payload with 512-byte sectors. Reads images made by cryptsetup (payload at 4096
 * sectors) and qemu-img (4040 sectors); writes the cryptsetup layout. Only aes-xts-plain64 is implemented; other
 * cipher specs are reported as unsupported.
 *
 * Layout written by `formatHeader`: sector 0 = phdr; key slot i material at sector 8 + i·504 (500 sectors for a
 * 64-byte key, padded to 4 KiB); payload at sector 4096 (2 MiB), as `cryptsetup luksFormat --type luks1` does.
 */
import { createHash, pbkdf2 as pbkdf2cb, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { SECTOR, Xts } from './xts.js';

const pbkdf2 = promisify(pbkdf2cb);

export const LUKS_MAGIC = Buffer.from([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]);
export const PHDR_SIZE = 592;
export const NUM_SLOTS = 8;
export const STRIPES = 4000;
const SLOT_ACTIVE = 0x00ac71f3;
const SLOT_DISABLED = 0x0000dead;
const DIGEST_SIZE = 20;
const SALT_SIZE = 32;
/** Default payload offset: 2 MiB, as cryptsetup (and Azure Disk Encryption's 4096×512 B header). */
export const DEFAULT_PAYLOAD_SECTORS = 4096;

export class LuksError extends Error {
  override name = 'LuksError';
  constructor(
    readonly kind: 'NotLuks' | 'Unsupported' | 'BadPassphrase' | 'NoFreeSlot' | 'Corrupt' | 'InvalidArgument',
    message: string,
  ) {
    super(message);
  }
}

export interface KeySlot {
  active: boolean;
  iterations: number;
  salt: Buffer;
  /** In sectors from the start of the device. */
  keyMaterialOffset: number;
  stripes: number;
}

export interface Luks1Header {
  version: 1;
  cipherName: string;
  cipherMode: string;
  hashSpec: string;
  /** In 512-byte sectors. */
  payloadOffset: number;
  keyBytes: number;
  mkDigest: Buffer;
  mkDigestSalt: Buffer;
  mkDigestIter: number;
  uuid: string;
  slots: KeySlot[];
}

function cstr(b: Buffer): string {
  const z = b.indexOf(0);
  return b.subarray(0, z < 0 ? b.length : z).toString('latin1');
}
function putStr(b: Buffer, off: number, len: number, s: string): void {
  b.fill(0, off, off + len);
  b.write(s, off, Math.min(len - 1, s.length), 'latin1');
}

export function isLuksHeader(buf: Buffer): boolean {
  return buf.length >= 8 && buf.subarray(0, 6).equals(LUKS_MAGIC);
}

export function parseHeader(buf: Buffer): Luks1Header {
  if (buf.length < PHDR_SIZE || !isLuksHeader(buf)) throw new LuksError('NotLuks', 'not a LUKS volume (no LUKS magic in the first sector)');
  const version = buf.readUInt16BE(6);
  if (version !== 1) throw new LuksError('Unsupported', `LUKS version ${version} is not supported (only LUKS1)`);
  const slots: KeySlot[] = [];
  for (let i = 0; i < NUM_SLOTS; i++) {
    const o = 208 + i * 48;
    const state = buf.readUInt32BE(o);
    slots.push({ active: state === SLOT_ACTIVE, iterations: buf.readUInt32BE(o + 4), salt: Buffer.from(buf.subarray(o + 8, o + 40)), keyMaterialOffset: buf.readUInt32BE(o + 40), stripes: buf.readUInt32BE(o + 44) });
  }
  const h: Luks1Header = {
    version: 1,
    cipherName: cstr(buf.subarray(8, 40)),
    cipherMode: cstr(buf.subarray(40, 72)),
    hashSpec: cstr(buf.subarray(72, 104)),
    payloadOffset: buf.readUInt32BE(104),
    keyBytes: buf.readUInt32BE(108),
    mkDigest: Buffer.from(buf.subarray(112, 132)),
    mkDigestSalt: Buffer.from(buf.subarray(132, 164)),
    mkDigestIter: buf.readUInt32BE(164),
    uuid: cstr(buf.subarray(168, 208)),
    slots,
  };
  return h;
}

export function serializeHeader(h: Luks1Header): Buffer {
  const b = Buffer.alloc(PHDR_SIZE);
  LUKS_MAGIC.copy(b, 0);
  b.writeUInt16BE(1, 6);
  putStr(b, 8, 32, h.cipherName);
  putStr(b, 40, 32, h.cipherMode);
  putStr(b, 72, 32, h.hashSpec);
  b.writeUInt32BE(h.payloadOffset, 104);
  b.writeUInt32BE(h.keyBytes, 108);
  h.mkDigest.copy(b, 112, 0, DIGEST_SIZE);
  h.mkDigestSalt.copy(b, 132, 0, SALT_SIZE);
  b.writeUInt32BE(h.mkDigestIter, 164);
  putStr(b, 168, 40, h.uuid);
  h.slots.forEach((s, i) => {
    const o = 208 + i * 48;
    b.writeUInt32BE(s.active ? SLOT_ACTIVE : SLOT_DISABLED, o);
    b.writeUInt32BE(s.iterations, o + 4);
    s.salt.copy(b, o + 8, 0, SALT_SIZE);
    b.writeUInt32BE(s.keyMaterialOffset, o + 40);
    b.writeUInt32BE(s.stripes, o + 44);
  });
  return b;
}

function nodeHash(spec: string): string {
  const h = spec.toLowerCase();
  if (['sha1', 'sha256', 'sha512', 'sha384', 'ripemd160'].includes(h)) return h;
  throw new LuksError('Unsupported', `LUKS hash '${spec}' is not supported`);
}

function requireSupported(h: Luks1Header): void {
  if (h.cipherName.toLowerCase() !== 'aes' || h.cipherMode.toLowerCase() !== 'xts-plain64' || (h.keyBytes !== 32 && h.keyBytes !== 64)) {
    throw new LuksError('Unsupported', `LUKS cipher ${h.cipherName}-${h.cipherMode} with ${h.keyBytes * 8}-bit key is not supported (only aes-xts-plain64)`);
  }
  nodeHash(h.hashSpec);
}

// ---- AF splitter (LUKS1 anti-forensic information splitter) -------------------------------------------------------
const digestSizes = new Map<string, number>();
function diffuse(block: Buffer, hash: string): Buffer {
  let ds = digestSizes.get(hash);
  if (ds === undefined) digestSizes.set(hash, (ds = createHash(hash).digest().length));
  const out = Buffer.alloc(block.length);
  const n = Math.ceil(block.length / ds);
  for (let i = 0; i < n; i++) {
    const piece = block.subarray(i * ds, Math.min(block.length, (i + 1) * ds));
    const iv = Buffer.alloc(4);
    iv.writeUInt32BE(i);
    createHash(hash).update(iv).update(piece).digest().copy(out, i * ds, 0, piece.length);
  }
  return out;
}
function xor(a: Buffer, b: Buffer): Buffer {
  const o = Buffer.alloc(a.length);
  for (let i = 0; i < a.length; i++) o[i] = a[i]! ^ b[i]!;
  return o;
}

export function afSplit(key: Buffer, stripes: number, hash: string): Buffer {
  const bs = key.length;
  const out = randomBytes(bs * stripes);
  let d: Buffer = Buffer.alloc(bs);
  for (let i = 0; i < stripes - 1; i++) d = diffuse(xor(d, out.subarray(i * bs, (i + 1) * bs)), hash);
  xor(d, key).copy(out, (stripes - 1) * bs);
  return out;
}

export function afMerge(material: Buffer, keyBytes: number, stripes: number, hash: string): Buffer {
  let d: Buffer = Buffer.alloc(keyBytes);
  for (let i = 0; i < stripes - 1; i++) d = diffuse(xor(d, material.subarray(i * keyBytes, (i + 1) * keyBytes)), hash);
  return xor(d, material.subarray((stripes - 1) * keyBytes, stripes * keyBytes));
}

const afSectors = (keyBytes: number, stripes: number) => Math.ceil((keyBytes * stripes) / SECTOR);

// ---- PBKDF2 iteration defaults -------------------------------------------------------------------------------------
let speedCache: Record<string, number> = {};
/** PBKDF2 iterations per second for `hash` on this machine (measured once per process). */
export async function pbkdf2Speed(hash = 'sha256'): Promise<number> {
  if (speedCache[hash]) return speedCache[hash]!;
  let iters = 20_000;
  for (;;) {
    const t = process.hrtime.bigint();
    await pbkdf2(Buffer.from('benchmark'), randomBytes(32), iters, 32, hash);
    const ms = Number(process.hrtime.bigint() - t) / 1e6;
    if (ms > 100 || iters > 5_000_000) {
      speedCache = { ...speedCache, [hash]: Math.floor((iters * 1000) / Math.max(ms, 1)) };
      return speedCache[hash]!;
    }
    iters *= 4;
  }
}

export interface KeySlotOptions {
  /** Fixed PBKDF2 iteration count (tests use ~1000); default: what `iterTimeMs` takes on this machine. */
  iterations?: number | undefined;
  /** Default 2000 ms, as cryptsetup's LUKS1 default. */
  iterTimeMs?: number | undefined;
}

export interface FormatOptions extends KeySlotOptions {
  /** 32 or 64 bytes; default 64 random bytes (512-bit aes-xts). */
  masterKey?: Buffer | undefined;
  hashSpec?: string | undefined;
  payloadOffsetSectors?: number | undefined;
  uuid?: string | undefined;
  /** Master-key digest iterations; default what 125 ms takes (cryptsetup's rule), at least 1000. */
  mkDigestIterations?: number | undefined;
}

async function slotIterations(o: KeySlotOptions, hash: string): Promise<number> {
  if (o.iterations !== undefined) {
    // Never below 1000 (cryptsetup's floor), whatever a caller or a test knob asks for.
    if (!Number.isInteger(o.iterations) || o.iterations < 1000) throw new LuksError('InvalidArgument', `bad PBKDF2 iteration count ${o.iterations}: at least 1000`);
    return o.iterations;
  }
  return Math.max(1000, Math.floor(((await pbkdf2Speed(hash)) * (o.iterTimeMs ?? 2000)) / 1000));
}

async function readExactly(fh: FileHandle, len: number, pos: number): Promise<Buffer> {
  const b = Buffer.alloc(len);
  let done = 0;
  while (done < len) {
    const { bytesRead } = await fh.read(b, done, len - done, pos + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  if (done < len) throw new LuksError('Corrupt', `LUKS volume truncated: needed ${len} bytes at ${pos}`);
  return b;
}

async function writeAll(fh: FileHandle, b: Buffer, pos: number): Promise<void> {
  let done = 0;
  while (done < b.length) {
    const { bytesWritten } = await fh.write(b, done, b.length - done, pos + done);
    done += bytesWritten;
  }
}

export async function readHeader(fh: FileHandle): Promise<Luks1Header> {
  const b = Buffer.alloc(PHDR_SIZE);
  const { bytesRead } = await fh.read(b, 0, PHDR_SIZE, 0);
  if (bytesRead < PHDR_SIZE) throw new LuksError('NotLuks', 'not a LUKS volume (file shorter than a LUKS header)');
  return parseHeader(b);
}

async function mkDigestOf(h: Luks1Header, mk: Buffer): Promise<Buffer> {
  return pbkdf2(mk, h.mkDigestSalt, h.mkDigestIter, DIGEST_SIZE, nodeHash(h.hashSpec));
}

export async function verifyMasterKey(h: Luks1Header, mk: Buffer): Promise<boolean> {
  if (mk.length !== h.keyBytes) return false;
  return timingSafeEqual(await mkDigestOf(h, mk), h.mkDigest);
}

async function writeSlot(fh: FileHandle, h: Luks1Header, i: number, mk: Buffer, passphrase: Buffer, o: KeySlotOptions): Promise<void> {
  const hash = nodeHash(h.hashSpec);
  const slot = h.slots[i]!;
  slot.iterations = await slotIterations(o, hash);
  slot.salt = randomBytes(SALT_SIZE);
  slot.stripes = STRIPES;
  const derived = await pbkdf2(passphrase, slot.salt, slot.iterations, h.keyBytes, hash);
  const material = Buffer.alloc(afSectors(h.keyBytes, STRIPES) * SECTOR);
  afSplit(mk, STRIPES, hash).copy(material);
  new Xts(derived).encrypt(material, 0);
  await writeAll(fh, material, slot.keyMaterialOffset * SECTOR);
  slot.active = true;
}

/**
 * Writes a LUKS1 header with key slot 0 for `passphrase` at the start of `fh` (the first `payloadOffset` sectors;
 * the payload itself is not touched). Returns the header and the master (volume) key.
 */
export async function formatHeader(fh: FileHandle, passphrase: Buffer, o: FormatOptions = {}): Promise<{ header: Luks1Header; masterKey: Buffer }> {
  const masterKey = o.masterKey ?? randomBytes(64);
  if (masterKey.length !== 32 && masterKey.length !== 64) throw new LuksError('InvalidArgument', 'master key must be 32 or 64 bytes');
  const hashSpec = o.hashSpec ?? 'sha256';
  const hash = nodeHash(hashSpec);
  const perSlot = Math.ceil(afSectors(masterKey.length, STRIPES) / 8) * 8;
  const payloadOffset = o.payloadOffsetSectors ?? DEFAULT_PAYLOAD_SECTORS;
  if (payloadOffset < 8 + NUM_SLOTS * perSlot) throw new LuksError('InvalidArgument', `payload offset ${payloadOffset} sectors is too small for the key slots`);
  const mkDigestSalt = randomBytes(SALT_SIZE);
  const mkDigestIter = o.mkDigestIterations ?? (o.iterations !== undefined ? 1000 : Math.max(1000, Math.floor((await pbkdf2Speed(hash)) * 0.125)));
  const h: Luks1Header = {
    version: 1,
    cipherName: 'aes',
    cipherMode: 'xts-plain64',
    hashSpec,
    payloadOffset,
    keyBytes: masterKey.length,
    mkDigest: Buffer.alloc(DIGEST_SIZE),
    mkDigestSalt,
    mkDigestIter,
    uuid: o.uuid ?? randomUUID(),
    slots: Array.from({ length: NUM_SLOTS }, (_, i) => ({ active: false, iterations: 0, salt: Buffer.alloc(SALT_SIZE), keyMaterialOffset: 8 + i * perSlot, stripes: STRIPES })),
  };
  h.mkDigest = await mkDigestOf(h, masterKey);
  // Wipe the whole header area (old data there must not survive), then slot 0, then the phdr.
  await writeAll(fh, Buffer.alloc(payloadOffset * SECTOR), 0);
  await writeSlot(fh, h, 0, masterKey, passphrase, o);
  await writeAll(fh, serializeHeader(h), 0);
  return { header: h, masterKey };
}

/** Tries every active key slot; returns the master key and the slot that opened, or BadPassphrase. */
export async function unlock(fh: FileHandle, passphrase: Buffer, header?: Luks1Header): Promise<{ header: Luks1Header; masterKey: Buffer; slot: number }> {
  const h = header ?? (await readHeader(fh));
  requireSupported(h);
  const hash = nodeHash(h.hashSpec);
  for (let i = 0; i < NUM_SLOTS; i++) {
    const s = h.slots[i]!;
    if (!s.active) continue;
    if (s.stripes < 1 || s.stripes > 100_000 || s.iterations < 1) throw new LuksError('Corrupt', `key slot ${i} has invalid parameters`);
    const derived = await pbkdf2(passphrase, s.salt, s.iterations, h.keyBytes, hash);
    const material = await readExactly(fh, afSectors(h.keyBytes, s.stripes) * SECTOR, s.keyMaterialOffset * SECTOR);
    new Xts(derived).decrypt(material, 0);
    const mk = afMerge(material, h.keyBytes, s.stripes, hash);
    if (await verifyMasterKey(h, mk)) return { header: h, masterKey: mk, slot: i };
  }
  throw new LuksError('BadPassphrase', 'No key available with this passphrase.');
}

/** Adds `newPassphrase` in the first free slot (key rotation); needs the master key. Returns the slot number. */
export async function addKey(fh: FileHandle, masterKey: Buffer, newPassphrase: Buffer, o: KeySlotOptions = {}): Promise<number> {
  const h = await readHeader(fh);
  requireSupported(h);
  if (!(await verifyMasterKey(h, masterKey))) throw new LuksError('BadPassphrase', 'the given master key does not match this volume');
  const i = h.slots.findIndex((s) => !s.active);
  if (i < 0) throw new LuksError('NoFreeSlot', 'all 8 LUKS key slots are in use');
  await writeSlot(fh, h, i, masterKey, newPassphrase, o);
  await writeAll(fh, serializeHeader(h), 0);
  return i;
}

/** Disables a key slot and wipes its key material. Refuses to remove the last active slot. */
export async function removeKey(fh: FileHandle, slot: number): Promise<void> {
  const h = await readHeader(fh);
  const s = h.slots[slot];
  if (!s || !s.active) throw new LuksError('InvalidArgument', `key slot ${slot} is not active`);
  if (h.slots.filter((x) => x.active).length === 1) throw new LuksError('InvalidArgument', 'refusing to remove the last active key slot');
  await writeAll(fh, randomBytes(afSectors(h.keyBytes, s.stripes) * SECTOR), s.keyMaterialOffset * SECTOR);
  s.active = false;
  s.iterations = 0;
  s.salt = Buffer.alloc(SALT_SIZE);
  await writeAll(fh, serializeHeader(h), 0);
}

/**
 * An unlocked LUKS1 volume on a file handle: plaintext reads and writes at any byte offset (partial sectors are
 * read-modify-written). `size` is the payload size (file size minus the header area).
 */
export class LuksVolume {
  private readonly xts: Xts;
  readonly payloadStart: number;
  constructor(
    private readonly fh: FileHandle,
    readonly header: Luks1Header,
    masterKey: Buffer,
  ) {
    requireSupported(header);
    this.xts = new Xts(masterKey);
    this.payloadStart = header.payloadOffset * SECTOR;
  }

  async size(): Promise<number> {
    const st = await this.fh.stat();
    return Math.max(0, Math.floor((st.size - this.payloadStart) / SECTOR) * SECTOR);
  }

  /** Reads plaintext [offset, offset+length) in pieces of at most `chunk` bytes. */
  async read(offset: number, length: number, chunk = 4 << 20): Promise<Buffer> {
    const out = Buffer.alloc(length);
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const s0 = Math.floor(pos / SECTOR);
      const want = Math.min(length - done, chunk);
      const s1 = Math.ceil((pos + want) / SECTOR);
      const buf = await readExactly(this.fh, (s1 - s0) * SECTOR, this.payloadStart + s0 * SECTOR);
      this.xts.decrypt(buf, s0);
      buf.copy(out, done, pos - s0 * SECTOR, pos - s0 * SECTOR + want);
      done += want;
    }
    return out;
  }

  /** Writes plaintext `data` at `offset` (encrypting; partial sectors read-modify-write). */
  async write(offset: number, data: Buffer, chunk = 4 << 20): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const pos = offset + done;
      const want = Math.min(data.length - done, chunk);
      const s0 = Math.floor(pos / SECTOR);
      const s1 = Math.ceil((pos + want) / SECTOR);
      const buf = Buffer.alloc((s1 - s0) * SECTOR);
      const head = pos - s0 * SECTOR;
      const tail = s1 * SECTOR - (pos + want);
      if (head > 0) {
        const first = await readExactly(this.fh, SECTOR, this.payloadStart + s0 * SECTOR);
        this.xts.decrypt(first, s0).copy(buf, 0);
      }
      if (tail > 0 && (s1 - 1 !== s0 || head === 0)) {
        const last = await readExactly(this.fh, SECTOR, this.payloadStart + (s1 - 1) * SECTOR);
        this.xts.decrypt(last, s1 - 1).copy(buf, buf.length - SECTOR);
      }
      data.copy(buf, head, done, done + want);
      this.xts.encrypt(buf, s0);
      await writeAll(this.fh, buf, this.payloadStart + s0 * SECTOR);
      done += want;
    }
  }

  /** Encrypts whole sectors of plaintext (no I/O): for bulk conversion. */
  encryptSectors(buf: Buffer, firstSector: number): Buffer {
    return this.xts.encrypt(buf, firstSector);
  }
  decryptSectors(buf: Buffer, firstSector: number): Buffer {
    return this.xts.decrypt(buf, firstSector);
  }
}

export { Xts, SECTOR };
