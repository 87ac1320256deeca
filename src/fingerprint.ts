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

/** HMAC-SHA256 keyed with `hmacKey` (the controller token) over the canonical lines. */
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
