// Test child for the crash-safety test: migrates a state dir back and forth (env ↔ file refs),
// purging plaintext backups once the stores verify, until it is killed. With CRASH_AT=k it SIGKILLs itself just before its k-th write-side
// operation (file open/write/chmod/fsync/close/rename/rm, SQLite exec/run). The hooks are
// installed here, on Node's own objects, so production code carries no test seam.
import { promises as fsp } from 'node:fs';
import { DatabaseSync } from 'node:sqlite';

const [stateDir, keyFile] = process.argv.slice(2);
if (!stateDir || !keyFile) throw new Error('usage: crash-child.ts STATE_DIR KEY_FILE');
const killAt = Number(process.env.CRASH_AT ?? '0');
let ops = 0;
function point(): void {
  ops++;
  if (killAt > 0 && ops >= killAt) process.kill(process.pid, 'SIGKILL');
}
type AnyFn = (...args: unknown[]) => unknown;
function hook(obj: object, names: string[]): void {
  const target = obj as Record<string, AnyFn>;
  for (const name of names) {
    const original = target[name];
    if (typeof original !== 'function') throw new Error(`cannot hook ${name}`);
    target[name] = function (this: unknown, ...args: unknown[]) {
      point();
      return original.apply(this, args);
    };
  }
}
if (killAt > 0) {
  const probe = await fsp.open(process.argv[1]!, 'r');
  const fileHandleProto = Object.getPrototypeOf(probe) as object;
  await probe.close();
  hook(fsp, ['open', 'rename', 'rm', 'chmod', 'mkdir', 'writeFile', 'unlink']);
  hook(fileHandleProto, ['writeFile', 'write', 'sync', 'chmod']);
  const db = new DatabaseSync(':memory:');
  const statementProto = Object.getPrototypeOf(db.prepare('SELECT 1')) as object;
  db.close();
  hook(DatabaseSync.prototype, ['exec']);
  hook(statementProto, ['run']);
}

const { migrateProfiles } = await import('../../src/profiles/index.ts');
process.stdout.write('ready\n');
const deadline = Date.now() + 30_000; // never outlive a test that failed to kill us
for (let i = 0; Date.now() < deadline; i++) {
  const target =
    i % 2 === 0
      ? ({ to: 'env', envVar: 'KILOCODE_API_KEY' } as const)
      : ({ to: 'file', keyFile, providerAlias: 'kilofile' } as const);
  const r = await migrateProfiles({ stateDir, provider: 'kilocode', target, purgePlaintextBackups: true });
  if (r.storesFailed > 0) {
    process.stderr.write(
      `store failed: ${r.stores
        .map((s) => s.error)
        .filter(Boolean)
        .join('; ')}\n`,
    );
    process.exit(3);
  }
}
