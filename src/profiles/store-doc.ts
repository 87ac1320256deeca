// Owns the auth-profile store document: parsing (zod), classification and the pure rewrite plan.
import * as z from 'zod';
import type { ProfileForm, ProfileResult, RefTarget } from './types.ts';

/** Stores larger than this are refused: a real store is a few KiB; this guards memory and time. */
export const MAX_STORE_BYTES = 16 * 1024 * 1024;

const SecretRefObject = z.looseObject({
  source: z.string(),
  provider: z.string().optional(),
  id: z.string(),
});
/** A ref object, or the env shorthand `"${VAR}"` / `"$VAR"` OpenClaw accepts in config. */
const SecretRef = z.union([z.string(), SecretRefObject]);

const Credential = z.looseObject({
  type: z.string().optional(),
  provider: z.string().optional(),
  key: z.string().optional(),
  api_key: z.string().optional(),
  keyRef: SecretRef.optional(),
});

const VersionedStore = z.looseObject({
  version: z.number().int().nonnegative().optional(),
  profiles: z.record(z.string(), Credential),
  order: z.record(z.string(), z.unknown()).optional(),
  lastGood: z.record(z.string(), z.unknown()).optional(),
  usageStats: z.record(z.string(), z.unknown()).optional(),
});

/** The pre-versioning file: provider → credential, no wrapper. */
const FlatStore = z.record(z.string(), Credential);

type Json = unknown;
type JsonObject = Record<string, Json>;

export type StoreShape = 'versioned' | 'flat';

/**
 * A parsed store. `root` is the document exactly as `JSON.parse` returned it: zod only
 * validates, so every field it does not know (and their order) survives a rewrite.
 */
export interface StoreDoc {
  shape: StoreShape;
  root: JsonObject;
  /** Whether the source text ended with a newline (kept on rewrite). */
  trailingNewline: boolean;
}

export type ParseOutcome = { ok: true; doc: StoreDoc } | { ok: false; error: string };

export class StoreError extends Error {
  override name = 'StoreError';
}

function isPlainObject(v: unknown): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Defines an own enumerable property, so a `__proto__` key stays data instead of a prototype. */
function setOwn(obj: JsonObject, key: string, value: Json): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * Parses store text. Errors name the problem and a position or field path, never a value:
 * `JSON.parse` messages quote the input, so only their position is kept.
 */
export function parseStoreText(text: string): ParseOutcome {
  if (text.charCodeAt(0) === 0xfeff) {
    return { ok: false, error: 'store starts with a UTF-8 byte-order mark (BOM); OpenClaw cannot read it' };
  }
  let root: unknown;
  try {
    root = JSON.parse(text);
  } catch (err) {
    const pos = /position (\d+)/.exec(String((err as Error).message))?.[1];
    const where = pos === undefined ? ' (unexpected end of input)' : ` (at byte offset ${pos})`;
    return { ok: false, error: `store is not valid JSON${where}; truncated or corrupt` };
  }
  return parseStoreValue(root, /\n$/.test(text));
}

export function parseStoreValue(root: unknown, trailingNewline = false): ParseOutcome {
  if (!isPlainObject(root)) {
    const kind = Array.isArray(root) ? 'an array' : root === null ? 'null' : `a ${typeof root}`;
    return { ok: false, error: `store top level is ${kind}, expected a JSON object` };
  }
  const versioned = 'profiles' in root || 'version' in root;
  const parsed = versioned ? VersionedStore.safeParse(root) : FlatStore.safeParse(root);
  if (!parsed.success) {
    return { ok: false, error: `store has an unexpected shape: ${formatIssues(parsed.error)}` };
  }
  return { ok: true, doc: { shape: versioned ? 'versioned' : 'flat', root, trailingNewline } };
}

