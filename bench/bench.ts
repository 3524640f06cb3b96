/**
 * rsvault data-path benchmark (`npm run bench`; flags --size-gib N (default 2), --out FILE
 * (default bench/results.json), --repeat N (rsvault and cp steps, median; default 3), --no-sweep,
 * --no-others, --no-luks, --store blob|s3).
 *
 * `--store blob|s3`: object-store mode. Starts Azurite (blobs on disk) or s3rver (files) as a local
 * process, then times a full backup and a restore of the same image on the file store and on the
 * object store, side by side (results in bench/results-<store>.json).
 *
 * In one run, on a generated random image (incompressible, like an encrypted disk):
 *   the machine's limits (measureLimits: cp warm, cp + sync, hash + seal in memory on one thread and
 *   on all cores; every rsvault figure is also printed as a fraction of them) ·
 *   cp (warm, no sync) · rsvault full backup · incremental after rewriting 1% of the 4 MiB chunks,
 *   with and without a changed-block bitmap · restore · restic and borg full / incremental /
 *   restore · peak RSS of each · rsvault full backup at 1/2/4/8 MiB chunks.
 * Every "wall s" figure is a whole-process wall time measured from outside (Node start-up, module
 * loading and the manifest commit included). rsvault steps run the engine compiled to JS (tsc into
 * the work dir) in a child process each, so TypeScript loading is not timed; each step also
 * reports its in-process time ("in-proc s": store open → manifest committed, what a long-running
 * server pays per job), and the bench measures a bare `node -e 0` so start-up can be told apart.
 * The bitmap incremental is also measured as a running server pays it (measureServerIncr: full then
 * incremental in one process, only the incremental timed). Every repeated row prints its median and
 * min–max. Ratios: *_vs_* > 1 means rsvault is faster; incr_bitmap_vs_full is a time ratio of process
 * wall times (incr_bitmap_vs_full_in_process: the same from in-process times). Repeated steps
 * report the median run and list all runs.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChangedBlockBitmap } from '../src/engine/bitmap.js';
import { readManifestFile } from '../src/engine/manifest.js';
import { AzureBlobBackend } from '../src/engine/azure-blob-store.js';
import { S3Backend } from '../src/engine/s3-store.js';
import { AZURITE_KEY, S3RVER_KEY_ID, S3RVER_SECRET, startAzurite, startS3rver } from '../src/engine/testdata/object-servers.js';
import type { StepArgs, StepResult } from './step.js';
import { runLuksBench, type LuksBenchRow } from './luks.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface Args {
  sizeGiB: number;
  out: string;
  sweep: boolean;
  others: boolean;
  keep: boolean;
  repeat: number;
  /** LUKS1 encryption throughput next to qemu-img's (issue: compute). */
  luks: boolean;
  /** Object-store mode: fs vs this store. */
  store?: 'blob' | 's3';
}

const LUKS_MIB = 512;

function parseArgs(argv: string[]): Args {
  const a: Args = { sizeGiB: 2, out: path.join(repoRoot, 'bench', 'results.json'), sweep: true, others: true, keep: false, repeat: 3, luks: true };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i];
    if (f === '--size-gib') a.sizeGiB = Number(argv[++i]);
    else if (f === '--out') a.out = path.resolve(argv[++i] ?? a.out);
    else if (f === '--no-sweep') a.sweep = false;
    else if (f === '--no-others') a.others = false;
    else if (f === '--no-luks') a.luks = false;
    else if (f === '--keep') a.keep = true;
    else if (f === '--repeat') a.repeat = Math.max(1, Math.floor(Number(argv[++i])));
    else if (f === '--store') {
      const v = argv[++i];
      if (v !== 'blob' && v !== 's3') throw new Error('--store must be blob or s3');
      a.store = v;
    }
    else if (f === '--help' || f === '-h') {
      console.log('usage: npm run bench -- [--size-gib N] [--out FILE] [--repeat N] [--no-sweep] [--no-others] [--no-luks] [--keep] [--store blob|s3]');
      process.exit(0);
    } else throw new Error(`unknown flag ${f}`);
  }
  if (!(a.sizeGiB > 0)) throw new Error('--size-gib must be > 0');
  return a;
}

interface Row {
  name: string;
  wallS: number;
  /** rsvault steps: in-process time of the reported run (store open → manifest committed). */
  inProcS?: number;
  gbps: number | null;
  peakRssMiB: number | null;
  note?: string;
}

const hasTime = existsSync('/usr/bin/time');

