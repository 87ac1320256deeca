// Owns the `reconcile` and `diff` commands: flags → key source and targets → one pass → report and exit code.
import { existsSync } from 'node:fs';
import { type Clock, systemClock } from '../clock.ts';
import { parseDuration } from '../duration.ts';
import { type PassResult, runPass } from '../engine/pass.ts';
import type { Target } from '../engine/target.ts';
import { DEFAULT_POLICY } from '../lifecycle/lifecycle.ts';
import { DEFAULT_CALL_POLICY, httpAnnouncer, httpRevoker } from '../lifecycle/retire.ts';
import { StateFileError, stateFileFor } from '../lifecycle/state-file.ts';
import { renderLifecycle, targetsLifecycle } from '../lifecycle/targets-file.ts';
import type { SecretRegistry } from '../log.ts';
import { httpControllerClient } from '../reconcile/controller-client.ts';
import { createProgress } from '../reconcile/progress.ts';
import { renderDiff, renderJson, renderReconcile } from '../reconcile/report.ts';
import { DEFAULT_RETRY } from '../reconcile/retry.ts';
import { versionKeyOf } from '../reconcile/sources/content-version.ts';
import { type KeySource, KeySourceError } from '../reconcile/sources/key-source.ts';
import { ConfigError, loadTargetsFile, resolveToken, type TargetsFile } from '../reconcile/targets.ts';
import { type CommandContext, commandContext, fitToWidth } from './shell.ts';
import { buildKeySource, SOURCE_FLAG_OPTIONS, type SourceFlags, sourceFromFlags } from './source-flags.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, type Io, UsageError } from './usage.ts';

const SOURCE_HELP = `Key source (overrides the targets file's \`source:\`):
  --source-file PATH        file with the key, or a mounted Secret directory (key file KILOCODE_API_KEY)
  --source-key-name NAME    file name inside a Secret directory (default: the env var name)
  --source-url URL          HTTP API answering {key|token, version?, expiresAt?} to GET with a bearer
  --source-token-file PATH  bearer token for --source-url, from a file
  --source-token-env NAME   bearer token for --source-url, from an environment variable
  --mint-url URL            POSTed for a fresh key when expiresAt - now <= --refresh-before
  --refresh-before DUR      default 72h`;

const RECONCILE_USAGE = `Usage: keyroll reconcile --once --targets FILE [source flags] [-o text|json] [--deadline 120s]
       keyroll reconcile --once --kube [-n NS] [--context NAME] [--kubeconfig PATH] [-o text|json]

One level-triggered pass: observe every target, deliver the desired key where it differs, and
verify until the running gateway shows it (fingerprint, profile forms, readiness, new PID in
restart mode). A converged target gets no request beyond GET /_kilo/state.

  --once                    run one pass and exit (required; the operator runs continuously)
  --targets FILE            targets file (YAML or JSON); see docs/reconcile.md
  --kube                    instead of a targets file: every GatewayKey in the namespace, once,
                            exactly as the operator would (key from its Secret, targets from its
                            pod selector, rollout from its spec; writes its status and Events)
  -n, --namespace NS        with --kube [KEYROLL_NAMESPACE] (default: the kubeconfig context's,
                            else the pod's own, else default)
  --context NAME            with --kube: a kubeconfig context other than the current one
  --kubeconfig PATH         with --kube [KUBECONFIG] (default: in-cluster service account)
  -o, --output text|json    the pass as a table (default) or JSON; --json is short for -o json
  --deadline DUR            per target, delivery plus verification (default 120s)
  --poll DUR                re-observe interval while verifying (default 500ms)
  --retries N               retries per controller call (default ${DEFAULT_RETRY.retries})
  --retire-after DUR        key lifecycle: grace between every target proving the new key and
                            the previous key becoming retirable (default 60s). Any of these four
                            flags turns the lifecycle on; it is kept in --state-file
  --state-file PATH         the lifecycle's record (default FILE.state.json beside --targets)
  --revoke-url URL          POST {"version"} here to revoke a retirable previous key, oldest
                            first, once (2xx, or 409/410 = already revoked); never the current one
  --revoke-token-env NAME   bearer token for --revoke-url (default: --source-token-env's variable)
  --retire-webhook URL      POST {gatewayKey, previousVersion, currentVersion, provenTargets} once
                            per retirable version (no key, no token)
  --concurrency N, --max-unavailable N, --failure-budget N, --paused
                            override the targets file's defaults.rollout (with --kube only
                            --concurrency applies; the rest comes from each GatewayKey's spec)

${SOURCE_HELP}
  (not with --kube: the key comes from the Secret each GatewayKey references)

Exit: 0 all converged, 1 some not converged (or paused with drift, or a GatewayKey Degraded),
2 error (usage, targets, source, Kubernetes API).
`;

