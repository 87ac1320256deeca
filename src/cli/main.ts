// Owns the `keyroll` command line: picks the subcommand and maps failures to exit codes.
import { EXIT_USAGE, errorMessage, TerminalError, UsageError } from '../errors.ts';
import { type Command, type Io, processIo } from './usage.ts';

const USAGE = `keyroll — make API-key rotation reach running AI gateways, and prove it did

Usage: keyroll <command> [flags]

Commands:
  controller   in-pod controller: bootstrap, supervise the gateway, serve /_kilo/*
  profiles     scan | migrate OpenClaw auth-profile stores offline
  reconcile    one reconcile pass over all targets (--once; --targets FILE or --kube)
  diff         dry-run diff report (--targets FILE or --kube); writes nothing
  operator     Kubernetes operator for GatewayKey resources (leader-elected)
  fly          reconcile loop over the machines of a Fly app

Flags of every command:
  -o, --output text|json   report format (default text; --json is short for -o json)
  --log-level LEVEL        trace|debug|info|warn|error|fatal|silent [KEYROLL_LOG_LEVEL]
                           (default info for controller and operator, warn for the others)
  -h, --help               the command's flags
Where Kubernetes is used: -n/--namespace NS, --context NAME, --kubeconfig PATH.

Run \`keyroll <command> --help\` for the flags of a command.
`;

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * Takes `--log-level LEVEL` / `--log-level=LEVEL` out of a command's arguments (before a `--`),
 * so every command accepts it; the level travels as KEYROLL_LOG_LEVEL, which every command's
 * logger already reads.
 */
export function takeLogLevel(argv: readonly string[]): { argv: string[]; level?: string } {
  const out: string[] = [];
  let level: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    if (a === '--log-level' || a.startsWith('--log-level=')) {
      const v = a === '--log-level' ? argv[++i] : a.slice('--log-level='.length);
      if (v === undefined || !LOG_LEVELS.includes(v))
        throw new UsageError(`--log-level: expected one of ${LOG_LEVELS.join('|')}`);
      level = v;
      continue;
    }
    out.push(a);
  }
  return level === undefined ? { argv: out } : { argv: out, level };
}

const COMMANDS: Record<string, () => Promise<Command>> = {
  controller: async () => (await import('./controller.ts')).run,
  profiles: async () => (await import('./profiles.ts')).run,
  reconcile: async () => (await import('./reconcile.ts')).runReconcile,
  diff: async () => (await import('./reconcile.ts')).runDiff,
  operator: async () => (await import('./operator.ts')).run,
  fly: async () => (await import('./fly.ts')).run,
};

export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) {
    io.stderr(USAGE);
    return EXIT_USAGE;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    io.stdout(USAGE);
    return 0;
  }
  if (name === '--version' || name === '-v') {
    io.stdout(`${(await import('../version.ts')).VERSION}\n`);
    return 0;
  }
  const load = COMMANDS[name];
  if (!load) {
    io.stderr(`keyroll: unknown command '${name}'\nRun \`keyroll --help\` for the commands.\n`);
    return EXIT_USAGE;
  }
  try {
    const { argv: args, level } = takeLogLevel(rest);
    // In place: io.env is the process's env, which the controller also scrubs in place.
    if (level) io.env.KEYROLL_LOG_LEVEL = level;
    const command = await load();
    return await command(args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`keyroll ${name}: ${err.message}\nRun \`keyroll ${name} --help\` for usage.\n`);
      return EXIT_USAGE;
    }
    io.stderr(`keyroll ${name}: ${errorMessage(err)}\n`);
    return err instanceof TerminalError ? err.exitCode : EXIT_USAGE;
  }
}
