// Owns the Fly client's error catalogue: one typed error carrying status, code and whether a later
// attempt may succeed — and never a token, an env value or a response body in its message.

export type FlyErrorCode =
  /** 401/403: the token is missing, wrong or lacks access to the app. */
  | 'unauthorized'
  /** 404 on an app or machine. */
  | 'not_found'
  /** Someone else holds the machine's lease (409 on acquire; a lease refusal on update). */
  | 'lease_held'
  /** Release or get of a lease that does not exist (or already expired). */
  | 'lease_not_found'
  /** Any other 409. */
  | 'conflict'
  /** 412: a precondition such as `current_version` or `min_secrets_version` is not met. */
  | 'precondition_failed'
  /** 400/422. */
  | 'bad_request'
  /** 429, after the client's own retries were used up. */
  | 'rate_limited'
  /** The call (or Fly's 408) ran out of time. */
  | 'timeout'
  /** 5xx. */
  | 'server_error'
  /** The connection failed before a response arrived. */
  | 'network'
  /** A 2xx whose body does not match the documented shape. */
  | 'invalid_response'
  /** The caller's signal aborted the call. */
  | 'aborted'
  /** Any other non-2xx status. */
  | 'http_error';

const RETRYABLE: ReadonlySet<FlyErrorCode> = new Set(['rate_limited', 'timeout', 'server_error', 'network']);

export interface FlyApiErrorInit {
  code: FlyErrorCode;
  status: number | null;
  /** e.g. `update`, `lease_acquire`. */
  action: string;
  app: string;
  machineId?: string | null;
  /** Fly's own error text, truncated and scrubbed of every secret the client knows. */
  detail?: string | null;
  /** Retry-After in ms, when Fly sent one. */
  retryAfterMs?: number | null;
  cause?: unknown;
}

export class FlyApiError extends Error {
  override readonly name = 'FlyApiError';
  readonly code: FlyErrorCode;
  readonly status: number | null;
  /** True when the same call may succeed later without anything else changing. */
  readonly retryable: boolean;
  readonly action: string;
  readonly app: string;
  readonly machineId: string | null;
  readonly detail: string | null;
  readonly retryAfterMs: number | null;

  constructor(init: FlyApiErrorInit) {
    const target = init.machineId ? `${init.app}/${init.machineId}` : init.app;
    const status = init.status === null ? '' : ` (HTTP ${init.status})`;
    // Constant parts and identifiers only: the message is what ends up in logs and reports.
    super(`Fly API ${init.action} ${target} failed: ${init.code}${status}`, { cause: init.cause });
    this.code = init.code;
    this.status = init.status;
    this.retryable = RETRYABLE.has(init.code);
    this.action = init.action;
    this.app = init.app;
    this.machineId = init.machineId ?? null;
    this.detail = init.detail ?? null;
    this.retryAfterMs = init.retryAfterMs ?? null;
  }
}

export function isFlyApiError(err: unknown): err is FlyApiError {
  return err instanceof FlyApiError;
}

/** True when the machine is leased by someone else: skip it this pass and report it. */
export function isLeaseHeld(err: unknown): err is FlyApiError {
  return err instanceof FlyApiError && err.code === 'lease_held';
}

/** Thrown when a machine has no usable private address to reach its controller on. */
export class MachineAddressError extends Error {
  override readonly name = 'MachineAddressError';
  readonly machineId: string;

  constructor(machineId: string, reason: string) {
    super(`Machine ${machineId} has no usable private address: ${reason}`);
    this.machineId = machineId;
  }
}