const DIFF_USAGE = `Usage: keyroll diff --targets FILE [source flags] [-o text|json]
       keyroll diff --kube [-n NS] [--context NAME] [--kubeconfig PATH] [-o text|json]

Dry run of the same pipeline: observes every target (GET /_kilo/state only, never a change) and
prints observed vs desired per target like a unified diff, with the actions a reconcile would take.

  --targets FILE            targets file (YAML or JSON); see docs/reconcile.md
  --kube                    instead of a targets file: every GatewayKey in the namespace (key from
                            its Secret, targets from its pod selector); lists only, writes no status
                            or Event; a missing Secret, key or token or an invalid spec is drift
  -n, --namespace NS        with --kube [KEYROLL_NAMESPACE] (default as for reconcile --kube)
  --context NAME            with --kube: a kubeconfig context other than the current one
  --kubeconfig PATH         with --kube [KUBECONFIG] (default: in-cluster service account)
  -o, --output text|json    default text; --json is short for -o json
  --state-file PATH         show the key lifecycle recorded there by reconcile (default
                            FILE.state.json beside --targets, when it exists); never written
  --retries N               retries per GET (default ${DEFAULT_RETRY.retries})

${SOURCE_HELP}
  (not with --kube)

Exit: 0 no drift, 1 drift (or a target unreachable), 2 error (usage, targets, source, Kubernetes API).
`;

/** What tests and other drivers may inject. */
export interface ReconcileDeps {
  clock?: Clock;
  signal?: AbortSignal;
}

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < (name === 'retries' ? 0 : 1)) {
    throw new UsageError(
      `--${name}: expected a whole number${name === 'retries' ? '' : ' of at least 1'}, got '${v}'`,
    );
  }
  return Number(v);
}

function duration(name: string, v: string | undefined, fallback: number): number {
  if (v === undefined) return fallback;
  try {
    return parseDuration(v);
  } catch (err) {
    throw new UsageError(`--${name}: ${(err as Error).message}`);
  }
}

interface Prepared {
  file: TargetsFile;
  source: KeySource;
  targets: Target[];
}

/** Reads the targets file, resolves every token and builds the source; nothing is contacted yet. */
async function prepare(
  values: SourceFlags & { targets?: string | undefined },
  io: Io,
  clock: Clock,
  secrets: SecretRegistry,
): Promise<Prepared> {
  if (!values.targets) throw new UsageError('--targets FILE is required');
  const flagSource = sourceFromFlags(values);
  const { file, baseDir } = await loadTargetsFile(values.targets);
  const cfg = flagSource ?? file.source;
  if (!cfg)
    throw new UsageError(
      'no key source: add `source:` to the targets file or pass --source-file/--source-url',
    );
  const targets: Target[] = [];
  for (const [i, t] of file.targets.entries()) {
    const token = await resolveToken(t.token, io.env, baseDir, `targets[${i}].token (${t.name})`);
    secrets.add(token);
    targets.push({
      name: t.name,
      url: t.url,
      labels: t.labels,
      token,
      client: httpControllerClient({ url: t.url, token, timeoutMs: file.defaults.requestTimeout }),
    });
  }
  const source = await buildKeySource(cfg, {
    env: io.env,
    baseDir,
    envVar: file.defaults.envVar,
    clock,
    secrets,
    versionKey: versionKeyOf(targets.map((t) => t.token)),
  });
  return { file, source, targets };
}

