// Owns the gateway's own user (`--gateway-uid/--gateway-gid`): handing the state dir over to it,
// safely, after the controller (root) has written into it.
import { constants, promises as fs } from 'node:fs';
import type { Logger } from '../log.ts';
import { errInfo } from './supervisor.ts';

export interface GatewayUser {
  uid: number;
  gid: number;
}

/** A state dir bigger than this is handed over only in part (and a warning says so). */
const MAX_ENTRIES = 200_000;

const DIR_NOFOLLOW = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

export interface HandOverResult {
  /** Entries whose owner was changed. */
  changed: number;
  /** Entries looked at. */
  seen: number;
  truncated: boolean;
}

/**
 * Makes `root` (created 0700 when missing) and everything under it owned by `user`: the files the
 * controller wrote as root (migrated stores, SQLite journals, openclaw.json, the logs dir) must be
 * the gateway's, which reads and writes them, and OpenClaw refuses credential files it does not own.
 *
 * The tree is writable by the gateway, which may be hostile and may swap a directory for a symlink
 * while this runs. So no path below `root` is ever resolved by name: each directory is opened with
 * O_NOFOLLOW and its entries are reached through `/proc/self/fd/<fd>/<name>` (the directory that
 * was opened, not whatever the name points at now), and ownership is changed with lchown (a
 * symlink's own owner, never its target). A symlink is never followed, so nothing outside the tree
 * can be handed to the gateway.
 */
export async function handOverTree(root: string, user: GatewayUser): Promise<HandOverResult> {
  const result: HandOverResult = { changed: 0, seen: 0, truncated: false };
  await fs.mkdir(root, { recursive: true, mode: 0o700 });
  const top = await fs.open(root, DIR_NOFOLLOW);
  try {
    const st = await top.stat();
    result.seen++;
    if (st.uid !== user.uid || st.gid !== user.gid) {
      await top.chown(user.uid, user.gid);
      result.changed++;
    }
    await walk(top, user, result);
  } finally {
    await top.close();
  }
  return result;
}

async function walk(dir: fs.FileHandle, user: GatewayUser, result: HandOverResult): Promise<void> {
  const base = `/proc/self/fd/${dir.fd}`;
  let names: string[];
  try {
    names = await fs.readdir(base);
  } catch {
    return; // gone or unreadable: nothing to hand over here
  }
  for (const name of names) {
    if (result.seen >= MAX_ENTRIES) {
      result.truncated = true;
      return;
    }
    result.seen++;
    const path = `${base}/${name}`;
    let st: Awaited<ReturnType<typeof fs.lstat>>;
    try {
      st = await fs.lstat(path);
    } catch {
      continue; // removed meanwhile
    }
    if (st.uid !== user.uid || st.gid !== user.gid) {
      try {
        await fs.lchown(path, user.uid, user.gid);
        result.changed++;
      } catch {
        // removed meanwhile
      }
    }
    if (!st.isDirectory()) continue;
    let sub: fs.FileHandle;
    try {
      sub = await fs.open(path, DIR_NOFOLLOW); // fails on a symlink swapped in since the lstat
    } catch {
      continue;
    }
    try {
      await walk(sub, user, result);
    } finally {
      await sub.close();
    }
  }
}

/**
 * A hand-over that logs instead of throwing (a gateway that cannot read a file fails visibly on
 * its own; the controller stays up to report it) and runs one at a time.
 */
export function stateHandOver(stateDir: string, user: GatewayUser | null, log: Logger): () => Promise<void> {
  if (!user) return async () => {};
  let running: Promise<void> = Promise.resolve();
  const once = async () => {
    try {
      const r = await handOverTree(stateDir, user);
      if (r.changed > 0)
        log.info({ changed: r.changed, uid: user.uid }, 'State dir handed over to the gateway user');
      if (r.truncated) log.warn({ seen: r.seen }, 'State dir too large to hand over completely');
    } catch (err) {
      log.error({ err: errInfo(err) }, 'Could not hand the state dir over to the gateway user');
    }
  };
  return () => {
    running = running.then(once);
    return running;
  };
}
