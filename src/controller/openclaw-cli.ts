// Owns how the controller runs OpenClaw: which binary, the child env, and bounded one-shot commands.
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync, realpathSync } from 'node:fs';
import { delimiter, dirname, join } from 'node:path';
import { CUT_MARK, type Logger } from '../log.ts';
import { PACKAGE_ROOT } from '../version.ts';
import { onLines } from './lines.ts';
import type { ChildEnv } from './supervisor.ts';

export const PINNED_OPENCLAW = '2026.6.8';

/** The command prefix (program + leading args) that runs OpenClaw. */
export interface OpenclawCommand {
  command: string;
  prefix: string[];
}

export function cachedOpenclawEntry(root = PACKAGE_ROOT): string {
  return join(root, '.cache', `openclaw-${PINNED_OPENCLAW}`, 'node_modules', 'openclaw', 'openclaw.mjs');
}

/**
 * `--openclaw-bin`, else `openclaw` on PATH, else the project's cache. A `.mjs`/`.js` entry runs
 * under this process's Node, because OpenClaw needs Node >= 22.19 and the system one may be older.
 */
export function resolveOpenclaw(explicit: string | null, path: string | undefined): OpenclawCommand | null {
  const asCommand = (p: string): OpenclawCommand =>
    /\.(m?js|cjs)$/.test(p) ? { command: process.execPath, prefix: [p] } : { command: p, prefix: [] };
  if (explicit) return asCommand(explicit);
  for (const dir of (path ?? '').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, 'openclaw');
    try {
      accessSync(candidate, constants.X_OK);
      return asCommand(candidate);
    } catch {
      // not here
    }
  }
  const cached = cachedOpenclawEntry();
  return existsSync(cached) ? asCommand(cached) : null;
}

/**
 * The version in the package.json beside the OpenClaw entry (`.../openclaw/openclaw.mjs`, or the
 * `openclaw` link npm puts in a bin folder), or null when it cannot be told without running it.
 */
export function openclawVersion(cmd: OpenclawCommand): string | null {
  const entry = cmd.prefix[0] ?? cmd.command;
  try {
    const pkg = JSON.parse(readFileSync(join(dirname(realpathSync(entry)), 'package.json'), 'utf8')) as {
      name?: unknown;
      version?: unknown;
    };
    return pkg.name === 'openclaw' && typeof pkg.version === 'string' ? pkg.version : null;
  } catch {
    return null;
  }
}

export interface ChildEnvOptions {
  gatewayPort: number;
  stateDir: string;
  /**
   * Values that must never reach a child (the controller token and the previous one): every
   * variable holding one of them is left out, whatever its name.
   */
  withheld?: readonly string[];
}

/** Variables of the controller alone: never in a child's env. */
export const CONTROLLER_ONLY_VARS: readonly string[] = [
  'KEYROLL_CONTROLLER_TOKEN',
  'KEYROLL_CONTROLLER_TOKEN_PREVIOUS',
];

/**
 * The env of every OpenClaw process: the controller's current env without the controller's own
 * credentials, plus the gateway port, `OPENCLAW_NO_RESPAWN=1` (so SIGUSR1 could never fork a
 * detached gateway we do not supervise), the state dir, and this Node's directory first on PATH.
 */
export function openclawEnv(current: ChildEnv, opts: ChildEnvOptions): ChildEnv {
  const nodeDir = dirname(process.execPath);
  const path = current.PATH ?? '';
  const parts = path.split(delimiter).filter((p) => p && p !== nodeDir);
  const withheld = new Set(opts.withheld ?? []);
  const kept: ChildEnv = {};
  for (const [name, value] of Object.entries(current)) {
    if (CONTROLLER_ONLY_VARS.includes(name) || withheld.has(value)) continue;
    kept[name] = value;
  }
  return {
    ...kept,
    OPENCLAW_GATEWAY_PORT: String(opts.gatewayPort),
    OPENCLAW_NO_RESPAWN: '1',
    OPENCLAW_STATE_DIR: current.OPENCLAW_STATE_DIR ?? opts.stateDir,
    PATH: [nodeDir, ...parts].join(delimiter),
  };
}

export interface RunResult {
  code: number | null;
  signal: string | null;
  timedOut: boolean;
  /** The last lines of output, for the JSON answer of `--json` commands; logged already. */
  stdout: string;
}

/**
 * Runs a one-shot OpenClaw command with a hard timeout (SIGTERM, then SIGKILL of its group).
 * Output lines are logged (the logger scrubs registered secrets); argv is never logged, since it
 * is where a token would be if a caller put one there.
 */
export async function runOpenclaw(
  cmd: OpenclawCommand,
  args: string[],
  opts: {
    env: ChildEnv;
    timeoutMs: number;
    log: Logger;
    label: string;
    /** Run as this user and group (`--gateway-uid/--gateway-gid`): OpenClaw code is gateway code. */
    user?: { uid: number; gid: number } | null;
  },
): Promise<RunResult> {
  const proc = spawn(cmd.command, [...cmd.prefix, ...args], {
    env: opts.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    ...(opts.user ? { uid: opts.user.uid, gid: opts.user.gid } : {}),
  });
  const stdout: string[] = [];
  const forward = (stream: NodeJS.ReadableStream | null, name: string) => {
    if (!stream) return;
    onLines(stream, 4096, (line, cut) => {
      if (name === 'stdout') {
        stdout.push(line);
        if (stdout.length > 200) stdout.shift();
      }
      opts.log.info(
        { command: opts.label, stream: name, line: cut ? `${line}${CUT_MARK}` : line },
        'OpenClaw output',
      );
    });
  };
  forward(proc.stdout, 'stdout');
  forward(proc.stderr, 'stderr');
  let timedOut = false;
  const kill = (sig: NodeJS.Signals) => {
    try {
      if (proc.pid) process.kill(-proc.pid, sig);
    } catch {
      // gone
    }
  };
  const timer = setTimeout(() => {
    timedOut = true;
    kill('SIGTERM');
    setTimeout(() => kill('SIGKILL'), 3_000).unref();
  }, opts.timeoutMs);
  const result = await new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    proc.on('error', () => resolve({ code: null, signal: null }));
    proc.on('close', (code, signal) => resolve({ code, signal }));
  });
  clearTimeout(timer);
  kill('SIGKILL'); // nothing of the group may outlive the command
  return { ...result, timedOut, stdout: stdout.join('\n') };
}

