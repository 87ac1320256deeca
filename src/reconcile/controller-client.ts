// Owns HTTP to one in-pod controller: `GET /_kilo/state` and `POST /_kilo/env/patch`, bounded and typed.
import * as z from 'zod';
import { type ObservedState, ObservedStateSchema } from './observed.ts';

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

export const PatchResponseSchema = z.object({
  ok: z.boolean(),
  signaled: z.boolean(),
  migratedProfiles: z.number().int().nonnegative().default(0),
});
export type PatchResponse = z.infer<typeof PatchResponseSchema>;

const ErrorBodySchema = z.object({ error: z.string(), code: z.string().optional() });

/** The port the pipeline talks to; tests and other drivers may provide their own. */
export interface ControllerClient {
  getState(signal: AbortSignal): Promise<ObservedState>;
  patchEnv(vars: Record<string, string>, version: string, signal: AbortSignal): Promise<PatchResponse>;
}

export interface HttpControllerOptions {
  url: string;
  token: string;
  timeoutMs: number;
}

function endpoint(base: string, path: string): string {
  return new URL(path, base.endsWith('/') ? base : `${base}/`).toString();
}

export function httpControllerClient(opts: HttpControllerOptions): ControllerClient {
  async function call(method: 'GET' | 'POST', path: string, signal: AbortSignal, init: RequestInit = {}) {
    const url = endpoint(opts.url, path);
    let res: Response;
    try {
      res = await fetch(url, {
        ...init,
        method,
        headers: {
          authorization: `Bearer ${opts.token}`,
          accept: 'application/json',
          ...(init.headers as Record<string, string> | undefined),
        },
        signal: AbortSignal.any([signal, AbortSignal.timeout(opts.timeoutMs)]),
      });
    } catch (err) {
      const e = err as Error & { cause?: { code?: string; message?: string } };
      if (e.name === 'TimeoutError') {
        throw new ControllerError('timeout', `${method} ${path} timed out after ${opts.timeoutMs} ms`);
      }
      if (e.name === 'AbortError') throw err;
      throw new ControllerError(
        'network',
        `${method} ${path} failed: ${e.cause?.code ?? e.cause?.message ?? e.message}`,
      );
    }
    let text: string;
    try {
      text = await res.text();
    } catch (err) {
      const name = (err as Error).name;
      if (name === 'TimeoutError') {
        throw new ControllerError('timeout', `${method} ${path} timed out after ${opts.timeoutMs} ms`);
      }
      throw new ControllerError('network', `${method} ${path}: response body lost (${name})`);
    }
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      body = null;
    }
    if (!res.ok) {
      // Controllers answer with fixed error strings that never echo a value; keep the first 200
      // characters, and the CLI scrubs known secrets from everything it prints as a backstop.
      const e = ErrorBodySchema.safeParse(body);
      const detail = e.success
        ? `: ${e.data.error.slice(0, 200)}${e.data.code ? ` (${e.data.code})` : ''}`
        : '';
      throw new ControllerError('http', `${method} ${path} answered HTTP ${res.status}${detail}`, res.status);
    }
    return body;
  }

  return {
    async getState(signal) {
      const body = await call('GET', '_kilo/state', signal);
      const parsed = ObservedStateSchema.safeParse(body);
      if (!parsed.success) {
        const fields = parsed.error.issues.map((i) => i.path.join('.') || '(body)').join(', ');
        throw new ControllerError(
          'invalid-response',
          `GET _kilo/state: unexpected response (fields: ${fields})`,
        );
      }
      return parsed.data;
    },
    async patchEnv(vars, version, signal) {
      const body = await call('POST', '_kilo/env/patch', signal, {
        headers: { 'content-type': 'application/json', 'x-keyroll-key-version': version },
        body: JSON.stringify(vars),
      });
      const parsed = PatchResponseSchema.safeParse(body);
      if (!parsed.success) {
        throw new ControllerError('invalid-response', 'POST _kilo/env/patch: unexpected response');
      }
      return parsed.data;
    },
  };
}
