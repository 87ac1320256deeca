// Owns hardening OpenClaw's credential backups: mode 0600, never deleted.
import { promises as fs } from 'node:fs';
import { BACKUP_PATTERN, listMatching, storeDirs } from './discover.ts';

/**
 * Sets every credential backup next to a store to 0600 and returns how many there are.
 * Backups may hold the only copy of a credential, so they are never deleted; symlinks are
 * skipped rather than followed. With `dryRun` nothing is changed, only counted.
 */
export async function hardenBackups(stateDir: string, dryRun = false): Promise<number> {
  let count = 0;
  for (const dir of await storeDirs(stateDir)) {
    for (const path of await listMatching(dir, BACKUP_PATTERN)) {
      const st = await fs.lstat(path).catch(() => null);
      if (!st?.isFile()) continue;
      count++;
      if (!dryRun && (st.mode & 0o777) !== 0o600) await fs.chmod(path, 0o600);
    }
  }
  return count;
}
