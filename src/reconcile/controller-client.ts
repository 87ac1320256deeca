// Owns HTTP to one in-pod controller: `GET /_kilo/state` and `POST /_kilo/env/patch`, bounded and typed.
//
// The transport is src/adapters/http1.ts (HTTP/1.1 over node:net / node:tls, keep-alive), not
// node:http and not `fetch`: a pass over 10,000 targets opens a connection to each and makes one
// or a few small requests on it, and the per-request machinery of both (fetch: WHATWG streams,
// Headers, AbortSignal.any/timeout per call; node:http: ClientRequest, the agent, IncomingMessage
// streams) cost most of keyroll's CPU per target and much of its garbage (BENCHMARKS.md,
// reconcile fleet).
import {
  assertHeaderValue,
  Http1Client,
  Http1Error,
  type Http1Response,
  IDLE_MS,
} from '../adapters/http1.ts';
import type { ProxyEnv } from '../adapters/proxy-env.ts';
import {
  type ObservedState,
  parseObservedState,
  type StateWait,
  WAIT_HEADER,
  WAIT_PID_HEADER,
} from '../kilo-state.ts';

export type ControllerErrorKind = 'network' | 'timeout' | 'http' | 'invalid-response';

/** A failed controller call; `retryable` is true for network errors, timeouts, 429 and 5xx only. */
export class ControllerError extends Error {
  override name = 'ControllerError';
  readonly kind: ControllerErrorKind;
  readonly status: number | undefined;
  readonly retryable: boolean;
  constructor(kind: ControllerErrorKind, message: string, status?: number) {
    super(message);
    this.kind = kind;
    this.status = status;
    this.retryable =
      kind === 'network' || kind === 'timeout' || status === 429 || (status !== undefined && status >= 500);
  }
}

/** A controller's answer to `POST /_kilo/env/patch`. */
export interface PatchResponse {
  ok: boolean;
  signaled: boolean;
  migratedProfiles: number;
}

const isObj = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The patch answer with only its known fields (`migratedProfiles` 0 when an older controller
 * omits it), or null when it is not one. Hand-written, as the `/_kilo/state` check is: a rotation
 * pass reads one per target.
 */
export function parsePatchResponse(body: unknown): PatchResponse | null {
  if (!isObj(body) || typeof body.ok !== 'boolean' || typeof body.signaled !== 'boolean') return null;
  const m = body.migratedProfiles === undefined ? 0 : body.migratedProfiles;
  if (!Number.isSafeInteger(m) || (m as number) < 0) return null;
  return { ok: body.ok, signaled: body.signaled, migratedProfiles: m as number };
}

/** `: error (code)` from a controller's error body `{error, code?}`, or '' when it is not one. */
function errorDetail(body: unknown): string {
  if (!isObj(body) || typeof body.error !== 'string') return '';
  if (body.code !== undefined && typeof body.code !== 'string') return '';
  const code = body.code ? ` (${body.code})` : '';
  return `: ${body.error.slice(0, 200)}${code}`;
}

/** The port the pipeline talks to; tests and other drivers may provide their own. */
export interface ControllerClient {
  /**
   * `wait`: a read that may be held (src/kilo-state.ts, "a read that waits"); only a controller
   * that advertises `controller.waitMaxMs` holds it, any other answers at once.
   */
  getState(signal: AbortSignal, wait?: StateWait): Promise<ObservedState>;
  patchEnv(vars: Record<string, string>, version: string, signal: AbortSignal): Promise<PatchResponse>;
  /**
   * `patchEnv` and a state read that waits (`wait`), sent together: the read is written behind
   * the patch on the same connection and answered after it (HTTP/1.1 pipelining), so it is at
   * the controller before the restart begins, at the cost of no extra write or turn. `state`
   * rejects (`network`, "not sent") when the patch fails or is refused; the caller then reads on
   * its own. Optional: a client without it is sent the patch and the read one after the other.
   */
  patchEnvThenState?(
    vars: Record<string, string>,
    version: string,
    wait: StateWait,
    signal: AbortSignal,
  ): { patch: Promise<PatchResponse>; state: Promise<ObservedState> };
  /**
   * Closes the connections kept idle for this controller: the pass is done with the target. The
   * client stays usable (a later call connects anew). Without it they close after IDLE_SOCKET_MS
   * or when 1,024 others are idle, and a converged pass over 10,000 targets would keep 1,024
   * sockets alive long enough for the garbage collector to move them to the old generation.
   */
  closeIdle?(): void;
}

