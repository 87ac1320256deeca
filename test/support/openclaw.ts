// Owns driving the real, pinned OpenClaw gateway in tests: find it, onboard a sandbox, point the
// kilocode provider at a fake upstream, start the gateway, wait for /readyz, and stop it by PID.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import * as z from 'zod';
import {
  customOnboardArgs,
  onboardArgs,
  providerPluginInstalled,
} from '../../src/controller/openclaw-cli.ts';
import { chat, freePort } from './http.ts';
import { type ExitInfo, spawnTracked, type Tracked } from './processes.ts';
import { node24, REPO_ROOT, type Sandbox } from './sandbox.ts';
import { waitForReady } from './stand-in-gateway.ts';

export { chat, freePort };

export const OPENCLAW_VERSION = '2026.6.8';
/**
 * The gateway project also runs test/gateway/front-door-e2e-9x.test.ts (2026.9.6), unless
 * KEYROLL_TEST_OPENCLAW_9X=0 opts out (the file then says SKIPPED loudly).
 */
export const OPENCLAW_9X_TESTS = process.env.KEYROLL_TEST_OPENCLAW_9X !== '0';

/**
 * Every OpenClaw version the gateway project runs against (the global setup installs each):
 * 2026.6.8, the last with the Kilo Gateway provider bundled, and 2026.9.6 (custom provider)
 * unless KEYROLL_TEST_OPENCLAW_9X=0.
 */
export const OPENCLAW_VERSIONS_TESTED: readonly string[] = OPENCLAW_9X_TESTS
  ? ['2026.6.8', '2026.9.6']
  : ['2026.6.8'];
export const PROFILE_ID = 'kilocode:default';

/**
 * Bounds for the real gateway. Ready takes 7-10 s on an idle 2-core host but 37-49 s was
 * measured with other suites saturating it (load 16), a first request 9-26 s and SIGTERM up to
 * 7.4 s; the bounds leave room for that. KEYROLL_GATEWAY_READY_TIMEOUT_MS overrides the first.
 */
export const GATEWAY_READY_TIMEOUT_MS = Number(process.env.KEYROLL_GATEWAY_READY_TIMEOUT_MS) || 150_000;
export const GATEWAY_STOP_TIMEOUT_MS = 30_000;
/** Per-test budget for a test with one onboarding and one gateway start (vitest's third argument). */
export const ONE_START_TEST_MS = 420_000;
/** Per-test budget for a test with one onboarding and two gateway starts. */
export const TWO_START_TEST_MS = 720_000;

/** Path of the installed `openclaw.mjs`; throws a clear error when it is not installed. */
export function openclawEntry(version: string = OPENCLAW_VERSION): string {
  const cache = process.env.KEYROLL_CACHE_DIR ?? join(REPO_ROOT, '.cache');
  const entry = join(cache, `openclaw-${version}`, 'node_modules', 'openclaw', 'openclaw.mjs');
  if (!existsSync(entry)) {
    const cmd =
      version === OPENCLAW_VERSION ? 'npm run gateway:install' : `npm run gateway:install -- ${version}`;
    throw new Error(`OpenClaw ${version} is not installed (${entry} is missing): run \`${cmd}\`.`);
  }
  return entry;
}