/** Issue paths are profile ids and field names; zod messages name types, never input values. */
function formatIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.length ? i.path.map(String).join('.') : '(root)'}: ${i.message}`)
    .join('; ');
}

export interface ProfileEntry {
  /** As OpenClaw names it: the map key, or `<provider>:default` for a flat store. */
  profileId: string;
  /** Key of the entry in its container (the flat store's provider name). */
  entryKey: string;
  provider: string | undefined;
  credential: JsonObject;
}

export function profileEntries(doc: StoreDoc): ProfileEntry[] {
  const container = doc.shape === 'versioned' ? doc.root.profiles : doc.root;
  if (!isPlainObject(container)) return [];
  const out: ProfileEntry[] = [];
  for (const [entryKey, credential] of Object.entries(container)) {
    if (!isPlainObject(credential)) continue;
    const declared = typeof credential.provider === 'string' ? credential.provider : undefined;
    if (doc.shape === 'flat') {
      const profileId = entryKey.includes(':') ? entryKey : `${entryKey}:default`;
      out.push({ profileId, entryKey, provider: declared ?? profileId.split(':')[0], credential });
    } else {
      const prefix = entryKey.includes(':') ? entryKey.slice(0, entryKey.indexOf(':')) : undefined;
      out.push({ profileId: entryKey, entryKey, provider: declared ?? prefix, credential });
    }
  }
  return out;
}

function nonEmpty(v: unknown): string | undefined {
  return typeof v === 'string' && v.length > 0 ? v : undefined;
}

/** The plaintext key a credential carries (`key`, else the `api_key` alias). */
export function plaintextKey(credential: JsonObject): string | undefined {
  return nonEmpty(credential.key) ?? nonEmpty(credential.api_key);
}

function refSource(ref: unknown): string | undefined {
  if (typeof ref === 'string') return /^\$\{?[A-Z][A-Z0-9_]*\}?$/.test(ref) ? 'env' : undefined;
  if (isPlainObject(ref) && typeof ref.source === 'string') return ref.source;
  return undefined;
}

/**
 * Classifies one credential, or returns null when it is not an API-key credential (oauth and
 * token profiles are kept as they are and not reported). A ref of a source keyroll does not
 * manage (`exec`, …) is `unreadable`: never reported converged, never rewritten.
 */
export function classifyCredential(credential: JsonObject): ProfileForm | null {
  const type = credential.type;
  const hasKeyFields = 'key' in credential || 'api_key' in credential || 'keyRef' in credential;
  if (type !== undefined && type !== 'api_key') return null;
  if (type === undefined && !hasKeyFields) return null;
  if (credential.keyRef !== undefined) {
    const source = refSource(credential.keyRef);
    if (source === 'env') return 'keyRef-env';
    if (source === 'file') return 'keyRef-file';
    return 'unreadable';
  }
  return plaintextKey(credential) ? 'plaintext' : 'missing';
}

export function targetRef(target: RefTarget): JsonObject {
  return target.to === 'env'
    ? { source: 'env', provider: 'default', id: target.envVar }
    : { source: 'file', provider: target.providerAlias, id: 'value' };
}

export function targetForm(target: RefTarget): ProfileForm {
  return target.to === 'env' ? 'keyRef-env' : 'keyRef-file';
}

/** Rebuilds a credential with `keyRef` where `key`/`api_key`/`keyRef` stood, dropping the key fields. */
function rewriteCredential(credential: JsonObject, ref: Json): JsonObject {
  const out: JsonObject = {};
  let placed = false;
  for (const [k, v] of Object.entries(credential)) {
    if (k === 'key' || k === 'api_key' || k === 'keyRef') {
      if (!placed) setOwn(out, 'keyRef', ref);
      placed = true;
      continue;
    }
    setOwn(out, k, v);
  }
  if (!placed) setOwn(out, 'keyRef', ref);
  return out;
}

export interface StorePlan {
  profiles: ProfileResult[];
  /** Rewritten document, or null when nothing changes. */
  next: StoreDoc | null;
  /** Profiles whose ref was set or switched. */
  migrated: number;
  /** Plaintext keys found in managed profiles (in memory only, for a key file). */
  plaintextKeys: string[];
}

/**
 * Plans the rewrite of one store for `provider`: plaintext → target ref; a ref of the other
 * source (env ↔ file) → target ref; a ref with a stale `key`/`api_key` beside it loses the key.
 * With `target` null it only classifies.
 */
export function planStore(doc: StoreDoc, provider: string, target: RefTarget | null): StorePlan {
  const profiles: ProfileResult[] = [];
  const plaintextKeys: string[] = [];
  const replacements = new Map<string, JsonObject>();
  let migrated = 0;
  for (const entry of profileEntries(doc)) {
    if (entry.provider !== provider) continue;
    const form = classifyCredential(entry.credential);
    if (form === null) continue;
    const key = plaintextKey(entry.credential);
    if (key) plaintextKeys.push(key);
    let formAfter = form;
    if (target) {
      const want = targetForm(target);
      const switchRef =
        form === 'plaintext' || ((form === 'keyRef-env' || form === 'keyRef-file') && form !== want);
      const staleKey =
        (form === 'keyRef-env' || form === 'keyRef-file') &&
        ('key' in entry.credential || 'api_key' in entry.credential);
      if (switchRef) {
        replacements.set(entry.entryKey, rewriteCredential(entry.credential, targetRef(target)));
        formAfter = want;
        migrated++;
      } else if (staleKey) {
        replacements.set(entry.entryKey, rewriteCredential(entry.credential, entry.credential.keyRef));
      }
    }
    profiles.push({ profileId: entry.profileId, form, formAfter });
  }
  if (replacements.size === 0) return { profiles, next: null, migrated, plaintextKeys };
  return { profiles, next: replaceEntries(doc, replacements), migrated, plaintextKeys };
}

function replaceEntries(doc: StoreDoc, replacements: Map<string, JsonObject>): StoreDoc {
  const rebuild = (container: JsonObject): JsonObject => {
    const out: JsonObject = {};
    for (const [k, v] of Object.entries(container)) setOwn(out, k, replacements.get(k) ?? v);
    return out;
  };
  if (doc.shape === 'flat') return { ...doc, root: rebuild(doc.root) };
  const root: JsonObject = {};
  for (const [k, v] of Object.entries(doc.root)) {
    setOwn(root, k, k === 'profiles' && isPlainObject(v) ? rebuild(v) : v);
  }
  return { ...doc, root };
}

/** Serialises a JSON-file store the way OpenClaw writes it (2-space indent). */
export function serializeJsonStore(doc: StoreDoc): string {
  return JSON.stringify(doc.root, null, 2) + (doc.trailingNewline ? '\n' : '');
}

/** Serialises a store for a SQLite column (compact, as OpenClaw writes `store_json`). */
export function serializeSqliteStore(doc: StoreDoc): string {
  return JSON.stringify(doc.root);
}

/** Every non-empty string under a key-like field, so error text can be scrubbed as a backstop. */
export function secretStrings(root: unknown, out: Set<string> = new Set(), depth = 0): Set<string> {
  if (depth > 32) return out;
  if (Array.isArray(root)) for (const v of root) secretStrings(v, out, depth + 1);
  else if (isPlainObject(root)) {
    for (const [k, v] of Object.entries(root)) {
      if (
        typeof v === 'string' &&
        /^(key|api_key|apiKey|token|access|refresh|secret)$/i.test(k) &&
        v.length >= 6
      )
        out.add(v);
      else secretStrings(v, out, depth + 1);
    }
  }
  return out;
}
