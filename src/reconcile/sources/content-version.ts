// Owns the content version of a key: a label derived from the content when the source gives none.
import { createHash } from 'node:crypto';

/**
 * `sha256:` and 16 hex digits of the key's SHA-256. Keys are high-entropy, and a truncated
 * digest identifies a version in reports without being a usable stand-in for the key.
 */
export function contentVersion(key: string): string {
  return `sha256:${createHash('sha256').update(key).digest('hex').slice(0, 16)}`;
}
