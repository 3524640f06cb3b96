/**
 * The installation CA certificate, built with node:crypto and a small DER writer (the certificate library the server
 * certificate comes from cannot write the name-constraints extension). The CA is constrained to what this server
 * answers as: critical nameConstraints permitting only the DNS names `localhost`, `.localhost` (and the Key Vault
 * host suffix when it lies elsewhere) and the loopback addresses 127.0.0.0/8 and ::1/128, so a leaked CA key or a
 * trusted ca.pem cannot vouch for any other site. basicConstraints (critical, CA, path length 0) and keyUsage
 * (critical, keyCertSign + cRLSign + digitalSignature) as before.
 */
import { createHash, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { isIP } from 'node:net';

// ---- DER --------------------------------------------------------------------------------------------------------
function tlv(tag: number, body: Buffer): Buffer {
  const n = body.length;
  let len: Buffer;
  if (n < 0x80) len = Buffer.from([n]);
  else {
    const bytes: number[] = [];
    for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
    len = Buffer.from([0x80 | bytes.length, ...bytes]);
  }
  return Buffer.concat([Buffer.from([tag]), len, body]);
}
const seq = (...items: Buffer[]) => tlv(0x30, Buffer.concat(items));
const set = (...items: Buffer[]) => tlv(0x31, Buffer.concat(items));
const int = (b: Buffer) => tlv(0x02, b[0]! & 0x80 ? Buffer.concat([Buffer.from([0]), b]) : b);
const bool = (v: boolean) => tlv(0x01, Buffer.from([v ? 0xff : 0]));
const octets = (b: Buffer) => tlv(0x04, b);
const bits = (b: Buffer, unused = 0) => tlv(0x03, Buffer.concat([Buffer.from([unused]), b]));
const utf8 = (s: string) => tlv(0x0c, Buffer.from(s, 'utf8'));
const NULL = Buffer.from([0x05, 0x00]);

function oid(dotted: string): Buffer {
  const p = dotted.split('.').map(Number);
  const out = [40 * p[0]! + p[1]!];
  for (const v of p.slice(2)) {
    const chunk: number[] = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) chunk.unshift((x & 0x7f) | 0x80);
    out.push(...chunk);
  }
  return tlv(0x06, Buffer.from(out));
}

function time(d: Date): Buffer {
  const iso = d.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z'); // YYYYMMDDHHMMSSZ
  return d.getUTCFullYear() < 2050 ? tlv(0x17, Buffer.from(iso.slice(2))) : tlv(0x18, Buffer.from(iso));
}

const extension = (id: string, critical: boolean, value: Buffer) => seq(oid(id), ...(critical ? [bool(true)] : []), octets(value));

// ---- name constraints -------------------------------------------------------------------------------------------
export interface CaConstraints {
  /** DNS names (and their subdomains) the CA may certify; a leading dot = subdomains only. */
  dns: string[];
  /** CIDR ranges: `127.0.0.0/8`, `::1/128`. */
  ip: string[];
}

/** What the installation CA permits: localhost, *.localhost, the Key Vault and blob suffixes if elsewhere, loopback. */
export function installationConstraints(vaultSuffix: string, blobSuffix?: string): CaConstraints {
  const dns = ['localhost', '.localhost'];
  for (const suffix of [vaultSuffix, blobSuffix ?? 'localhost']) {
    const s = suffix.toLowerCase().replace(/^\./, '');
    if (s !== 'localhost' && !s.endsWith('.localhost') && !dns.includes(s)) dns.push(s);
  }
  return { dns, ip: ['127.0.0.0/8', '::1/128'] };
}

function ipBytes(addr: string): Buffer {
  if (isIP(addr) === 4) return Buffer.from(addr.split('.').map(Number));
  const [head, tail] = addr.split('::') as [string, string | undefined];
  const h = head ? head.split(':') : [];
  const t = tail !== undefined && tail !== '' ? tail.split(':') : [];
  const groups = tail === undefined ? h : [...h, ...Array<string>(8 - h.length - t.length).fill('0'), ...t];
  const out = Buffer.alloc(16);
  groups.forEach((g, i) => out.writeUInt16BE(parseInt(g || '0', 16), i * 2));
  return out;
}

