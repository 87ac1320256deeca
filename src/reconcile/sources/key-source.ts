// Owns the key-source port: what every source of the desired key returns, and how it fails.
import * as z from 'zod';

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

/** The source could not produce a key; the pass changes nothing and the CLI exits 2. */
export class KeySourceError extends Error {
  override name = 'KeySourceError';
}
