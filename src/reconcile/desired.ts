// Owns the desired state of one target: which fingerprints its controller must report.
import { fingerprintEnv, fingerprintValue, shortHash } from '../fingerprint.ts';

export type Delivery = 'restart' | 'file';

/** What the reconciler wants, per target: the key, the variable it goes in, and how it is delivered. */
export interface DesiredSpec {
  envVar: string;
  delivery: Delivery;
}

/**
 * The desired state with the key reduced to fingerprints. It is safe to render, log and compare:
 * the key itself travels separately, only into `apply()`.
 */
export interface Desired {
  envVar: string;
  delivery: Delivery;
  version: string;
  /** HMAC over `envVar=key` keyed with the target's token; what `key.envHash` must equal. */
  envHash: string;
  /** HMAC over the key keyed with the target's token; what `key.fileHash` must equal. */
  fileHash: string;
}

/**
 * Pure: the fingerprints a controller holding `token` reports once it runs with `key`. Computed
 * exactly as the controller computes them (src/fingerprint.ts), so equality is the proof.
 */
export function desired(spec: DesiredSpec, key: { key: string; version: string }, token: string): Desired {
  return {
    envVar: spec.envVar,
    delivery: spec.delivery,
    version: key.version,
    envHash: fingerprintEnv(token, { [spec.envVar]: key.key }),
    fileHash: fingerprintValue(token, key.key),
  };
}

/** The fingerprint that decides convergence in the desired mode. */
export function desiredFingerprint(d: Desired): string {
  return d.delivery === 'file' ? d.fileHash : d.envHash;
}

export function fingerprintLabel(delivery: Delivery): 'envHash' | 'fileHash' {
  return delivery === 'file' ? 'fileHash' : 'envHash';
}

export { shortHash };