export interface HttpControllerOptions {
  url: string;
  token: string;
  timeoutMs: number;
  /** The proxy variables to use instead of the process's (src/adapters/http1.ts, `proxyEnv`). */
  proxyEnv?: ProxyEnv;
}

/** A controller answer is a few hundred bytes; anything past this is not one. */
export const MAX_RESPONSE_BYTES = 1024 * 1024;

/**
 * Idle keep-alive connections are closed after this, below the controller's 5 s keepAliveTimeout
 * (src/controller/server.ts), so that keyroll, not the server, closes an idle connection; at most
 * 1,024 stay idle across all controllers (src/adapters/http1.ts).
 */
export const IDLE_SOCKET_MS = IDLE_MS;

/** The transport's failure as the pipeline's error, naming the call and never a value. */
function controllerError(name: string, err: Http1Error, timeoutMs: number): ControllerError {
  switch (err.kind) {
    case 'timeout':
      return new ControllerError('timeout', `${name} timed out after ${timeoutMs} ms`);
    case 'network':
      // `failed: CODE`, a TLS failure's reason, the proxy by host and port.
      return new ControllerError('network', `${name} ${err.message}`);
    case 'proxy':
      return new ControllerError('network', `${name} failed: ${err.message}`);
    case 'lost':
      return new ControllerError('network', `${name}: response body lost (${err.code})`);
    case 'cancelled':
      return new ControllerError('network', `${name} ${err.message}`);
    case 'too-large':
      return new ControllerError(
        'invalid-response',
        `${name}: response larger than ${MAX_RESPONSE_BYTES} bytes`,
      );
    default:
      return new ControllerError('invalid-response', `${name}: malformed HTTP response (${err.message})`);
  }
}

function parseJson(body: string): unknown {
  if (body.length === 0) return null;
  try {
    return JSON.parse(body);
  } catch {
    return null;
  }
}

