// Owns openclaw.json for all of keyroll: where it is, how it is read (JSON5) and written (atomic,
// 0600, only on change), the file secrets provider, and the provider's config-level `apiKey`.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import JSON5 from 'json5';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { fsReason } from './json-store.ts';
import { MAX_STORE_BYTES, StoreError } from './store-doc.ts';
import type { ProfileForm, RefTarget } from './types.ts';

export const CONFIG_FILE = 'openclaw.json';

export type JsonObject = Record<string, unknown>;

export interface ConfigSnapshot {
  path: string;
  /** null when the file does not exist. */
  root: JsonObject | null;
}

export type ConfigParse = { ok: true; root: unknown } | { ok: false; error: string };

/**
 * Where OpenClaw reads its config: `OPENCLAW_CONFIG_PATH` when the gateway's env sets it, else
 * `<state dir>/openclaw.json`.
 */
export function configPath(stateDir: string, env: Readonly<Record<string, string | undefined>> = {}): string {
  return env.OPENCLAW_CONFIG_PATH || join(stateDir, CONFIG_FILE);
}

/**
 * Parses openclaw.json the way OpenClaw does: JSON5 (comments, trailing commas, unquoted keys,
 * single quotes), with the same parser and version OpenClaw 2026.x bundles (json5 2.2.3). A
 * syntax error is reported by position only: parser messages quote the text (V8's JSON.parse
 * quotes several characters around the error), and a key may be right there.
 */
export function parseConfigText(text: string): ConfigParse {
  try {
    return { ok: true, root: JSON5.parse(text) };
  } catch (err) {
    const e = err as { lineNumber?: unknown; columnNumber?: unknown };
    const at =
      typeof e.lineNumber === 'number' && typeof e.columnNumber === 'number'
        ? ` (line ${e.lineNumber}, column ${e.columnNumber})`
        : '';
    return { ok: false, error: `${CONFIG_FILE} is not valid JSON5${at}` };
  }
}

/**
 * Text to write back: plain JSON, which OpenClaw reads as JSON5. Comments and the file's own
 * formatting are not kept, so keyroll writes the file only when a setting it owns changes.
 */
export function configText(root: unknown): string {
  return `${JSON.stringify(root, null, 2)}\n`;
}

export function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Sets an own property (a key named `__proto__` stays data, never the prototype). */
export function setOwn(obj: JsonObject, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/** The object at `obj[key]`, created (as `{}`) when missing or not an object. */
export function childObject(obj: JsonObject, key: string): JsonObject {
  const v = Object.hasOwn(obj, key) ? obj[key] : undefined;
  if (isPlainObject(v)) return v;
  const next: JsonObject = {};
  setOwn(obj, key, next);
  return next;
}

/**
 * Reads the config. Refused with a StoreError that never quotes the file: a symlink or anything
 * but a regular file (an atomic write would replace the link), over 16 MiB, not JSON5, not an
 * object, or with `auth.profiles`/`secrets.providers` of the wrong shape.
 */
export async function readConfigFile(path: string): Promise<ConfigSnapshot> {
  let st: import('node:fs').Stats;
  try {
    st = await fs.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path, root: null };
    throw new StoreError(`cannot stat ${CONFIG_FILE}: ${fsReason(err)}`);
  }
  if (st.isSymbolicLink() || !st.isFile()) throw new StoreError(`${CONFIG_FILE} is not a regular file`);
  if (st.size > MAX_STORE_BYTES) throw new StoreError(`${CONFIG_FILE} is over the size limit`);
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    throw new StoreError(`cannot read ${CONFIG_FILE}: ${fsReason(err)}`);
  }
  const read = parseConfigText(text);
  if (!read.ok) throw new StoreError(read.error);
  const root = read.root;
  if (!isPlainObject(root)) throw new StoreError(`${CONFIG_FILE} is not a JSON object`);
  if (!hasKnownShape(root)) {
    throw new StoreError(`${CONFIG_FILE} has an unexpected shape in auth.profiles or secrets.providers`);
  }
  return { path, root };
}

/**
 * Read, edit, write: `edit` changes the document in place (a missing file starts as `{}`). The
 * file is written atomically with mode 0600 (it may hold credentials), and only when the edit
 * changed something. Returns whether it did. An error of `edit` leaves the file as it was.
 */
