// Owns the profiles module's public API: scan, migrate and report OpenClaw auth-profile stores.
import { promises as fs } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Logger } from '../log.ts';
import { SecretRegistry } from '../secrets.ts';
import { countBackups, finishPurges, hardenBackups, purgePlaintextBackups } from './backups.ts';
import {
  AGENT_DB,
  discoverStores,
  listMatching,
  STALE_TEMP_PATTERN,
  type StoreLocation,
  storeDirs,
} from './discover.ts';
import { type JsonSnapshot, readJsonStore, writeJsonStore } from './json-store.ts';
import { ensureKeyFile } from './key-file.ts';
import {
  applyConfigKey,
  configKeyId,
  configPath,
  configPlaintextKey,
  declaredProfiles,
  type JsonObject,
  planConfigKey,
  readConfigFile,
  registerFileProvider,
  updateConfigFile,
} from './openclaw-config.ts';
import { DEFAULT_BUSY_TIMEOUT_MS, readSqliteStore, updateSqliteStore } from './sqlite-store.ts';
import {
  planStore,
  profileEntries,
  type StoreDoc,
  StoreError,
  secretStrings,
  targetForm,
} from './store-doc.ts';
import type {
  MigrateOptions,
  ProfileFormRow,
  ProfileResult,
  ProfilesResult,
  RefTarget,
  ScanOptions,
  StoreLayout,
  StoreResult,
} from './types.ts';

export { type BackupSummary, countBackups, hardenBackups } from './backups.ts';
export { isBusyStoreError } from './sqlite-store.ts';
export type * from './types.ts';
export { ALL_LAYOUTS } from './types.ts';

import { ALL_LAYOUTS } from './types.ts';

// A no-op logger: scanning a store logs nothing unless the caller passes its own logger.
const NO_LOG: Pick<Logger, 'info' | 'warn'> = { info: () => {}, warn: () => {} };

/** One store as read: its public result plus what only this module may hold (the document). */
interface Loaded {
  loc: StoreLocation;
  result: StoreResult;
  doc: StoreDoc | null;
  json: JsonSnapshot | null;
  plaintextKeys: string[];
  /** Layout `config`: the openclaw.json document as read. */
  config?: JsonObject;
}

function message(err: unknown, secrets: SecretRegistry): string {
  const text = err instanceof StoreError ? err.message : 'unexpected error while handling the store';
  return secrets.scrub(text);
}

async function load(
  loc: StoreLocation,
  provider: string,
  busyTimeoutMs: number,
  secrets: SecretRegistry,
): Promise<Loaded | null> {
  const result: StoreResult = { ...loc, profiles: [], changed: false, error: null };
  try {
    let doc: StoreDoc | null;
    let json: JsonSnapshot | null = null;
    if (loc.layout === 'json') {
      json = await readJsonStore(loc.path);
      doc = json.doc;
    } else {
      doc = await readSqliteStore(loc.path, loc.layout, busyTimeoutMs);
      if (!doc) return null; // a database without a store of this layout
    }
    for (const s of secretStrings(doc.root)) secrets.add(s);
    const plan = planStore(doc, provider, null);
    result.profiles = plan.profiles;
    return { loc, result, doc, json, plaintextKeys: plan.plaintextKeys };
  } catch (err) {
    result.error = message(err, secrets);
    return { loc, result, doc: null, json: null, plaintextKeys: [] };
  }
}

/**
 * The provider's config-level key in openclaw.json as one more store (layout `config`), or null
 * when the config has none. An unreadable config is not reported here: `annotate` warns about it.
 */
async function loadConfigKey(
  path: string,
  provider: string,
  secrets: SecretRegistry,
): Promise<Loaded | null> {
  let root: JsonObject | null;
  try {
    root = (await readConfigFile(path)).root;
  } catch {
    return null;
  }
  const plan = root ? planConfigKey(root, provider, { to: 'env', envVar: 'X' }) : null;
  if (!root || !plan) return null;
  const plaintext = configPlaintextKey(root, provider);
  for (const s of secretStrings(root)) secrets.add(s);
  const loc: StoreLocation = { path, layout: 'config', agentId: null };
  return {
    loc,
    result: {
      ...loc,
      profiles: [{ profileId: configKeyId(provider), form: plan.form, formAfter: plan.form }],
      changed: false,
      error: null,
    },
    doc: null,
    json: null,
    plaintextKeys: plaintext ? [plaintext] : [],
    config: root,
  };
}

