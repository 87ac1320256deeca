// Owns the key file a file-backed keyRef points at: created once from a plaintext key, never overwritten with another.
import { constants, promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { constantTimeEqual } from '../fingerprint.ts';
import { fsReason } from './json-store.ts';
import type { KeyFileResult } from './types.ts';

class KeyFileError extends Error {}

/** OpenClaw reads at most 1 MiB from a file secret; anything larger is not a key file. */
const MAX_KEY_FILE_BYTES = 1024 * 1024;

async function readExisting(path: string): Promise<{ value: string; healthy: boolean } | null> {
  let st: import('node:fs').Stats;
  try {
    st = await fs.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new KeyFileError(`cannot stat key file: ${fsReason(err)}`);
  }
  if (st.isSymbolicLink() || !st.isFile())
    throw new KeyFileError('key file is not a regular file; refusing to use it');
  if (st.size > MAX_KEY_FILE_BYTES) throw new KeyFileError('key file is over 1 MiB; refusing to use it');
  const h = await fs.open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    // OpenClaw's singleValue mode drops one trailing newline; compare the same way.
    const value = (await h.readFile('utf8')).replace(/\r?\n$/, '');
    return { value, healthy: (st.mode & 0o777) === 0o600 && st.nlink === 1 };
  } finally {
    await h.close();
  }
}

/**
 * Makes sure `path` holds a key before any profile points at it: written from the first
 * plaintext key when absent (0600, one link, atomic), left alone when it holds another value.
 * `keys` are plaintext keys found in the stores, in discovery order.
 */
export async function ensureKeyFile(path: string, keys: string[], dryRun: boolean): Promise<KeyFileResult> {
  const result: KeyFileResult = { path, status: 'missing', differingKeys: 0, error: null };
  try {
    const existing = await readExisting(path);
    const reference = existing?.value ?? keys[0];
    result.differingKeys = new Set(
      keys.filter((k) => reference === undefined || !constantTimeEqual(k, reference)),
    ).size;
    if (existing) {
      const matches = keys.length > 0 && keys.some((k) => constantTimeEqual(k, existing.value));
      if (!existing.healthy && (matches || keys.length === 0)) {
        result.status = dryRun ? 'would-repair' : 'repaired';
        if (!dryRun) await writeFileAtomic(path, existing.value, { mode: 0o600 });
      } else {
        result.status = matches || keys.length === 0 ? 'unchanged' : 'kept-existing';
      }
      return result;
    }
    const first = keys[0];
    if (first === undefined) return result;
    result.status = dryRun ? 'would-create' : 'created';
    if (!dryRun) {
      await fs.mkdir(dirname(path), { recursive: true, mode: 0o700 });
      await writeFileAtomic(path, first, { mode: 0o600 });
    }
    return result;
  } catch (err) {
    result.status = 'failed';
    // Messages above are fixed strings or errno codes; a raw fs error message names only the path.
    result.error = err instanceof KeyFileError ? err.message : `cannot write key file: ${fsReason(err)}`;
    return result;
  }
}