async function runCommand(
  kind: 'reconcile' | 'diff',
  argv: string[],
  io: Io,
  deps: ReconcileDeps,
): Promise<number> {
  // Flags (declared by the usage), -o/--json, scrubbed output, logger, SIGINT/SIGTERM: the shell.
  const ctx = commandContext(argv, io, {
    name: kind,
    usage: kind === 'reconcile' ? RECONCILE_USAGE : DIFF_USAGE,
    kube: true,
  });
  try {
    return ctx.help ? EXIT_OK : await runWith(kind, ctx, io, deps);
  } finally {
    ctx.dispose();
  }
}

async function runWith(
  kind: 'reconcile' | 'diff',
  ctx: CommandContext,
  io: Io,
  deps: ReconcileDeps,
): Promise<number> {
  const { values, str, output } = ctx;
  if (kind === 'reconcile' && !values.once) {
    throw new UsageError('--once is required (continuous reconciling is the operator’s job)');
  }
  const clock = deps.clock ?? systemClock;
  const deadlineMs = duration('deadline', str('deadline'), 120_000);
  const pollIntervalMs = duration('poll', str('poll'), 500);
  const retries = positiveInt('retries', str('retries'));
  const retireAfterMs = duration('retire-after', str('retire-after'), DEFAULT_POLICY.retireAfterMs);
  const revokeUrl = httpUrl('revoke-url', str('revoke-url'));
  const webhookUrl = httpUrl('retire-webhook', str('retire-webhook'));
  if (kind === 'reconcile' && revokeUrl && !str('revoke-token-env') && !str('source-token-env'))
    throw new UsageError(
      '--revoke-url needs --revoke-token-env NAME (or an HTTP source with --source-token-env)',
    );
  // Resolved before any work: a missing token is a usage error that changes nothing.
  const revokeBearer = kind === 'reconcile' && revokeUrl ? revokeToken(io, values) : undefined;
  const overrides = {
    concurrency: positiveInt('concurrency', str('concurrency')),
    maxUnavailable: positiveInt('max-unavailable', str('max-unavailable')),
    failureBudget: positiveInt('failure-budget', str('failure-budget')),
  };
  if (values.kube) {
    if (values.targets) throw new UsageError('give --targets FILE or --kube, not both');
    const spec = [
      'max-unavailable',
      'failure-budget',
      'paused',
      'retire-after',
      'revoke-url',
      'revoke-token-env',
      'retire-webhook',
      'state-file',
      ...Object.keys(SOURCE_FLAG_OPTIONS),
    ].filter((k) => values[k] !== undefined);
    if (spec.length > 0)
      throw new UsageError(`--${spec[0]}: not with --kube (each GatewayKey's spec says it)`);
    // What both --kube commands take: where to connect, how to print, how often to retry.
    const kubeOpts = {
      namespace: str('namespace'),
      kubeconfig: str('kubeconfig'),
      context: str('context'),
      json: output === 'json',
      retries,
    };
    const kubeDeps = { shell: ctx, ...(deps.signal ? { signal: deps.signal } : {}) };
    if (kind === 'diff') {
      const { runKubeDiff } = await import('./diff-kube.ts');
      return runKubeDiff(kubeOpts, io, kubeDeps);
    }
    const { runKubeReconcile } = await import('./reconcile-kube.ts');
    return runKubeReconcile(
      { ...kubeOpts, deadlineMs, pollIntervalMs, concurrency: overrides.concurrency },
      io,
      kubeDeps,
    );
  }
  if (values.namespace !== undefined || values.kubeconfig !== undefined || values.context !== undefined)
    throw new UsageError('--namespace, --context and --kubeconfig need --kube');

  let prepared: Prepared;
  try {
    prepared = await prepare(values as SourceFlags & { targets?: string }, io, clock, ctx.secrets);
  } catch (err) {
    if (err instanceof ConfigError || err instanceof KeySourceError) {
      ctx.stderr(`keyroll ${kind}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  const { file, source, targets } = prepared;
  const secrets = ctx.secrets;
  if (revokeBearer) secrets.add(revokeBearer);
  const log = ctx.log.child({ command: kind });
  // SIGINT and SIGTERM (a Job's stop) both end the pass cleanly, as in --kube.
  const signal = deps.signal ? AbortSignal.any([deps.signal, ctx.signal]) : ctx.signal;
  let key: Awaited<ReturnType<KeySource['current']>>;
  try {
    key = await source.current(signal);
  } catch (err) {
    if (err instanceof KeySourceError) {
      ctx.stderr(`keyroll ${kind}: ${err.message}\n`);
      return EXIT_USAGE;
    }
    throw err;
  }
  secrets.add(key.key);
  const rollout = {
    ...file.defaults.rollout,
    ...(overrides.concurrency ? { concurrency: overrides.concurrency } : {}),
    ...(overrides.maxUnavailable ? { maxUnavailable: overrides.maxUnavailable } : {}),
    ...(overrides.failureBudget ? { failureBudget: overrides.failureBudget } : {}),
    ...(values.paused ? { paused: true } : {}),
  };
  // A \r-redrawn line on a terminal; otherwise a plain line per finished target (ctx.progress
  // prints nothing off a terminal, and this command's stderr has always carried those lines).
  const progress = createProgress(targets.length, (t) => ctx.stderr(fitToWidth(t, io.columns)), io.isTty);
  const pass: PassResult = await runPass(targets, {
    key,
    spec: { envVar: file.defaults.envVar, delivery: file.defaults.delivery },
    rollout,
    dryRun: kind === 'diff',
    env: {
      clock,
      log,
      retry: { ...DEFAULT_RETRY, ...(retries !== undefined ? { retries } : {}) },
      deadlineMs,
      pollIntervalMs,
      signal,
    },
    ...(kind === 'reconcile' ? { onPhase: progress.phase, onResult: progress.result } : {}),
  });
  progress.finish();
  const stateFile = str('state-file') ?? stateFileFor(values.targets as string);
  const lifecycleOn =
    kind === 'reconcile'
      ? ['retire-after', 'revoke-url', 'retire-webhook', 'state-file'].some((f) => values[f] !== undefined)
      : str('state-file') !== undefined || existsSync(stateFile);
  const lifecycle = !lifecycleOn
    ? null
    : await targetsLifecycle(pass, {
        targetsPath: values.targets as string,
        stateFile,
        policy: { ...DEFAULT_POLICY, retireAfterMs },
        act: kind === 'reconcile',
        revoker:
          revokeUrl && revokeBearer ? httpRevoker(revokeUrl, revokeBearer, DEFAULT_CALL_POLICY) : undefined,
        announcer: webhookUrl ? httpAnnouncer(webhookUrl, DEFAULT_CALL_POLICY) : undefined,
        clock,
        log,
        signal,
      }).catch((err: unknown) => {
        if (!(err instanceof StateFileError)) throw err;
        ctx.stderr(`keyroll ${kind}: ${err.message}\n`);
        return null;
      });
  if (output === 'json') ctx.stdout(renderJson(pass, lifecycle ? { lifecycle: lifecycle.lifecycle } : {}));
  else {
    ctx.stdout(kind === 'diff' ? renderDiff(pass) : renderReconcile(pass));
    if (lifecycle) ctx.stdout(renderLifecycle(lifecycle));
  }
  if (lifecycle?.error) ctx.stderr(`keyroll ${kind}: ${lifecycle.error}\n`);
  const s = pass.summary;
  return s.converged === s.total ? EXIT_OK : EXIT_NOT_DONE;
}

/** An http(s) URL flag, or undefined; a usage error otherwise. */
function httpUrl(flag: string, raw: string | undefined): string | undefined {
  if (raw === undefined) return undefined;
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new UsageError(`--${flag}: expected an http(s) URL`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:')
    throw new UsageError(`--${flag}: expected an http(s) URL`);
  return raw;
}

/** The revoke call's bearer token, from --revoke-token-env or the HTTP source's token variable. */
function revokeToken(io: Io, values: Record<string, string | boolean | undefined>): string {
  const name = (values['revoke-token-env'] ?? values['source-token-env']) as string;
  const token = io.env[name];
  if (!token) throw new UsageError(`--revoke-token-env: ${name} is not set`);
  return token;
}

export async function runReconcile(argv: string[], io: Io, deps: ReconcileDeps = {}): Promise<number> {
  return runCommand('reconcile', argv, io, deps);
}

export async function runDiff(argv: string[], io: Io, deps: ReconcileDeps = {}): Promise<number> {
  return runCommand('diff', argv, io, deps);
}
