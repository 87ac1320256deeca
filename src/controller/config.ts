// Owns the controller's configuration: flags and environment parsed once into one value. Checked
// by hand, not with zod: the controller's memory budget has no room for it (BENCHMARKS.md).
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { checkDuration, millisecondsFlag, parseCommandLine } from '../command-line.ts';
import { UsageError } from '../errors.ts';

export const CONTROLLER_USAGE = `keyroll controller — in-pod controller: the gateway's front door; bootstraps and supervises
the gateway, serves /_kilo/*, and proxies every other request to it

Usage: keyroll controller [flags]

Flags:
  --state-dir DIR           OpenClaw state dir (default $OPENCLAW_STATE_DIR, else ~/.openclaw)
  --port N                  public port: the proxy to the gateway, /health, /readyz (and /_kilo/*
                            unless --admin-port is set) (default 18789)
  --admin-port N            serve the authenticated /_kilo/* routes only on this port
  --bind ADDR               controller bind address (default 0.0.0.0)
  --gateway-port N          loopback port of the gateway (default 3001)
  --surge-port N            loopback port for the second gateway of a surge restart
                            (default gateway port + 1)
  --restart-strategy S      hold: hold new requests while the gateway restarts in place;
                            surge: start the new gateway beside the old one, switch when it is
                            ready (needs memory for two gateways) (default hold)
  --surge-yield Y           how the old gateway yields the CPU to the new one while a surge
                            starts: autogroup (its threads and its scheduling autogroup, which
                            counts on a plain host or VM), threads (threads only: what counts
                            in a pod's cgroup), off (default autogroup)
  --hold-timeout DUR        longest a request is held during a restart (default 60s)
  --hold-max N              most requests held at once; more get 503 (default 1000)
  --drain-timeout DUR       longest wait for in-flight requests before a gateway stops (default 30s)
  --idle-timeout DUR        close a client connection idle this long (default 300s)
  --max-connections N       client connections on the public port; more are refused (default 4096)
  --require-proxy-token     proxied requests must carry x-kiloclaw-proxy-token (the gateway token)
  --gateway-cmd "CMD ARGS"  run this command as the gateway (split into words, no shell);
                            onboard/doctor are skipped, profile migration still runs
  --openclaw-bin PATH       OpenClaw entry (default: openclaw on PATH, else the project's cache)
  --delivery restart|file   how a rotated key reaches the gateway (default restart)
  --key-file PATH           key file for --delivery file (0600, on a memory-backed volume)
  --provider P              provider whose profiles must hold a keyRef (default kilocode)
  --patchable VAR,...       variables /_kilo/env/patch accepts (default KILOCODE_API_KEY);
                            the first one is the provider key
  --provider-base-url URL   written to models.providers.<provider>.baseUrl in openclaw.json
  --enable-chat-completions enable the gateway's OpenAI-compatible /v1/chat/completions
  --stop-timeout DUR        SIGTERM → SIGKILL grace period (default 10s)
  --ready-timeout DUR       a child not ready after this long is restarted (default 5m)
  --purge-plaintext-backups once the stores are migrated and verified, zero and remove the
                            credential backups (*.bak) that hold a plaintext key of the provider
  --controller-token-file PATH
                            read the controller token from this file (owned by this user, no
                            group or other permission bits; instead of KEYROLL_CONTROLLER_TOKEN)
  --gateway-uid N           run the gateway and every OpenClaw command as this user, so code in
  --gateway-gid N           the gateway cannot read the controller's token (both together; needs
                            root with SETUID, SETGID, KILL, CHOWN, DAC_OVERRIDE and FOWNER; the
                            state dir and key file are handed to that user)
  -h, --help                show this help
Durations are Go's: 1h30m, 90s, 250ms.

Deprecated (accepted with a warning; removed in the next release):
  --stop-timeout-ms N       use --stop-timeout (N milliseconds = Nms)
  --ready-timeout-ms N      use --ready-timeout

Environment:
  KEYROLL_CONTROLLER_TOKEN  bearer token for /_kilo/* and key of the fingerprints; never passed
                            to the gateway
  KEYROLL_CONTROLLER_TOKEN_PREVIOUS
                            also accepted for /_kilo/* during a token rotation
  OPENCLAW_GATEWAY_TOKEN    the gateway's own token (passed to it); without a controller token it
                            is also the /_kilo/* token, as in KiloClaw (a warning is logged)
  KILOCODE_API_KEY          initial provider key (the first --patchable variable)
  REQUIRE_PROXY_TOKEN=true  same as --require-proxy-token
  KEYROLL_LOG_LEVEL         log level (default info; --log-level sets it)
`;

