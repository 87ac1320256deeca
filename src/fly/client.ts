// Owns keyroll's calls to the Fly Machines API: list/get/update machines and machine leases,
// each paced by a per-(action, machine) token bucket, bounded by timeouts, retried only where a
// retry is safe, parsed with zod, and failing with a `FlyApiError` that never carries a secret.
import pRetry from 'p-retry';
import type { z } from 'zod';
import { systemClock } from '../clock.ts';
import { type Logger, SecretRegistry, silentLogger } from '../log.ts';
import { FlyApiError, type FlyErrorCode } from './errors.ts';
import { type Budgets, type FlyAction, type PaceClock, TokenBucketLimiter } from './rate-limit.ts';
import {
  type AppSecret,
  AppSecretListSchema,
  describeSchemaError,
  ErrorBodySchema,
  type Lease,
  LeaseEnvelopeSchema,
  type Machine,
  type MachineConfig,
  MachineListSchema,
  MachineSchema,
  type SetAppSecretResponse,
  SetAppSecretResponseSchema,
  toLease,
} from './schemas.ts';

export { controllerPort, controllerUrl, PORT_METADATA_KEY } from './address.ts';
export { type DeployState, detectDeploy } from './deploy.ts';
export { FlyApiError, type FlyErrorCode, isFlyApiError, isLeaseHeld, MachineAddressError } from './errors.ts';
export type { Lease, Machine, MachineConfig } from './schemas.ts';

export const DEFAULT_FLY_API_URL = 'https://api.machines.dev';
/** The header Fly documents for proving you hold a machine's lease. */
export const LEASE_NONCE_HEADER = 'fly-machine-lease-nonce';

const DETAIL_MAX = 200;

export interface FlyClientOptions {
  /** Fly API token, sent as `Authorization: Bearer …`. Never logged or put in an error. */
  token: string;
  /** Defaults to `https://api.machines.dev` (`http://_api.internal:4280` inside the 6PN mesh). */
  baseUrl?: string;
  /** Per HTTP attempt (default 10 s). */
  timeoutMs?: number;
  /** Whole call including pacing and retries (default 60 s). */
  totalTimeoutMs?: number;
  /** Retries after the first attempt (default 4). */
  retries?: number;
  /** First retry delay (default 250 ms); doubled each retry, randomised ×1–2. */
  minRetryDelayMs?: number;
  /** Cap on one retry delay (default 5 s). */
  maxRetryDelayMs?: number;
  /** Cap on an honoured Retry-After (default 30 s). */
  maxRetryAfterMs?: number;
  /** Client-side budgets; defaults to `CLIENT_BUDGETS`. */
  budgets?: Budgets;
  /** Share one limiter between clients talking to the same org, or replace it in tests. */
  limiter?: TokenBucketLimiter;
  clock?: PaceClock;
  fetch?: typeof globalThis.fetch;
  log?: Logger;
}

export interface CallOptions {
  signal?: AbortSignal;
}

export interface UpdateMachineOptions extends CallOptions {
  /**
   * `skip_launch`: do not boot the new version. Safe for a stopped machine (the config waits for
   * its next boot). On a *started* machine Fly replaces the running version and does not launch
   * the new one, so the machine ends up stopped (flyctl waits for "stop" after
   * `update --skip-launch`); without it a started machine reboots into the new config. There is
   * no restart-free config update of a running machine — see docs/fly.md.
   */
  skipLaunch: boolean;
  /** The nonce of the lease we hold (required by Fly when the machine is leased). */
  leaseNonce?: string | null;
  /** `min_secrets_version`: do not boot with app secrets older than this version. */
  minSecretsVersion?: number;
  /** `current_version`: the `instance_id` the config was read from (optimistic concurrency). */
  currentVersion?: string;
}

export interface AcquireLeaseOptions extends CallOptions {
  ttlSeconds: number;
  description: string;
  /** Our current nonce, to extend a lease we already hold. */
  nonce?: string;
}

interface CallSpec<S extends z.ZodType | null> {
  /** The pacing key (rate-limit.ts) and, unless `label` is set, the name in errors. */
  action: FlyAction;
  /** The name in errors when it differs from the pacing action (the secrets calls). */
  label?: string;
  app: string;
  machineId: string | null;
  method: 'GET' | 'POST' | 'DELETE';
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
  schema: S;
  /** Values that must never appear in an error (env values of a config being written). */
  secrets?: Iterable<string>;
  signal?: AbortSignal;
}

function seg(value: string, what: string): string {
  if (value.length === 0) throw new TypeError(`Fly ${what} must not be empty`);
  return encodeURIComponent(value);
}

