// Owns the controller's view of the profile stores: a small port over the profiles module.
import type { Logger } from '../log.ts';
import type { BackupSummary } from '../profiles/backups.ts';
import type { ProfileFormRow, RefTarget, StoreLayout } from '../profiles/types.ts';

export type { BackupSummary } from '../profiles/backups.ts';
export type { ProfileFormRow, RefTarget, StoreLayout } from '../profiles/types.ts';

export interface MigrateSummary {
  profilesMigrated: number;
  storesFailed: number;
  backupsHardened: number;
}

/** What the controller needs from the profiles module; tests inject a fake. */
export interface ProfilePort {
  /** Rewrites plaintext keys of the managed provider to the mode's keyRef; never throws on bad stores. */
  migrate(layouts?: StoreLayout[]): Promise<MigrateSummary>;
  /** The managed profile's form in every store (read-only). */
  scan(): Promise<ProfileFormRow[]>;
  /** chmods credential backups (`*.bak`) to 0600; returns how many were changed. */
  hardenBackups(): Promise<number>;
  /** Credential backups, and how many hold a plaintext key of the provider (read-only). */
  backups?(): Promise<BackupSummary>;
}

export interface ProfilePortOptions {
  stateDir: string;
  provider: string;
  target: RefTarget;
  log: Logger;
  /**
   * openclaw.json's path as the gateway reads it (`OPENCLAW_CONFIG_PATH` of its env, else
   * `<state dir>/openclaw.json`), asked at every scan and migration; default the latter.
   */
  configPath?: () => string;
  /** Longest (asynchronous) wait of a scan for a locked SQLite store; default 200 ms. */
  scanBusyTimeoutMs?: number;
  /**
   * `--purge-plaintext-backups`: every migration, once the stores verify, zeroes and removes the
   * credential backups holding a plaintext key of the provider.
   */
  purgePlaintextBackups?: boolean;
}

/** JSON stores may be rewritten while the gateway runs; SQLite stores only while it is stopped. */
export const LAYOUTS_WHILE_RUNNING: StoreLayout[] = ['json'];
/** `config` (openclaw.json's provider key) too only while it is stopped: the gateway watches that file. */
export const ALL_STORE_LAYOUTS: StoreLayout[] = ['json', 'sqlite-agent', 'sqlite-state', 'config'];

/** A port that finds nothing to do, for `--gateway-cmd` setups without stores and for tests. */
export function noopProfilePort(): ProfilePort {
  return {
    migrate: async () => ({ profilesMigrated: 0, storesFailed: 0, backupsHardened: 0 }),
    scan: async () => [],
    hardenBackups: async () => 0,
  };
}
