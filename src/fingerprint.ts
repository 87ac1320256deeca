// Owns fingerprints: keyed hashes that identify a secret without revealing or testing it.
import { createHmac, timingSafeEqual } from 'node:crypto';

export const FINGERPRINT_PREFIX = 'hmac-sha256:';

/**
 * Canonical form of a set of variables: `NAME=value` lines sorted by name, each ending in "\n".
 * Both the controller (over the env it spawned the child with) and the reconciler (over the
 * desired key) compute fingerprints from this form, so they agree byte for byte.
 */
export function canonicalEnv(vars: Readonly<Record<string, string>>): string {
  return Object.keys(vars)
    .sort()
    .map((name) => `${name}=${vars[name]}\n`)
    .join('');
}

/**
 * HMAC-SHA256 keyed with `hmacKey` over the canonical lines. The key is the controller token
 * (KEYROLL_CONTROLLER_TOKEN; OPENCLAW_GATEWAY_TOKEN only in the KiloClaw fallback), the one the
 * caller authenticated with: during a token rotation a caller still on the previous token gets
 * fingerprints it can compare with its own.
 */
export function fingerprintEnv(hmacKey: string, vars: Readonly<Record<string, string>>): string {
  return FINGERPRINT_PREFIX + createHmac('sha256', hmacKey).update(canonicalEnv(vars)).digest('hex');
}

/** Fingerprint of one opaque value (a key file's content). */
export function fingerprintValue(hmacKey: string, value: string | Buffer): string {
  return FINGERPRINT_PREFIX + createHmac('sha256', hmacKey).update(value).digest('hex');
}

/** First 12 hex digits of a fingerprint, for logs, reports and status. */
export function shortHash(fingerprint: string | null | undefined): string {
  if (!fingerprint) return '-';
  const hex = fingerprint.startsWith(FINGERPRINT_PREFIX)
    ? fingerprint.slice(FINGERPRINT_PREFIX.length)
    : fingerprint;
  return hex.slice(0, 12);
}

/** Constant-time string equality (for bearer tokens). Unequal lengths compare as unequal. */
export function constantTimeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'utf8');
  const bb = Buffer.from(b, 'utf8');
  // Compare against itself on a length mismatch so the time does not reveal the length.
  if (ab.length !== bb.length) {
    timingSafeEqual(ab, ab);
    return false;
  }
  return timingSafeEqual(ab, bb);
}

/**
 * The candidate `presented` equals, or null. Every candidate is compared (no early exit), so the
 * time does not tell which one matched. Null candidates (an unset previous token) never match.
 */
export function matchToken(presented: string, candidates: readonly (string | null)[]): string | null {
  let found: string | null = null;
  for (const c of candidates) {
    if (c !== null && constantTimeEqual(presented, c) && found === null) found = c;
  }
  return found;
}