function cidr(range: string): Buffer {
  const [addr, lenText] = range.split('/') as [string, string];
  const a = ipBytes(addr);
  const mask = Buffer.alloc(a.length);
  for (let bit = 0; bit < Number(lenText); bit++) mask[bit >> 3]! |= 0x80 >> (bit & 7);
  return Buffer.concat([a, mask]);
}

function nameConstraints(c: CaConstraints): Buffer {
  const subtrees = [...c.dns.map((d) => seq(tlv(0x82, Buffer.from(d, 'ascii')))), ...c.ip.map((r) => seq(tlv(0x87, cidr(r))))];
  return seq(tlv(0xa0, Buffer.concat(subtrees)));
}

// ---- the CA -------------------------------------------------------------------------------------------------------
export interface CaOptions {
  commonName: string;
  organization: string;
  notBefore: Date;
  notAfter: Date;
  constraints: CaConstraints;
}

/** A self-signed RSA-2048 / SHA-256 CA with critical nameConstraints; PEM certificate and PKCS#8 key. */
export function createConstrainedCa(o: CaOptions): { cert: string; key: string } {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  return { cert: signCa(o, privateKey, spki), key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

function signCa(o: CaOptions, key: KeyObject, spki: Buffer): string {
  const name = seq(set(seq(oid('2.5.4.3'), utf8(o.commonName))), set(seq(oid('2.5.4.10'), utf8(o.organization))));
  const alg = seq(oid('1.2.840.113549.1.1.11'), NULL); // sha256WithRSAEncryption
  // subjectPublicKey BIT STRING = the last element of the SPKI sequence; the key id is SHA-1 of its bytes (RFC 5280 4.2.1.2).
  const keyId = createHash('sha1').update(spkiKeyBits(spki)).digest();
  const serial = randomBytes(16);
  serial[0]! &= 0x7f;
  const tbs = seq(
    tlv(0xa0, int(Buffer.from([2]))), // v3
    int(serial),
    alg,
    name,
    seq(time(o.notBefore), time(o.notAfter)),
    name,
    spki,
    tlv(
      0xa3,
      seq(
        extension('2.5.29.19', true, seq(bool(true), int(Buffer.from([0])))), // basicConstraints: CA, pathLen 0
        extension('2.5.29.15', true, bits(Buffer.from([0x86]), 1)), // keyUsage: digitalSignature, keyCertSign, cRLSign
        extension('2.5.29.14', false, octets(keyId)), // subjectKeyIdentifier
        extension('2.5.29.30', true, nameConstraints(o.constraints)), // nameConstraints (critical)
      ),
    ),
  );
  const signature = sign('sha256', tbs, key);
  const der = seq(tbs, alg, bits(signature));
  return `-----BEGIN CERTIFICATE-----\n${der.toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END CERTIFICATE-----\n`;
}

/** The subjectPublicKey bits of a DER SubjectPublicKeyInfo (skips the algorithm identifier). */
function spkiKeyBits(spki: Buffer): Buffer {
  const skipHeader = (b: Buffer, at: number): { body: number; end: number } => {
    const l = b[at + 1]!;
    if (l < 0x80) return { body: at + 2, end: at + 2 + l };
    const n = l & 0x7f;
    let len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[at + 2 + i]!;
    return { body: at + 2 + n, end: at + 2 + n + len };
  };
  const outer = skipHeader(spki, 0);
  const algo = skipHeader(spki, outer.body);
  const key = skipHeader(spki, algo.end);
  return spki.subarray(key.body + 1, key.end); // after the unused-bits byte
}

/** Does this CA certificate carry a nameConstraints extension that permits every name in `c`? (text check via openssl-free parsing) */
export function hasNameConstraints(certDer: Buffer, c: CaConstraints): boolean {
  const want = nameConstraints(c);
  return certDer.indexOf(oid('2.5.29.30')) >= 0 && certDer.indexOf(want) >= 0;
}
