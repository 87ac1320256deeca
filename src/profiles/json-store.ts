// Owns reading and atomically replacing a legacy `auth-profiles.json` store on disk.
import { constants, promises as fs } from 'node:fs';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import {
  MAX_STORE_BYTES,
  parseStoreText,
  type StoreDoc,
  StoreError,
  serializeJsonStore,
} from './store-doc.ts';

export interface JsonSnapshot {
  doc: StoreDoc;
  /** Identity of the file that was read, to detect a concurrent replacement before writing. */
  ino: number;
  size: number;
  mtimeMs: number;
  mode: number;
}

/** A short, value-free description of a filesystem error. */
export function fsReason(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  return e.code ? `${e.syscall ?? 'fs'} failed with ${e.code}` : 'unexpected filesystem error';
}

/** Refuses what is not a regular, reasonably small file, and symlinks (never followed). */
export async function checkStoreFile(path: string): Promise<import('node:fs').Stats> {
  let st: import('node:fs').Stats;
  try {
    st = await fs.lstat(path);
  } catch (err) {
    throw new StoreError(`cannot stat store: ${fsReason(err)}`);
  }
  if (st.isSymbolicLink()) throw new StoreError('store is a symbolic link; refusing to follow it');
  if (!st.isFile()) throw new StoreError('store is not a regular file');
  return st;
}

export async function readJsonStore(path: string): Promise<JsonSnapshot> {
  const st = await checkStoreFile(path);
  if (st.size > MAX_STORE_BYTES) {
    throw new StoreError(
      `store is ${st.size} bytes, over the ${MAX_STORE_BYTES}-byte limit; refusing to load it`,
    );
  }
  let buf: Buffer;
  try {
    // O_NOFOLLOW closes the gap between the lstat above and the open.
    const h = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
    try {
      buf = await h.readFile();
    } finally {
      await h.close();
    }
  } catch (err) {
    throw new StoreError(`cannot read store: ${fsReason(err)}`);
  }
  if (buf.length > MAX_STORE_BYTES) throw new StoreError('store grew over the size limit while reading');
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(buf);
  } catch {
    throw new StoreError('store is not valid UTF-8');
  }
  const parsed = parseStoreText(text);
  if (!parsed.ok) throw new StoreError(parsed.error);
  return { doc: parsed.doc, ino: st.ino, size: st.size, mtimeMs: st.mtimeMs, mode: st.mode & 0o777 };
}

/**
 * Replaces the store with `next` (mode 0600) if the file is still the one that was read.
 * A store without the owner-write bit is refused: as root every file is writable, so the mode
 * is the only signal that someone meant it to stay as it is.
 */
export async function writeJsonStore(path: string, snap: JsonSnapshot, next: StoreDoc): Promise<void> {
  if ((snap.mode & 0o200) === 0) {
    throw new StoreError(`store is read-only (mode 0${snap.mode.toString(8)}); refusing to replace it`);
  }
  const st = await checkStoreFile(path);
  if (st.ino !== snap.ino || st.size !== snap.size || st.mtimeMs !== snap.mtimeMs) {
    throw new StoreError('store changed while it was being migrated; run the migration again');
  }
  try {
    await writeFileAtomic(path, serializeJsonStore(next), { mode: 0o600 });
  } catch (err) {
    throw new StoreError(`cannot replace store: ${fsReason(err)}`);
  }
}