const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;
const PROVIDER_ID = /^[a-z][a-z0-9_-]{0,63}$/;
const MAX_ID = 4294967294;

const TOKEN_MISSING =
  'KEYROLL_CONTROLLER_TOKEN (or --controller-token-file) or, for KiloClaw compatibility, ' +
  'OPENCLAW_GATEWAY_TOKEN must be set (at least 16 characters)';

export interface ControllerConfig {
  stateDir: string;
  /** 0 = any free port (tests); the listening port is logged. */
  port: number;
  bind: string;
  gatewayPort: number;
  adminPort: number | null;
  surgePort: number;
  restartStrategy: 'hold' | 'surge';
  surgeYield: 'autogroup' | 'threads' | 'off';
  holdTimeoutMs: number;
  holdMax: number;
  drainTimeoutMs: number;
  idleTimeoutMs: number;
  maxConnections: number;
  requireProxyToken: boolean;
  gatewayCmd: string[] | null;
  openclawBin: string | null;
  delivery: 'restart' | 'file';
  keyFile: string | null;
  provider: string;
  patchable: string[];
  providerBaseUrl: string | null;
  enableChatCompletions: boolean;
  stopTimeoutMs: number;
  readyTimeoutMs: number;
  purgePlaintextBackups: boolean;
  /** The controller token: /_kilo/* bearer and the key of every fingerprint. */
  token: string;
  /** Where the token came from; `gateway-token` is the KiloClaw fallback the gateway can read. */
  tokenSource: 'env' | 'file' | 'gateway-token';
  /** Accepted too, during a rotation of the controller token. */
  previousToken: string | null;
  /** The gateway's own token (OPENCLAW_GATEWAY_TOKEN), or null. */
  gatewayToken: string | null;
  gatewayUid: number | null;
  gatewayGid: number | null;
}

/**
 * Checks flag and env values one field at a time, collecting every problem (in the order of the
 * fields) so that one UsageError names them all. Messages name the flag and the expected form,
 * never the value.
 */
class Checks {
  readonly issues: string[] = [];

  fail(message: string): void {
    this.issues.push(message);
  }

  /** Digits only, in [min, max]; NaN (reported) otherwise. */
  #whole(text: string, min: number, max: number, message: string): number {
    const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
    if (n >= min && n <= max) return n;
    this.fail(message);
    return Number.NaN;
  }

  port(flag: string, text: string, min = 1): number {
    return this.#whole(text, min, 65535, `${flag} must be a port number (${min}-65535)`);
  }

  count(flag: string, text: string, min: number): number {
    return this.#whole(text, min, Number.MAX_SAFE_INTEGER, `${flag} must be a whole number >= ${min}`);
  }

  id(flag: string, text: string | null): number | null {
    return text === null ? null : this.#whole(text, 0, MAX_ID, `${flag} must be a numeric id (0-${MAX_ID})`);
  }

  duration(flag: string, text: string, min: number): number {
    const r = checkDuration(text, min);
    if (r.ok) return r.value;
    this.fail(`${flag}: ${r.reason}`);
    return Number.NaN;
  }

  oneOf<T extends string>(text: string, choices: readonly T[], message: string): T {
    if ((choices as readonly string[]).includes(text)) return text as T;
    this.fail(message);
    return choices[0]!;
  }

  nonEmpty(text: string | null, message: string): void {
    if (text === '') this.fail(message);
  }
}

function isHttpUrl(text: string): boolean {
  try {
    const url = new URL(text);
    return (url.protocol === 'http:' || url.protocol === 'https:') && url.hostname !== '';
  } catch {
    return false;
  }
}

/** The flag and env values (strings as given, defaults applied) before they are checked. */
interface RawConfig {
  stateDir: string;
  port: string;
  bind: string;
  gatewayPort: string;
  adminPort: string | null;
  surgePort: string;
  restartStrategy: string;
  surgeYield: string;
  holdTimeout: string;
  holdMax: string;
  drainTimeout: string;
  idleTimeout: string;
  maxConnections: string;
  requireProxyToken: boolean;
  gatewayCmd: string[] | null;
  openclawBin: string | null;
  delivery: string;
  keyFile: string | null;
  provider: string;
  patchable: string[];
  providerBaseUrl: string | null;
  enableChatCompletions: boolean;
  stopTimeout: string;
  readyTimeout: string;
  purgePlaintextBackups: boolean;
  token: string | undefined;
  tokenSource: ControllerConfig['tokenSource'];
  previousToken: string | null;
  gatewayToken: string | null;
  gatewayUid: string | null;
  gatewayGid: string | null;
}

