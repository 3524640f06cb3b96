/**
 * LUKS1 throughput: rsvault's batched aes-xts-plain64 (in memory, and file → LUKS file) next to qemu-img's luks
 * driver on the same machine and the same data, plus the time a LUKS1 format takes with real default PBKDF2 costs.
 * Run: `npx tsx bench/luks.ts [--size-mib N]` (default 512). Exported `runLuksBench` for bench.ts.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes, randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Xts, formatHeader, pbkdf2Speed } from '../src/engine/index.js';
import { encryptInPlace, decryptInPlace } from '../src/compute/disk-io.js';

const MiB = 1024 * 1024;
const t = () => Number(process.hrtime.bigint()) / 1e9;

export interface LuksBenchRow {
  name: string;
  seconds: number;
  mibPerS: number;
}

export async function runLuksBench(sizeMiB = 512): Promise<LuksBenchRow[]> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'luks-bench-'));
  const rows: LuksBenchRow[] = [];
  const row = (name: string, s: number, mib = sizeMiB) => rows.push({ name, seconds: +s.toFixed(3), mibPerS: +(mib / s).toFixed(1) });
  try {
    const plain = path.join(dir, 'plain.raw');
    const buf = Buffer.alloc(sizeMiB * MiB);
    randomFillSync(buf);
    writeFileSync(plain, buf);
    const pass = 'bench-passphrase';

    // rsvault, in memory (4 MiB pieces, as disk-io does)
    const xts = new Xts(randomBytes(64));
    let s0 = t();
    for (let off = 0; off < buf.length; off += 4 * MiB) xts.encrypt(buf.subarray(off, off + 4 * MiB), off / 512);
    row('rsvault xts encrypt (memory)', t() - s0);
    s0 = t();
    for (let off = 0; off < buf.length; off += 4 * MiB) xts.decrypt(buf.subarray(off, off + 4 * MiB), off / 512);
    row('rsvault xts decrypt (memory)', t() - s0);

    // rsvault file → LUKS1 file (raw image converted in place, as ADE does) and back
    const mine = path.join(dir, 'mine.img');
    execFileSync('cp', ['--sparse=never', plain, mine]);
    s0 = t();
    const { masterKey } = await encryptInPlace(mine, Buffer.from(pass), { iterations: 1000 });
    row('rsvault raw → LUKS1 file (encrypt in place)', t() - s0);
    s0 = t();
    await decryptInPlace(mine, masterKey);
    row('rsvault LUKS1 → raw file (decrypt in place)', t() - s0);

    // qemu-img into an existing luks image (unlock cost ~0.07 s with iter-time=10), and back out
    const q = path.join(dir, 'q.luks');
    execFileSync('qemu-img', ['create', '--object', `secret,id=s,data=${pass}`, '-f', 'luks', '-o', 'key-secret=s,iter-time=10', q, `${sizeMiB}M`], { stdio: 'ignore' });
    s0 = t();
    execFileSync('qemu-img', ['convert', '-n', '--object', `secret,id=s,data=${pass}`, '-f', 'raw', plain, '--target-image-opts', `driver=luks,key-secret=s,file.filename=${q}`]);
    row('qemu-img raw → luks (convert -n)', t() - s0);
    const back = path.join(dir, 'q.raw');
    s0 = t();
    execFileSync('qemu-img', ['convert', '--object', `secret,id=s,data=${pass}`, '--image-opts', `driver=luks,key-secret=s,file.filename=${q}`, '-O', 'raw', back]);
    row('qemu-img luks → raw (convert)', t() - s0);

    // LUKS1 format with the real defaults (PBKDF2 for 2000 ms, digest 125 ms), as ADE enable pays once per volume
    const f = path.join(dir, 'fmt.img');
    writeFileSync(f, '');
    truncateSync(f, 4 * MiB);
    const speed = await pbkdf2Speed('sha256');
    const fh = await open(f, 'r+');
    s0 = t();
    await formatHeader(fh, Buffer.from(pass));
    const fmt = t() - s0;
    await fh.close();
    rows.push({ name: `rsvault luksFormat, default PBKDF2 (${Math.round(speed * 2)} iterations)`, seconds: +fmt.toFixed(3), mibPerS: 0 });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const i = process.argv.indexOf('--size-mib');
  const size = i > 0 ? Number(process.argv[i + 1]) : 512;
  const rows = await runLuksBench(size);
  console.log(`LUKS1 aes-xts-plain64, ${size} MiB, ${os.cpus().length} CPU(s) (${os.cpus()[0]?.model ?? '?'})`);
  for (const r of rows) console.log(`${r.name.padEnd(58)} ${r.seconds.toFixed(3).padStart(8)} s  ${r.mibPerS ? `${r.mibPerS.toFixed(0).padStart(6)} MiB/s` : ''}`);
}
