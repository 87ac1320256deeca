// The shipped build's `keyroll controller` loads no zod and no pino: its memory budget (< 60 MB RSS
// as the image runs it, BENCHMARKS.md) has no room for either (≈5 MB each measured). Checked on the
// metafile of `scripts/build.mjs`: every chunk the controller's chunk imports statically, and
// every source file bundled into those chunks.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/sandbox.ts';

const run = promisify(execFile);

interface Metafile {
  outputs: Record<
    string,
    { entryPoint?: string; inputs: Record<string, unknown>; imports: { path: string; kind: string }[] }
  >;
}

let dir: string;
let meta: Metafile;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'keyroll-chunk-'));
  const metafile = join(dir, 'meta.json');
  await run(
    process.execPath,
    [join(REPO_ROOT, 'scripts', 'build.mjs'), '--outdir', join(dir, 'dist'), '--metafile', metafile],
    { timeout: 120_000 },
  );
  meta = JSON.parse(readFileSync(metafile, 'utf8')) as Metafile;
}, 150_000);

afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** The inputs of a command's chunk and of every chunk it imports statically (loaded with it). */
function loadedWith(entry: string): string[] {
  const outputs = meta.outputs;
  const start = Object.keys(outputs).find((k) => outputs[k]!.entryPoint === entry);
  if (!start) throw new Error(`no chunk for ${entry}`);
  const seen = new Set<string>();
  const todo = [start];
  while (todo.length > 0) {
    const chunk = todo.pop()!;
    if (seen.has(chunk)) continue;
    seen.add(chunk);
    for (const i of outputs[chunk]!.imports)
      if (i.kind === 'import-statement' && outputs[i.path]) todo.push(i.path);
  }
  return [...seen].flatMap((chunk) => Object.keys(outputs[chunk]!.inputs));
}

/** The npm packages among `inputs` (`node_modules/<name>/…`). */
function packages(inputs: string[]): string[] {
  const names = inputs.flatMap((i) => /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(i)?.[1] ?? []);
  return [...new Set(names)].sort();
}

describe('the controller chunk of the shipped build', () => {
  it('loads no zod, no pino (nor their helpers), no worker_threads', () => {
    const inputs = loadedWith('src/cli/controller.ts');
    expect(inputs).toContain('src/controller/config.ts');
    expect(inputs).toContain('src/log.ts');
    expect(packages(inputs)).toEqual(['json5']);
    expect(inputs.filter((i) => /worker_threads|thread-stream|sonic-boom/.test(i))).toEqual([]);
  });

  it('the same check sees zod where a command does load it (the profiles CLI)', () => {
    expect(packages(loadedWith('src/cli/profiles.ts'))).toContain('zod');
  });
});