/**
 * Every field checked, then the rules between fields (a field found invalid is NaN or, for a
 * choice, its default, which none of those rules can mistake for a clash).
 */
function checkConfig(raw: RawConfig): ControllerConfig {
  const c = new Checks();
  if (raw.stateDir === '') c.fail('--state-dir must be a directory path');
  const port = c.port('--port', raw.port, 0);
  if (raw.bind === '') c.fail('--bind must be an IP address such as 0.0.0.0 or 127.0.0.1');
  const gatewayPort = c.port('--gateway-port', raw.gatewayPort);
  const adminPort = raw.adminPort === null ? null : c.port('--admin-port', raw.adminPort, 0);
  const surgePort = c.port('--surge-port', raw.surgePort);
  const restartStrategy = c.oneOf(
    raw.restartStrategy,
    ['hold', 'surge'] as const,
    '--restart-strategy must be hold or surge',
  );
  const surgeYield = c.oneOf(
    raw.surgeYield,
    ['autogroup', 'threads', 'off'] as const,
    '--surge-yield must be autogroup, threads or off',
  );
  const holdTimeoutMs = c.duration('--hold-timeout', raw.holdTimeout, 100);
  const holdMax = c.count('--hold-max', raw.holdMax, 0);
  const drainTimeoutMs = c.duration('--drain-timeout', raw.drainTimeout, 0);
  const idleTimeoutMs = c.duration('--idle-timeout', raw.idleTimeout, 1000);
  const maxConnections = c.count('--max-connections', raw.maxConnections, 1);
  if (raw.gatewayCmd !== null && raw.gatewayCmd.length === 0) {
    c.fail('--gateway-cmd must name a command, e.g. "node gateway.js --flag"');
  }
  c.nonEmpty(raw.openclawBin, '--openclaw-bin must be a path');
  const delivery = c.oneOf(raw.delivery, ['restart', 'file'] as const, '--delivery must be restart or file');
  c.nonEmpty(raw.keyFile, '--key-file must be an absolute path');
  if (!PROVIDER_ID.test(raw.provider)) c.fail('--provider must be a provider id such as kilocode');
  if (raw.patchable.some((name) => !ENV_NAME.test(name))) {
    c.fail('--patchable must be a comma-separated list of VAR names');
  }
  if (raw.patchable.length === 0) c.fail('--patchable must name at least one variable');
  if (raw.providerBaseUrl !== null && !isHttpUrl(raw.providerBaseUrl)) {
    c.fail('--provider-base-url must be an http(s) URL');
  }
  const stopTimeoutMs = c.duration('--stop-timeout', raw.stopTimeout, 100);
  const readyTimeoutMs = c.duration('--ready-timeout', raw.readyTimeout, 1000);
  if (raw.token === undefined || raw.token.length < 16) c.fail(TOKEN_MISSING);
  if (raw.previousToken !== null && raw.previousToken.length < 16) {
    c.fail('KEYROLL_CONTROLLER_TOKEN_PREVIOUS must be at least 16 characters');
  }
  const gatewayUid = c.id('--gateway-uid', raw.gatewayUid);
  const gatewayGid = c.id('--gateway-gid', raw.gatewayGid);

  const config: ControllerConfig = {
    stateDir: raw.stateDir,
    port,
    bind: raw.bind,
    gatewayPort,
    adminPort,
    surgePort,
    restartStrategy,
    surgeYield,
    holdTimeoutMs,
    holdMax,
    drainTimeoutMs,
    idleTimeoutMs,
    maxConnections,
    requireProxyToken: raw.requireProxyToken,
    gatewayCmd: raw.gatewayCmd,
    openclawBin: raw.openclawBin,
    delivery,
    keyFile: raw.keyFile,
    provider: raw.provider,
    patchable: raw.patchable,
    providerBaseUrl: raw.providerBaseUrl,
    enableChatCompletions: raw.enableChatCompletions,
    stopTimeoutMs,
    readyTimeoutMs,
    purgePlaintextBackups: raw.purgePlaintextBackups,
    token: raw.token!,
    tokenSource: raw.tokenSource,
    previousToken: raw.previousToken,
    gatewayToken: raw.gatewayToken,
    gatewayUid,
    gatewayGid,
  };
  crossChecks(config, c);
  if (c.issues.length > 0) throw new UsageError(c.issues.join('; '));
  return config;
}

