// Owns logging: one JSON line per entry, secrets redacted by field and, as a backstop, by value
// (src/secrets.ts). No logging library: the in-pod controller's memory budget (BENCHMARKS.md,
// controller RSS) has no room for pino and the worker_threads it loads, and every command writes
// the same lines, so there is one implementation.
//
// The line is pino's, field for field, so log pipelines and tests read it unchanged:
//   {"level":"info","time":"<ISO 8601>","app":"keyroll",<child bindings>,<fields>,"msg":"…"}
import { writeSync } from 'node:fs';
import { REDACTED, type SecretRegistry } from './secrets.ts';

export { CUT_MARK, REDACTED, SecretRegistry } from './secrets.ts';

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SEVERITY: Record<LogLevel, number> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  fatal: 60,
  silent: Number.POSITIVE_INFINITY,
};

/** A log call: `log.info({ target, pid }, 'Message')`, `log.warn('Message')`, `log.error(err, 'Message')`. */
export interface LogFn {
  (fields: object, msg?: string): void;
  (msg: string): void;
}

export interface Logger {
  /** The level below which nothing is written. */
  readonly level: LogLevel;
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  fatal: LogFn;
  /** A logger whose every line carries `bindings` (after the parent's). */
  child(bindings: Record<string, unknown>): Logger;
}

/** Where lines go: each `write` gets one whole line ending in a newline. */
export interface DestinationStream {
  write(line: string): unknown;
}

/** Field names that may carry a secret whatever their value: at the top level and one level down. */
const SECRET_FIELDS = new Set([
  'key',
  'token',
  'apiKey',
  'api_key',
  'authorization',
  'password',
  'env',
  'KILOCODE_API_KEY',
  'OPENCLAW_GATEWAY_TOKEN',
]);

export interface LoggerOptions {
  level?: string;
  secrets?: SecretRegistry;
  /** Defaults to stdout; tests pass a stream to capture lines. */
  destination?: DestinationStream;
  base?: Record<string, unknown>;
}

function toLevel(name: string): LogLevel {
  if ((LOG_LEVELS as readonly string[]).includes(name)) return name as LogLevel;
  throw new Error(`unknown log level '${name}': expected one of ${LOG_LEVELS.join('|')}`);
}

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Error);

/** `fields` with every secret-named field (top level, and inside a top-level object) replaced. */
function redact(fields: Record<string, unknown>): Record<string, unknown> {
  let out: Record<string, unknown> | null = null;
  for (const [k, v] of Object.entries(fields)) {
    let next = v;
    if (v === undefined) continue;
    if (SECRET_FIELDS.has(k)) next = REDACTED;
    else if (isPlainObject(v)) {
      let inner: Record<string, unknown> | null = null;
      for (const [ik, iv] of Object.entries(v)) {
        if (iv === undefined || !SECRET_FIELDS.has(ik)) continue;
        inner ??= { ...v };
        inner[ik] = REDACTED;
      }
      // req.headers.authorization, the one deeper path a request log may carry.
      const headers = k === 'req' ? (inner ?? v).headers : undefined;
      if (isPlainObject(headers) && headers.authorization !== undefined) {
        inner ??= { ...v };
        inner.headers = { ...headers, authorization: REDACTED };
      }
      if (inner) next = inner;
    }
    if (next !== v) {
      out ??= { ...fields };
      out[k] = next;
    }
  }
  return out ?? fields;
}

/** An Error as a log field: its class, message, stack and own fields (`code`, …). */
function serializeError(err: Error): Record<string, unknown> {
  const out: Record<string, unknown> = { type: err.constructor?.name ?? err.name, message: err.message };
  if (err.stack !== undefined) out.stack = err.stack;
  for (const [k, v] of Object.entries(err)) if (!(k in out)) out[k] = v;
  return out;
}

