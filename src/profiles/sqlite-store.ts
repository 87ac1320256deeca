// Owns reading and transactionally rewriting auth-profile stores kept in OpenClaw's SQLite databases.
import { DatabaseSync } from 'node:sqlite';
import { checkStoreFile } from './json-store.ts';
import {
  MAX_STORE_BYTES,
  parseStoreText,
  type StoreDoc,
  StoreError,
  serializeSqliteStore,
} from './store-doc.ts';
import type { StoreLayout } from './types.ts';

export const DEFAULT_BUSY_TIMEOUT_MS = 2000;

/** Starts the message of a read that gave up on a locked database (see `isBusyStoreError`). */
const BUSY_MESSAGE = 'database is locked by another process';

/** True for a store error that only says the database was locked: the next read may succeed. */
export function isBusyStoreError(message: string | null): boolean {
  return message?.startsWith(BUSY_MESSAGE) ?? false;
}

/** SQLITE_BUSY (5) or SQLITE_LOCKED (6); extended codes keep the primary one in the low byte. */
function isBusy(err: unknown): boolean {
  const code = (err as { errcode?: unknown } | null)?.errcode;
  return typeof code === 'number' && ((code & 0xff) === 5 || (code & 0xff) === 6);
}

/** Where in a database the store JSON sits. */
interface CellSpec {
  table: string;
  keyColumn: string;
  valueColumn: string;
  key: string;
  /** Timestamp column refreshed on rewrite, if the table has one. */
  updatedColumn: string | null;
  updatedUnit: 'ms';
}

/**
 * 2026.6.x per-agent store, measured on 2026.6.8 onboarding:
 * `auth_profile_store(store_key TEXT PRIMARY KEY, store_json TEXT NOT NULL, updated_at INTEGER NOT NULL)`,
 * row `store_key='primary'`, `updated_at` in epoch ms. 2026.9.6 still writes it (same columns,
 * STRICT): `openclaw secrets apply` puts its refs here, not in the state database.
 */
const AGENT_TABLE = 'auth_profile_store';
/**
 * 2026.9.x gateway-wide store, measured on databases 2026.9.6 wrote (test/fixtures/profiles/openclaw-2026.9.6):
 * `config_machine_state(state_key TEXT NOT NULL PRIMARY KEY, value_json TEXT NOT NULL, updated_at_ms INTEGER NOT NULL) STRICT`,
 * row `state_key='authProfiles.store'`, beside `auth.sharedStore` = `{"location":"state-db"}`.
 * Columns are still discovered with `PRAGMA table_info` from the candidates below, for 9.x
 * releases not measured; any other shape is reported unreadable instead of guessed at.
 */
const STATE_TABLE = 'config_machine_state';
const STATE_KEY = 'authProfiles.store';
const STATE_KEY_COLUMNS = ['state_key', 'key', 'config_key', 'machine_key'];
const STATE_VALUE_COLUMNS = ['value_json', 'value', 'json', 'state_json'];
const STATE_UPDATED_COLUMNS = ['updated_at_ms', 'updated_at'];

const Identifier = /^[A-Za-z_][A-Za-z0-9_]*$/;

function q(name: string): string {
  if (!Identifier.test(name)) throw new StoreError('unexpected column name in store table');
  return `"${name}"`;
}