/** Run a command, timing it from outside; peak RSS via /usr/bin/time -v when available. */
function run(cmd: string, args: string[], opts: { env?: NodeJS.ProcessEnv; cwd?: string; stdin?: string } = {}): Promise<{ wallS: number; rssMiB: number | null; stdout: string; stderr: string; code: number }> {
  return new Promise((resolve, reject) => {
    const full = hasTime ? ['/usr/bin/time', ['-v', cmd, ...args]] as const : [cmd, args] as const;
    const t0 = performance.now();
    const child = spawn(full[0], [...full[1]], { env: { ...process.env, ...opts.env }, cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const wallS = (performance.now() - t0) / 1000;
      const m = /Maximum resident set size \(kbytes\): (\d+)/.exec(stderr);
      resolve({ wallS, rssMiB: m?.[1] ? Number(m[1]) / 1024 : null, stdout, stderr, code: code ?? -1 });
    });
  });
}

async function must(cmd: string, args: string[], opts: Parameters<typeof run>[2] = {}): Promise<{ wallS: number; rssMiB: number | null; stdout: string }> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}):\n${r.stderr.slice(-2000)}`);
  return r;
}

function sync(): void {
  spawnSync('sync');
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  const fh = await fsp.open(file, 'r');
  const buf = Buffer.allocUnsafe(16 * MiB);
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      h.update(buf.subarray(0, bytesRead));
    }
  } finally {
    await fh.close();
  }
  return h.digest('hex');
}

async function generateImage(file: string, size: number): Promise<void> {
  const fh = await fsp.open(file, 'w');
  const buf = Buffer.allocUnsafe(16 * MiB);
  try {
    for (let off = 0; off < size; off += buf.length) {
      const n = Math.min(buf.length, size - off);
      randomFillSync(buf, 0, n);
      await fh.write(buf, 0, n, off);
    }
  } finally {
    await fh.close();
  }
}

/** Compile the engine and the step script to JS in `outDir` (so timings exclude TS loading). */
async function buildEngine(outDir: string): Promise<string> {
  const tsconfig = path.join(outDir, 'tsconfig.bench.json');
  await fsp.writeFile(
    tsconfig,
    JSON.stringify({
      extends: path.join(repoRoot, 'tsconfig.json'),
      compilerOptions: { rootDir: repoRoot, outDir: path.join(outDir, 'build'), noEmit: false, sourceMap: false, typeRoots: [path.join(repoRoot, 'node_modules', '@types')] },
      include: [path.join(repoRoot, 'src/engine/**/*.ts'), path.join(repoRoot, 'bench/step.ts')],
      exclude: [path.join(repoRoot, 'src/**/*.test.ts')],
    }),
  );
  await must(process.execPath, [path.join(repoRoot, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', tsconfig]);
  await fsp.writeFile(path.join(outDir, 'build', 'package.json'), '{"type":"module"}');
  // The compiled engine resolves packages (BLAKE3) and the native addon as from the repository.
  await fsp.symlink(path.join(repoRoot, 'node_modules'), path.join(outDir, 'build', 'node_modules'));
  await fsp.symlink(path.join(repoRoot, 'native'), path.join(outDir, 'build', 'native'));
  return path.join(outDir, 'build', 'bench', 'step.js');
}

async function step(stepJs: string, args: StepArgs): Promise<{ wallS: number; inProcS: number; rssMiB: number; result: StepResult }> {
  sync();
  // The same libuv pool as `rsvault serve` (bin/rsvault.js): 4 threads would queue reads behind fdatasyncs.
  const r = await must(process.execPath, [stepJs, JSON.stringify(args)], { env: { UV_THREADPOOL_SIZE: '16' } });
  const line = r.stdout.trim().split('\n').at(-1) ?? '{}';
  const result = JSON.parse(line) as StepResult;
  return { wallS: r.wallS, inProcS: result.internalMs / 1000, rssMiB: r.rssMiB ?? result.maxRssKiB / 1024, result };
}

/** Run `once` n times (with `reset` before each repeat) and keep the median run. */
async function median<T extends { wallS: number }>(n: number, once: () => Promise<T>, reset?: () => Promise<void>): Promise<T & { runs: number[] }> {
  const all: T[] = [];
  for (let i = 0; i < n; i++) {
    if (i > 0 && reset) await reset();
    all.push(await once());
  }
  const sorted = [...all].sort((a, b) => a.wallS - b.wallS);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)] as T;
  return { ...mid, runs: all.map((r) => r.wallS) };
}

/** Median's spread for the note column: `median of N, min–max a–b (runs …)`. */
function runsNote(runs: number[]): string {
  if (runs.length <= 1) return 'single run';
  const lo = Math.min(...runs);
  const hi = Math.max(...runs);
  return `median of ${runs.length}, min–max ${lo.toFixed(2)}–${hi.toFixed(2)} s (runs ${runs.map((r) => r.toFixed(2)).join(' / ')})`;
}

/**
 * The incremental as a running server pays it: one step process backs up A in full, then (workers
 * started, code warm) the bitmap incremental of B into the same store; only the incremental is timed,
 * and its fraction of the full backup is taken from the same process.
 */
async function measureServerIncr(
  repeat: number,
  stepJs: string,
  work: string,
  keys: { idKeyHex: string; sealKeyHex: string },
  imgA: string,
  imgB: string,
  bitmapFile: string,
  add: (r: Row) => void,
): Promise<{ incrS: number; fullS: number; fraction: number; runs: number[] }> {
  const st = path.join(work, 'store-server');
  const all: Array<{ wallS: number; fullS: number; rssMiB: number }> = [];
  for (let i = 0; i < repeat; i++) {
    await fsp.rm(st, { recursive: true, force: true });
    sync();
    const r = await step(stepJs, { op: 'serverIncr', storeRoot: st, ...keys, image: imgA, image2: imgB, bitmapFile, manifestOut: path.join(work, 'server-a.manifest'), manifestOut2: path.join(work, 'server-b.manifest') });
    const s = r.result.stats as { fullMs: number; incrMs: number };
    all.push({ wallS: s.incrMs / 1000, fullS: s.fullMs / 1000, rssMiB: r.rssMiB });
  }
  await fsp.rm(st, { recursive: true, force: true });
  const sorted = [...all].sort((a, b) => a.wallS / a.fullS - b.wallS / b.fullS);
  const mid = sorted[Math.floor((sorted.length - 1) / 2)] as { wallS: number; fullS: number; rssMiB: number };
  const fractions = all.map((r) => r.wallS / r.fullS);
  add({
    name: 'rsvault incr 1%, bitmap, in a running process',
    wallS: mid.wallS,
    inProcS: mid.wallS,
    gbps: null,
    peakRssMiB: mid.rssMiB,
    note: `${(mid.wallS / mid.fullS * 100).toFixed(1)}% of the full (${mid.fullS.toFixed(2)} s) in the same process; fraction min–max ${(Math.min(...fractions) * 100).toFixed(1)}–${(Math.max(...fractions) * 100).toFixed(1)}%; ${runsNote(all.map((r) => r.wallS))}`,
  });
  return { incrS: mid.wallS, fullS: mid.fullS, fraction: mid.wallS / mid.fullS, runs: all.map((r) => r.wallS) };
}

/**
 * The machine's own limits, measured in the same run so every rsvault row can be judged as a fraction of
 * them on any machine: cp warm (page cache to page cache), cp + sync (to the disk), and hash + seal in
 * memory on one thread and on all cores (no I/O: the CPU's ceiling for a full backup).
 */
interface Limits {
  cpWarm: { wallS: number; runs: number[] };
  cpSync: { wallS: number; runs: number[] };
  cpu: { oneThreadGBps: number; allCoresGBps: number; workers: number; runs: number[] };
}

async function measureLimits(repeat: number, stepJs: string, work: string, imgA: string, imgB: string, size: number, add: (r: Row) => void): Promise<Limits> {
  const gbps = (s: number): number => size / s / 1e9;
  // cp baseline (warm source, no sync) — also makes B, the "next day" image.
  const cp = await median(repeat, async () => {
    await fsp.rm(imgB, { force: true });
    sync();
    return must('cp', [imgA, imgB]);
  });
  add({ name: 'limit: cp (warm, no sync)', wallS: cp.wallS, gbps: gbps(cp.wallS), peakRssMiB: cp.rssMiB, note: runsNote(cp.runs) });
  sync();
  const c = path.join(work, 'c.img');
  const cpSync = await median(repeat, async () => {
    await fsp.rm(c, { force: true });
    sync();
    return must('sh', ['-c', `cp "${imgA}" "${c}" && sync`]);
  });
  add({ name: 'limit: cp + sync', wallS: cpSync.wallS, gbps: gbps(cpSync.wallS), peakRssMiB: null, note: runsNote(cpSync.runs) });
  await fsp.rm(c, { force: true });
  const cpuRuns: Array<{ oneThreadGBps: number; allCoresGBps: number; workers: number }> = [];
  for (let i = 0; i < repeat; i++) {
    const r = await step(stepJs, { op: 'cpu', storeRoot: path.join(work, 'cpu-store'), idKeyHex: '11'.repeat(32), sealKeyHex: '22'.repeat(32), cpuBytes: Math.min(size, 1024 * MiB) });
    cpuRuns.push(r.result.stats as { oneThreadGBps: number; allCoresGBps: number; workers: number });
  }
  const med = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] as number;
  const spread = (xs: number[]): string => (xs.length > 1 ? `median of ${xs.length}, min–max ${Math.min(...xs).toFixed(2)}–${Math.max(...xs).toFixed(2)} GB/s` : 'single run');
  const one = cpuRuns.map((r) => r.oneThreadGBps);
  const all = cpuRuns.map((r) => r.allCoresGBps);
  const workers = cpuRuns[0]?.workers ?? 1;
  add({ name: 'limit: hash+seal in memory, 1 thread', wallS: size / 1e9 / med(one), gbps: med(one), peakRssMiB: null, note: `${spread(one)}; wall s = this image at that speed` });
  add({ name: `limit: hash+seal in memory, ${workers} workers`, wallS: size / 1e9 / med(all), gbps: med(all), peakRssMiB: null, note: spread(all) });
  return { cpWarm: cp, cpSync, cpu: { oneThreadGBps: med(one), allCoresGBps: med(all), workers, runs: all } };
}

function fmtRow(r: Row): string {
  const gb = r.gbps === null ? '' : r.gbps.toFixed(3);
  const rss = r.peakRssMiB === null ? '' : r.peakRssMiB.toFixed(0);
  const inProc = r.inProcS === undefined ? '' : r.inProcS.toFixed(3);
  return `| ${r.name.padEnd(44)} | ${r.wallS.toFixed(2).padStart(7)} | ${inProc.padStart(9)} | ${gb.padStart(6)} | ${rss.padStart(8)} | ${r.note ?? ''} |`;
}

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

/** Object-store mode: full backup and restore on the fs store and on Azurite / s3rver, same image. */
async function objectStoreBench(args: Args & { store: 'blob' | 's3' }): Promise<void> {
  const size = Math.round(args.sizeGiB * GiB / (4 * MiB)) * 4 * MiB;
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'rsvault-bench-'));
  const gbps = (s: number): number => size / s / 1e9;
  console.log(`rsvault object-store bench (${args.store}): ${(size / GiB).toFixed(2)} GiB random image, ${os.cpus().length} CPUs, node ${process.version}`);
  const server = args.store === 'blob' ? await startAzurite({ inMemory: false }) : await startS3rver();
  try {
    const objectStore: StepArgs['objectStore'] = args.store === 'blob'
      ? { kind: 'blob', url: server.url, accountKey: AZURITE_KEY, container: 'bench' }
      : { kind: 's3', endpoint: server.url, bucket: 'bench', accessKeyId: S3RVER_KEY_ID, secretAccessKey: S3RVER_SECRET };
    if (objectStore.kind === 'blob') await AzureBlobBackend.create(objectStore).ensure();
    else await S3Backend.create(objectStore).ensure();
    console.log('compiling the engine...');
    const stepJs = await buildEngine(work);
    const img = path.join(work, 'a.img');
    await generateImage(img, size);
    const digest = await sha256File(img);
    const keys = { idKeyHex: randomBytes(32).toString('hex'), sealKeyHex: randomBytes(32).toString('hex') };
    const rows: Array<{ store: string; backup_s: number; backup_gbps: number; restore_s: number; restore_gbps: number; identical: boolean; backup_runs: number[]; restore_runs: number[] }> = [];
    console.log(`| store                          | full backup s |   GB/s | restore s |   GB/s | restore |`);
    console.log(`|--------------------------------|---------------|--------|-----------|--------|---------|`);
    let n = 0;
    for (const kind of ['fs', args.store] as const) {
      const obj = kind === 'fs' ? undefined : objectStore;
      const storeRoot = () => (obj ? `run${n}` : path.join(work, `store${n}`));
      const manifest = path.join(work, `${kind}.manifest`);
      const target = path.join(work, `${kind}.restored`);
      const b = await median(args.repeat, () => step(stepJs, { op: 'backup', storeRoot: storeRoot(), ...keys, image: img, manifestOut: manifest, ...(obj ? { objectStore: obj } : {}) }), async () => void n++);
      const r = await median(args.repeat, () => step(stepJs, { op: 'restore', storeRoot: storeRoot(), ...keys, manifestIn: manifest, target, ...(obj ? { objectStore: obj } : {}) }), () => fsp.rm(target, { force: true }));
      const identical = (await sha256File(target)) === digest;
      await fsp.rm(target, { force: true });
      n++;
      const name = kind === 'fs' ? 'fs (fdatasync per chunk)' : kind === 'blob' ? 'Azure Blob (Azurite, on disk)' : 'S3 (s3rver, files)';
      rows.push({ store: name, backup_s: b.wallS, backup_gbps: gbps(b.wallS), restore_s: r.wallS, restore_gbps: gbps(r.wallS), identical, backup_runs: b.runs, restore_runs: r.runs });
      console.log(`| ${name.padEnd(30)} | ${b.wallS.toFixed(2).padStart(13)} | ${gbps(b.wallS).toFixed(3).padStart(6)} | ${r.wallS.toFixed(2).padStart(9)} | ${gbps(r.wallS).toFixed(3).padStart(6)} | ${identical ? 'identical' : 'MISMATCH'} |`);
    }
    const out = args.out.endsWith('results.json') ? args.out.replace(/results\.json$/, `results-${args.store}.json`) : args.out;
    await fsp.writeFile(out, `${JSON.stringify({ date: new Date().toISOString(), size_bytes: size, store: args.store, machine: { cpus: os.cpus().length, node: process.version }, rows }, null, 2)}\n`);
    console.log(`results written to ${out}`);
  } finally {
    await server.stop();
    if (!args.keep) await fsp.rm(work, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.store) return objectStoreBench({ ...args, store: args.store });
  const size = Math.round(args.sizeGiB * GiB / (4 * MiB)) * 4 * MiB;
  const work = await fsp.mkdtemp(path.join(os.tmpdir(), 'rsvault-bench-'));
  const rows: Row[] = [];
  const gbps = (s: number): number => size / s / 1e9;
  const add = (r: Row): void => {
    rows.push(r);
    console.log(fmtRow(r));
  };
  console.log(`rsvault bench: ${(size / GiB).toFixed(2)} GiB random image, ${os.cpus().length} CPUs (${os.cpus()[0]?.model ?? '?'}), node ${process.version}, work dir ${work}`);
  try {
    console.log('compiling the engine...');
    const stepJs = await buildEngine(work);
    const imgA = path.join(work, 'a.img');
    const imgB = path.join(work, 'b.img');
    console.log('generating the image...');
    await generateImage(imgA, size);
    await must('sh', ['-c', 'cat "$0" > /dev/null', imgA]); // warm the page cache
    // Bare Node start-up on this machine: part of every rsvault "wall s" (not of "in-proc s").
    const nodeStart = await median(Math.max(3, args.repeat), () => must(process.execPath, ['-e', '0']));
    console.log(`node start-up (node -e 0): ${nodeStart.wallS.toFixed(3)} s (median; ${runsNote(nodeStart.runs)})`);
    console.log('| step                                         |  wall s | in-proc s |   GB/s | peak RSS | note |');
    console.log('|----------------------------------------------|---------|-----------|--------|----------|------|');

    const limits = await measureLimits(args.repeat, stepJs, work, imgA, imgB, size, add);
    const cp = limits.cpWarm;
    const cpSync = limits.cpSync;

    // Rewrite 1% of the 4 MiB chunks of B, recording a changed-block bitmap.
    const chunks4 = size / (4 * MiB);
    const changed = Math.max(1, Math.round(chunks4 * 0.01));
    const bitmap = new ChangedBlockBitmap(size);
    const picked = new Set<number>();
    while (picked.size < changed) picked.add(Math.floor(Math.random() * chunks4));
    const fh = await fsp.open(imgB, 'r+');
    for (const c of picked) {
      await fh.write(randomBytes(4 * MiB), 0, 4 * MiB, c * 4 * MiB);
      bitmap.markWritten(c * 4 * MiB, 4 * MiB);
    }
    await fh.close();
    const bitmapFile = path.join(work, 'b.bitmap');
    await fsp.writeFile(bitmapFile, bitmap.toBytes());
    await must('sh', ['-c', 'cat "$0" > /dev/null', imgB]);

    // rsvault
    const keys = { idKeyHex: randomBytes(32).toString('hex'), sealKeyHex: randomBytes(32).toString('hex') };
    const store = path.join(work, 'store');
    const mA = path.join(work, 'a.manifest');
    // Deleting gigabytes right before a timed run makes ext4 (mounted with online discard here)
    // discard them while the run writes: a repeat moves the previous store aside instead, and
    // everything moved aside is deleted between stages (untimed, then sync + settle).
    let asideN = 0;
    const aside: string[] = [];
    const moveAside = async (p: string): Promise<void> => {
      const to = `${p}.old-${asideN++}`;
      await fsp.rename(p, to);
      aside.push(to);
    };
    const dropAside = async (): Promise<void> => {
      for (const p of aside.splice(0)) await fsp.rm(p, { recursive: true, force: true });
      sync();
      await new Promise((r) => setTimeout(r, 1000));
    };
    const full = await median(
      args.repeat,
      () => step(stepJs, { op: 'backup', storeRoot: store, ...keys, image: imgA, manifestOut: mA }),
      () => moveAside(store),
    );
    await dropAside();
    add({ name: 'rsvault full backup (4 MiB chunks)', wallS: full.wallS, inProcS: full.inProcS, gbps: gbps(full.wallS), peakRssMiB: full.rssMiB, note: runsNote(full.runs) });
    // The same backup without durability (no per-chunk fdatasync), to compare with cp without
    // sync and to show how much of the full backup is the disk: not what rsvault does.
    const storeNs = path.join(work, 'store-nofsync');
    const fullNs = await median(
      args.repeat,
      () => step(stepJs, { op: 'backup', storeRoot: storeNs, ...keys, image: imgA, manifestOut: path.join(work, 'a-nofsync.manifest'), fsync: false }),
      () => moveAside(storeNs),
    );
    add({ name: 'rsvault full backup, no fsync (as cp)', wallS: fullNs.wallS, inProcS: fullNs.inProcS, gbps: gbps(fullNs.wallS), peakRssMiB: fullNs.rssMiB, note: runsNote(fullNs.runs) });
    await moveAside(storeNs);
    await dropAside();
    const mB = path.join(work, 'b.manifest');
    // Before each repeat, delete the chunks the previous run added, so every run stores them.
    const dropNewChunks = async (): Promise<void> => {
      const a = await readManifestFile(mA);
      const b = await readManifestFile(mB);
      const old = new Set(a.distinctIds());
      for (const id of b.distinctIds()) {
        if (!old.has(id)) await fsp.rm(path.join(store, 'chunks', id.slice(0, 4), id), { force: true });
      }
    };
    const incrBm = await median(args.repeat, () => step(stepJs, { op: 'backup', storeRoot: store, ...keys, image: imgB, previous: mA, bitmapFile, manifestOut: mB }), dropNewChunks);
    const sBm = incrBm.result.stats as { bytesRead: number; chunksNew: number };
    add({ name: `rsvault incr 1% (${changed} chunks), bitmap`, wallS: incrBm.wallS, inProcS: incrBm.inProcS, gbps: null, peakRssMiB: incrBm.rssMiB, note: `read ${(sBm.bytesRead / MiB).toFixed(0)} MiB; ${runsNote(incrBm.runs)}` });
    const server = await measureServerIncr(args.repeat, stepJs, work, keys, imgA, imgB, bitmapFile, add);
    const mB2 = path.join(work, 'b2.manifest');
    await dropNewChunks(); // the no-bitmap incremental stores the changed chunks itself
    const incrNo = await median(args.repeat, () => step(stepJs, { op: 'backup', storeRoot: store, ...keys, image: imgB, previous: mA, manifestOut: mB2 }), dropNewChunks);
    const sNo = incrNo.result.stats as { bytesRead: number; chunksNew: number };
    add({ name: 'rsvault incr 1%, no bitmap (read + hash all)', wallS: incrNo.wallS, inProcS: incrNo.inProcS, gbps: gbps(incrNo.wallS), peakRssMiB: incrNo.rssMiB, note: `read ${(sNo.bytesRead / MiB).toFixed(0)} MiB, ${sNo.chunksNew} new; ${runsNote(incrNo.runs)}` });
    const target = path.join(work, 'restored.img');
    await dropAside();
    const rest = await median(args.repeat, () => step(stepJs, { op: 'restore', storeRoot: store, ...keys, manifestIn: mB, target }), () => moveAside(target));
    const restoreOk = (await sha256File(target)) === (await sha256File(imgB));
    add({ name: 'rsvault restore (verified GCM, fsync)', wallS: rest.wallS, inProcS: rest.inProcS, gbps: gbps(rest.wallS), peakRssMiB: rest.rssMiB, note: `${restoreOk ? 'identical' : 'MISMATCH'}; ${runsNote(rest.runs)}` });
    await moveAside(target);
    await dropAside();
    const restNs = await median(args.repeat, () => step(stepJs, { op: 'restore', storeRoot: store, ...keys, manifestIn: mB, target, fsync: false }), () => moveAside(target));
    const restoreNsOk = (await sha256File(target)) === (await sha256File(imgB));
    add({ name: 'rsvault restore, no fsync (as cp/restic/borg)', wallS: restNs.wallS, inProcS: restNs.inProcS, gbps: gbps(restNs.wallS), peakRssMiB: restNs.rssMiB, note: `${restoreNsOk ? 'identical' : 'MISMATCH'}; ${runsNote(restNs.runs)}` });
    await moveAside(target);
    await moveAside(store);
    await dropAside();

    const sweep: Array<{ chunk_mib: number; wall_s: number; gbps: number; peak_rss_mib: number }> = [];
    if (args.sweep) {
      for (const mib of [1, 2, 4, 8]) {
        const s = path.join(work, `sweep-${mib}`);
        const r = await step(stepJs, { op: 'backup', storeRoot: s, ...keys, image: imgA, chunkSize: mib * MiB, manifestOut: path.join(work, `sweep-${mib}.manifest`) });
        add({ name: `rsvault full backup, ${mib} MiB chunks`, wallS: r.wallS, inProcS: r.inProcS, gbps: gbps(r.wallS), peakRssMiB: r.rssMiB });
        sweep.push({ chunk_mib: mib, wall_s: r.wallS, gbps: gbps(r.wallS), peak_rss_mib: r.rssMiB });
        await moveAside(s);
        await dropAside();
      }
    }

    // restic and borg: the same image under one path, first A then B (hard links).
    const others: Record<string, { full?: number; incr?: number; restore?: number; rss?: number }> = {};
    const srcDir = path.join(work, 'src');
    await fsp.mkdir(srcDir);
    const srcImg = path.join(srcDir, 'disk.img');
    const notes: string[] = [];
    if (args.others && which('restic')) {
      const env = { RESTIC_PASSWORD: 'bench', RESTIC_REPOSITORY: path.join(work, 'restic'), RESTIC_CACHE_DIR: path.join(work, 'restic-cache') };
      await must('restic', ['init'], { env });
      await fsp.link(imgA, srcImg);
      sync();
      const f = await must('restic', ['backup', '--compression', 'off', srcDir], { env });
      add({ name: 'restic 0.14 full (--compression off)', wallS: f.wallS, gbps: gbps(f.wallS), peakRssMiB: f.rssMiB });
      await fsp.rm(srcImg);
      await fsp.link(imgB, srcImg);
      sync();
      const i = await must('restic', ['backup', '--compression', 'off', srcDir], { env });
      add({ name: 'restic incr 1%', wallS: i.wallS, gbps: gbps(i.wallS), peakRssMiB: i.rssMiB });
      const rdir = path.join(work, 'restic-restore');
      sync();
      const r = await must('restic', ['restore', 'latest', '--target', rdir], { env });
      add({ name: 'restic restore', wallS: r.wallS, gbps: gbps(r.wallS), peakRssMiB: r.rssMiB });
      others['restic'] = { full: f.wallS, incr: i.wallS, restore: r.wallS, rss: Math.max(f.rssMiB ?? 0, i.rssMiB ?? 0, r.rssMiB ?? 0) };
      await fsp.rm(rdir, { recursive: true });
      await fsp.rm(path.join(work, 'restic'), { recursive: true });
      await fsp.rm(srcImg);
    } else if (args.others) {
      notes.push('restic not installed: skipped (sudo apt-get install restic)');
      console.log('restic not installed: skipping its rows (install: sudo apt-get install restic)');
    }
    if (args.others && which('borg')) {
      const env = {
        BORG_PASSPHRASE: 'bench',
        BORG_REPO: path.join(work, 'borg'),
        BORG_BASE_DIR: path.join(work, 'borg-base'),
        BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
      };
      await must('borg', ['init', '-e', 'repokey'], { env });
      await fsp.link(imgA, srcImg);
      sync();
      const common = ['-C', 'none', '--chunker-params', 'fixed,4194304'];
      const f = await must('borg', ['create', ...common, '::full', 'disk.img'], { env, cwd: srcDir });
      add({ name: 'borg 1.2 full (-C none, fixed 4 MiB)', wallS: f.wallS, gbps: gbps(f.wallS), peakRssMiB: f.rssMiB });
      await fsp.rm(srcImg);
      await fsp.link(imgB, srcImg);
      sync();
      const i = await must('borg', ['create', ...common, '::incr', 'disk.img'], { env, cwd: srcDir });
      add({ name: 'borg incr 1%', wallS: i.wallS, gbps: gbps(i.wallS), peakRssMiB: i.rssMiB });
      const rdir = path.join(work, 'borg-restore');
      await fsp.mkdir(rdir);
      sync();
      const r = await must('borg', ['extract', '::incr'], { env, cwd: rdir });
      add({ name: 'borg extract', wallS: r.wallS, gbps: gbps(r.wallS), peakRssMiB: r.rssMiB });
      others['borg'] = { full: f.wallS, incr: i.wallS, restore: r.wallS, rss: Math.max(f.rssMiB ?? 0, i.rssMiB ?? 0, r.rssMiB ?? 0) };
      await fsp.rm(rdir, { recursive: true });
      await fsp.rm(srcImg);
    } else if (args.others) {
      notes.push('borg not installed: skipped (sudo apt-get install borgbackup)');
      console.log('borg not installed: skipping its rows (install: sudo apt-get install borgbackup)');
    }

    // LUKS1 (Azure Disk Encryption): rsvault's batched XTS next to qemu-img's luks driver, same data.
    let luks: LuksBenchRow[] = [];
    if (args.luks) {
      console.log('');
      console.log(`LUKS1 aes-xts-plain64, ${LUKS_MIB} MiB (rsvault vs qemu-img):`);
      luks = await runLuksBench(LUKS_MIB);
      for (const r of luks) console.log(`  ${r.name.padEnd(44)} ${r.seconds.toFixed(3).padStart(8)} s${r.mibPerS ? ` ${r.mibPerS.toFixed(1).padStart(8)} MiB/s` : ''}`);
    }

    const rsvaultRss = Math.max(full.rssMiB, fullNs.rssMiB, incrBm.rssMiB, incrNo.rssMiB, rest.rssMiB, restNs.rssMiB, ...sweep.map((s) => s.peak_rss_mib));
    const results = {
      date: new Date().toISOString(),
      size_bytes: size,
      machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? null, node: process.version },
      full_vs_cp: cp.wallS / full.wallS,
      // Both durable: rsvault's backup returns only after every chunk is fdatasynced.
      full_vs_cp_sync: cpSync.wallS / full.wallS,
      full_nofsync_vs_cp: cp.wallS / fullNs.wallS,
      full_vs_restic: others['restic']?.full ? others['restic'].full / full.wallS : null,
      full_vs_borg: others['borg']?.full ? others['borg'].full / full.wallS : null,
      incr_bitmap_vs_full: incrBm.wallS / full.wallS,
      incr_bitmap_vs_full_in_process: incrBm.inProcS / full.inProcS,
      node_startup_s: nodeStart.wallS,
      incr_nobitmap_vs_full: incrNo.wallS / full.wallS,
      restore_vs_cp: cp.wallS / rest.wallS,
      restore_nofsync_vs_cp: cp.wallS / restNs.wallS,
      restore_vs_cp_sync: cpSync.wallS / rest.wallS,
      restore_vs_restic: others['restic']?.restore ? others['restic'].restore / rest.wallS : null,
      peak_rss_mib: rsvaultRss,
      restore_identical: restoreOk && restoreNsOk,
      incr_bitmap_vs_full_server: server.fraction,
      // Every rsvault row as a fraction of the machine's limits measured in this run (1 = at the limit).
      limits: { cp_warm_s: cp.wallS, cp_sync_s: cpSync.wallS, hash_seal_gbps_one_thread: limits.cpu.oneThreadGBps, hash_seal_gbps_all_cores: limits.cpu.allCoresGBps, workers: limits.cpu.workers },
      vs_limits: {
        full_of_cp_warm: cp.wallS / full.wallS,
        full_of_cp_sync: cpSync.wallS / full.wallS,
        full_of_cpu: gbps(full.wallS) / limits.cpu.allCoresGBps,
        full_nofsync_of_cp_warm: cp.wallS / fullNs.wallS,
        full_nofsync_of_cpu: gbps(fullNs.wallS) / limits.cpu.allCoresGBps,
        restore_of_cp_sync: cpSync.wallS / rest.wallS,
        restore_nofsync_of_cp_warm: cp.wallS / restNs.wallS,
      },
      goal: {
        full_vs_cp_min_0_35: cp.wallS / full.wallS >= 0.35,
        full_vs_restic_min_5: others['restic']?.full ? others['restic'].full / full.wallS >= 5 : null,
        restore_nofsync_vs_cp_min_0_6: cp.wallS / restNs.wallS >= 0.6,
        incr_bitmap_server_max_0_05: server.fraction <= 0.05,
        peak_rss_max_300_mib: rsvaultRss <= 300,
      },
      rows: rows.map((r) => ({ name: r.name, wall_s: r.wallS, in_process_s: r.inProcS ?? null, gbps: r.gbps, peak_rss_mib: r.peakRssMiB, note: r.note ?? null })),
      chunk_sweep: sweep,
      luks,
      others,
      notes,
    };
    await fsp.mkdir(path.dirname(args.out), { recursive: true });
    await fsp.writeFile(args.out, `${JSON.stringify(results, null, 2)}\n`);
    console.log('');
    for (const k of ['full_vs_cp', 'full_vs_cp_sync', 'full_nofsync_vs_cp', 'full_vs_restic', 'full_vs_borg', 'incr_bitmap_vs_full', 'incr_bitmap_vs_full_in_process', 'incr_nobitmap_vs_full', 'restore_vs_cp', 'restore_nofsync_vs_cp', 'restore_vs_cp_sync', 'restore_vs_restic', 'peak_rss_mib'] as const) {
      const v = results[k];
      console.log(`${k.padEnd(30)} ${typeof v === 'number' ? v.toFixed(3) : 'n/a'}`);
    }
    console.log('');
    console.log('as fractions of this machine\'s limits (1 = at the limit):');
    for (const [k, v] of Object.entries(results.vs_limits)) console.log(`  ${k.padEnd(28)} ${v.toFixed(3)}`);
    console.log(`incr_bitmap_vs_full_server     ${results.incr_bitmap_vs_full_server.toFixed(3)}`);
    console.log('goal (issue 15):');
    for (const [k, v] of Object.entries(results.goal)) console.log(`  ${k.padEnd(28)} ${v === null ? 'n/a' : v ? 'met' : 'NOT met'}`);
    console.log(`results written to ${args.out}`);
  } finally {
    if (!args.keep) await fsp.rm(work, { recursive: true, force: true });
  }
}

await main();
