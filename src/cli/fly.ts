// Owns the `keyroll fly` command: flags and environment → zod-parsed config → Fly client, key
// source and controller token → the machines loop (or one pass) → report and exit code.
import * as z from 'zod';
import { type Clock, systemClock } from '../clock.ts';
import { runLoop } from '../engine/run-loop.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, errorMessage, UsageError } from '../errors.ts';
import { countFlag, durationFlag, type FlagValues, parseFlagValues, portFlag } from '../flags.ts';
import { DEFAULT_FLY_API_URL, FlyClient } from '../fly/client.ts';
import { flyLifecycle, flyStateFile } from '../fly/lifecycle.ts';
import { type FlyPassResult, runFlyPass } from '../fly/loop.ts';
import { renderFlyDiff, renderFlyJson, renderFlyPass } from '../fly/loop-report.ts';
import type { TargetOptions } from '../fly/targets.ts';
import { DEFAULT_POLICY } from '../lifecycle/lifecycle.ts';
import { type Announcer, httpAnnouncer, httpRevoker, type Revoker } from '../lifecycle/retire.ts';
import { renderLifecycle, type TargetsLifecycleResult } from '../lifecycle/targets-file.ts';
import { createProgress } from '../reconcile/progress.ts';
import { DEFAULT_RETRY } from '../reconcile/retry.ts';
import type { KeySource } from '../reconcile/sources/key-source.ts';
import { ConfigError, resolveToken, type SourceConfig } from '../reconcile/targets.ts';
import { type CommandContext, commandContext } from './shell.ts';
import { buildKeySource, sourceFromFlags } from './source-flags.ts';
import type { Io } from './usage.ts';

const USAGE = `Usage: keyroll fly -a APP [--once | --dry-run] [source flags] [options]

Keeps every machine of a Fly app on the desired key. Each pass lists the app's machines (and
skips the pass while a deploy is rolling), observes each started machine's controller
(GET /_kilo/state on its private address), sets the key as the app's Fly secret (staged: no
machine restarts; the key's durable copy, never in a machine's config.env), then takes at most
one action per machine:
  live     started machine whose running gateway lacks the key: POST /_kilo/env/patch through its
           controller under the machine lease, then verify until the running process proves it;
  durable  stopped machine whose config.env still holds a key: take it out under the lease with
           skip_launch and min_secrets_version (nothing boots; the app secret supplies the key).
A started machine's config is never written (any Fly update reboots or stops it); a key in it is
taken out the next time the machine is seen stopped, and is reported as "deferred" until then.

  -a, --app APP             Fly app (required) [FLY_APP]
  --once                    one pass, then exit
  --dry-run                 one pass that only reads (Fly API reads, controller GETs) and prints
                            the diff; writes nothing
  --interval DUR            between passes (default 5m)
  --jitter DUR              plus a random delay up to this (default 60s)
  --pass-deadline DUR       per pass (default 10m); unfinished work waits for the next pass
  --deadline DUR            per machine, live delivery plus verification (default 120s)
  --poll DUR                re-observe interval while verifying (default 500ms)
  --max-changes N           machines changed per pass, both classes together (default 5)
  --concurrency N, --max-unavailable N, --failure-budget N
                            live deliveries in flight, gateways restarting at once, failed
                            deliveries before the pass stops delivering (defaults 10, 1, 1)
  --retries N               retries per controller call (default ${DEFAULT_RETRY.retries})
  --require-durable         a deferred config write counts as not converged
  --env-var NAME            variable that carries the key (default KILOCODE_API_KEY)
  --delivery restart|file   must match the controllers' --delivery (default restart)
  --controller-port N       controller port on each machine (default 18789; metadata
                            keyroll_port on a machine overrides it)
  --controller-token-env NAME   controllers' bearer token from this env var
                            (default OPENCLAW_GATEWAY_TOKEN)
  --controller-token-file PATH  … or from a file
  --request-timeout DUR     per controller call (default 5s)
  --fly-api-url URL         default ${DEFAULT_FLY_API_URL} (or FLY_API_URL)

Key lifecycle (any of these turns it on; docs/fly.md, "Key lifecycle"):
  --state-file PATH         the app's lifecycle record (default ./keyroll-fly-APP.state.json; put
                            it on a volume when keyroll fly runs as a Fly machine)
  --retire-after DUR        grace between every machine proving the new key and the previous key
                            becoming retirable (default 60s)
  --revoke-url URL          POST {"version"} here to revoke a retirable previous key, oldest
                            first, once (2xx, or 409/410 = already revoked); never the current one
  --revoke-token-env NAME   bearer token for --revoke-url (default: --source-token-env's variable)
  --retire-webhook URL      POST {gatewayKey (the app), previousVersion, currentVersion,
                            provenTargets} once per retirable version (no key, no token)

Key source (one is required):
  --source-file PATH        file with the key, or a mounted Secret directory
  --source-key-name NAME    file name inside a Secret directory (default: --env-var)
  --source-url URL          HTTP API answering {key|token, version?, expiresAt?} to GET with a bearer
  --source-token-file PATH, --source-token-env NAME   bearer token for --source-url
  --mint-url URL            POSTed for a fresh key when expiresAt - now <= --refresh-before
  --refresh-before DUR      default 72h

Environment: FLY_API_TOKEN (required), FLY_APP, FLY_API_URL, KEYROLL_LOG_LEVEL (default warn).
Exit (--once, --dry-run): 0 every machine converged (dry run: no drift), 1 not (or mid-deploy),
2 error (usage, source, Fly API). The loop runs until SIGINT/SIGTERM and exits with the last
pass's code.
`;

