// The shipped build hands Node's builtins to the bundle without materialising their lazy exports
// (scripts/build.mjs, builtinsAsCommonJs): esbuild's CommonJS interop asked for every export's
// property descriptor, and `node:util`'s lazy `parseArgs`, `diff` and `setTraceSigInt` then loaded
// worker_threads and a dozen more modules into every `keyroll controller` (≈0.6 MB of its RSS).
// Checked on a real build: the modules Node loaded, and the named imports still working.
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuiltPackage, buildPackage } from '../support/image-command.ts';

const run = promisify(execFile);
let pkg: BuiltPackage;
let preload: string;

beforeAll(() => {
  pkg = buildPackage('keyroll-shims-');
  preload = join(pkg.root, 'modules.cjs');
  writeFileSync(
    preload,
    "process.on('exit', () => process.stderr.write('\\nMODULES ' + process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13)).join(',') + '\\n'));\n",
  );
}, 150_000);

afterAll(() => pkg?.cleanup());

/** Runs the build's CLI; its output and the builtin modules Node loaded. */
async function cli(args: string[]): Promise<{ stdout: string; modules: string[] }> {
  const r = await run(
    process.execPath,
    ['--require', preload, join(pkg.root, 'dist', 'keyroll.js'), ...args],
    {
      timeout: 30_000,
    },
  );
  const line = r.stderr.split('\n').find((l) => l.startsWith('MODULES ')) ?? '';
  return { stdout: r.stdout, modules: line.slice('MODULES '.length).split(',') };
}

describe('builtin imports in the shipped build', () => {
  it('keyroll controller loads its chunks without worker_threads or util lazy exports it does not use', async () => {
    const { stdout, modules } = await cli(['controller', '--help']);
    expect(stdout).toContain('keyroll controller');
    // Loaded: the chunks import node:util, node:fs, node:crypto, node:http… (the check is live).
    expect(modules).toEqual(expect.arrayContaining(['util', 'fs', 'crypto', 'http', 'child_process']));
    for (const lazy of ['worker_threads', 'internal/util/diff', 'internal/util/trace_sigint'])
      expect(modules).not.toContain(lazy);
  });

  it('named imports of builtins still resolve (parseArgs reads the flags; usage errors exit 2)', async () => {
    const err = await cli(['controller', '--no-such-flag']).catch(
      (e: { code?: number; stderr?: string }) => e,
    );
    expect((err as { code?: number }).code).toBe(2);
    expect(String((err as { stderr?: string }).stderr)).toMatch(/--no-such-flag/);
  });
});
