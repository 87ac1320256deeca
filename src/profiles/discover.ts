// Owns finding the candidate profile stores, credential backups and stale temp files of a state dir.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { StoreLayout } from './types.ts';

export interface StoreLocation {
  path: string;
  layout: StoreLayout;
  agentId: string | null;
}

export const JSON_STORE = 'auth-profiles.json';
export const AGENT_DB = 'openclaw-agent.sqlite';
export const STATE_DB = 'openclaw.sqlite';

async function exists(path: string): Promise<boolean> {
  try {
    await fs.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** Agent ids with an `agents/<id>/agent` directory (symlinked agent dirs are not followed). */
export async function listAgents(stateDir: string): Promise<string[]> {
  let entries: import('node:fs').Dirent[];
  try {
    entries = await fs.readdir(join(stateDir, 'agents'), { withFileTypes: true });
  } catch {
    return [];
  }
  return entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
}

/**
 * Candidate stores in a fixed order (agents sorted, JSON before SQLite, then the shared state
 * db). A candidate SQLite file may turn out to hold no store; the caller decides.
 */
export async function discoverStores(stateDir: string): Promise<StoreLocation[]> {
  const out: StoreLocation[] = [];
  for (const agentId of await listAgents(stateDir)) {
    const dir = join(stateDir, 'agents', agentId, 'agent');
    const json = join(dir, JSON_STORE);
    const db = join(dir, AGENT_DB);
    if (await exists(json)) out.push({ path: json, layout: 'json', agentId });
    if (await exists(db)) out.push({ path: db, layout: 'sqlite-agent', agentId });
  }
  const stateDb = join(stateDir, 'state', STATE_DB);
  if (await exists(stateDb)) out.push({ path: stateDb, layout: 'sqlite-state', agentId: null });
  return out;
}

/** Directories where stores (and so their backups) live. */
export async function storeDirs(stateDir: string): Promise<string[]> {
  const dirs = (await listAgents(stateDir)).map((id) => join(stateDir, 'agents', id, 'agent'));
  dirs.push(join(stateDir, 'state'));
  return dirs;
}

/** OpenClaw's credential backups: doctor's `<file>.<reason>.<epoch-ms>.bak` and a plain `auth-profiles.json.bak`. */
export const BACKUP_PATTERN =
  /^.+\.(sqlite-import|legacy-flat|api-key-alias|aws-sdk-profile|openai-provider-unification|oauth-ref)\.\d+\.bak$|^auth-profiles\.json\.bak$/;

/** Temp files `writeFileAtomic` leaves behind when its process is killed mid-write. */
export const STALE_TEMP_PATTERN = /^\..+\.keyroll-tmp\.[0-9a-f]{12}$/;

export async function listMatching(dir: string, pattern: RegExp): Promise<string[]> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return [];
  }
  return names.filter((n) => pattern.test(n)).map((n) => join(dir, n));
}
