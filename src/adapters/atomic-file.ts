// Owns crash-safe file replacement: temp file in the same directory → fsync → rename → fsync dir.
import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';

export interface AtomicWriteOptions {
  /** File mode of the result; default 0o600 (credentials). */
  mode?: number;
  /**
   * Owner of the result, set on the temp file before the rename, so no reader ever sees the new
   * content with the wrong owner (a key file OpenClaw reads as the gateway user). Needs CAP_CHOWN.
   */
  owner?: { uid: number; gid: number } | null;
}

/**
 * Replaces `path` with `data` so that a reader (or a crash) sees either the old or the new
 * content, never a mix: the temp file is written and fsynced in the target's directory, renamed
 * over the target, and the directory is fsynced so the rename itself is durable. The temp file
 * is removed when anything fails. A symlink at `path` is replaced, never followed.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  opts: AtomicWriteOptions = {},
): Promise<void> {
  const mode = opts.mode ?? 0o600;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.keyroll-tmp.${randomBytes(6).toString('hex')}`);
  let handle: fs.FileHandle | undefined;
  try {
    // O_EXCL: never write through a file someone planted at the temp name.
    handle = await fs.open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, mode);
    await handle.writeFile(data);
    await handle.chmod(mode); // the umask may have narrowed or widened the create mode
    if (opts.owner) await handle.chown(opts.owner.uid, opts.owner.gid);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fs.rename(tmp, path);
  } catch (err) {
    await handle?.close().catch(() => {});
    await fs.rm(tmp, { force: true }).catch(() => {});
    throw err;
  }
  await fsyncDir(dir);
}

/** fsync a directory so a rename or unlink in it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const h = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}