/** Defaults, in the flags' own text form, so they pass the same parsing as given values. */
const RAW_DEFAULTS: Record<string, string | boolean> = {
  once: false,
  'dry-run': false,
  interval: '5m',
  jitter: '60s',
  'pass-deadline': '10m',
  deadline: '120s',
  poll: '500ms',
  'max-changes': '5',
  concurrency: '10',
  'max-unavailable': '1',
  'failure-budget': '1',
  retries: String(DEFAULT_RETRY.retries),
  'require-durable': false,
  'env-var': 'KILOCODE_API_KEY',
  delivery: 'restart',
  'controller-port': '18789',
  'request-timeout': '5s',
  'fly-api-url': DEFAULT_FLY_API_URL,
  'retire-after': '60s',
};

/** The flags that turn the key lifecycle on. */
const LIFECYCLE_FLAGS = ['state-file', 'retire-after', 'revoke-url', 'revoke-token-env', 'retire-webhook'];

/** Node's timers hold at most 2^31-1 ms (24.8 days); a longer delay would fire at once. */
const MAX_TIMER_MS = 2_147_483_647;

/** The command's configuration, keyed by flag name so every error names the flag. */
export const FlyConfigSchema = z
  .object({
    app: z
      .string({ error: 'is required' })
      .regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'expected a Fly app name (lower-case letters, digits, "-")'),
    once: z.boolean(),
    'dry-run': z.boolean(),
    interval: durationFlag(1000, MAX_TIMER_MS),
    jitter: durationFlag(0, MAX_TIMER_MS),
    'pass-deadline': durationFlag(1000, MAX_TIMER_MS),
    deadline: durationFlag(100, MAX_TIMER_MS),
    poll: durationFlag(10, MAX_TIMER_MS),
    'max-changes': countFlag(1),
    concurrency: countFlag(1),
    'max-unavailable': countFlag(1),
    'failure-budget': countFlag(1),
    retries: countFlag(0),
    'require-durable': z.boolean(),
    'env-var': z
      .string()
      .regex(/^[A-Z_][A-Z0-9_]*$/, 'expected an environment variable name such as KILOCODE_API_KEY'),
    delivery: z.enum(['restart', 'file']),
    'controller-port': portFlag(),
    'controller-token-env': z.string().min(1).optional(),
    'controller-token-file': z.string().min(1).optional(),
    'request-timeout': durationFlag(1, MAX_TIMER_MS),
    'fly-api-url': z.url({ protocol: /^https?$/ }),
    'state-file': z.string().min(1).optional(),
    'retire-after': durationFlag(0, MAX_TIMER_MS),
    'revoke-url': z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
    'revoke-token-env': z
      .string()
      .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'expected an environment variable name')
      .optional(),
    'retire-webhook': z.url({ protocol: /^https?$/, error: 'expected an http(s) URL' }).optional(),
    'fly-api-token': z.string({ error: 'is not set (a Fly API token)' }).min(1, 'is empty'),
  })
  .refine((c) => !(c['controller-token-env'] && c['controller-token-file']), {
    message: 'give --controller-token-env or --controller-token-file, not both',
  });