/** The rules between fields. */
function crossChecks(c: ControllerConfig, checks: Checks): void {
  if (c.delivery === 'file' && !c.keyFile) {
    checks.fail('--key-file is required with --delivery file (an absolute path)');
  }
  if (c.keyFile && !c.keyFile.startsWith('/')) checks.fail('--key-file must be an absolute path');
  if (c.surgePort === c.gatewayPort) checks.fail('--surge-port must differ from --gateway-port');
  if (c.adminPort !== null && c.adminPort !== 0 && c.adminPort === c.port) {
    checks.fail('--admin-port must differ from --port');
  }
  if ((c.gatewayUid === null) !== (c.gatewayGid === null)) {
    checks.fail('--gateway-uid and --gateway-gid go together');
  }
  // The gateway holds its own token: a controller token equal to it would be no secret from it.
  // (The previous token may be the gateway token: that is the way out of the KiloClaw fallback.)
  if (c.tokenSource !== 'gateway-token' && c.gatewayToken === c.token) {
    checks.fail(
      'the controller token must differ from OPENCLAW_GATEWAY_TOKEN (the gateway can read that one)',
    );
  }
  if (c.requireProxyToken && c.gatewayToken === null) {
    // Clients would need the controller token to pass the proxy: that is the admin credential.
    checks.fail('--require-proxy-token needs OPENCLAW_GATEWAY_TOKEN (clients present the gateway token)');
  }
  if (c.patchable.some((name) => name.startsWith('KEYROLL_CONTROLLER_TOKEN'))) {
    checks.fail('--patchable must not name the controller token');
  }
}

/** Millisecond flags of earlier releases, now durations. */
const DEPRECATED = {
  'stop-timeout-ms': millisecondsFlag('stop-timeout', 'stop-timeout-ms'),
  'ready-timeout-ms': millisecondsFlag('ready-timeout', 'ready-timeout-ms'),
};

/** `--help` was asked for: the caller prints the usage and exits 0. */
export class HelpRequested extends Error {
  override name = 'HelpRequested';
}

/**
 * Parses flags and environment into a config, or throws a UsageError whose message names the
 * bad field and the expected form (never its value: the token must not reach a terminal).
 */
export function parseControllerConfig(
  argv: string[],
  env: NodeJS.ProcessEnv,
  readTokenFile: (path: string) => string = readControllerTokenFile,
  warn: (text: string) => void = (t) => process.stderr.write(t),
): ControllerConfig {
  const { values: v } = parseCommandLine(argv, CONTROLLER_USAGE, {
    command: 'controller',
    deprecated: DEPRECATED,
    warn,
  });
  // Declared by the usage: `--name VALUE` flags are strings, bare `--name` ones booleans.
  const values = v as Record<string, string | undefined>;
  const flag = v as Record<string, boolean | undefined>;
  if (flag.help) throw new HelpRequested();
  const stateDirFlag = values['state-dir'];
  // The controller migrates --state-dir; the gateway reads OPENCLAW_STATE_DIR when it is set.
  // Two different dirs would leave the one the gateway reads unmigrated.
  if (
    stateDirFlag !== undefined &&
    env.OPENCLAW_STATE_DIR !== undefined &&
    env.OPENCLAW_STATE_DIR !== '' &&
    resolve(stateDirFlag) !== resolve(env.OPENCLAW_STATE_DIR)
  ) {
    throw new UsageError(
      '--state-dir and OPENCLAW_STATE_DIR name different directories: the controller would migrate ' +
        'one and the gateway read the other; set only one, or both to the same directory',
    );
  }
  if (values['controller-token-file'] !== undefined && env.KEYROLL_CONTROLLER_TOKEN !== undefined) {
    throw new UsageError('set KEYROLL_CONTROLLER_TOKEN or --controller-token-file, not both');
  }
  const envToken = nonEmpty(env.KEYROLL_CONTROLLER_TOKEN);
  const fileToken =
    values['controller-token-file'] !== undefined
      ? readTokenFile(values['controller-token-file'])
      : undefined;
  const gatewayToken = nonEmpty(env.OPENCLAW_GATEWAY_TOKEN);
  const previousToken = nonEmpty(env.KEYROLL_CONTROLLER_TOKEN_PREVIOUS);
  const raw: RawConfig = {
    stateDir: stateDirFlag ?? env.OPENCLAW_STATE_DIR ?? join(env.HOME ?? homedir(), '.openclaw'),
    port: values.port ?? '18789',
    bind: values.bind ?? '0.0.0.0',
    gatewayPort: values['gateway-port'] ?? '3001',
    adminPort: values['admin-port'] ?? null,
    surgePort: values['surge-port'] ?? String(Number(values['gateway-port'] ?? '3001') + 1),
    restartStrategy: values['restart-strategy'] ?? 'hold',
    surgeYield: values['surge-yield'] ?? 'autogroup',
    holdTimeout: values['hold-timeout'] ?? '60s',
    holdMax: values['hold-max'] ?? '1000',
    drainTimeout: values['drain-timeout'] ?? '30s',
    idleTimeout: values['idle-timeout'] ?? '300s',
    maxConnections: values['max-connections'] ?? '4096',
    requireProxyToken: flag['require-proxy-token'] ?? env.REQUIRE_PROXY_TOKEN === 'true',
    gatewayCmd: values['gateway-cmd'] === undefined ? null : splitCommand(values['gateway-cmd']),
    openclawBin: values['openclaw-bin'] ?? null,
    delivery: values.delivery ?? 'restart',
    keyFile: values['key-file'] ?? null,
    provider: values.provider ?? 'kilocode',
    patchable: (values.patchable ?? 'KILOCODE_API_KEY')
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    providerBaseUrl: values['provider-base-url'] ?? null,
    enableChatCompletions: flag['enable-chat-completions'] ?? false,
    stopTimeout: values['stop-timeout'] ?? '10s',
    readyTimeout: values['ready-timeout'] ?? '5m',
    purgePlaintextBackups: flag['purge-plaintext-backups'] ?? false,
    token: fileToken ?? envToken ?? gatewayToken,
    tokenSource: fileToken !== undefined ? 'file' : envToken !== undefined ? 'env' : 'gateway-token',
    // Equal to the current one while a rotation is being prepared (docs/operator.md): no second token.
    previousToken:
      previousToken !== undefined && previousToken !== (fileToken ?? envToken) ? previousToken : null,
    gatewayToken: gatewayToken ?? null,
    gatewayUid: values['gateway-uid'] ?? null,
    gatewayGid: values['gateway-gid'] ?? null,
  };
  return checkConfig(raw);
}