async function loadAll(
  stateDir: string,
  provider: string,
  busyTimeoutMs: number,
  secrets: SecretRegistry,
  cfgPath: string = configPath(stateDir),
) {
  const loaded: Loaded[] = [];
  for (const loc of await discoverStores(stateDir)) {
    const l = await load(loc, provider, busyTimeoutMs, secrets);
    if (l) loaded.push(l);
  }
  const cfg = await loadConfigKey(cfgPath, provider, secrets);
  if (cfg) loaded.push(cfg);
  return loaded;
}

/**
 * Adds what the stores cannot say themselves: a declared profile no store holds is `missing`
 * (reported on the store OpenClaw would read it from); an unreadable store reports the
 * declared profiles (or `<provider>:default`) as `unreadable`, since it may hold them.
 */
async function annotate(
  stateDir: string,
  provider: string,
  loaded: Loaded[],
  warnings: string[],
  cfgPath: string = configPath(stateDir),
): Promise<void> {
  let declared: string[] = [];
  try {
    declared = await declaredProfiles(cfgPath, provider);
  } catch (err) {
    warnings.push(err instanceof StoreError ? err.message : 'cannot read openclaw.json');
  }
  const unreadableIds = declared.length > 0 ? declared : [`${provider}:default`];
  for (const l of loaded) {
    if (l.result.error !== null && l.loc.layout !== 'config') {
      l.result.profiles = unreadableIds.map((profileId) => ({
        profileId,
        form: 'unreadable',
        formAfter: 'unreadable',
      }));
    }
  }
  if (loaded.some((l) => l.result.error !== null)) return;
  const held = new Set(loaded.flatMap((l) => l.result.profiles.map((p) => p.profileId)));
  const missing = declared.filter((id) => !held.has(id));
  if (missing.length === 0) return;
  const rows: ProfileResult[] = missing.map((profileId) => ({
    profileId,
    form: 'missing',
    formAfter: 'missing',
  }));
  const home =
    loaded.find((l) => l.loc.layout === 'sqlite-state' && l.result.error === null) ??
    loaded.find((l) => l.loc.agentId === 'main' && l.loc.layout === 'sqlite-agent') ??
    loaded.find((l) => l.loc.agentId === 'main');
  if (home) {
    home.result.profiles.push(...rows);
    return;
  }
  const path = join(stateDir, 'agents', 'main', 'agent', AGENT_DB);
  const loc: StoreLocation = { path, layout: 'sqlite-agent', agentId: 'main' };
  loaded.push({
    loc,
    result: { ...loc, profiles: rows, changed: false, error: null },
    doc: null,
    json: null,
    plaintextKeys: [],
  });
}

function summarise(
  loaded: Loaded[],
  backupsHardened: number,
  backupsPlaintext: number,
  warnings: string[],
): ProfilesResult {
  const stores = loaded.map((l) => l.result);
  return {
    stores,
    profilesMigrated: stores.reduce(
      (n, s) => n + (s.error ? 0 : s.profiles.filter((p) => p.form !== p.formAfter).length),
      0,
    ),
    storesFailed: stores.filter((s) => s.error !== null).length,
    backupsHardened,
    backupsPlaintext,
    warnings,
  };
}

/** Reads and classifies every store; writes nothing. */
export async function scanProfiles(opts: ScanOptions): Promise<ProfilesResult> {
  const secrets = new SecretRegistry();
  const warnings: string[] = [];
  const cfgPath = opts.configPath ?? configPath(opts.stateDir);
  const loaded = await loadAll(
    opts.stateDir,
    opts.provider,
    opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS,
    secrets,
    cfgPath,
  );
  await annotate(opts.stateDir, opts.provider, loaded, warnings, cfgPath);
  const backups = await countBackups(opts.stateDir, opts.provider);
  return summarise(loaded, backups.total, backups.plaintext, warnings);
}

async function removeStaleTemps(dirs: string[]): Promise<void> {
  for (const dir of dirs) {
    for (const path of await listMatching(dir, STALE_TEMP_PATTERN)) await fs.rm(path, { force: true });
  }
}

