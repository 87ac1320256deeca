// Owns the auth-profile store document: parsing (checked by hand: the in-pod controller loads this
// and has no memory for zod), classification and the pure rewrite plan.
import { type Issues, issuesText, typeIssue } from './json-shape.ts';
import type { ProfileForm, ProfileResult, RefTarget } from './types.ts';

/** Stores larger than this are refused: a real store is a few KiB; this guards memory and time. */
export const MAX_STORE_BYTES = 16 * 1024 * 1024;

type Json = unknown;
type JsonObject = Record<string, Json>;

export type StoreShape = 'versioned' | 'flat';

/**
 * A parsed store. `root` is the document exactly as `JSON.parse` returned it: the shape is only
 * checked, so every field it does not know (and their order) survives a rewrite.
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
  const issues: Issues = [];
  if (versioned) checkVersionedStore(root, issues);
  else checkCredentials(root, [], issues);
  if (issues.length > 0)
    return { ok: false, error: `store has an unexpected shape: ${issuesText(issues, 3)}` };
  return { ok: true, doc: { shape: versioned ? 'versioned' : 'flat', root, trailingNewline } };
}

// The shapes OpenClaw writes. Fields not named here are kept as they are (only checked, never
// stripped); issue paths are profile ids and field names, never values.

/** `{version?, profiles: {id: credential}, order?, lastGood?, usageStats?}`. */
function checkVersionedStore(root: JsonObject, issues: Issues): void {
  const version = root.version;
  if (version !== undefined) {
    if (typeof version !== 'number') issues.push(typeIssue(['version'], 'number', version));
    else if (!Number.isInteger(version)) issues.push(typeIssue(['version'], 'int', version));
    else if (version < 0) issues.push({ path: ['version'], message: 'Too small: expected number to be >=0' });
  }
  if (!isPlainObject(root.profiles)) issues.push(typeIssue(['profiles'], 'record', root.profiles));
  else checkCredentials(root.profiles, ['profiles'], issues);
  for (const field of ['order', 'lastGood', 'usageStats']) {
    const v = root[field];
    if (v !== undefined && !isPlainObject(v)) issues.push(typeIssue([field], 'record', v));
  }
}

/** Every value of `container` a credential: an object whose key fields are strings and whose keyRef is a ref. */
function checkCredentials(container: JsonObject, at: string[], issues: Issues): void {
  for (const [id, credential] of Object.entries(container)) {
    const path = [...at, id];
    if (!isPlainObject(credential)) {
      issues.push(typeIssue(path, 'object', credential));
      continue;
    }
    for (const field of ['type', 'provider', 'key', 'api_key']) {
      const v = credential[field];
      if (v !== undefined && typeof v !== 'string') issues.push(typeIssue([...path, field], 'string', v));
    }
    const ref = credential.keyRef;
    if (ref !== undefined && !isSecretRef(ref))
      issues.push({ path: [...path, 'keyRef'], message: 'Invalid input' });
  }
}

/** A ref object `{source, provider?, id}`, or the env shorthand `"${VAR}"` / `"$VAR"` OpenClaw accepts. */
function isSecretRef(v: unknown): boolean {
  if (typeof v === 'string') return true;
  return (
    isPlainObject(v) &&
    typeof v.source === 'string' &&
    typeof v.id === 'string' &&
    (v.provider === undefined || typeof v.provider === 'string')
  );
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