/** Retry-After as ms: delta-seconds or an HTTP date; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const trimmed = value.trim();
  if (/^\d+(\.\d+)?$/.test(trimmed)) return Math.round(Number(trimmed) * 1000);
  const at = Date.parse(trimmed);
  return Number.isNaN(at) ? null : Math.max(0, at - nowMs);
}

export class FlyClient {
  readonly baseUrl: string;
  readonly #token: string;
  readonly #timeoutMs: number;
  readonly #totalTimeoutMs: number;
  readonly #retries: number;
  readonly #minRetryDelayMs: number;
  readonly #maxRetryDelayMs: number;
  readonly #maxRetryAfterMs: number;
  readonly #limiter: TokenBucketLimiter;
  readonly #clock: PaceClock;
  readonly #fetch: typeof globalThis.fetch;
  readonly #log: Logger;

  constructor(opts: FlyClientOptions) {
    if (!opts.token) throw new TypeError('Fly API token is required');
    this.baseUrl = (opts.baseUrl ?? DEFAULT_FLY_API_URL).replace(/\/+$/, '');
    this.#token = opts.token;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#totalTimeoutMs = opts.totalTimeoutMs ?? 60_000;
    this.#retries = opts.retries ?? 4;
    this.#minRetryDelayMs = opts.minRetryDelayMs ?? 250;
    this.#maxRetryDelayMs = opts.maxRetryDelayMs ?? 5_000;
    this.#maxRetryAfterMs = opts.maxRetryAfterMs ?? 30_000;
    this.#clock = opts.clock ?? systemClock;
    this.#limiter =
      opts.limiter ??
      new TokenBucketLimiter({ clock: this.#clock, ...(opts.budgets ? { budgets: opts.budgets } : {}) });
    this.#fetch = opts.fetch ?? globalThis.fetch;
    this.#log = (opts.log ?? silentLogger()).child({ component: 'fly-client' });
  }

  /** GET /v1/apps/{app}/machines */
  async listMachines(app: string, opts: CallOptions = {}): Promise<Machine[]> {
    return this.#call({
      action: 'list',
      app,
      machineId: null,
      method: 'GET',
      path: `/v1/apps/${seg(app, 'app')}/machines`,
      schema: MachineListSchema,
      ...opts,
    });
  }

  /** GET /v1/apps/{app}/machines/{id} */
  async getMachine(app: string, machineId: string, opts: CallOptions = {}): Promise<Machine> {
    return this.#call({
      action: 'get',
      app,
      machineId,
      method: 'GET',
      path: this.#machinePath(app, machineId),
      schema: MachineSchema,
      ...opts,
    });
  }

  /**
   * POST /v1/apps/{app}/machines/{id} with the entire config (Fly has no partial update; env is
   * `config.env`). Read the machine under the lease, change the env, send it all back.
   */
  async updateMachine(
    app: string,
    machineId: string,
    config: MachineConfig,
    opts: UpdateMachineOptions,
  ): Promise<Machine> {
    const body: Record<string, unknown> = { config, skip_launch: opts.skipLaunch };
    if (opts.minSecretsVersion !== undefined) body.min_secrets_version = opts.minSecretsVersion;
    if (opts.currentVersion !== undefined) body.current_version = opts.currentVersion;
    return this.#call({
      action: 'update',
      app,
      machineId,
      method: 'POST',
      path: this.#machinePath(app, machineId),
      body,
      headers: opts.leaseNonce ? { [LEASE_NONCE_HEADER]: opts.leaseNonce } : {},
      schema: MachineSchema,
      secrets: Object.values(config.env ?? {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  }

  /** POST …/lease. A lease held by someone else fails with code `lease_held` (Fly: 409). */
  async acquireLease(app: string, machineId: string, opts: AcquireLeaseOptions): Promise<Lease> {
    if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds < 1) {
      throw new TypeError('Lease ttlSeconds must be a positive integer');
    }
    const envelope = await this.#call({
      action: 'lease_acquire',
      app,
      machineId,
      method: 'POST',
      path: `${this.#machinePath(app, machineId)}/lease`,
      body: { ttl: opts.ttlSeconds, description: opts.description },
      headers: opts.nonce ? { [LEASE_NONCE_HEADER]: opts.nonce } : {},
      schema: LeaseEnvelopeSchema,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    return toLease(envelope.data);
  }

  /** GET …/lease; null when the machine is not leased. */
  async getLease(app: string, machineId: string, opts: CallOptions = {}): Promise<Lease | null> {
    try {
      const envelope = await this.#call({
        action: 'lease_get',
        app,
        machineId,
        method: 'GET',
        path: `${this.#machinePath(app, machineId)}/lease`,
        schema: LeaseEnvelopeSchema,
        ...opts,
      });
      return toLease(envelope.data);
    } catch (err) {
      if (err instanceof FlyApiError && err.code === 'lease_not_found') return null;
      throw err;
    }
  }

  /** DELETE …/lease with our nonce. */
  async releaseLease(app: string, machineId: string, nonce: string, opts: CallOptions = {}): Promise<void> {
    await this.#call({
      action: 'lease_release',
      app,
      machineId,
      method: 'DELETE',
      path: `${this.#machinePath(app, machineId)}/lease`,
      headers: { [LEASE_NONCE_HEADER]: nonce },
      schema: null,
      ...opts,
    });
  }

  /**
   * GET /v1/apps/{app}/secrets: names and digests, never values (from outside the app's machines).
   * Paced as a per-app `list`.
   */
  async listAppSecrets(app: string, opts: CallOptions = {}): Promise<AppSecret[]> {
    const body = await this.#call({
      action: 'list',
      label: 'secrets_list',
      app,
      machineId: null,
      method: 'GET',
      path: `/v1/apps/${seg(app, 'app')}/secrets`,
      schema: AppSecretListSchema,
      ...opts,
    });
    return body.secrets ?? [];
  }

  /**
   * POST /v1/apps/{app}/secrets/{name} `{value}`: sets one app secret and returns the app's new
   * secrets `version`. Staged: no machine restarts (that is flyctl's deploy step, which
   * `fly secrets set --stage` skips); machines see it at their next boot. The value is never in
   * an error. Paced as a per-app `update`; not retried on a timeout (the next pass sets it again).
   */
  async setAppSecret(
    app: string,
    name: string,
    value: string,
    opts: CallOptions = {},
  ): Promise<SetAppSecretResponse> {
    return this.#call({
      action: 'update',
      label: 'secret_set',
      app,
      machineId: null,
      method: 'POST',
      path: `/v1/apps/${seg(app, 'app')}/secrets/${seg(name, 'secret name')}`,
      body: { value },
      schema: SetAppSecretResponseSchema,
      secrets: [value],
      ...opts,
    });
  }

  #machinePath(app: string, machineId: string): string {
    return `/v1/apps/${seg(app, 'app')}/machines/${seg(machineId, 'machine id')}`;
  }

  async #call<S extends z.ZodType | null>(
    spec: CallSpec<S>,
  ): Promise<S extends z.ZodType ? z.infer<S> : null> {
    const secrets = new SecretRegistry();
    secrets.add(this.#token);
    for (const s of spec.secrets ?? []) secrets.add(s);
    const deadline = AbortSignal.timeout(this.#totalTimeoutMs);
    const overall = spec.signal ? AbortSignal.any([deadline, spec.signal]) : deadline;
    const scope = spec.machineId ?? spec.app;
    try {
      return await pRetry(
        async () => {
          await this.#limiter.take(spec.action, scope, overall);
          return this.#attempt(spec, overall, secrets);
        },
        {
          retries: this.#retries,
          factor: 2,
          minTimeout: this.#minRetryDelayMs,
          maxTimeout: this.#maxRetryDelayMs,
          randomize: true,
          maxRetryTime: this.#totalTimeoutMs,
          signal: overall,
          onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
            if (!(error instanceof FlyApiError)) return;
            if (error.code === 'rate_limited') {
              // Honour Retry-After through the limiter, so every call on this key waits, not only this one.
              const wait = Math.min(error.retryAfterMs ?? this.#minRetryDelayMs, this.#maxRetryAfterMs);
              this.#limiter.block(spec.action, scope, this.#clock.now() + wait);
            }
            this.#log.warn(
              {
                action: spec.action,
                app: spec.app,
                machineId: spec.machineId,
                code: error.code,
                status: error.status,
                attemptNumber,
                retriesLeft,
              },
              'Fly API request failed',
            );
          },
          shouldRetry: ({ error }) => error instanceof FlyApiError && this.#shouldRetry(spec.method, error),
        },
      );
    } catch (err) {
      if (err instanceof FlyApiError) throw err;
      // Only pacing or p-retry's own waits get here: the deadline or the caller's signal fired.
      throw new FlyApiError({
        code: spec.signal?.aborted ? 'aborted' : 'timeout',
        status: null,
        action: spec.label ?? spec.action,
        app: spec.app,
        machineId: spec.machineId,
      });
    }
  }

  /**
   * 429 is always retried: Fly refused before doing anything. Timeouts, 408, 5xx and network
   * failures are retried for reads only; a write that may have landed is left to the next pass,
   * which re-reads the machine first.
   */
  #shouldRetry(method: string, error: FlyApiError): boolean {
    if (error.code === 'rate_limited') return true;
    return error.retryable && method === 'GET';
  }

  async #attempt<S extends z.ZodType | null>(
    spec: CallSpec<S>,
    overall: AbortSignal,
    secrets: SecretRegistry,
  ): Promise<S extends z.ZodType ? z.infer<S> : null> {
    const signal = AbortSignal.any([AbortSignal.timeout(this.#timeoutMs), overall]);
    const headers: Record<string, string> = {
      accept: 'application/json',
      authorization: `Bearer ${this.#token}`,
      ...spec.headers,
    };
    const init: RequestInit = { method: spec.method, headers, signal };
    if (spec.body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(spec.body);
    }
    let status: number;
    let text: string;
    let retryAfter: string | null;
    try {
      const res = await this.#fetch(`${this.baseUrl}${spec.path}`, init);
      status = res.status;
      retryAfter = res.headers.get('retry-after');
      text = await res.text();
    } catch (err) {
      throw this.#error(spec, this.#transportCode(spec, signal), null, { cause: describeCause(err) });
    }
    if (status < 200 || status >= 300) {
      const detail = errorDetail(text, secrets);
      const code = classifyStatus(spec.action, status, detail);
      const retryAfterMs = code === 'rate_limited' ? parseRetryAfter(retryAfter, this.#clock.now()) : null;
      throw this.#error(spec, code, status, { detail, retryAfterMs });
    }
    if (spec.schema === null) return null as S extends z.ZodType ? z.infer<S> : null;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw this.#error(spec, 'invalid_response', status, { detail: 'response body is not JSON' });
    }
    const parsed = spec.schema.safeParse(json);
    if (!parsed.success) {
      throw this.#error(spec, 'invalid_response', status, { detail: describeSchemaError(parsed.error) });
    }
    return parsed.data as S extends z.ZodType ? z.infer<S> : null;
  }

  #transportCode(spec: CallSpec<z.ZodType | null>, signal: AbortSignal): FlyErrorCode {
    if (spec.signal?.aborted) return 'aborted';
    return signal.aborted ? 'timeout' : 'network';
  }

  #error(
    spec: CallSpec<z.ZodType | null>,
    code: FlyErrorCode,
    status: number | null,
    extra: { detail?: string | null; retryAfterMs?: number | null; cause?: unknown },
  ): FlyApiError {
    return new FlyApiError({
      code,
      status,
      action: spec.label ?? spec.action,
      app: spec.app,
      machineId: spec.machineId,
      ...extra,
    });
  }
}

