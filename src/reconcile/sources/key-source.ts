// Owns the key-source port: what every source of the desired key returns, and how it fails.
import * as z from 'zod';
import { checkKeyValue, checkVersionLabel } from '../../keys.ts';

/** What a source yields; parsed with zod wherever it comes from outside the process. */
export const KeyMaterialSchema = z.object({
  key: z.string().min(1, 'key must be a non-empty string'),
  version: z.string().min(1),
  expiresAt: z.date().optional(),
});

export type KeyMaterial = z.infer<typeof KeyMaterialSchema>;

/**
 * One source of the desired key (a file, an HTTP API, a Kubernetes Secret). `current()` reads
 * the source afresh on every call: the reconciler is level-triggered and caches nothing.
 */
export interface KeySource {
  /** Short description for reports and errors; never contains the key. */
  readonly describe: string;
  current(signal: AbortSignal): Promise<KeyMaterial>;
}

/**
 * Why a source failed, as the operator's Degraded reason: `KeyNotFound` (missing, unreadable,
 * unreachable), `InvalidKey` (not one printable token of a sane length, src/keys.ts),
 * `InvalidVersionLabel` (a label the controller would refuse).
 */
export type KeySourceReason = 'KeyNotFound' | 'InvalidKey' | 'InvalidVersionLabel';

/** The source could not produce a key; the pass changes nothing and the CLI exits 2. */
export class KeySourceError extends Error {
  override name = 'KeySourceError';
  readonly reason: KeySourceReason;
  constructor(message: string, reason: KeySourceReason = 'KeyNotFound') {
    super(message);
    this.reason = reason;
  }
}

/**
 * The checks every source applies to what it read, before anything is delivered: a bad key or
 * label is a clear error naming the source (`where`), never quoting the value.
 */
export function checkMaterial(where: string, key: string, version: string): KeyMaterial {
  const keyWhy = key.length === 0 ? 'is empty' : checkKeyValue(key);
  if (keyWhy !== null) throw new KeySourceError(`${where}: the key ${keyWhy}`, 'InvalidKey');
  const versionWhy = checkVersionLabel(version);
  if (versionWhy !== null) {
    throw new KeySourceError(`${where}: the version label ${versionWhy}`, 'InvalidVersionLabel');
  }
  return KeyMaterialSchema.parse({ key, version });
}