/** JSON of a field value that never throws: cycles become "[Circular]", a BigInt its digits. */
function stringify(value: unknown): string | undefined {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v));
  } catch {
    const ancestors: object[] = [];
    return JSON.stringify(value, function (this: unknown, _k, v: unknown) {
      if (typeof v === 'bigint') return v.toString();
      if (typeof v !== 'object' || v === null) return v;
      while (ancestors.length > 0 && ancestors.at(-1) !== this) ancestors.pop();
      if (ancestors.includes(v)) return '[Circular]';
      ancestors.push(v);
      return v;
    });
  }
}

/** `,"k":v` for every field with a JSON value, in order (secret fields redacted first). */
function fieldsJson(fields: Record<string, unknown>): string {
  let out = '';
  for (const [k, v] of Object.entries(redact(fields))) {
    const json = stringify(k === 'err' && v instanceof Error ? serializeError(v) : v);
    if (json !== undefined) out += `,${JSON.stringify(k)}:${json}`;
  }
  return out;
}

interface Sink {
  write(line: string): void;
  severity: number;
}

/** Writes to file descriptor 1 synchronously (a log line is never lost in a buffer at exit). */
const stdoutSync: DestinationStream = {
  write(line: string) {
    let buf = Buffer.from(line);
    while (buf.length > 0) {
      try {
        buf = buf.subarray(writeSync(1, buf));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      }
    }
  },
};

class JsonLogger implements Logger {
  readonly #sink: Sink;
  readonly #level: LogLevel;
  /** The bindings as JSON, `,"app":"keyroll","component":"x"`. */
  readonly #bindings: string;

  constructor(sink: Sink, level: LogLevel, bindings: string) {
    this.#sink = sink;
    this.#level = level;
    this.#bindings = bindings;
  }

  get level(): LogLevel {
    return this.#level;
  }

  child(bindings: Record<string, unknown>): Logger {
    return new JsonLogger(this.#sink, this.#level, this.#bindings + fieldsJson(bindings));
  }

  #write(level: LogLevel, first: unknown, msg: string | undefined): void {
    if (SEVERITY[level] < this.#sink.severity) return;
    let fields = '';
    let text = msg;
    if (typeof first === 'string') text = first;
    else if (first instanceof Error) {
      fields = `,"err":${stringify(serializeError(first))}`;
      text ??= first.message;
    } else if (typeof first === 'object' && first !== null) {
      fields = fieldsJson(first as Record<string, unknown>);
    }
    const msgJson = text === undefined ? '' : `,"msg":${JSON.stringify(text)}`;
    const time = new Date().toISOString();
    this.#sink.write(`{"level":"${level}","time":"${time}"${this.#bindings}${fields}${msgJson}}\n`);
  }

  readonly trace: LogFn = (first: object | string, msg?: string) => this.#write('trace', first, msg);
  readonly debug: LogFn = (first: object | string, msg?: string) => this.#write('debug', first, msg);
  readonly info: LogFn = (first: object | string, msg?: string) => this.#write('info', first, msg);
  readonly warn: LogFn = (first: object | string, msg?: string) => this.#write('warn', first, msg);
  readonly error: LogFn = (first: object | string, msg?: string) => this.#write('error', first, msg);
  readonly fatal: LogFn = (first: object | string, msg?: string) => this.#write('fatal', first, msg);
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = toLevel(opts.level ?? process.env.KEYROLL_LOG_LEVEL ?? 'info');
  const destination = opts.destination ?? stdoutSync;
  const secrets = opts.secrets;
  const sink: Sink = {
    severity: SEVERITY[level],
    write: secrets ? (line) => destination.write(secrets.scrub(line)) : (line) => destination.write(line),
  };
  return new JsonLogger(sink, level, fieldsJson(opts.base ?? { app: 'keyroll' }));
}

/** A logger that writes nothing, for pure code under test. */
export function silentLogger(): Logger {
  return createLogger({ level: 'silent', destination: { write: () => {} } });
}
