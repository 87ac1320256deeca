// Owns the version label of a key whose source gives none: a keyed fingerprint of the content.
//
// A plain digest of the key (session 1 used `sha256:` + 16 hex digits) lets anyone who can read a
// GatewayKey status or a report test a guessed key offline. Keyed with the controller token, the
// label is stable for as long as the key and the token are, and testing a guess needs the token,
// which already opens every controller (docs/design.md: "a fingerprint is never usable to recover or
// test a key without the controller token").
import { createHash, createHmac } from 'node:crypto';

/** Separates these labels from the controller's fingerprints, which are HMACs with the same token. */
const DOMAIN = 'keyroll key version\n';

/** `hmac:` and 16 hex digits of HMAC-SHA256(versionKey, domain ‖ key). */
export function contentVersion(key: string, versionKey: string): string {
  const mac = createHmac('sha256', versionKey).update(DOMAIN).update(key).digest('hex');
  return `hmac:${mac.slice(0, 16)}`;
}

/**
 * The version key for a pass over targets that hold these controller tokens: the token itself
 * when they share one (the usual case), else a digest of the distinct tokens in sorted order, so
 * that the label does not depend on the order of the targets.
 */
export function versionKeyOf(tokens: readonly string[]): string {
  const distinct = [...new Set(tokens)].sort();
  if (distinct.length === 0) throw new Error('no controller token to key the version label with');
  if (distinct.length === 1) return distinct[0]!;
  const h = createHash('sha256');
  for (const t of distinct) h.update(t).update('\0');
  return h.digest('hex');
}