function nonEmpty(v: string | undefined): string | undefined {
  return v === undefined || v === '' ? undefined : v;
}

/** Most a token file may hold; a token is one line. */
const MAX_TOKEN_FILE_BYTES = 4096;

/**
 * Reads `--controller-token-file`: a regular file owned by this process's user with no group or
 * other permission bits (0400 or 0600), so that no other user — the gateway's — can read it. A
 * Kubernetes Secret volume with `fsGroup` set makes its files group-readable: that is refused.
 * Surrounding whitespace (a trailing newline) is dropped. Errors never quote the content.
 */
export function readControllerTokenFile(path: string): string {
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (err) {
    throw new UsageError(
      `--controller-token-file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  if (!st.isFile()) throw new UsageError(`--controller-token-file: ${path} is not a regular file`);
  const uid = process.getuid?.();
  if (uid !== undefined && st.uid !== uid) {
    throw new UsageError(
      `--controller-token-file: ${path} must be owned by the controller's user (uid ${uid})`,
    );
  }
  if ((st.mode & 0o077) !== 0) {
    throw new UsageError(
      `--controller-token-file: ${path} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); make it 0400`,
    );
  }
  if (st.size > MAX_TOKEN_FILE_BYTES) {
    throw new UsageError(`--controller-token-file: ${path} is larger than ${MAX_TOKEN_FILE_BYTES} bytes`);
  }
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new UsageError(
      `--controller-token-file: cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`,
    );
  }
  const token = text.trim();
  if (token.length < 16 || /\s/.test(token)) {
    throw new UsageError(`--controller-token-file: ${path} must hold one token of at least 16 characters`);
  }
  return token;
}

/**
 * Splits a command line into words like a POSIX shell would for plain words and quotes
 * ('single', "double", backslash escapes outside single quotes), with no expansion of any kind.
 */
export function splitCommand(line: string): string[] {
  const words: string[] = [];
  let cur = '';
  let inWord = false;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quote) {
      if (ch === quote) quote = null;
      else if (ch === '\\' && quote === '"' && i + 1 < line.length) cur += line[++i];
      else cur += ch;
    } else if (ch === "'" || ch === '"') {
      quote = ch;
      inWord = true;
    } else if (ch === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inWord = true;
    } else if (/\s/.test(ch)) {
      if (inWord) words.push(cur);
      cur = '';
      inWord = false;
    } else {
      cur += ch;
      inWord = true;
    }
  }
  if (quote) throw new UsageError('--gateway-cmd has an unterminated quote');
  if (inWord) words.push(cur);
  if (words.length === 0) throw new UsageError('--gateway-cmd must name a command, e.g. "node gateway.js"');
  return words;
}