/** SQLite's own message (it never quotes row data), without the path noise. */
export function sqliteReason(err: unknown): string {
  const e = err as { errstr?: unknown; message?: unknown; code?: unknown };
  const text =
    typeof e.errstr === 'string' ? e.errstr : typeof e.message === 'string' ? e.message : 'unknown error';
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

function columns(db: DatabaseSync, table: string): string[] | null {
  const exists = db.prepare("SELECT 1 AS one FROM sqlite_master WHERE type='table' AND name=?").get(table);
  if (!exists) return null;
  const rows = db.prepare(`PRAGMA table_info(${q(table)})`).all();
  const names: string[] = [];
  for (const r of rows) if (typeof r.name === 'string') names.push(r.name);
  return names;
}

/** The cell holding the store, or null when this database holds no store of the layout. */
function cellSpec(db: DatabaseSync, layout: StoreLayout): CellSpec | null {
  if (layout === 'sqlite-agent') {
    const cols = columns(db, AGENT_TABLE);
    if (!cols) return null;
    if (!cols.includes('store_key') || !cols.includes('store_json')) {
      throw new StoreError(`table ${AGENT_TABLE} has an unknown shape (columns: ${cols.join(', ')})`);
    }
    return {
      table: AGENT_TABLE,
      keyColumn: 'store_key',
      valueColumn: 'store_json',
      key: 'primary',
      updatedColumn: cols.includes('updated_at') ? 'updated_at' : null,
      updatedUnit: 'ms',
    };
  }
  const cols = columns(db, STATE_TABLE);
  if (!cols) return null;
  const keyColumn = STATE_KEY_COLUMNS.find((c) => cols.includes(c));
  const valueColumn = STATE_VALUE_COLUMNS.find((c) => cols.includes(c));
  if (!keyColumn || !valueColumn) {
    throw new StoreError(`table ${STATE_TABLE} has an unknown shape (columns: ${cols.join(', ')})`);
  }
  return {
    table: STATE_TABLE,
    keyColumn,
    valueColumn,
    key: STATE_KEY,
    updatedColumn: STATE_UPDATED_COLUMNS.find((c) => cols.includes(c)) ?? null,
    updatedUnit: 'ms',
  };
}

function readCell(db: DatabaseSync, spec: CellSpec): StoreDoc | null {
  const row = db
    .prepare(`SELECT ${q(spec.valueColumn)} AS v FROM ${q(spec.table)} WHERE ${q(spec.keyColumn)} = ?`)
    .get(spec.key);
  if (!row) return null;
  const v = row.v;
  if (typeof v !== 'string') throw new StoreError(`${spec.table}.${spec.valueColumn} is not text`);
  if (v.length > MAX_STORE_BYTES) throw new StoreError('store value is over the size limit');
  const parsed = parseStoreText(v);
  if (!parsed.ok) throw new StoreError(parsed.error);
  return parsed.doc;
}

function open(path: string, readOnly: boolean, busyTimeoutMs: number): DatabaseSync {
  let db: DatabaseSync;
  try {
    db = new DatabaseSync(path, { readOnly });
  } catch (err) {
    throw new StoreError(`cannot open database: ${sqliteReason(err)}`);
  }
  try {
    db.exec(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`);
  } catch (err) {
    db.close();
    throw new StoreError(`cannot configure database: ${sqliteReason(err)}`);
  }
  return db;
}

function guard<T>(what: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    if (err instanceof StoreError) throw err;
    throw new StoreError(`${what}: ${sqliteReason(err)}`);
  }
}

/**
 * Reads the store of `layout` from the database, or null when it holds none. Opens read-only.
 *
 * Never blocks the event loop on a lock: node:sqlite is synchronous, and a `busy_timeout` would
 * sleep inside SQLite on the JS thread (the controller's `/_kilo/state` scan held every request,
 * proxied ones included, for up to 2 s). Each attempt runs with the busy handler off; on
 * SQLITE_BUSY the read is retried after an async sleep (5 ms doubling to 100 ms) until
 * `busyTimeoutMs` has passed, then fails with a `database is locked…` StoreError.
 */
export async function readSqliteStore(
  path: string,
  layout: StoreLayout,
  busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS,
): Promise<StoreDoc | null> {
  await checkStoreFile(path);
  const deadline = performance.now() + busyTimeoutMs;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    const db = open(path, true, 0);
    try {
      const spec = cellSpec(db, layout);
      return spec ? readCell(db, spec) : null;
    } catch (err) {
      if (err instanceof StoreError) throw err;
      if (!isBusy(err)) throw new StoreError(`cannot read store: ${sqliteReason(err)}`);
      const left = deadline - performance.now();
      if (left <= 0) throw new StoreError(`${BUSY_MESSAGE} (gave up after ${busyTimeoutMs} ms)`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(delay, left)));
    } finally {
      db.close();
    }
  }
}

export interface SqliteUpdate {
  /** False when there was no store or `rewrite` returned null (nothing written). */
  written: boolean;
  /** A post-commit step (VACUUM, checkpoint) failed; the new content is committed. */
  warning: string | null;
}

/**
 * Re-reads the store inside one `BEGIN IMMEDIATE` transaction, applies `rewrite`, and commits
 * only when it returns a document. After a commit the old content is scrubbed from the file:
 * `secure_delete` zeroes freed cells, `VACUUM` rebuilds every page, and a TRUNCATE checkpoint
 * empties the WAL.
 */
export async function updateSqliteStore(
  path: string,
  layout: StoreLayout,
  rewrite: (doc: StoreDoc) => StoreDoc | null,
  busyTimeoutMs = DEFAULT_BUSY_TIMEOUT_MS,
): Promise<SqliteUpdate> {
  const st = await checkStoreFile(path);
  if ((st.mode & 0o200) === 0) {
    throw new StoreError(
      `database is read-only (mode 0${(st.mode & 0o777).toString(8)}); refusing to modify it`,
    );
  }
  const db = open(path, false, busyTimeoutMs);
  try {
    const written = guard('cannot update store', () => {
      db.exec('PRAGMA secure_delete = ON');
      db.exec('BEGIN IMMEDIATE');
      try {
        const spec = cellSpec(db, layout);
        const doc = spec ? readCell(db, spec) : null;
        const next = spec && doc ? rewrite(doc) : null;
        if (!spec || !next) {
          db.exec('ROLLBACK');
          return false;
        }
        const set = spec.updatedColumn
          ? `${q(spec.valueColumn)} = ?, ${q(spec.updatedColumn)} = ?`
          : `${q(spec.valueColumn)} = ?`;
        const args: (string | number)[] = [serializeSqliteStore(next)];
        if (spec.updatedColumn) args.push(Date.now());
        args.push(spec.key);
        db.prepare(`UPDATE ${q(spec.table)} SET ${set} WHERE ${q(spec.keyColumn)} = ?`).run(...args);
        db.exec('COMMIT');
        return true;
      } catch (err) {
        if (db.isTransaction) db.exec('ROLLBACK');
        throw err;
      }
    });
    if (!written) return { written, warning: null };
    try {
      db.exec('VACUUM');
      db.prepare('PRAGMA wal_checkpoint(TRUNCATE)').get();
      return { written, warning: null };
    } catch (err) {
      return {
        written,
        warning: `store rewritten, but compacting the database failed: ${sqliteReason(err)}`,
      };
    }
  } finally {
    db.close();
  }
}
