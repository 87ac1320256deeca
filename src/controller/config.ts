// Owns the controller's configuration: flags and environment parsed once, with zod, into one value.
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as z from 'zod';
import { parseFlags, UsageError } from '../cli/usage.ts';

export const CONTROLLER_USAGE = `keyroll controller — in-pod controller: bootstrap, supervise the gateway, serve /_kilo/*

Usage: keyroll controller [flags]

Flags:
  --state-dir DIR           OpenClaw state dir (default $OPENCLAW_STATE_DIR, else ~/.openclaw)
  --port N                  controller HTTP port (default 18789)
  --bind ADDR               controller bind address (default 0.0.0.0)
  --gateway-port N          port the gateway serves /readyz on (default 3001)
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
  --stop-timeout-ms N       SIGTERM → SIGKILL grace period (default 10000)
  --ready-timeout-ms N      a child not ready after this long is restarted (default 300000)
  -h, --help                show this help

Environment:
  OPENCLAW_GATEWAY_TOKEN    bearer token for /_kilo/* and the gateway (required)
  KILOCODE_API_KEY          initial provider key (the first --patchable variable)
  KEYROLL_LOG_LEVEL         pino log level (default info)
`;

const ENV_NAME = /^[A-Z_][A-Z0-9_]{0,127}$/;

const port = (field: string, min = 1) =>
  z.coerce
    .number({ error: `${field} must be a port number (${min}-65535)` })
    .int({ error: `${field} must be a port number (${min}-65535)` })
    .min(min, { error: `${field} must be a port number (${min}-65535)` })
    .max(65535, { error: `${field} must be a port number (${min}-65535)` });

const millis = (field: string, min: number) =>
  z.coerce
    .number({ error: `${field} must be a whole number of milliseconds >= ${min}` })
    .int({ error: `${field} must be a whole number of milliseconds >= ${min}` })
    .min(min, { error: `${field} must be a whole number of milliseconds >= ${min}` });

const ConfigSchema = z
  .object({
    stateDir: z.string().min(1, { error: '--state-dir must be a directory path' }),
    // 0 = any free port (tests); the listening port is logged.
    port: port('--port', 0),
    bind: z.string().min(1, { error: '--bind must be an IP address such as 0.0.0.0 or 127.0.0.1' }),
    gatewayPort: port('--gateway-port'),
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
    stopTimeoutMs: millis('--stop-timeout-ms', 100),
    readyTimeoutMs: millis('--ready-timeout-ms', 1000),
    token: z
      .string({ error: 'OPENCLAW_GATEWAY_TOKEN must be set to the gateway token (at least 16 characters)' })
      .min(16, { error: 'OPENCLAW_GATEWAY_TOKEN must be set to the gateway token (at least 16 characters)' }),
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
  });

export type ControllerConfig = z.infer<typeof ConfigSchema>;

const FLAGS = {
  'state-dir': { type: 'string' },
  port: { type: 'string' },
  bind: { type: 'string' },
  'gateway-port': { type: 'string' },
  'gateway-cmd': { type: 'string' },
  'openclaw-bin': { type: 'string' },
  delivery: { type: 'string' },
  'key-file': { type: 'string' },
  provider: { type: 'string' },
  patchable: { type: 'string' },
  'provider-base-url': { type: 'string' },
  'enable-chat-completions': { type: 'boolean' },
  'stop-timeout-ms': { type: 'string' },
  'ready-timeout-ms': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

/** `--help` was asked for: the caller prints the usage and exits 0. */
export class HelpRequested extends Error {
  override name = 'HelpRequested';
}

/**
 * Parses flags and environment into a config, or throws a UsageError whose message names the
 * bad field and the expected form (never its value: the token must not reach a terminal).
 */
export function parseControllerConfig(argv: string[], env: NodeJS.ProcessEnv): ControllerConfig {
  const { values } = parseFlags(argv, FLAGS);
  if (values.help) throw new HelpRequested();
  const raw = {
    stateDir: values['state-dir'] ?? env.OPENCLAW_STATE_DIR ?? join(env.HOME ?? homedir(), '.openclaw'),
    port: values.port ?? '18789',
    bind: values.bind ?? '0.0.0.0',
    gatewayPort: values['gateway-port'] ?? '3001',
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
    enableChatCompletions: values['enable-chat-completions'] ?? false,
    stopTimeoutMs: values['stop-timeout-ms'] ?? '10000',
    readyTimeoutMs: values['ready-timeout-ms'] ?? '300000',
    token: env.OPENCLAW_GATEWAY_TOKEN,
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
