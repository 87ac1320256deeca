// Owns `keyroll profiles scan|migrate`: flags in, a table or JSON report out, exit code from the outcome.
import { isAbsolute, resolve } from 'node:path';
import * as z from 'zod';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, UsageError } from '../errors.ts';
import { durationFlag, flagIssues, millisecondsFlag } from '../flags.ts';
import {
  migrateProfiles,
  type ProfilesResult,
  type RefTarget,
  type StoreResult,
  scanProfiles,
} from '../profiles/index.ts';
import { type CommandContext, commandContext, fullUsage } from './shell.ts';
import type { Io } from './usage.ts';

const USAGE = `Usage:
  keyroll profiles scan --state-dir DIR [--provider P] [-o text|json]
  keyroll profiles migrate --state-dir DIR [--provider P] [--to env|file] [--env-var NAME]
                           [--key-file PATH] [--provider-alias A] [--purge-plaintext-backups]
                           [--dry-run] [-o text|json]

scan     classify every auth profile of the provider in every store (writes nothing)
migrate  rewrite plaintext keys (and refs of the other source) to a keyRef

Flags:
  --state-dir DIR        OpenClaw state dir (OPENCLAW_STATE_DIR), required
  --provider P           managed provider (default: kilocode)
  --to env|file          ref source to migrate to (default: env)
  --env-var NAME         env var of an env ref (default: KILOCODE_API_KEY)
  --key-file PATH        absolute path of the key file, required with --to file
  --provider-alias A     secrets provider alias of a file ref (default: kilofile)
  --busy-timeout DUR     SQLite busy timeout (default: 2s)
  --purge-plaintext-backups
                         once every store is migrated and verified, zero and remove the
                         credential backups (*.bak) that hold a plaintext key of the provider
  --dry-run              report what would change, write nothing

Deprecated (accepted with a warning; removed in the next release):
  --busy-timeout-ms N    use --busy-timeout (N milliseconds = Nms)

Exit codes: 0 done (also when nothing needed doing), 1 some store could not be read or
migrated, 2 bad usage.
`;

const Flags = z.object({
  'state-dir': z.string({ error: '--state-dir DIR is required' }).min(1, '--state-dir DIR is required'),
  provider: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, '--provider must be a provider id such as kilocode')
    .default('kilocode'),
  to: z.enum(['env', 'file'], { error: '--to must be env or file' }).default('env'),
  'env-var': z
    .string()
    .regex(/^[A-Z][A-Z0-9_]{0,127}$/, '--env-var must match ^[A-Z][A-Z0-9_]{0,127}$')
    .default('KILOCODE_API_KEY'),
  'key-file': z.string().refine(isAbsolute, '--key-file must be an absolute path').optional(),
  'provider-alias': z
    .string()
    .regex(/^[a-z][a-z0-9_-]{0,63}$/, '--provider-alias must match ^[a-z][a-z0-9_-]{0,63}$')
    .default('kilofile'),
  'busy-timeout': durationFlag(0, 600_000).default(2000),
  'purge-plaintext-backups': z.boolean().default(false),
  'dry-run': z.boolean().default(false),
});
type Flags = z.infer<typeof Flags>;

export async function run(argv: string[], io: Io): Promise<number> {
  const [sub, ...rest] = argv;
  if (!sub || sub === '--help' || sub === '-h' || sub === 'help') {
    (sub ? io.stdout : io.stderr)(fullUsage(SPEC));
    return sub ? EXIT_OK : EXIT_USAGE;
  }
  if (sub !== 'scan' && sub !== 'migrate')
    throw new UsageError(`unknown subcommand '${sub}' (expected scan or migrate)`);
  const ctx = commandContext(rest, io, { ...SPEC, name: `profiles ${sub}` });
  try {
    if (ctx.help) return EXIT_OK;
    return await (sub === 'scan' ? scan(ctx, rest) : migrate(ctx));
  } finally {
    ctx.dispose();
  }
}

const SPEC = {
  name: 'profiles',
  usage: USAGE,
  deprecated: { 'busy-timeout-ms': millisecondsFlag('busy-timeout', 'busy-timeout-ms') },
} as const;

function parse(ctx: CommandContext): Flags {
  const given = Object.entries(ctx.values).filter(([, v]) => v !== undefined);
  const parsed = Flags.safeParse(Object.fromEntries(given));
  if (!parsed.success) throw new UsageError(flagIssues(parsed.error, (f) => `--${f}`));
  return parsed.data;
}

async function scan(ctx: CommandContext, rest: readonly string[]): Promise<number> {
  const flags = parse(ctx);
  for (const f of [
    'to',
    'env-var',
    'key-file',
    'provider-alias',
    'dry-run',
    'purge-plaintext-backups',
  ] as const) {
    if (rest.some((a) => a === `--${f}` || a.startsWith(`--${f}=`)))
      throw new UsageError(`--${f} applies to migrate only`);
  }
  const result = await scanProfiles({
    stateDir: resolve(flags['state-dir']),
    provider: flags.provider,
    busyTimeoutMs: flags['busy-timeout'],
  });
  ctx.stdout(
    ctx.output === 'json'
      ? `${JSON.stringify(toJson('scan', result, false), null, 2)}\n`
      : renderText('scan', result, false),
  );
  return result.storesFailed > 0 ? EXIT_NOT_DONE : EXIT_OK;
}

