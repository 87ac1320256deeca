import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterEach, describe, expect, it } from 'vitest';
import { migrateProfiles, profileForms, scanProfiles } from '../../src/profiles/index.ts';
import {
  agentDir,
  ENV_REF,
  KEY_A,
  KEY_B,
  readAgentDb,
  readStateDb,
  versionedStore,
  writeAgentDb,
  writeStateDb,
} from '../fixtures/profiles/generate.ts';
import { stateDirs } from './support.ts';

const ENV = { to: 'env', envVar: 'KILOCODE_API_KEY' } as const;
const stateDir = stateDirs();
const open: DatabaseSync[] = [];
afterEach(() => {
  for (const db of open.splice(0)) if (db.isOpen) db.close();
});

/** Raw bytes of the database and its side files, for grepping and byte-identity checks. */
function rawFiles(path: string): Record<string, Buffer> {
  const out: Record<string, Buffer> = {};
  for (const suffix of ['', '-wal', '-shm', '-journal']) {
    if (existsSync(path + suffix)) out[suffix || 'db'] = readFileSync(path + suffix);
  }
  return out;
}
function digest(path: string) {
  const st = lstatSync(path);
  return { sha: createHash('sha256').update(readFileSync(path)).digest('hex'), mtimeMs: st.mtimeMs };
}

describe('sqlite-agent store (2026.6.x)', () => {
  it('migrates, keeps every other field, leaves no plaintext in the db, WAL or shm, and is idempotent', async () => {
    const dir = stateDir();
    const store = versionedStore();
    const path = writeAgentDb(dir, 'main', store);
    // Leave the plaintext in un-checkpointed WAL frames too, as a running gateway would.
    const writer = new DatabaseSync(path);
    writer.exec('PRAGMA wal_autocheckpoint = 0');
    writer.prepare("UPDATE auth_profile_store SET updated_at = 2 WHERE store_key = 'primary'").run();
    writer.prepare('INSERT INTO cache_entries VALUES (?, ?, ?, ?, ?, ?)').run('s', 'k', '{}', null, null, 1);
    const before = rawFiles(path);
    expect(Object.values(before).some((b) => b.includes(KEY_A))).toBe(true);
    writer.close();
    // a connection closing checkpoints; make a fresh un-checkpointed frame again
    const w2 = new DatabaseSync(path);
    open.push(w2);
    w2.exec('PRAGMA wal_autocheckpoint = 0');
    w2.prepare("UPDATE auth_profile_store SET updated_at = 3 WHERE store_key = 'primary'").run();
    w2.close();

    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.storesFailed).toBe(0);
    expect(r.stores).toEqual([
      {
        path,
        layout: 'sqlite-agent',
        agentId: 'main',
        changed: true,
        error: null,
        profiles: [{ profileId: 'kilocode:default', form: 'plaintext', formAfter: 'keyRef-env' }],
      },
    ]);
    const expected = structuredClone(store) as { profiles: Record<string, Record<string, unknown>> };
    delete expected.profiles['kilocode:default']!.key;
    expected.profiles['kilocode:default']!.keyRef = ENV_REF;
    expect(readAgentDb(path)).toEqual(expected);
    for (const [name, bytes] of Object.entries(rawFiles(path))) {
      expect(bytes.includes(KEY_A), `plaintext left in ${name}`).toBe(false);
    }
    expect(lstatSync(path).mode & 0o777).toBe(0o600);

    const d1 = digest(path);
    const again = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(again.stores[0]!.changed).toBe(false);
    expect(again.profilesMigrated).toBe(0);
    expect(digest(path)).toEqual(d1);
  });

  it('a database without a primary store row is not a store; a declared profile is then missing', async () => {
    const dir = stateDir();
    writeAgentDb(dir, 'main', null);
    const r = await scanProfiles({ stateDir: dir, provider: 'kilocode' });
    expect(r.stores).toEqual([]);
  });

  it('a corrupt database file is reported and left byte-identical', async () => {
    const dir = stateDir();
    const path = join(agentDir(dir, 'main'), 'openclaw-agent.sqlite');
    writeFileSync(
      path,
      Buffer.concat([Buffer.from('not a database at all '), Buffer.from(KEY_A), Buffer.alloc(4096, 7)]),
      {
        mode: 0o600,
      },
    );
    const before = digest(path);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.storesFailed).toBe(1);
    expect(r.stores[0]!.error).toMatch(/not a database/);
    expect(JSON.stringify(r)).not.toContain(KEY_A);
    expect(digest(path)).toEqual(before);
    expect(existsSync(`${path}-wal`)).toBe(false);
    expect(profileForms(r)[0]!.form).toBe('unreadable');
  });

  it('a database locked by another connection (BEGIN EXCLUSIVE) is reported and left unchanged', async () => {
    const dir = stateDir();
    const path = writeAgentDb(dir, 'main', versionedStore());
    const holder = new DatabaseSync(path);
    open.push(holder);
    holder.exec('BEGIN EXCLUSIVE');
    const started = Date.now();
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV, busyTimeoutMs: 150 });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(r.storesFailed).toBe(1);
    expect(r.stores[0]!.error).toMatch(/locked|busy/i);
    holder.exec('ROLLBACK');
    holder.close();
    expect(JSON.stringify(readAgentDb(path))).toContain(KEY_A);
    // and once the lock is gone, the migration goes through
    const ok = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(ok.profilesMigrated).toBe(1);
  });

  it('a read-only database (mode 0400) or a symlinked one is refused', async () => {
    const dir = stateDir();
    const path = writeAgentDb(dir, 'main', versionedStore());
    chmodSync(path, 0o400);
    const before = digest(path);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.stores[0]!.error).toMatch(/read-only/);
    expect(digest(path)).toEqual(before);
  });

  it('a store_json that is not valid is reported, and the row is left as it was', async () => {
    const dir = stateDir();
    const path = writeAgentDb(dir, 'main', versionedStore());
    const db = new DatabaseSync(path);
    db.prepare("UPDATE auth_profile_store SET store_json = ? WHERE store_key = 'primary'").run(
      `{"version":1,"profiles":[{"key":"${KEY_A}"}]}`,
    );
    db.close();
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.stores[0]!.error).toMatch(/profiles/);
    expect(JSON.stringify(r)).not.toContain(KEY_A);
  });
});

