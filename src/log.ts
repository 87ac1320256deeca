// Owns logging: pino JSON with secrets redacted by path and, as a backstop, by value (src/secrets.ts).
import { type DestinationStream, destination, type Logger, pino } from 'pino';
import { REDACTED, type SecretRegistry } from './secrets.ts';

export type { Logger } from 'pino';

export { CUT_MARK, REDACTED, SecretRegistry } from './secrets.ts';

/** Field paths that may carry a secret whatever their value. */
const REDACT_PATHS = [
  'key',
  'token',
  'apiKey',
  'api_key',
  'authorization',
  'password',
  '*.key',
  '*.token',
  '*.apiKey',
  '*.api_key',
  '*.authorization',
  '*.password',
  'headers.authorization',
  'req.headers.authorization',
  'env',
  '*.env',
  'KILOCODE_API_KEY',
  'OPENCLAW_GATEWAY_TOKEN',
  '*.KILOCODE_API_KEY',
  '*.OPENCLAW_GATEWAY_TOKEN',
];

export interface LoggerOptions {
  level?: string;
  secrets?: SecretRegistry;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const secrets = opts.secrets;
  return pino(
    {
      level: opts.level ?? process.env.KEYROLL_LOG_LEVEL ?? 'info',
      base: opts.base ?? { app: 'keyroll' },
      timestamp: pino.stdTimeFunctions.isoTime,
      // "level":"info", not 30: what Loki, Datadog and GCP expect.
      formatters: { level: (label) => ({ level: label }) },
      redact: { paths: REDACT_PATHS, censor: REDACTED },
      hooks: secrets ? { streamWrite: (line: string) => secrets.scrub(line) } : {},
    },
    opts.destination ?? destination({ dest: 1, sync: true }),
  );
}

/** A logger that writes nothing, for pure code under test. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