/**
 * Rewrites every plaintext (or other-source) profile of `provider` to the target `keyRef`.
 * File refs: the key file and the provider registration are in place before any store points
 * at them; if either fails, no store is switched. Idempotent: a store with nothing to change
 * is not written.
 */
export async function migrateProfiles(opts: MigrateOptions): Promise<ProfilesResult> {
  const log: Pick<Logger, 'info' | 'warn'> = opts.log ?? NO_LOG;
  const dryRun = opts.dryRun ?? false;
  const layouts = new Set<StoreLayout>(opts.layouts ?? ALL_LAYOUTS);
  const cfgPath = opts.configPath ?? configPath(opts.stateDir);
  const busy = opts.busyTimeoutMs ?? DEFAULT_BUSY_TIMEOUT_MS;
  const secrets = new SecretRegistry();
  const warnings: string[] = [];
  const target = opts.target;

  if (!dryRun) {
    const dirs = await storeDirs(opts.stateDir);
    dirs.push(opts.stateDir);
    if (target.to === 'file') dirs.push(dirname(target.keyFile));
    await removeStaleTemps(dirs);
    await finishPurges(opts.stateDir).catch(() => {
      warnings.push('could not finish removing a backup an earlier purge left behind');
    });
  }

  const loaded = await loadAll(opts.stateDir, opts.provider, busy, secrets, cfgPath);
  const plans = new Map<Loaded, StoreDoc | 'config'>();
  for (const l of loaded) {
    if (l.config) {
      const plan = layouts.has('config') ? planConfigKey(l.config, opts.provider, target) : null;
      if (!plan?.changes) continue;
      l.result.profiles = l.result.profiles.map((p) => ({ ...p, formAfter: plan.formAfter }));
      l.result.changed = true;
      plans.set(l, 'config');
      continue;
    }
    if (!l.doc || !layouts.has(l.loc.layout)) continue;
    const plan = planStore(l.doc, opts.provider, target);
    if (!plan.next) continue;
    l.result.profiles = plan.profiles;
    l.result.changed = true;
    plans.set(l, plan.next);
  }

  let out: Pick<ProfilesResult, 'keyFile' | 'config'> = {};
  if (target.to === 'file') {
    const setup = await prepareFileTarget(cfgPath, target, loaded, plans.size > 0, dryRun, secrets);
    out = setup.out;
    if (plans.size > 0 && setup.out.keyFile?.status === 'missing') {
      warnings.push(
        'the key file does not exist and no plaintext key was found to create it; write it before starting the gateway',
      );
    }
    if (setup.error) {
      for (const l of plans.keys()) failStore(l, `not migrated: ${setup.error}`);
      plans.clear();
    }
  }

  for (const [l, next] of plans) {
    if (dryRun) continue;
    try {
      if (next === 'config') {
        // Re-plan on a fresh read: the file may have changed (the file provider was just added).
        const written = await updateConfigFile(l.loc.path, (root) => {
          if (planConfigKey(root, opts.provider, target)?.changes)
            applyConfigKey(root, opts.provider, target);
        });
        if (!written) l.result.changed = false;
      } else if (l.loc.layout === 'json' && l.json) {
        await writeJsonStore(l.loc.path, l.json, next);
      } else {
        // Re-plan inside the transaction: the database may have moved on since it was read.
        const res = await updateSqliteStore(
          l.loc.path,
          l.loc.layout,
          (doc) => planStore(doc, opts.provider, target).next,
          busy,
        );
        if (!res.written) l.result.changed = false;
        if (res.warning) warnings.push(`${l.loc.path}: ${res.warning}`);
      }
      log.info(
        {
          path: l.loc.path,
          layout: l.loc.layout,
          agentId: l.loc.agentId,
          migrated: l.result.profiles.filter((p) => p.form !== p.formAfter).length,
        },
        'Migrated auth-profile store',
      );
    } catch (err) {
      failStore(l, message(err, secrets));
      log.warn(
        { path: l.loc.path, layout: l.loc.layout, error: l.result.error },
        'Could not migrate auth-profile store',
      );
    }
  }

  await annotate(opts.stateDir, opts.provider, loaded, warnings, cfgPath);
  let backupsPurged: number | undefined;
  if (opts.purgePlaintextBackups && !dryRun) {
    backupsPurged = await purgeIfVerified(opts, target, busy, loaded, warnings);
  }
  let backups = 0;
  try {
    backups = await hardenBackups(opts.stateDir, dryRun);
  } catch {
    warnings.push('could not harden every credential backup');
  }
  const plaintext = await countBackups(opts.stateDir, opts.provider).then(
    (c) => c.plaintext,
    () => 0,
  );
  const result: ProfilesResult = {
    ...summarise(loaded, backups, plaintext, warnings),
    ...(backupsPurged !== undefined ? { backupsPurged } : {}),
    ...out,
  };
  log.info(
    {
      stores: result.stores.length,
      profilesMigrated: result.profilesMigrated,
      storesFailed: result.storesFailed,
      backups,
      backupsPlaintext: plaintext,
      ...(backupsPurged !== undefined ? { backupsPurged } : {}),
      dryRun,
    },
    'Auth-profile migration finished',
  );
  return result;
}