describe('sqlite-state store (2026.9.x, assumed schema)', () => {
  it('migrates the authProfiles.store row and leaves the other rows alone', async () => {
    const dir = stateDir();
    const path = writeStateDb(dir, versionedStore(KEY_B));
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.stores[0]).toMatchObject({
      path,
      layout: 'sqlite-state',
      agentId: null,
      changed: true,
      error: null,
    });
    expect(JSON.stringify(readStateDb(path))).toContain('"keyRef":{"source":"env"');
    for (const [name, bytes] of Object.entries(rawFiles(path))) {
      expect(bytes.includes(KEY_B), `plaintext left in ${name}`).toBe(false);
    }
    const db = new DatabaseSync(path, { readOnly: true });
    const rows = db.prepare('SELECT state_key FROM config_machine_state ORDER BY state_key').all();
    db.close();
    expect(rows.map((x) => x.state_key)).toEqual([
      'auth.sharedStore',
      'authProfiles.state',
      'authProfiles.store',
    ]);
    const d1 = digest(path);
    await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(digest(path)).toEqual(d1);
  });

  it('discovers other key/value column names', async () => {
    const dir = stateDir();
    const path = writeStateDb(
      dir,
      null,
      'CREATE TABLE config_machine_state (key TEXT PRIMARY KEY, value TEXT);',
    );
    const db = new DatabaseSync(path);
    db.prepare('INSERT INTO config_machine_state VALUES (?, ?)').run(
      'authProfiles.store',
      JSON.stringify(versionedStore()),
    );
    db.close();
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.profilesMigrated).toBe(1);
    expect(JSON.stringify(readStateDbAs(path, 'key', 'value'))).not.toContain(KEY_A);
  });

  it('an unknown table shape is unreadable, never guessed at', async () => {
    const dir = stateDir();
    const path = writeStateDb(
      dir,
      null,
      'CREATE TABLE config_machine_state (k TEXT PRIMARY KEY, blob_data BLOB);',
    );
    const before = digest(path);
    const r = await migrateProfiles({ stateDir: dir, provider: 'kilocode', target: ENV });
    expect(r.stores[0]).toMatchObject({ layout: 'sqlite-state', changed: false });
    expect(r.stores[0]!.error).toMatch(/unknown shape \(columns: k, blob_data\)/);
    expect(digest(path)).toEqual(before);
  });

  it('a 2026.6.x state db (no config_machine_state table) is not a store', async () => {
    const dir = stateDir();
    writeStateDb(
      dir,
      null,
      'CREATE TABLE auth_profile_stores (store_key TEXT PRIMARY KEY, store_json TEXT);',
    );
    const r = await scanProfiles({ stateDir: dir, provider: 'kilocode' });
    expect(r.stores).toEqual([]);
  });
});

function readStateDbAs(path: string, k: string, v: string): unknown {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const row = db
      .prepare(`SELECT ${v} AS v FROM config_machine_state WHERE ${k} = 'authProfiles.store'`)
      .get();
    return typeof row?.v === 'string' ? JSON.parse(row.v) : null;
  } finally {
    db.close();
  }
}