export type FlyConfig = z.infer<typeof FlyConfigSchema>;

/** One pass of the loop: the Fly pass and, with the lifecycle on, the app's lifecycle after it. */
interface FlyRun {
  pass: FlyPassResult;
  lifecycle: TargetsLifecycleResult | null;
}

/** What tests (and embedders) may inject. */
export interface FlyDeps {
  clock?: Clock;
  signal?: AbortSignal;
  random?: () => number;
  /** How to reach a controller at a URL (default HTTP). */
  controllerClient?: TargetOptions['client'];
}

function parseConfig(values: FlagValues, env: NodeJS.ProcessEnv): FlyConfig {
  const given = Object.entries(values).filter(([, v]) => v !== undefined);
  const raw: Record<string, unknown> = { ...RAW_DEFAULTS, ...Object.fromEntries(given) };
  if (values.app === undefined && env.FLY_APP) raw.app = env.FLY_APP;
  if (values['fly-api-url'] === undefined && env.FLY_API_URL) raw['fly-api-url'] = env.FLY_API_URL;
  if (env.FLY_API_TOKEN !== undefined) raw['fly-api-token'] = env.FLY_API_TOKEN;
  return parseFlagValues(FlyConfigSchema, raw, (f) => (f === 'fly-api-token' ? 'FLY_API_TOKEN' : `--${f}`));
}

function sourceConfig(v: FlagValues): SourceConfig {
  const source = sourceFromFlags(v);
  if (!source) throw new UsageError('a key source is required: --source-file PATH or --source-url URL');
  return source;
}

/**
 * The key lifecycle's set-up, or null when no lifecycle flag was given. The revoke token is read
 * here, before any work: a missing one is a usage error that contacts nothing.
 */
function lifecycleSetup(
  cfg: FlyConfig,
  values: FlagValues,
  env: NodeJS.ProcessEnv,
): { stateFile: string; revoker?: Revoker; announcer?: Announcer; token?: string } | null {
  if (!LIFECYCLE_FLAGS.some((f) => values[f] !== undefined)) return null;
  const stateFile = cfg['state-file'] ?? flyStateFile(cfg.app);
  const announcer = cfg['retire-webhook'] ? httpAnnouncer(cfg['retire-webhook']) : undefined;
  const url = cfg['revoke-url'];
  if (!url) return { stateFile, ...(announcer ? { announcer } : {}) };
  const name = cfg['revoke-token-env'] ?? (values['source-token-env'] as string | undefined);
  if (!name) {
    throw new UsageError(
      '--revoke-url needs --revoke-token-env NAME (or an HTTP source with --source-token-env)',
    );
  }
  const token = env[name];
  if (!token) throw new UsageError(`--revoke-token-env: ${name} is not set`);
  return { stateFile, revoker: httpRevoker(url, token), token, ...(announcer ? { announcer } : {}) };
}

function exitFor(p: FlyPassResult): number {
  return p.converged ? EXIT_OK : EXIT_NOT_DONE;
}

export async function runFly(argv: string[], io: Io, deps: FlyDeps = {}): Promise<number> {
  const ctx = commandContext(argv, io, { name: 'fly', usage: USAGE, progress: createProgress });
  try {
    if (ctx.help) return EXIT_OK;
    return await fly(ctx, io.env, deps);
  } finally {
    ctx.dispose();
  }
}