/**
 * Verifies the migration with a fresh read of every store (no store failed, every managed profile
 * is the target keyRef), then purges the backups holding a plaintext key of the provider. A backup
 * that holds a profile no store has is kept (it may be the only copy of another credential).
 */
async function purgeIfVerified(
  opts: MigrateOptions,
  target: RefTarget,
  busy: number,
  migrated: Loaded[],
  warnings: string[],
): Promise<number> {
  const want = targetForm(target);
  const verify = await loadAll(
    opts.stateDir,
    opts.provider,
    busy,
    new SecretRegistry(),
    opts.configPath ?? configPath(opts.stateDir),
  );
  const unverified =
    migrated.some((l) => l.result.error !== null) ||
    verify.some((l) => l.result.error !== null || l.result.profiles.some((p) => p.form !== want));
  if (unverified) {
    warnings.push(
      `plaintext backups not purged: the stores are not all verified as ${want} (see the stores above); they are purged once they are`,
    );
    return 0;
  }
  const live = new Set(verify.flatMap((l) => (l.doc ? profileEntries(l.doc).map((e) => e.profileId) : [])));
  try {
    const r = await purgePlaintextBackups(opts.stateDir, opts.provider, live);
    warnings.push(...r.kept);
    return r.purged;
  } catch {
    warnings.push('could not purge every plaintext backup');
    return 0;
  }
}

function failStore(l: Loaded, error: string): void {
  l.result.error = error;
  l.result.changed = false;
  l.result.profiles = l.result.profiles.map((p) => ({ ...p, formAfter: p.form }));
}

async function prepareFileTarget(
  cfgPath: string,
  target: Extract<RefTarget, { to: 'file' }>,
  loaded: Loaded[],
  needed: boolean,
  dryRun: boolean,
  secrets: SecretRegistry,
): Promise<{ out: Pick<ProfilesResult, 'keyFile' | 'config'>; error: string | null }> {
  // Only when some store will point at the file is it created; otherwise it is just inspected.
  const keys = needed ? loaded.flatMap((l) => l.plaintextKeys) : [];
  const keyFile = await ensureKeyFile(target.keyFile, keys, dryRun || !needed);
  keyFile.error = keyFile.error && secrets.scrub(keyFile.error);
  const config = { path: cfgPath, changed: false, error: null as string | null };
  if (keyFile.status === 'failed') return { out: { keyFile, config }, error: `key file: ${keyFile.error}` };
  if (!needed) return { out: { keyFile, config }, error: null };
  try {
    const reg = await registerFileProvider(cfgPath, target.providerAlias, target.keyFile, dryRun);
    config.changed = reg.changed;
  } catch (err) {
    config.error = message(err, secrets);
    return { out: { keyFile, config }, error: config.error };
  }
  return { out: { keyFile, config }, error: null };
}

/** The after-migration form of every profile, flat, as `/_kilo/state` reports them. */
export function profileForms(result: ProfilesResult): ProfileFormRow[] {
  return result.stores.flatMap((s) =>
    s.profiles.map((p) => ({
      agentId: s.agentId,
      store: s.layout,
      profileId: p.profileId,
      form: p.formAfter,
    })),
  );
}