export async function updateConfigFile(
  path: string,
  edit: (root: JsonObject) => void,
  opts: { dryRun?: boolean } = {},
): Promise<boolean> {
  const snap = await readConfigFile(path);
  const root: JsonObject = snap.root ?? {};
  const before = JSON.stringify(root);
  edit(root);
  if (JSON.stringify(root) === before) return false;
  if (opts.dryRun) return true;
  try {
    await writeFileAtomic(path, configText(root), { mode: 0o600 });
  } catch (err) {
    throw new StoreError(`cannot write ${CONFIG_FILE}: ${fsReason(err)}`);
  }
  return true;
}

/**
 * The parts of openclaw.json keyroll reads, in the shape OpenClaw gives them (checked by hand:
 * the in-pod controller reads this file and has no memory for zod): `auth` an object whose
 * `profiles` maps ids to `{provider?: string, mode?: string, …}`, and `secrets` an object whose
 * `providers` maps aliases to `{source?: string, …}`. Everything else is free.
 */
function hasKnownShape(root: JsonObject): boolean {
  const recordOf = (v: unknown, fieldsAreStrings: readonly string[]) =>
    v === undefined ||
    (isPlainObject(v) &&
      Object.values(v).every(
        (entry) =>
          isPlainObject(entry) &&
          fieldsAreStrings.every((f) => entry[f] === undefined || typeof entry[f] === 'string'),
      ));
  const { auth, secrets } = root;
  if (auth !== undefined && !(isPlainObject(auth) && recordOf(auth.profiles, ['provider', 'mode'])))
    return false;
  return secrets === undefined || (isPlainObject(secrets) && recordOf(secrets.providers, ['source']));
}

/** Profile ids `auth.profiles` declares for `provider` (by `provider`, else by the id prefix). */
export function declaredProfilesIn(root: JsonObject | null, provider: string): string[] {
  const profiles = root && hasKnownShape(root) && isPlainObject(root.auth) ? root.auth.profiles : undefined;
  if (!isPlainObject(profiles)) return [];
  return Object.entries(profiles)
    .filter(([id, decl]) => isPlainObject(decl) && (decl.provider ?? id.split(':')[0]) === provider)
    .filter(([, decl]) => isPlainObject(decl) && (decl.mode === undefined || decl.mode === 'api_key'))
    .map(([id]) => id);
}

export async function declaredProfiles(path: string, provider: string): Promise<string[]> {
  return declaredProfilesIn((await readConfigFile(path)).root, provider);
}

/**
 * Sets `secrets.providers.<alias> = {source:"file", path, mode:"singleValue"}`, keeping everything
 * else. An alias that already names something else is an error (it may be another provider's),
 * never overwritten.
 */
export function setFileProvider(root: JsonObject, alias: string, keyFile: string): void {
  const providers = childObject(childObject(root, 'secrets'), 'providers');
  const existing = Object.hasOwn(providers, alias) ? providers[alias] : undefined;
  if (existing !== undefined) {
    if (
      isPlainObject(existing) &&
      existing.source === 'file' &&
      existing.path === keyFile &&
      (existing.mode === undefined || existing.mode === 'singleValue')
    ) {
      return;
    }
    throw new StoreError(
      `${CONFIG_FILE} already defines secrets.providers.${alias} differently; choose another alias or remove it`,
    );
  }
  setOwn(providers, alias, { source: 'file', path: keyFile, mode: 'singleValue' });
}

/** Registers the file provider in the config at `path`; returns whether the file changed. */
export async function registerFileProvider(
  path: string,
  alias: string,
  keyFile: string,
  dryRun: boolean,
): Promise<{ path: string; changed: boolean }> {
  const changed = await updateConfigFile(path, (root) => setFileProvider(root, alias, keyFile), { dryRun });
  return { path, changed };
}

// --- The provider's config-level key: models.providers.<provider>.apiKey --------------------------

/** How `keyroll profiles` names the config-level key in its reports. */
export function configKeyId(provider: string): string {
  return `models.providers.${provider}.apiKey`;
}

