// Owns the two things keyroll reads or writes in openclaw.json: declared auth profiles and the file secrets provider.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import JSON5 from 'json5';
import * as z from 'zod';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { fsReason } from './json-store.ts';
import { MAX_STORE_BYTES, StoreError } from './store-doc.ts';

export const CONFIG_FILE = 'openclaw.json';

const AuthProfileDecl = z.looseObject({ provider: z.string().optional(), mode: z.string().optional() });
const ConfigShape = z.looseObject({
  auth: z.looseObject({ profiles: z.record(z.string(), AuthProfileDecl).optional() }).optional(),
  secrets: z
    .looseObject({
      providers: z.record(z.string(), z.looseObject({ source: z.string().optional() })).optional(),
    })
    .optional(),
});

type JsonObject = Record<string, unknown>;

interface ConfigSnapshot {
  path: string;
  /** null when the file does not exist. */
  root: JsonObject | null;
  mode: number;
}

export type ConfigParse = { ok: true; root: unknown } | { ok: false; error: string };

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

function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

async function readConfig(stateDir: string): Promise<ConfigSnapshot> {
  const path = join(stateDir, CONFIG_FILE);
  let st: import('node:fs').Stats;
  try {
    st = await fs.lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { path, root: null, mode: 0o600 };
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
  const parsed = ConfigShape.safeParse(root);
  if (!parsed.success || !isPlainObject(root)) {
    throw new StoreError(`${CONFIG_FILE} has an unexpected shape in auth.profiles or secrets.providers`);
  }
  return { path, root, mode: st.mode & 0o777 };
}

/** Profile ids `auth.profiles` declares for `provider` (by `provider`, else by the id prefix). */
export async function declaredProfiles(stateDir: string, provider: string): Promise<string[]> {
  const { root } = await readConfig(stateDir);
  const parsed = ConfigShape.safeParse(root ?? {});
  const profiles = parsed.success ? (parsed.data.auth?.profiles ?? {}) : {};
  return Object.entries(profiles)
    .filter(([id, decl]) => (decl.provider ?? id.split(':')[0]) === provider)
    .filter(([, decl]) => decl.mode === undefined || decl.mode === 'api_key')
    .map(([id]) => id);
}

function setOwn(obj: JsonObject, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Ensures `secrets.providers.<alias> = {source:"file", path, mode:"singleValue"}`, keeping
 * everything else. An alias that already points elsewhere is an error, never overwritten.
 * Returns whether the file changed (with `dryRun`: would change).
 */
export async function registerFileProvider(
  stateDir: string,
  alias: string,
  keyFile: string,
  dryRun: boolean,
): Promise<{ path: string; changed: boolean }> {
  const snap = await readConfig(stateDir);
  const root: JsonObject = snap.root ?? {};
  const secrets = isPlainObject(root.secrets) ? root.secrets : {};
  const providers = isPlainObject(secrets.providers) ? secrets.providers : {};
  const existing = providers[alias];
  if (existing !== undefined) {
    if (
      isPlainObject(existing) &&
      existing.source === 'file' &&
      existing.path === keyFile &&
      (existing.mode === undefined || existing.mode === 'singleValue')
    ) {
      return { path: snap.path, changed: false };
    }
    throw new StoreError(
      `${CONFIG_FILE} already defines secrets.providers.${alias} differently; choose another --provider-alias`,
    );
  }
  if (dryRun) return { path: snap.path, changed: true };
  setOwn(providers, alias, { source: 'file', path: keyFile, mode: 'singleValue' });
  setOwn(secrets, 'providers', providers);
  setOwn(root, 'secrets', secrets);
  try {
    await writeFileAtomic(snap.path, configText(root), { mode: snap.mode });
  } catch (err) {
    throw new StoreError(`cannot write ${CONFIG_FILE}: ${fsReason(err)}`);
  }
  return { path: snap.path, changed: true };
}