async function fly(ctx: CommandContext, env: NodeJS.ProcessEnv, deps: FlyDeps): Promise<number> {
  const cfg = parseConfig(ctx.values, env);
  const source = sourceConfig(ctx.values);
  const clock = deps.clock ?? systemClock;
  const { secrets } = ctx;
  secrets.add(cfg['fly-api-token']);
  const retirement = lifecycleSetup(cfg, ctx.values, env);
  if (retirement?.token) secrets.add(retirement.token);
  const log = ctx.log.child({ command: 'fly', app: cfg.app });

  let keySource: KeySource;
  let token: string;
  try {
    token = cfg['controller-token-file']
      ? await resolveToken(
          { file: cfg['controller-token-file'] },
          env,
          process.cwd(),
          '--controller-token-file',
        )
      : await resolveToken(
          { env: cfg['controller-token-env'] ?? 'OPENCLAW_GATEWAY_TOKEN' },
          env,
          process.cwd(),
          '--controller-token-env',
        );
    secrets.add(token);
    keySource = await buildKeySource(source, {
      env,
      baseDir: process.cwd(),
      envVar: cfg['env-var'],
      clock,
      secrets,
      versionKey: token,
    });
  } catch (err) {
    if (err instanceof ConfigError) {
      ctx.stderr(`keyroll fly: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }

  const flyApi = new FlyClient({ token: cfg['fly-api-token'], baseUrl: cfg['fly-api-url'], log });
  const signal = deps.signal ? AbortSignal.any([deps.signal, ctx.signal]) : ctx.signal;
  const dryRun = cfg['dry-run'];
  const policy = { ...DEFAULT_POLICY, retireAfterMs: cfg['retire-after'] };
  const { last, error } = await runLoop<FlyRun>({
    once: cfg.once || dryRun,
    intervalMs: cfg.interval,
    jitterMs: cfg.jitter,
    clock,
    signal,
    ...(deps.random ? { random: deps.random } : {}),
    log,
    pass: async () => {
      const key = await keySource.current(signal);
      secrets.add(key.key, 'key');
      const pass = await runFlyPass({
        fly: flyApi,
        app: cfg.app,
        key,
        spec: { envVar: cfg['env-var'], delivery: cfg.delivery },
        token,
        controllerPort: cfg['controller-port'],
        controllerTimeoutMs: cfg['request-timeout'],
        rollout: {
          concurrency: cfg.concurrency,
          maxUnavailable: cfg['max-unavailable'],
          failureBudget: cfg['failure-budget'],
          paused: false,
        },
        maxChanges: cfg['max-changes'],
        requireDurable: cfg['require-durable'],
        dryRun,
        env: {
          clock,
          log,
          retry: { ...DEFAULT_RETRY, retries: cfg.retries },
          deadlineMs: cfg.deadline,
          pollIntervalMs: cfg.poll,
          signal,
        },
        passDeadlineMs: cfg['pass-deadline'],
        ...(deps.controllerClient ? { client: deps.controllerClient } : {}),
        progress: (total) => ctx.progress(total, `fly ${cfg.app}`),
      });
      const lifecycle = retirement
        ? await flyLifecycle(pass, {
            stateFile: retirement.stateFile,
            policy,
            revoker: retirement.revoker,
            announcer: retirement.announcer,
            clock,
            log,
            signal,
          })
        : null;
      return { pass, lifecycle };
    },
    onPass: ({ pass: p, lifecycle }) => {
      if (ctx.output === 'json') {
        ctx.stdout(renderFlyJson(lifecycle ? { ...p, lifecycle: lifecycle.lifecycle } : p));
      } else {
        ctx.stdout(dryRun ? renderFlyDiff(p) : renderFlyPass(p));
        if (lifecycle) ctx.stdout(renderLifecycle(lifecycle));
      }
      if (lifecycle?.error) ctx.stderr(`keyroll fly: ${lifecycle.error}\n`);
    },
    onError: (err) => {
      const msg = errorMessage(err);
      ctx.stderr(`keyroll fly: pass failed: ${msg}\n`);
      log.error({ error: msg }, 'Pass failed; retrying at the next interval');
    },
  });
  if (error) return EXIT_USAGE;
  return last ? exitFor(last.pass) : EXIT_NOT_DONE;
}

export const run = runFly;
