// Owns the CLI's durable lifecycle: a state file next to the targets file (`<targets>.state.json`),
// replaced atomically (0600) so a crash leaves the old or the new record, never a mix.
import { readFile } from 'node:fs/promises';
import * as z from 'zod';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { EMPTY_LIFECYCLE, type KeyLifecycle, KeyLifecycleSchema } from './lifecycle.ts';

const StateFileSchema = z.object({
  apiVersion: z.literal('keyroll.dev/v1'),
  kind: z.literal('KeyLifecycleState'),
  keys: z.record(z.string(), KeyLifecycleSchema),
});

export class StateFileError extends Error {
  override name = 'StateFileError';
}

/** Where the lifecycle of a targets file is kept. */
export function stateFileFor(targetsPath: string): string {
  return `${targetsPath}.state.json`;
}

async function readAll(path: string): Promise<Record<string, KeyLifecycle>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new StateFileError(`cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new StateFileError(
      `${path} is not valid JSON; fix or remove it (it records which key versions were retired)`,
    );
  }
  const parsed = StateFileSchema.safeParse(raw);
  if (!parsed.success) {
    const where = parsed.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
    throw new StateFileError(`${path} is not a keyroll lifecycle state file (${where})`);
  }
  return parsed.data.keys;
}

/** The lifecycle recorded for `key`, or an empty one. A corrupt file is an error, never ignored. */
export async function loadLifecycle(path: string, key: string): Promise<KeyLifecycle> {
  return (await readAll(path))[key] ?? EMPTY_LIFECYCLE;
}

/** Records `lc` for `key`, keeping the other keys' records. */
export async function saveLifecycle(path: string, key: string, lc: KeyLifecycle): Promise<void> {
  const keys = await readAll(path);
  keys[key] = KeyLifecycleSchema.parse(lc);
  const doc = { apiVersion: 'keyroll.dev/v1', kind: 'KeyLifecycleState', keys };
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 2)}\n`, { mode: 0o600 });
}