function providerEntry(root: JsonObject, provider: string): JsonObject | null {
  const models = root.models;
  const providers = isPlainObject(models) ? models.providers : undefined;
  const p = isPlainObject(providers) && Object.hasOwn(providers, provider) ? providers[provider] : undefined;
  return isPlainObject(p) ? p : null;
}

/** `models.providers.<provider>.apiKey` as written, or undefined. */
export function configApiKey(root: JsonObject | null, provider: string): unknown {
  const p = root ? providerEntry(root, provider) : null;
  return p && Object.hasOwn(p, 'apiKey') ? p.apiKey : undefined;
}

const ENV_SHORTHAND = /^\$\{?([A-Z][A-Z0-9_]{0,127})\}?$/;

/** The ref an `apiKey` value stands for, or null (a literal key, or nothing). */
function apiKeyRef(value: unknown): { source: string; id?: string } | null {
  if (isPlainObject(value) && typeof value.source === 'string') {
    return { source: value.source, ...(typeof value.id === 'string' ? { id: value.id } : {}) };
  }
  if (typeof value === 'string') {
    const m = ENV_SHORTHAND.exec(value);
    if (m && value.startsWith('${') === value.endsWith('}')) return { source: 'env', id: m[1]! };
  }
  return null;
}

/**
 * The form of the config-level key: a literal string is `plaintext` (OpenClaw sends it as is, and
 * it wins over the provider's env variable), an env or file ref is `keyRef-env`/`keyRef-file`,
 * any other ref (`exec`, `store`) or value is `unreadable`, an empty string `missing`; null when
 * the config has no such key.
 */
export function configKeyForm(root: JsonObject | null, provider: string): ProfileForm | null {
  const value = configApiKey(root, provider);
  if (value === undefined) return null;
  const ref = apiKeyRef(value);
  if (ref) return ref.source === 'env' ? 'keyRef-env' : ref.source === 'file' ? 'keyRef-file' : 'unreadable';
  if (typeof value === 'string') return value.trim() === '' ? 'missing' : 'plaintext';
  return 'unreadable';
}

/** True when the provider's key is a config-level ref (resolved at start and on `secrets.reload`). */
export function hasConfigLevelRef(root: JsonObject | null, provider: string): boolean {
  return apiKeyRef(configApiKey(root, provider)) !== null;
}

/** The literal config-level key (to scrub, or to seed a key file), else null. */
export function configPlaintextKey(root: JsonObject | null, provider: string): string | null {
  return configKeyForm(root, provider) === 'plaintext' ? String(configApiKey(root, provider)) : null;
}

export interface ConfigKeyPlan {
  form: ProfileForm;
  formAfter: ProfileForm;
  /** True when `apply` would change the document. */
  changes: boolean;
}

/**
 * What migrating the config-level key to `target` does: a literal key, a ref of the other source,
 * or an env ref naming another variable (the custom-provider onboarding of 2026.9.x names
 * CUSTOM_API_KEY) becomes the target ref; `exec`/`store` refs and a missing key are left alone.
 */
export function planConfigKey(
  root: JsonObject | null,
  provider: string,
  target: RefTarget,
): ConfigKeyPlan | null {
  const form = configKeyForm(root, provider);
  if (form === null) return null;
  if (form === 'unreadable' || form === 'missing') return { form, formAfter: form, changes: false };
  const want = target.to === 'env' ? 'keyRef-env' : 'keyRef-file';
  const value = configApiKey(root, provider);
  const ref = apiKeyRef(value);
  const same =
    ref !== null &&
    form === want &&
    (target.to === 'env'
      ? ref.id === target.envVar && isPlainObject(value)
      : isPlainObject(value) && value.provider === target.providerAlias && value.id === 'value');
  return { form, formAfter: want, changes: !same };
}

/** Writes the target ref in place of the config-level key (the document must have one). */
export function applyConfigKey(root: JsonObject, provider: string, target: RefTarget): void {
  const p = providerEntry(root, provider);
  if (!p) return;
  setOwn(
    p,
    'apiKey',
    target.to === 'env'
      ? { source: 'env', provider: 'default', id: target.envVar }
      : { source: 'file', provider: target.providerAlias, id: 'value' },
  );
}