async function migrate(ctx: CommandContext): Promise<number> {
  const flags = parse(ctx);
  let target: RefTarget;
  if (flags.to === 'file') {
    if (!flags['key-file']) throw new UsageError('--to file requires --key-file PATH (absolute)');
    target = { to: 'file', keyFile: flags['key-file'], providerAlias: flags['provider-alias'] };
  } else {
    if (flags['key-file']) throw new UsageError('--key-file applies to --to file only');
    target = { to: 'env', envVar: flags['env-var'] };
  }
  const result = await migrateProfiles({
    stateDir: resolve(flags['state-dir']),
    provider: flags.provider,
    target,
    dryRun: flags['dry-run'],
    busyTimeoutMs: flags['busy-timeout'],
    purgePlaintextBackups: flags['purge-plaintext-backups'],
  });
  ctx.stdout(
    ctx.output === 'json'
      ? `${JSON.stringify(toJson('migrate', result, flags['dry-run']), null, 2)}\n`
      : renderText('migrate', result, flags['dry-run']),
  );
  const setupFailed = result.keyFile?.status === 'failed' || Boolean(result.config?.error);
  return result.storesFailed > 0 || setupFailed ? EXIT_NOT_DONE : EXIT_OK;
}

/** The report's JSON: one entry per store; forms and errors only, never a value. */
export function toJson(command: 'scan' | 'migrate', r: ProfilesResult, dryRun: boolean) {
  return {
    command,
    dryRun,
    ok: r.storesFailed === 0,
    profilesMigrated: r.profilesMigrated,
    storesFailed: r.storesFailed,
    backupsHardened: r.backupsHardened,
    backupsPlaintext: r.backupsPlaintext,
    ...(r.backupsPurged !== undefined ? { backupsPurged: r.backupsPurged } : {}),
    stores: r.stores.map((s) => ({
      path: s.path,
      layout: s.layout,
      agentId: s.agentId,
      changed: s.changed,
      error: s.error,
      profiles: s.profiles.map((p) => ({ profileId: p.profileId, before: p.form, after: p.formAfter })),
    })),
    ...(r.keyFile ? { keyFile: r.keyFile } : {}),
    ...(r.config ? { config: r.config } : {}),
    warnings: r.warnings,
  };
}

function pad(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ')}`.trimEnd()).join('\n');
}

function storeBlock(s: StoreResult, command: 'scan' | 'migrate'): string {
  const state = s.error ? 'FAILED' : s.changed ? 'changed' : 'unchanged';
  const head = `${s.path}  [${s.layout}${s.agentId ? `, agent ${s.agentId}` : ''}]  ${state}`;
  const rows: string[][] = [command === 'scan' ? ['profile', 'form'] : ['profile', 'before', '', 'after']];
  for (const p of s.profiles) {
    rows.push(command === 'scan' ? [p.profileId, p.form] : [p.profileId, p.form, '→', p.formAfter]);
  }
  const body = s.profiles.length ? pad(rows) : '  (no profiles of the provider)';
  return `${head}\n${body}${s.error ? `\n  error: ${s.error}` : ''}`;
}

export function renderText(command: 'scan' | 'migrate', r: ProfilesResult, dryRun: boolean): string {
  const parts: string[] = [];
  if (r.stores.length === 0) parts.push('No auth-profile stores found.');
  for (const s of r.stores) parts.push(storeBlock(s, command));
  if (r.keyFile) {
    parts.push(
      `key file ${r.keyFile.path}: ${r.keyFile.status}${r.keyFile.error ? ` (${r.keyFile.error})` : ''}`,
    );
    if (r.keyFile.differingKeys > 0) {
      parts.push(
        `  ${r.keyFile.differingKeys} plaintext key(s) differed from the key file and were dropped from the stores`,
      );
    }
  }
  if (r.config) {
    parts.push(
      `config ${r.config.path}: ${r.config.error ? `FAILED (${r.config.error})` : r.config.changed ? 'file provider registered' : 'unchanged'}`,
    );
  }
  for (const w of r.warnings) parts.push(`warning: ${w}`);
  const verb = command === 'scan' ? 'scanned' : dryRun ? 'would migrate' : 'migrated';
  const summary =
    command === 'scan'
      ? `${r.stores.length} store(s) scanned, ${r.storesFailed} unreadable, ${r.backupsHardened} credential backup(s)`
      : `${r.profilesMigrated} profile(s) ${verb}, ${r.storesFailed} store(s) failed, ${r.backupsHardened} credential backup(s) ${dryRun ? 'found' : 'at 0600'}`;
  const backups = [
    r.backupsPurged !== undefined ? `${r.backupsPurged} plaintext backup(s) purged` : '',
    r.backupsPlaintext > 0 ? `${r.backupsPlaintext} backup(s) still hold a plaintext key` : '',
  ].filter(Boolean);
  parts.push(`${dryRun ? '[dry run] ' : ''}${[summary, ...backups].join(', ')}`);
  return `${parts.join('\n\n')}\n`;
}
