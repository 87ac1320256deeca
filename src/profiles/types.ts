// Owns the vocabulary of the profiles module: forms, layouts, targets and result shapes.
import type { Logger } from '../log.ts';

/** How the managed provider's credential is held by one profile. */
export type ProfileForm = 'keyRef-env' | 'keyRef-file' | 'plaintext' | 'missing' | 'unreadable';

/**
 * Where a store lives: legacy JSON, 2026.6.x per-agent SQLite, 2026.9.x shared state SQLite, or
 * `config`: the provider's config-level key in openclaw.json (`models.providers.<p>.apiKey`, which
 * 2026.9.x custom-provider onboarding writes; one row, profileId `models.providers.<p>.apiKey`).
 */
export type StoreLayout = 'json' | 'sqlite-agent' | 'sqlite-state' | 'config';

export const ALL_LAYOUTS: readonly StoreLayout[] = ['json', 'sqlite-agent', 'sqlite-state', 'config'];

/** What a migrated profile's `keyRef` points at. */
export type RefTarget =
  | { to: 'env'; envVar: string }
  | { to: 'file'; keyFile: string; providerAlias: string };

export interface ProfileResult {
  profileId: string;
  form: ProfileForm;
  /** The form after this run (equal to `form` for a scan, a dry run predicts it). */
  formAfter: ProfileForm;
}

export interface StoreResult {
  path: string;
  layout: StoreLayout;
  /** `null` for the gateway-wide store of 2026.9.x. */
  agentId: string | null;
  profiles: ProfileResult[];
  /** True when the store was rewritten (for a dry run: would be rewritten). */
  changed: boolean;
  /** Why the store could not be read or migrated; never contains a key. */
  error: string | null;
}

/**
 * `created`: written from a plaintext key; `unchanged`: already held that key;
 * `repaired`: same key, rewritten to get mode 0600 and a single link; `kept-existing`: holds
 * another value and was left alone (the file wins, the plaintext was dropped from the store);
 * `missing`: no file and no plaintext to write it from; `would-*`: dry-run predictions;
 * `failed`: see `error`.
 */
export type KeyFileStatus =
  | 'created'
  | 'unchanged'
  | 'repaired'
  | 'kept-existing'
  | 'missing'
  | 'would-create'
  | 'would-repair'
  | 'failed';

export interface KeyFileResult {
  path: string;
  status: KeyFileStatus;
  /** Plaintext keys found in stores that differ from the key file's content (a count, never a value). */
  differingKeys: number;
  error: string | null;
}

export interface ConfigResult {
  path: string;
  /** True when `secrets.providers.<alias>` was added (dry run: would be). */
  changed: boolean;
  error: string | null;
}

export interface ProfilesResult {
  stores: StoreResult[];
  profilesMigrated: number;
  storesFailed: number;
  backupsHardened: number;
  /** Credential backups (after this run) that hold a plaintext key of the managed provider. */
  backupsPlaintext: number;
  /** Migrations with `purgePlaintextBackups` only: backups zeroed and removed by this run. */
  backupsPurged?: number;
  /** File-ref migrations only. */
  keyFile?: KeyFileResult;
  /** File-ref migrations only: registration of the file provider in openclaw.json. */
  config?: ConfigResult;
  /** Problems that are not a store's, e.g. an unreadable openclaw.json when looking for `missing`. */
  warnings: string[];
}

export interface ScanOptions {
  stateDir: string;
  /** openclaw.json when it is not `<stateDir>/openclaw.json` (OPENCLAW_CONFIG_PATH). */
  configPath?: string;
  provider: string;
  busyTimeoutMs?: number;
  log?: Logger;
}

export interface MigrateOptions {
  stateDir: string;
  /** openclaw.json when it is not `<stateDir>/openclaw.json` (OPENCLAW_CONFIG_PATH). */
  configPath?: string;
  provider: string;
  target: RefTarget;
  dryRun?: boolean;
  /** Only stores of these layouts are written; the others are classified only. */
  layouts?: StoreLayout[];
  log?: Logger;
  busyTimeoutMs?: number;
  /**
   * Once every store is migrated and a fresh read verifies it (every managed profile the target
   * keyRef, no store failed), remove the credential backups that hold a plaintext key of the
   * provider (zeroed, fsynced, unlinked). Never in a dry run.
   */
  purgePlaintextBackups?: boolean;
}

/** One row of `/_kilo/state` `profiles`. */
export interface ProfileFormRow {
  agentId: string | null;
  store: StoreLayout;
  profileId: string;
  form: ProfileForm;
}
