/**
 * Quarantine of damaged chunks: a chunk that failed verify (its GCM tag or id check) is taken out of
 * the store's namespace, so dedup (`touch`/`putIfAbsent`) no longer finds it and the next backup
 * that meets the same plaintext stores it again — which also heals every older manifest that
 * references the id, since ids are content-addressed.
 *
 * The filesystem store keeps the bytes for inspection: `<root>/quarantine/<id>.<epoch ms>` (FORMAT.md
 * layout; never listed, read or swept by the store). Other stores have no side place: the object
 * is deleted (its bytes were useless anyway).
 */
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { FsChunkStore, fsyncDir } from './fs-store.js';
import { isChunkId, type ChunkStore } from './store.js';
import { EngineError } from './errors.js';

export type QuarantineResult = 'quarantined' | 'deleted' | 'absent';

export const QUARANTINE_DIR = 'quarantine';

export async function quarantineChunk(store: ChunkStore, id: string): Promise<QuarantineResult> {
  if (!isChunkId(id)) throw new EngineError('InvalidArgument', `not a chunk id: ${id}`);
  if (!(store instanceof FsChunkStore)) {
    const r = await store.delete(id);
    return r === 'deleted' ? 'deleted' : 'absent';
  }
  const qdir = path.join(store.root, QUARANTINE_DIR);
  await fsp.mkdir(qdir, { recursive: true, mode: 0o700 });
  const target = path.join(qdir, `${id}.${Date.now()}`);
  // The live name first, then trash/ (a GC mid-sweep); a read would move it back from there.
  for (const from of [path.join(store.root, 'chunks', id.slice(0, 4), id), path.join(store.root, 'trash', id)]) {
    try {
      await fsp.rename(from, target);
      await fsyncDir(path.dirname(from)).catch(() => undefined);
      await fsyncDir(qdir);
      return 'quarantined';
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  }
  return 'absent';
}

/** Ids in quarantine (fs store), for reports and tests. */
export async function listQuarantine(store: ChunkStore): Promise<string[]> {
  if (!(store instanceof FsChunkStore)) return [];
  const names = await fsp.readdir(path.join(store.root, QUARANTINE_DIR)).catch(() => [] as string[]);
  return names.map((n) => n.split('.')[0]!).filter((n) => isChunkId(n));
}
