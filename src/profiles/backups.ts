// Owns OpenClaw's credential backups: hardening (0600), counting those that hold a plaintext key
// of the managed provider, and purging those once the migrated stores are verified.
import { promises as fs } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { BACKUP_PATTERN, listMatching, storeDirs } from './discover.ts';
import { configPlaintextKey, isPlainObject, parseConfigText } from './openclaw-config.ts';
import { MAX_STORE_BYTES, parseStoreText, planStore, profileEntries } from './store-doc.ts';

/** OpenClaw's own backups of openclaw.json (`openclaw.json.bak`, `.bak.1` …), in the state dir. */
export const CONFIG_BACKUP_PATTERN = /^openclaw\.json\.bak(\.\d+)?$/;

/**
 * Sets every credential backup next to a store to 0600 and returns how many there are.
 * Symlinks are skipped rather than followed. With `dryRun` nothing is changed, only counted.
 */
export async function hardenBackups(stateDir: string, dryRun = false): Promise<number> {
  let count = 0;
  for (const path of await backupFiles(stateDir)) {
    const st = await fs.lstat(path).catch(() => null);
    if (!st?.isFile()) continue;
    count++;
    if (!dryRun && (st.mode & 0o777) !== 0o600) await fs.chmod(path, 0o600);
  }
  return count;
}

async function backupFiles(stateDir: string): Promise<string[]> {
  const out: string[] = [];
  for (const dir of await storeDirs(stateDir)) out.push(...(await listMatching(dir, BACKUP_PATTERN)));
  out.push(...(await listMatching(stateDir, CONFIG_BACKUP_PATTERN)));
  return out;
}

function isConfigBackup(path: string): boolean {
  return CONFIG_BACKUP_PATTERN.test(basename(path));
}

/** What a backup holds, as far as keyroll can tell (doctor's backups are copies of JSON stores). */
interface BackupContent {
  /** Holds at least one plaintext key of the managed provider. */
  plaintext: boolean;
  /** Every profile id it holds (of any provider). */
  profileIds: string[];
}

/** null when the file is not a regular file, too large, or not a store keyroll can parse. */
async function inspectBackup(path: string, provider: string): Promise<BackupContent | null> {
  const st = await fs.lstat(path).catch(() => null);
  if (!st?.isFile() || st.size > MAX_STORE_BYTES) return null;
  const text = await fs.readFile(path, 'utf8').catch(() => null);
  if (text === null) return null;
  if (isConfigBackup(path)) {
    // A config backup: plaintext when it holds a literal models.providers.<provider>.apiKey.
    const read = parseConfigText(text);
    if (!read.ok || !isPlainObject(read.root)) return null;
    return { plaintext: configPlaintextKey(read.root, provider) !== null, profileIds: [] };
  }
  const parsed = parseStoreText(text);
  if (!parsed.ok) return null;
  return {
    plaintext: planStore(parsed.doc, provider, null).plaintextKeys.length > 0,
    profileIds: profileEntries(parsed.doc).map((e) => e.profileId),
  };
}

export interface BackupSummary {
  /** Credential backups next to the stores (regular files). */
  total: number;
  /** Of those, the ones holding a plaintext key of the managed provider. */
  plaintext: number;
}

/** Counts credential backups and those holding a plaintext key of `provider`; reads, writes nothing. */
export async function countBackups(stateDir: string, provider: string): Promise<BackupSummary> {
  const summary: BackupSummary = { total: 0, plaintext: 0 };
  for (const path of await backupFiles(stateDir)) {
    const st = await fs.lstat(path).catch(() => null);
    if (!st?.isFile()) continue;
    summary.total++;
    if ((await inspectBackup(path, provider))?.plaintext) summary.plaintext++;
  }
  return summary;
}

export interface PurgeResult {
  purged: number;
  /** Why a backup with a plaintext key was kept (one line each; paths and reasons, never values). */
  kept: string[];
}

/**
 * Removes every credential backup that holds a plaintext key of `provider`: overwritten with
 * zeros, fsynced, unlinked, and the directory fsynced, so the key is gone from the file system's
 * view (a copy-on-write or journaling file system may still hold old blocks). Only call it once
 * the migrated stores are verified (every managed profile a keyRef): the live stores then hold
 * everything a backup could be needed for. A backup is kept, with the reason, when it holds a
 * profile no live store has (it may be the only copy of another credential) or has other links
 * (zeroing it would zero them too).
 */
export async function purgePlaintextBackups(
  stateDir: string,
  provider: string,
  liveProfileIds: ReadonlySet<string>,
): Promise<PurgeResult> {
  const result: PurgeResult = { purged: 0, kept: [] };
  for (const path of await backupFiles(stateDir)) {
    const content = await inspectBackup(path, provider);
    if (!content?.plaintext) continue;
    if (isConfigBackup(path)) {
      // Every other setting of an earlier config is in it too: hardened and counted, not deleted.
      result.kept.push(`${path}: kept, it is OpenClaw's backup of the whole config (0600)`);
      continue;
    }
    const missing = content.profileIds.filter((id) => !liveProfileIds.has(id));
    if (missing.length > 0) {
      result.kept.push(`${path}: kept, it holds ${missing.length} profile(s) no store has`);
      continue;
    }
    try {
      if (await shred(path)) result.purged++;
      else result.kept.push(`${path}: kept, it has more than one link`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? 'error';
      result.kept.push(`${path}: could not be removed (${code})`);
    }
  }
  return result;
}

/**
 * A backup being purged: renamed to `.<name>.keyroll-purge` first (the commit point), so a purge
 * killed while zeroing leaves a file any later migration finishes off, never a half-zeroed
 * backup that no longer parses and would keep a fragment of the key for good.
 */
export const PURGE_PATTERN = /^\..+\.keyroll-purge$/;

/** Finishes purges a killed process left behind (every migration calls it, with or without the flag). */
export async function finishPurges(stateDir: string): Promise<void> {
  for (const dir of await storeDirs(stateDir)) {
    for (const path of await listMatching(dir, PURGE_PATTERN)) await zeroAndUnlink(path);
  }
}

/** Claims, zeroes, fsyncs and unlinks a backup with one link; false (untouched) when it has more. */
async function shred(path: string): Promise<boolean> {
  const st = await fs.lstat(path);
  if (!st.isFile() || st.nlink !== 1) return false;
  const claimed = join(dirname(path), `.${basename(path)}.keyroll-purge`);
  await fs.rename(path, claimed);
  await syncDir(dirname(path));
  return zeroAndUnlink(claimed);
}

async function zeroAndUnlink(path: string): Promise<boolean> {
  // O_NOFOLLOW: a symlink swapped in since the listing is refused, not followed.
  const fh = await fs.open(path, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
  try {
    const st = await fh.stat();
    if (!st.isFile() || st.nlink !== 1) return false;
    const zeros = Buffer.alloc(Math.min(st.size, 64 * 1024));
    for (let at = 0; at < st.size; at += zeros.length) {
      await fh.write(zeros, 0, Math.min(zeros.length, st.size - at), at);
    }
    await fh.sync();
  } finally {
    await fh.close();
  }
  await fs.unlink(path);
  await syncDir(dirname(path));
  return true;
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fs.open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