/** Replaces each secret in `text` by a placeholder, so errors can quote OpenClaw's output. */
function scrub(text: string, secrets: string[]): string {
  let out = text;
  for (const s of secrets) if (s) out = out.split(s).join('[REDACTED]');
  return out;
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `openclaw <args>` in the sandbox and waits for it (bounded; killed on timeout). */
export async function runOpenclaw(
  sb: Sandbox,
  args: string[],
  opts: { env?: Record<string, string | undefined>; timeoutMs?: number; version?: string } = {},
): Promise<RunResult> {
  const started = Date.now();
  const proc = spawnTracked(node24(), [openclawEntry(opts.version), ...args], {
    name: `openclaw ${args[0] ?? ''}`,
    cwd: sb.dir,
    env: sb.env({ NODE_COMPILE_CACHE: undefined, ...opts.env }),
  });
  const timeoutMs = opts.timeoutMs ?? 120_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((r) => {
    timer = setTimeout(() => r('timeout'), timeoutMs);
  });
  const first = await Promise.race([proc.exited, timedOut]);
  clearTimeout(timer);
  const exit: ExitInfo = first === 'timeout' ? await proc.stop('SIGKILL', 5_000) : first;
  // Let the line readers drain.
  await new Promise((r) => setImmediate(r));
  return {
    code: first === 'timeout' ? null : exit.code,
    stdout: proc.stdoutLines.join('\n'),
    stderr: proc.stderrLines.join('\n'),
    ms: Date.now() - started,
  };
}

export interface OnboardOptions {
  /** `ref`: env-ref profile (what keyroll uses); `plaintext`: the legacy literal key on disk. */
  mode: 'ref' | 'plaintext';
  key: string;
  token: string;
  port: number;
  /** The OpenClaw version to onboard with (default OPENCLAW_VERSION). */
  version?: string;
  /**
   * Where kilocode points, for a version without the provider's plugin (2026.9.x): onboarded as a
   * custom provider, as the controller does (ref mode only).
   */
  baseUrl?: string;
}

/**
 * Replaces the `--secret-input-mode ref` pair of the controller's onboarding arguments by
 * `keyArgs` (a literal key: the legacy plaintext onboarding), in place; returns `args`.
 */
export function withKeyArgs(args: string[], keyArgs: string[]): string[] {
  const at = args.indexOf('--secret-input-mode');
  if (at < 0 || args[at + 1] !== 'ref')
    throw new Error('onboarding arguments without --secret-input-mode ref');
  args.splice(at, 2, ...keyArgs);
  return args;
}

/**
 * Non-interactive onboarding as reference/openclaw.md §5 gives it (the controller's own arguments). In both modes the gateway
 * token is an env ref to OPENCLAW_GATEWAY_TOKEN, so only the provider key differs.
 */
export async function onboard(sb: Sandbox, opts: OnboardOptions): Promise<RunResult> {
  const entry = openclawEntry(opts.version);
  if (!providerPluginInstalled({ command: node24(), prefix: [entry] }, 'kilocode')) {
    return onboardCustom(sb, opts);
  }
  const args = onboardArgs(opts.port);
  if (opts.mode === 'plaintext') withKeyArgs(args, ['--kilocode-api-key', opts.key]);
  // Ref mode needs the key in the onboarding env; plaintext mode must not see one there, or
  // the test could not tell where the gateway's key came from.
  const env = {
    OPENCLAW_GATEWAY_TOKEN: opts.token,
    KILOCODE_API_KEY: opts.mode === 'ref' ? opts.key : undefined,
  };
  const r = await runOpenclaw(sb, args, { env, timeoutMs: 240_000, version: opts.version });
  if (r.code !== 0) {
    throw new Error(
      `openclaw onboard (${opts.mode}) exited ${r.code}:\n${scrub(`${r.stdout}\n${r.stderr}`, [opts.key, opts.token]).slice(-3000)}`,
    );
  }
  return r;
}

/**
 * 2026.9.x offline (reference/openclaw.md §9): kilocode as a custom OpenAI-compatible provider,
 * its key ref re-pointed at KILOCODE_API_KEY (onboarding writes CUSTOM_API_KEY), and the plugin
 * entry disabled so the start does not retry installing it (docs/testing.md).
 */
async function onboardCustom(sb: Sandbox, opts: OnboardOptions): Promise<RunResult> {
  if (opts.mode !== 'ref' || !opts.baseUrl) {
    throw new Error(`OpenClaw ${opts.version}: only a ref-mode onboarding with a baseUrl (custom provider)`);
  }
  const env = { OPENCLAW_GATEWAY_TOKEN: opts.token, CUSTOM_API_KEY: opts.key };
  const args = customOnboardArgs(opts.port, 'kilocode', opts.baseUrl);
  const r = await runOpenclaw(sb, args, { env, timeoutMs: 600_000, version: opts.version });
  if (r.code !== 0) {
    throw new Error(
      `openclaw onboard (custom provider) exited ${r.code}:\n${scrub(`${r.stdout}\n${r.stderr}`, [opts.key, opts.token]).slice(-3000)}`,
    );
  }
  editConfig(sb, (config) => {
    objectAt(config, ['models', 'providers', 'kilocode']).apiKey = {
      source: 'env',
      provider: 'default',
      id: 'KILOCODE_API_KEY',
    };
    objectAt(config, ['plugins', 'entries', 'kilocode']).enabled = false;
  });
  return r;
}

const jsonObject = z.record(z.string(), z.unknown());
type JsonObject = z.infer<typeof jsonObject>;

export function configPath(sb: Sandbox): string {
  return join(sb.stateDir, 'openclaw.json');
}

/** openclaw.json as written by onboarding (plain JSON in 2026.6.8). */
export function readConfig(sb: Sandbox): JsonObject {
  return jsonObject.parse(JSON.parse(readFileSync(configPath(sb), 'utf8')));
}

/** The object at `path` inside `root`, created (as `{}`) where missing. */
function objectAt(root: JsonObject, path: string[]): JsonObject {
  let node = root;
  for (const part of path) {
    const next = jsonObject.safeParse(node[part]);
    const child = next.success ? next.data : {};
    node[part] = child;
    node = child;
  }
  return node;
}

/** Applies `edit` to openclaw.json and writes it back (mode 0600, as OpenClaw keeps it). */
export function editConfig(sb: Sandbox, edit: (config: JsonObject) => void): void {
  const config = readConfig(sb);
  edit(config);
  writeFileSync(configPath(sb), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}

/**
 * Points kilocode at `baseUrl` (reference §7): enables the OpenAI-compatible chat endpoint,
 * moves the gateway's file log into the sandbox and turns the update check off.
 */
export function pointAtUpstream(sb: Sandbox, baseUrl: string): void {
  editConfig(sb, (config) => {
    objectAt(config, ['models', 'providers', 'kilocode']).baseUrl = baseUrl;
    objectAt(config, ['gateway', 'http', 'endpoints', 'chatCompletions']).enabled = true;
    objectAt(config, ['logging']).file = join(sb.dir, 'gateway-file.log');
    objectAt(config, ['update']).checkOnStart = false;
  });
}

export interface GatewayHandle {
  proc: Tracked;
  pid: number;
  port: number;
  /** Milliseconds from spawn to /readyz 200. */
  readyMs: number;
  stop(timeoutMs?: number): Promise<ExitInfo>;
}

/**
 * Starts `openclaw gateway run --port P --bind loopback` in the sandbox with exactly
 * `sb.env(env)` (put OPENCLAW_GATEWAY_TOKEN and KILOCODE_API_KEY in `env`), and resolves once
 * `/readyz` answers 200. Rejects when the gateway exits first or after `timeoutMs`
 * (GATEWAY_READY_TIMEOUT_MS by default).
 */
export async function startGateway(
  sb: Sandbox,
  opts: { port: number; env: Record<string, string | undefined>; timeoutMs?: number; version?: string },
): Promise<GatewayHandle> {
  const started = Date.now();
  const proc = spawnTracked(
    node24(),
    [openclawEntry(opts.version), 'gateway', 'run', '--port', String(opts.port), '--bind', 'loopback'],
    { name: 'openclaw-gateway', cwd: sb.dir, env: sb.env({ NODE_COMPILE_CACHE: undefined, ...opts.env }) },
  );
  try {
    await waitForReady(opts.port, proc, opts.timeoutMs ?? GATEWAY_READY_TIMEOUT_MS);
  } catch (err) {
    await proc.stop('SIGTERM', 5_000).catch(() => undefined);
    const secrets = Object.values(opts.env).filter((v): v is string => typeof v === 'string');
    const tail = scrub(proc.lines.slice(-30).join('\n'), secrets);
    throw new Error(
      `${err instanceof Error ? err.message : String(err)}\n--- gateway output (tail) ---\n${tail}`,
    );
  }
  return {
    proc,
    pid: proc.pid,
    port: opts.port,
    readyMs: Date.now() - started,
    // SIGTERM takes 2.3-2.7 s on 2026.6.8 (up to 7.4 s measured on a saturated host).
    stop: (timeoutMs = GATEWAY_STOP_TIMEOUT_MS) => proc.stop('SIGTERM', timeoutMs),
  };
}

/** The agent's 2026.6.x SQLite auth store, read-only (null when it does not exist). */
export function readAuthStore(sb: Sandbox, agentId = 'main'): JsonObject | null {
  const db = join(sb.stateDir, 'agents', agentId, 'agent', 'openclaw-agent.sqlite');
  if (!existsSync(db)) return null;
  const conn = new DatabaseSync(db, { readOnly: true });
  try {
    const row = z
      .object({ store_json: z.string() })
      .optional()
      .parse(conn.prepare("select store_json from auth_profile_store where store_key='primary'").get());
    return row ? jsonObject.parse(JSON.parse(row.store_json)) : null;
  } finally {
    conn.close();
  }
}

/** The `kilocode:default` credential from the SQLite store, or null. */
export function readKilocodeProfile(sb: Sandbox, agentId = 'main'): JsonObject | null {
  const store = readAuthStore(sb, agentId);
  const profiles = jsonObject.safeParse(store?.profiles);
  if (!profiles.success) return null;
  const cred = jsonObject.safeParse(profiles.data[PROFILE_ID]);
  return cred.success ? cred.data : null;
}
