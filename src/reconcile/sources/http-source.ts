// Owns the HTTP key source: GET the current key with a bearer token, mint a fresh one near expiry.
import * as z from 'zod';
import type { Clock } from '../../clock.ts';
import { contentVersion } from './content-version.ts';
import { checkMaterial, type KeyMaterial, type KeySource, KeySourceError } from './key-source.ts';

export const DEFAULT_REFRESH_BEFORE_MS = 72 * 3_600_000;

export interface HttpSourceOptions {
  url: string;
  /** Bearer token for both the GET and the mint POST. */
  token: string;
  /** POSTed when `expiresAt - now <= refreshBeforeMs`; its answer becomes the desired key. */
  mintUrl?: string;
  refreshBeforeMs?: number;
  timeoutMs?: number;
  mintTimeoutMs?: number;
  clock: Clock;
  /** Keys the content version when the source gives no version label (content-version.ts). */
  versionKey: string;
}

/** The API's answer. `token` is accepted for KiloClaw's mint shape `{token, expiresAt}`. */
const KeyResponseSchema = z
  .object({
    key: z.string().min(1).optional(),
    token: z.string().min(1).optional(),
    version: z.string().min(1).optional(),
    expiresAt: z.iso.datetime({ offset: true }).optional(),
  })
  .refine((b) => b.key !== undefined || b.token !== undefined, { message: 'no key field' });

async function fetchKey(
  what: string,
  url: string,
  init: RequestInit,
  timeoutMs: number,
  signal: AbortSignal,
  versionKey: string,
): Promise<KeyMaterial> {
  let res: Response;
  try {
    res = await fetch(url, { ...init, signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]) });
  } catch (err) {
    const name = (err as Error).name;
    const why = name === 'TimeoutError' ? `timed out after ${timeoutMs} ms` : `request failed (${name})`;
    throw new KeySourceError(`${what} ${url}: ${why}`);
  }
  // The body is never quoted in an error: it may carry key material.
  if (!res.ok) {
    await res.body?.cancel();
    throw new KeySourceError(`${what} ${url}: HTTP ${res.status}`);
  }
  let body: unknown;
  try {
    body = await res.json();
  } catch {
    throw new KeySourceError(`${what} ${url}: the response is not JSON`);
  }
  const parsed = KeyResponseSchema.safeParse(body);
  if (!parsed.success) {
    const fields = parsed.error.issues.map((i) => i.path.join('.') || i.message).join(', ');
    throw new KeySourceError(`${what} ${url}: unexpected response (${fields})`);
  }
  const key = (parsed.data.key ?? parsed.data.token)!;
  // The API's answer is taken as it is: a key or label with a space, a newline or non-ASCII is
  // refused here (InvalidKey, InvalidVersionLabel), before any controller sees it.
  const material = checkMaterial(
    `${what} ${url}`,
    key,
    parsed.data.version ?? contentVersion(key, versionKey),
  );
  return parsed.data.expiresAt ? { ...material, expiresAt: new Date(parsed.data.expiresAt) } : material;
}

/** Pure: whether a key expiring at `expiresAt` is due for a fresh mint at `now`. */
export function mintDue(expiresAt: Date | undefined, now: number, refreshBeforeMs: number): boolean {
  return expiresAt !== undefined && expiresAt.getTime() - now <= refreshBeforeMs;
}

export function httpKeySource(opts: HttpSourceOptions): KeySource {
  const headers = { authorization: `Bearer ${opts.token}`, accept: 'application/json' };
  const refreshBefore = opts.refreshBeforeMs ?? DEFAULT_REFRESH_BEFORE_MS;
  return {
    describe: `http ${opts.url}`,
    async current(signal): Promise<KeyMaterial> {
      const current = await fetchKey(
        'key source',
        opts.url,
        { headers },
        opts.timeoutMs ?? 10_000,
        signal,
        opts.versionKey,
      );
      if (!opts.mintUrl || !mintDue(current.expiresAt, opts.clock.now(), refreshBefore)) return current;
      try {
        // A failed mint changes nothing: the error stops this pass before any delivery, and the
        // next pass (the key is still near expiry) mints again.
        return await fetchKey(
          'mint',
          opts.mintUrl,
          { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body: '{}' },
          opts.mintTimeoutMs ?? 15_000,
          signal,
          opts.versionKey,
        );
      } catch (err) {
        const hours = ((current.expiresAt!.getTime() - opts.clock.now()) / 3_600_000).toFixed(1);
        throw new KeySourceError(
          `${(err as Error).message}; the current key expires in ${hours} h; nothing was delivered, the next pass mints again`,
          err instanceof KeySourceError ? err.reason : 'KeyNotFound',
        );
      }
    },
  };
}
