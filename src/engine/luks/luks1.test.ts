import { describe, expect, it, beforeAll, afterAll } from 'vitest';
import { createCipheriv, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, truncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { qemuImg } from '../../../test/helpers/qemu.js';
import { Xts, SECTOR } from './xts.js';
import { addKey, afMerge, afSplit, formatHeader, LuksVolume, readHeader, removeKey, unlock, LuksError } from './luks1.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'luks-test-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

describe('xts', () => {
  it('batched XTS equals OpenSSL aes-256-xts per sector', () => {
    const key = randomBytes(64);
    const data = randomBytes(SECTOR * 37);
    const ref = Buffer.alloc(data.length);
    for (let s = 0; s < 37; s++) {
      const iv = Buffer.alloc(16);
      iv.writeBigUInt64LE(BigInt(1000 + s));
      const c = createCipheriv('aes-256-xts', key, iv);
      Buffer.concat([c.update(data.subarray(s * SECTOR, (s + 1) * SECTOR)), c.final()]).copy(ref, s * SECTOR);
    }
    const mine = new Xts(key).encrypt(Buffer.from(data), 1000);
    expect(mine.equals(ref)).toBe(true);
    expect(new Xts(key).decrypt(mine, 1000).equals(data)).toBe(true);
  });
  it('AF split/merge round trip', () => {
    const k = randomBytes(64);
    expect(afMerge(afSplit(k, 4000, 'sha256'), 64, 4000, 'sha256').equals(k)).toBe(true);
  });
});

describe('luks1 interop', () => {
  it('a volume formatted and written by rsvault opens with cryptsetup and qemu-img; plaintext matches', async () => {
    const img = path.join(dir, 'a.img');
    writeFileSync(img, '');
    truncateSync(img, 2 * 1024 * 1024 + 8 * 1024 * 1024);
    const pass = Buffer.from('correct horse battery staple');
    const fh = await open(img, 'r+');
    const { header, masterKey } = await formatHeader(fh, pass, { iterations: 1000 });
    expect(header.payloadOffset).toBe(4096);
    const vol = new LuksVolume(fh, header, masterKey);
    expect(await vol.size()).toBe(8 * 1024 * 1024);
    const plain = Buffer.alloc(8 * 1024 * 1024);
    await vol.write(0, plain);
    const piece = randomBytes(100_000);
    await vol.write(12345, piece);
    piece.copy(plain, 12345);
    const tail = randomBytes(777);
    await vol.write(plain.length - 777, tail);
    tail.copy(plain, plain.length - 777);
    expect((await vol.read(12000, 1000)).equals(plain.subarray(12000, 13000))).toBe(true);
    await fh.close();

    const dump = run('cryptsetup', ['luksDump', img]);
    expect(dump).toMatch(/Version:\s+1/);
    expect(dump).toMatch(/Cipher name:\s+aes/);
    expect(dump).toMatch(/Cipher mode:\s+xts-plain64/);
    expect(dump).toMatch(/Hash spec:\s+sha256/);
    expect(dump).toMatch(/MK bits:\s+512/);
    writeFileSync(path.join(dir, 'k'), pass);
    run('cryptsetup', ['open', '--test-passphrase', img, '--key-file', path.join(dir, 'k')]);
    const out = path.join(dir, 'a.raw');
    run('qemu-img', ['convert', '--object', `secret,id=s,data=${pass.toString()}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${img}`, '-O', 'raw', out]);
    expect(readFileSync(out).equals(plain)).toBe(true);

    // key rotation: add a second passphrase, remove the first
    const fh2 = await open(img, 'r+');
    const slot = await addKey(fh2, masterKey, Buffer.from('second'), { iterations: 1000 });
    expect(slot).toBe(1);
    await removeKey(fh2, 0);
    await expect(unlock(fh2, pass)).rejects.toBeInstanceOf(LuksError);
    expect((await unlock(fh2, Buffer.from('second'))).masterKey.equals(masterKey)).toBe(true);
    await fh2.close();
    writeFileSync(path.join(dir, 'k2'), 'second');
    run('cryptsetup', ['open', '--test-passphrase', img, '--key-file', path.join(dir, 'k2')]);
  });

  it('reads images made by cryptsetup luksFormat --type luks1 and by qemu-img create -f luks', async () => {
    const data = randomBytes(4 * 1024 * 1024);
    writeFileSync(path.join(dir, 'plain'), data);
    writeFileSync(path.join(dir, 'pk'), 'pw-123');
    // cryptsetup
    const c = path.join(dir, 'c.img');
    writeFileSync(c, '');
    truncateSync(c, 2 * 1024 * 1024 + data.length);
    run('cryptsetup', ['luksFormat', '--type', 'luks1', '--batch-mode', '--key-file', path.join(dir, 'pk'), '--pbkdf-force-iterations', '1000', c]);
    run('qemu-img', ['convert', '-n', '--object', 'secret,id=s,data=pw-123', '-f', 'raw', path.join(dir, 'plain'), '--target-image-opts', `driver=luks,key-secret=s,file.filename=${c}`]);
    // qemu
    const q = path.join(dir, 'q.img');
    qemuImg(['convert', '--object', 'secret,id=s,data=pw-123', '-f', 'raw', path.join(dir, 'plain'), '-O', 'luks', '-o', 'key-secret=s,iter-time=10', q]);
    for (const img of [c, q]) {
      const fh = await open(img, 'r');
      const h = await readHeader(fh);
      await expect(unlock(fh, Buffer.from('wrong'), h)).rejects.toThrow(/No key available/);
      const { masterKey } = await unlock(fh, Buffer.from('pw-123'), h);
      const vol = new LuksVolume(fh, h, masterKey);
      expect(await vol.size()).toBe(data.length);
      expect((await vol.read(0, data.length)).equals(data)).toBe(true);
      await fh.close();
    }
  });
});
