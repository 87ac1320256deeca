// Owns the controller's configuration: flags and environment parsed once, with zod, into one value.
import { readFileSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import * as z from 'zod';
import { UsageError } from '../errors.ts';
import { durationFlag, millisecondsFlag, parseCommandLine } from '../flags.ts';

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
  KEYROLL_LOG_LEVEL         pino log level (default info)
`;

const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;

const port = (field: string, min = 1) =>
  z.coerce
    .number({ error: `${field} must be a port number (${min}-65535)` })
    .int({ error: `${field} must be a port number (${min}-65535)` })
    .min(min, { error: `${field} must be a port number (${min}-65535)` })
    .max(65535, { error: `${field} must be a port number (${min}-65535)` });

/** A duration flag; the message names the flag (these messages never quote a secret). */
const duration = (field: string, min: number) =>
  z.string().transform((text, ctx) => {
    const r = durationFlag(min).safeParse(text);
    if (r.success) return r.data;
    ctx.addIssue({ code: 'custom', message: `${field}: ${r.error.issues[0]?.message ?? 'invalid'}` });
    return z.NEVER;
  });

const count = (field: string, min: number) =>
  z.coerce
    .number({ error: `${field} must be a whole number >= ${min}` })
    .int({ error: `${field} must be a whole number >= ${min}` })
    .min(min, { error: `${field} must be a whole number >= ${min}` });

const id = (field: string) =>
  z.coerce
    .number({ error: `${field} must be a numeric id (0-4294967294)` })
    .int({ error: `${field} must be a numeric id (0-4294967294)` })
    .min(0, { error: `${field} must be a numeric id (0-4294967294)` })
    .max(4294967294, { error: `${field} must be a numeric id (0-4294967294)` })
    .nullable();

const TOKEN_MISSING =
  'KEYROLL_CONTROLLER_TOKEN (or --controller-token-file) or, for KiloClaw compatibility, ' +
  'OPENCLAW_GATEWAY_TOKEN must be set (at least 16 characters)';

const ConfigSchema = z
  .object({
    stateDir: z.string().min(1, { error: '--state-dir must be a directory path' }),
    // 0 = any free port (tests); the listening port is logged.
    port: port('--port', 0),
    bind: z.string().min(1, { error: '--bind must be an IP address such as 0.0.0.0 or 127.0.0.1' }),
    gatewayPort: port('--gateway-port'),
    adminPort: port('--admin-port', 0).nullable(),
    surgePort: port('--surge-port'),
    restartStrategy: z.enum(['hold', 'surge'], { error: '--restart-strategy must be hold or surge' }),
    holdTimeoutMs: duration('--hold-timeout', 100),
    holdMax: count('--hold-max', 0),
    drainTimeoutMs: duration('--drain-timeout', 0),
    idleTimeoutMs: duration('--idle-timeout', 1000),
    maxConnections: count('--max-connections', 1),
    requireProxyToken: z.boolean(),
    gatewayCmd: z.array(z.string()).min(1).nullable(),
    openclawBin: z.string().min(1).nullable(),
    delivery: z.enum(['restart', 'file'], { error: '--delivery must be restart or file' }),
    keyFile: z.string().min(1).nullable(),
    provider: z
      .string()
      .regex(/^[a-z][a-z0-9_-]{0,63}$/, { error: '--provider must be a provider id such as kilocode' }),
    patchable: z
      .array(z.string().regex(ENV_NAME, { error: '--patchable must be a comma-separated list of VAR names' }))
      .min(1, { error: '--patchable must name at least one variable' }),
    providerBaseUrl: z.url({ error: '--provider-base-url must be an http(s) URL' }).nullable(),
    enableChatCompletions: z.boolean(),
    stopTimeoutMs: duration('--stop-timeout', 100),
    readyTimeoutMs: duration('--ready-timeout', 1000),
    purgePlaintextBackups: z.boolean(),
    /** The controller token: /_kilo/* bearer and the key of every fingerprint. */
    token: z.string({ error: TOKEN_MISSING }).min(16, { error: TOKEN_MISSING }),
    /** Where the token came from; `gateway-token` is the KiloClaw fallback the gateway can read. */
    tokenSource: z.enum(['env', 'file', 'gateway-token']),
    /** Accepted too, during a rotation of the controller token. */
    previousToken: z
      .string()
      .min(16, { error: 'KEYROLL_CONTROLLER_TOKEN_PREVIOUS must be at least 16 characters' })
      .nullable(),
    /** The gateway's own token (OPENCLAW_GATEWAY_TOKEN), or null. */
    gatewayToken: z.string().min(1).nullable(),
    gatewayUid: id('--gateway-uid'),
    gatewayGid: id('--gateway-gid'),
  })
  .superRefine((c, ctx) => {
    if (c.delivery === 'file' && !c.keyFile) {
      ctx.addIssue({
        code: 'custom',
        message: '--key-file is required with --delivery file (an absolute path)',
      });
    }
    if (c.keyFile && !c.keyFile.startsWith('/')) {
      ctx.addIssue({ code: 'custom', message: '--key-file must be an absolute path' });
    }
    if (c.surgePort === c.gatewayPort) {
      ctx.addIssue({ code: 'custom', message: '--surge-port must differ from --gateway-port' });
    }
    if (c.adminPort !== null && c.adminPort !== 0 && c.adminPort === c.port) {
      ctx.addIssue({ code: 'custom', message: '--admin-port must differ from --port' });
    }
    if ((c.gatewayUid === null) !== (c.gatewayGid === null)) {
      ctx.addIssue({ code: 'custom', message: '--gateway-uid and --gateway-gid go together' });
    }
    // The gateway holds its own token: a controller token equal to it would be no secret from it.
    // (The previous token may be the gateway token: that is the way out of the KiloClaw fallback.)
    if (c.tokenSource !== 'gateway-token' && c.gatewayToken === c.token) {
      ctx.addIssue({
        code: 'custom',
        message:
          'the controller token must differ from OPENCLAW_GATEWAY_TOKEN (the gateway can read that one)',
      });
    }
    if (c.requireProxyToken && c.gatewayToken === null) {
      // Clients would need the controller token to pass the proxy: that is the admin credential.
      ctx.addIssue({
        code: 'custom',
        message: '--require-proxy-token needs OPENCLAW_GATEWAY_TOKEN (clients present the gateway token)',
      });
    }
    for (const name of c.patchable) {
      if (name.startsWith('KEYROLL_CONTROLLER_TOKEN')) {
        ctx.addIssue({ code: 'custom', message: '--patchable must not name the controller token' });
      }
    }
  });

export type ControllerConfig = z.infer<typeof ConfigSchema>;

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
  const raw = {
    stateDir: stateDirFlag ?? env.OPENCLAW_STATE_DIR ?? join(env.HOME ?? homedir(), '.openclaw'),
    port: values.port ?? '18789',
    bind: values.bind ?? '0.0.0.0',
    gatewayPort: values['gateway-port'] ?? '3001',
    adminPort: values['admin-port'] ?? null,
    surgePort: values['surge-port'] ?? String(Number(values['gateway-port'] ?? '3001') + 1),
    restartStrategy: values['restart-strategy'] ?? 'hold',
    holdTimeoutMs: values['hold-timeout'] ?? '60s',
    holdMax: values['hold-max'] ?? '1000',
    drainTimeoutMs: values['drain-timeout'] ?? '30s',
    idleTimeoutMs: values['idle-timeout'] ?? '300s',
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
    stopTimeoutMs: values['stop-timeout'] ?? '10s',
    readyTimeoutMs: values['ready-timeout'] ?? '5m',
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
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(parsed.error.issues.map((i) => i.message).join('; '));
  }
  if (parsed.data.gatewayCmd !== null && parsed.data.gatewayCmd.length === 0) {
    throw new UsageError('--gateway-cmd must name a command, e.g. "node gateway.js --flag"');
  }
  return parsed.data;
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