/** The non-interactive onboarding of reference/openclaw.md §5, env-ref mode: no key on disk. */
export function onboardArgs(gatewayPort: number): string[] {
  return [
    'onboard',
    '--non-interactive',
    '--accept-risk',
    '--mode',
    'local',
    '--auth-choice',
    'kilocode-api-key',
    '--secret-input-mode',
    'ref',
    '--gateway-port',
    String(gatewayPort),
    '--gateway-bind',
    'loopback',
    '--gateway-auth',
    'token',
    '--gateway-token-ref-env',
    'OPENCLAW_GATEWAY_TOKEN',
    '--skip-daemon',
    '--skip-channels',
    '--skip-skills',
    '--skip-search',
    '--skip-health',
    '--skip-ui',
    '--skip-hooks',
    '--skip-bootstrap',
    '--json',
  ];
}

/**
 * Onboarding with the provider declared as a custom OpenAI-compatible one: OpenClaw >= 2026.6.9
 * no longer bundles the Kilo Gateway provider, and its plugin cannot be installed offline. Ref
 * mode: the key is `models.providers.<provider>.apiKey = {source:"env",id:"CUSTOM_API_KEY"}`
 * (read from CUSTOM_API_KEY in the onboarding's env), which the migration that follows re-points
 * at the delivery's ref (the key variable, or the key file).
 */
export function customOnboardArgs(gatewayPort: number, provider: string, baseUrl: string): string[] {
  const args = onboardArgs(gatewayPort);
  const at = args.indexOf('kilocode-api-key');
  args.splice(
    at,
    1,
    'custom-api-key',
    '--custom-provider-id',
    provider,
    '--custom-base-url',
    baseUrl,
    '--custom-model-id',
    'kilo/auto',
  );
  return args;
}

/** The Kilo Gateway's OpenAI-compatible base URL (reference/openclaw.md §5). */
export const KILO_GATEWAY_BASE_URL = 'https://api.kilo.ai/api/gateway/';

/** True when the OpenClaw install carries the provider's plugin (bundled, or installed beside it). */
export function providerPluginInstalled(cmd: OpenclawCommand, provider: string): boolean {
  const entry = cmd.prefix[0] ?? cmd.command;
  try {
    const pkgDir = dirname(realpathSync(entry));
    return (
      existsSync(join(pkgDir, 'dist', 'extensions', provider)) ||
      existsSync(join(pkgDir, 'node_modules', '@openclaw', `${provider}-provider`)) ||
      existsSync(join(pkgDir, '..', '@openclaw', `${provider}-provider`))
    );
  } catch {
    return false;
  }
}

/**
 * How the running gateway gets the key: `env-per-spawn` (an env ref, read from the env the
 * gateway was spawned with; a new key needs a new process), `file-per-request` (a profile's file
 * ref, read again on every request: measured on 2026.6.8), `file-on-reload` (a file ref read into
 * the secrets snapshot at start and on `secrets reload`: every config-level ref, and every file
 * ref on 2026.9.6).
 */
export type KeyResolution = 'env-per-spawn' | 'file-per-request' | 'file-on-reload';

/** The last OpenClaw version measured to re-read a profile's file ref on every request. */
export const LAST_PER_REQUEST_FILE_REF = '2026.6.8';

/** Compares OpenClaw's calendar versions (`2026.6.8`, `2026.9.6-beta.1`) by their numbers. */
export function compareOpenclawVersions(a: string, b: string): number {
  const nums = (v: string) => (v.split('-')[0] ?? '').split('.').map((n) => Number.parseInt(n, 10) || 0);
  const x = nums(a);
  const y = nums(b);
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    const d = (x[i] ?? 0) - (y[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  return 0;
}

/**
 * File delivery: whether the gateway needs `secrets reload` after a key file replace. Only a
 * profile-level file ref on a version known to re-read it per request (2026.6.8 and older) does
 * not; an unknown version gets the reload (harmless where the file is re-read anyway).
 */
export function fileKeyResolution(version: string | null, configLevelRef: boolean): KeyResolution {
  if (configLevelRef) return 'file-on-reload';
  if (version !== null && compareOpenclawVersions(version, LAST_PER_REQUEST_FILE_REF) <= 0) {
    return 'file-per-request';
  }
  return 'file-on-reload';
}

export const DOCTOR_ARGS = ['doctor', '--fix', '--non-interactive'];

/** `--allow-unconfigured`: an existing volume may lack gateway.mode (KiloClaw passes it too). */
export function gatewayRunArgs(gatewayPort: number): string[] {
  return ['gateway', 'run', '--port', String(gatewayPort), '--bind', 'loopback', '--allow-unconfigured'];
}

/**
 * `secrets reload` with no flags talks to the gateway at OPENCLAW_GATEWAY_PORT with
 * OPENCLAW_GATEWAY_TOKEN, both from its env: the token never appears in argv (and so never in
 * `ps`), and no `--url` override switches off the CLI's env credentials.
 */
export const SECRETS_RELOAD_ARGS = ['secrets', 'reload', '--json'];