/** Fly's error text (`{error}` / `{message}` or the raw body), truncated and scrubbed. */
function errorDetail(text: string, secrets: SecretRegistry): string | null {
  let detail: string = text;
  try {
    const body = ErrorBodySchema.safeParse(JSON.parse(text));
    if (body.success) detail = body.data.error ?? body.data.message ?? text;
  } catch {
    // Not JSON: keep the raw text.
  }
  detail = secrets.scrub(detail.trim()).slice(0, DETAIL_MAX);
  return detail.length > 0 ? detail : null;
}

/** Maps a status (and, where Fly reuses a status, its error text) to a code. */
export function classifyStatus(action: FlyAction, status: number, detail: string | null): FlyErrorCode {
  const mentionsLease = detail !== null && /lease/i.test(detail);
  if (status === 401 || status === 403) return 'unauthorized';
  if (status === 404)
    return action === 'lease_get' || action === 'lease_release' ? 'lease_not_found' : 'not_found';
  if (status === 408) return 'timeout';
  if (status === 409) return action === 'lease_acquire' || mentionsLease ? 'lease_held' : 'conflict';
  if (status === 412) return mentionsLease ? 'lease_held' : 'precondition_failed';
  if (status === 429) return 'rate_limited';
  if (status === 400 || status === 422) return 'bad_request';
  if (status >= 500) return 'server_error';
  return 'http_error';
}

/** A transport failure reduced to its name and code: undici causes can be large objects. */
function describeCause(err: unknown): string {
  if (err instanceof Error) {
    const inner = err.cause instanceof Error ? err.cause : null;
    const code = inner && 'code' in inner && typeof inner.code === 'string' ? ` ${inner.code}` : '';
    return `${err.name}${code}`;
  }
  return 'unknown';
}
