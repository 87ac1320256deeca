// Owns logging: pino JSON with secrets redacted by path and, as a backstop, by value.
import { type DestinationStream, destination, type Logger, pino } from 'pino';

export type { Logger } from 'pino';

export const REDACTED = '[REDACTED]';

/**
 * Ends a line that was cut to a length bound. A secret that straddled the cut would survive as a
 * prefix the value scrub does not match, so the scrub also redacts a secret's leading part
 * (6 characters or more) right before this mark.
 */
export const CUT_MARK = '…';

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

/**
 * The set of secret values known to this process. Every log line is scrubbed of them before
 * it is written, so a secret that slips into a message or an unexpected field never leaves.
 */
export class SecretRegistry {
  #values = new Set<string>();

  /** Registers a value; values shorter than 6 characters are too common to scrub safely. */
  add(value: string | undefined | null): void {
    if (value && value.length >= 6) this.#values.add(value);
  }

  scrub(text: string): string {
    let out = text;
    for (const v of this.#values) {
      if (out.includes(v)) out = out.split(v).join(REDACTED);
      // JSON-escaped forms of the value (a secret with quotes or backslashes inside).
      const escaped = JSON.stringify(v).slice(1, -1);
      if (escaped !== v && out.includes(escaped)) out = out.split(escaped).join(REDACTED);
      if (out.includes(CUT_MARK)) {
        for (let k = v.length - 1; k >= 6; k--) {
          const cut = `${v.slice(0, k)}${CUT_MARK}`;
          if (out.includes(cut)) out = out.split(cut).join(`${REDACTED}${CUT_MARK}`);
        }
      }
    }
    return out;
  }

  get size(): number {
    return this.#values.size;
  }
}

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