export function httpControllerClient(opts: HttpControllerOptions): ControllerClient {
  const u = new URL(opts.url.endsWith('/') ? opts.url : `${opts.url}/`);
  // Refused at the first call, as node:http refused them, not while a pass lists its targets.
  let refused: TypeError | null = null;
  try {
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new TypeError(`controller URL must be http or https, not ${u.protocol}`);
    }
    assertHeaderValue('authorization', opts.token);
  } catch (err) {
    refused = err as TypeError;
  }
  const client = new Http1Client(
    {
      protocol: u.protocol === 'https:' ? 'https:' : 'http:',
      // An IPv6 literal comes back bracketed from URL.
      hostname: u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname,
      port: u.port ? Number(u.port) : u.protocol === 'https:' ? 443 : 80,
    },
    opts.proxyEnv ? { proxyEnv: opts.proxyEnv } : undefined,
  );
  // The base's query, if any, is dropped as new URL(path, base) drops it.
  const statePath = `${u.pathname}_kilo/state`;
  const patchPath = `${u.pathname}_kilo/env/patch`;
  const common = `authorization: Bearer ${opts.token}\r\naccept: application/json\r\n`;
  // A held read must be answered well within the call's own timeout: the controller answers
  // when the wait ends, then observes (a profile scan and a readiness probe) and sends.
  const maxWaitMs = Math.floor(opts.timeoutMs * 0.75);
  const waitHeaders = (w: StateWait | undefined) => {
    const ms = w ? Math.min(Math.floor(w.ms), maxWaitMs) : 0;
    if (!(ms > 0)) return common;
    const pid = w && w.pid !== null ? `${WAIT_PID_HEADER}: ${w.pid}\r\n` : '';
    return `${common}${WAIT_HEADER}: ${ms}\r\n${pid}`;
  };

  const callOptions = (signal: AbortSignal) => ({
    signal,
    timeoutMs: opts.timeoutMs,
    maxBytes: MAX_RESPONSE_BYTES,
  });
  const patchHeaders = (version: string) => {
    assertHeaderValue('x-keyroll-key-version', version);
    return `${common}content-type: application/json\r\nx-keyroll-key-version: ${version}\r\n`;
  };

  /**
   * An exchange's outcome: the parsed body (null when empty or not JSON), or a ControllerError.
   * A promise chain, not an async function: ≈0.2 KB less garbage per call (BENCHMARKS.md,
   * reconcile fleet, S8-H2).
   */
  function outcome(answer: Promise<Http1Response>, name: string): Promise<unknown> {
    return answer.then(
      (res) => {
        const parsed = parseJson(res.body);
        if (res.status < 200 || res.status > 299) {
          // Controllers answer with fixed error strings that never echo a value; keep the first
          // 200 characters, and the CLI scrubs known secrets from everything it prints as a backstop.
          throw new ControllerError(
            'http',
            `${name} answered HTTP ${res.status}${errorDetail(parsed)}`,
            res.status,
          );
        }
        return parsed;
      },
      (err: unknown) => {
        throw err instanceof Http1Error ? controllerError(name, err, opts.timeoutMs) : err;
      },
    );
  }

  function exchange(
    method: 'GET' | 'POST',
    path: string,
    name: string,
    signal: AbortSignal,
    headers: string,
    body?: string,
  ): Promise<unknown> {
    if (refused) return Promise.reject(refused);
    return outcome(client.request(method, path, headers, body, callOptions(signal)), name);
  }

  const stateOf = (body: unknown): ObservedState => {
    const parsed = parseObservedState(body);
    if (!parsed.ok) {
      throw new ControllerError(
        'invalid-response',
        `GET _kilo/state: unexpected response (fields: ${parsed.fields.join(', ')})`,
      );
    }
    return parsed.state;
  };
  const patchOf = (body: unknown): PatchResponse => {
    const parsed = parsePatchResponse(body);
    if (!parsed) throw new ControllerError('invalid-response', 'POST _kilo/env/patch: unexpected response');
    return parsed;
  };

  return {
    closeIdle: () => client.closeIdle(),
    getState(signal, wait) {
      return exchange('GET', statePath, 'GET _kilo/state', signal, waitHeaders(wait)).then(stateOf);
    },
    async patchEnv(vars, version, signal) {
      const headers = patchHeaders(version);
      return patchOf(
        await exchange('POST', patchPath, 'POST _kilo/env/patch', signal, headers, JSON.stringify(vars)),
      );
    },
    patchEnvThenState(vars, version, wait, signal) {
      let pair: [Promise<Http1Response>, Promise<Http1Response>];
      try {
        if (refused) throw refused;
        pair = client.requestPair(
          { method: 'POST', path: patchPath, headers: patchHeaders(version), body: JSON.stringify(vars) },
          { path: statePath, headers: waitHeaders(wait) },
          callOptions(signal),
        );
      } catch (err) {
        pair = [Promise.reject(err), Promise.reject(err)];
      }
      const state = outcome(pair[1], 'GET _kilo/state').then(stateOf);
      // The read is the caller's only after the patch succeeded; a rejection before that is not
      // an unhandled one.
      state.catch(() => {});
      return { patch: outcome(pair[0], 'POST _kilo/env/patch').then(patchOf), state };
    },
  };
}
