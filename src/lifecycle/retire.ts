// Owns retiring previous key versions: the revoke call (API sources) and the webhook (any source),
// each recorded in the lifecycle before and after the call so that a crash at any point leads to
// exactly one successful revoke, never an early one. The key itself is never sent: only versions.
import type { Clock } from '../clock.ts';
import { errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { type RetryPolicy, retrying } from '../reconcile/retry.ts';
import {
  type KeyLifecycle,
  markAnnounced,
  markRetired,
  markRetiring,
  noteOn,
  type PreviousKey,
} from './lifecycle.ts';

export interface CallPolicy extends RetryPolicy {
  timeoutMs: number;
}

export const DEFAULT_CALL_POLICY: CallPolicy = {
  retries: 4,
  minTimeoutMs: 250,
  maxTimeoutMs: 5_000,
  timeoutMs: 10_000,
};

/** A refused or failed call; `retryable` for network errors, timeouts, 429 and 5xx. */
export class RetireCallError extends Error {
  override name = 'RetireCallError';
  readonly retryable: boolean;
  constructor(message: string, retryable: boolean) {
    super(message);
    this.retryable = retryable;
  }
}

/** Where a URL is shown: scheme, host and path (a query may carry a token). */
export function showUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '(invalid URL)';
  }
}

export type PostResult = 'done' | 'already';

/**
 * POSTs `body` as JSON with capped, jittered retries. 2xx → `done`; 409 and 410 (already revoked,
 * gone) → `already`; any other 4xx is final; network errors, timeouts, 429 and 5xx are retried.
 * The response body is never read into a message (it may echo what it was sent).
 */
export async function postJson(
  what: string,
  url: string,
  body: unknown,
  token: string | undefined,
  policy: CallPolicy,
  signal: AbortSignal,
): Promise<PostResult> {
  const shown = showUrl(url);
  return retrying(
    async () => {
      let res: Response;
      try {
        res = await fetch(url, {
          method: 'POST',
          headers: {
            'content-type': 'application/json',
            accept: 'application/json',
            ...(token ? { authorization: `Bearer ${token}` } : {}),
          },
          body: JSON.stringify(body),
          signal: AbortSignal.any([signal, AbortSignal.timeout(policy.timeoutMs)]),
        });
      } catch (err) {
        if (signal.aborted) throw new RetireCallError(`${what} ${shown}: aborted`, false);
        const name = (err as Error).name;
        const why =
          name === 'TimeoutError' ? `timed out after ${policy.timeoutMs} ms` : `request failed (${name})`;
        throw new RetireCallError(`${what} ${shown}: ${why}`, true);
      }
      await res.body?.cancel();
      if (res.ok) return 'done' as const;
      if (res.status === 409 || res.status === 410) return 'already' as const;
      const retryable = res.status === 429 || res.status >= 500;
      throw new RetireCallError(`${what} ${shown}: HTTP ${res.status}`, retryable);
    },
    policy,
    signal,
    (err) => err instanceof RetireCallError && err.retryable,
  );
}

/** Revokes one version at the key source. Idempotent at the source: a second call answers 409/410 or 2xx. */
export interface Revoker {
  describe: string;
  revoke(version: string, signal: AbortSignal): Promise<PostResult>;
}

export function httpRevoker(url: string, token: string, policy: CallPolicy = DEFAULT_CALL_POLICY): Revoker {
  return {
    describe: `revoke ${showUrl(url)}`,
    revoke: (version, signal) => postJson('revoke', url, { version }, token, policy, signal),
  };
}

/** The webhook's body: versions and target names, never a key or token. */
export interface RetirableNotice {
  gatewayKey: string;
  namespace?: string;
  previousVersion: string;
  currentVersion: string;
  provenTargets: string[];
}

export interface Announcer {
  describe: string;
  announce(notice: RetirableNotice, signal: AbortSignal): Promise<void>;
}

export function httpAnnouncer(url: string, policy: CallPolicy = DEFAULT_CALL_POLICY): Announcer {
  return {
    describe: `webhook ${showUrl(url)}`,
    async announce(notice, signal) {
      await postJson('webhook', url, notice, undefined, policy, signal);
    },
  };
}

export interface RetireDeps {
  /** Makes the lifecycle durable (GatewayKey status, a state file); throws when it could not. */
  persist(lc: KeyLifecycle, signal: AbortSignal): Promise<void>;
  revoker?: Revoker;
  announcer?: Announcer;
  clock: Clock;
  log: Logger;
  signal: AbortSignal;
}

export interface RetireContext {
  gatewayKey: string;
  namespace?: string;
  provenTargets: readonly string[];
}

export interface RetireOutcome {
  lifecycle: KeyLifecycle;
  revoked: string[];
  announced: string[];
  /** A call failed; the lifecycle records it and the next pass tries again. */
  error: string | null;
}

const retiring = (p: PreviousKey) => p.state === 'Retirable' || p.state === 'Retiring';

/**
 * Acts on a lifecycle that `advance` produced: announces every retirable version not yet
 * announced, then (with a revoker) retires versions oldest first — `Retiring` is persisted before
 * the call, `Retired` after it. A persist failure stops before any call it would have guarded.
 */
export async function retire(lc: KeyLifecycle, ctx: RetireContext, deps: RetireDeps): Promise<RetireOutcome> {
  const out: RetireOutcome = { lifecycle: lc, revoked: [], announced: [], error: null };
  const current = lc.current?.version;
  if (!current) return out;

  if (deps.announcer) {
    for (const p of out.lifecycle.previous.filter((p) => retiring(p) && !p.announcedAt)) {
      try {
        await deps.announcer.announce(
          {
            gatewayKey: ctx.gatewayKey,
            ...(ctx.namespace ? { namespace: ctx.namespace } : {}),
            previousVersion: p.version,
            currentVersion: current,
            provenTargets: [...ctx.provenTargets],
          },
          deps.signal,
        );
      } catch (err) {
        out.error = errorMessage(err);
        deps.log.warn(
          { version: p.version, error: out.error },
          'Retirable-key webhook failed; the next pass retries',
        );
        continue;
      }
      out.lifecycle = markAnnounced(out.lifecycle, p.version, deps.clock.now());
      await deps.persist(out.lifecycle, deps.signal);
      out.announced.push(p.version);
    }
  }

  if (!deps.revoker) return out;
  for (;;) {
    const next = out.lifecycle.previous.find((p) => p.state !== 'Retired');
    if (!next || !retiring(next)) return out;
    if (next.version === current) throw new Error(`refusing to revoke the current version ${current}`);
    // Intent first: once this is durable, a crash leads to the call being made (again) on the next
    // pass — never to a version revoked without the record that every target proved its successor.
    out.lifecycle = markRetiring(out.lifecycle, next.version);
    await deps.persist(out.lifecycle, deps.signal);
    let result: PostResult;
    try {
      result = await deps.revoker.revoke(next.version, deps.signal);
    } catch (err) {
      out.error = errorMessage(err);
      out.lifecycle = noteOn(out.lifecycle, next.version, 'RevokeFailed', out.error);
      await deps.persist(out.lifecycle, deps.signal).catch(() => {});
      deps.log.warn(
        { version: next.version, error: out.error },
        'Revoking the previous key failed; the next pass retries',
      );
      return out;
    }
    out.lifecycle = markRetired(out.lifecycle, next.version, deps.clock.now());
    await deps.persist(out.lifecycle, deps.signal);
    out.revoked.push(next.version);
    deps.log.info({ version: next.version, result }, 'Previous key revoked');
  }
}
