// Golden-file comparison for rendered reports; `UPDATE_GOLDEN=1` rewrites the files instead.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

const DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'golden', 'reconcile');

export function expectGolden(name: string, actual: string): void {
  const path = join(DIR, name);
  if (process.env.UPDATE_GOLDEN === '1' || !existsSync(path)) {
    mkdirSync(DIR, { recursive: true });
    writeFileSync(path, actual);
    if (process.env.UPDATE_GOLDEN !== '1')
      throw new Error(`golden file ${name} was missing; wrote it — review and re-run`);
    return;
  }
  expect(actual, `golden file test/golden/reconcile/${name} (UPDATE_GOLDEN=1 to rewrite)`).toBe(
    readFileSync(path, 'utf8'),
  );
}
