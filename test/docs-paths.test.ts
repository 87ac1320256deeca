// README.md's map and the pages under docs/ match the code: every `src/…`, `test/…`, `bench/…`,
// `scripts/…`, `docs/…` and `manifests/…` path they name exists in the repository, and the map
// names every part of src/ (issue 11: "README map and docs/design.md match the code").
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './support/sandbox.ts';

const DOCS = [
  'README.md',
  ...readdirSync(join(REPO_ROOT, 'docs')).flatMap((f) => (f.endsWith('.md') ? [`docs/${f}`] : [])),
];

/**
 * Paths of another project that the docs quote as such (they are not ours to exist here), with
 * the page that quotes them.
 */
const EXTERNAL: Record<string, string> = {
  'docs/gateway/protocol.md': "docs/threat-model.md (OpenClaw's own docs)",
  'docs/gateway/security/index.md': "docs/threat-model.md (OpenClaw's own docs)",
};

/**
 * A repository path as prose and code blocks write it: starts at one of our top-level folders
 * (not inside another path or URL), ends on a name character, `/` or `*`. A path cut across two
 * lines (`test/x-` newline `y.ts`) ends at the cut, so it is found missing, not skipped.
 */
const PATH = /(?<![\w./~$@-])((?:src|test|bench|scripts|docs|manifests)\/[\w.\-/*]*[\w/*])/g;

interface Named {
  path: string;
  where: string;
}

function namedPaths(text: string, file: string): Named[] {
  return [...text.matchAll(PATH)].map((m) => ({
    path: m[1]!,
    where: `${file}:${text.slice(0, m.index).split('\n').length}`,
  }));
}

/** True when `path` exists; for a glob (`test/gateway/**`), when the folder before the first `*` does. */
function exists(path: string): boolean {
  const star = path.indexOf('*');
  const fixed = star === -1 ? path : path.slice(0, star).replace(/[^/]*$/, '');
  return existsSync(join(REPO_ROOT, fixed));
}

const named = DOCS.flatMap((f) => namedPaths(readFileSync(join(REPO_ROOT, f), 'utf8'), f));

describe('paths named in README.md and docs/*.md', () => {
  it('finds the paths the pages name', () => {
    expect(named.length).toBeGreaterThan(150);
    expect(named.map((n) => n.path)).toContain('src/engine/gateway-key.ts');
    expect(named.map((n) => n.path)).toContain('manifests/crd/gatewaykey.yaml');
  });

  it('every one exists (or is one of the listed paths of another project)', () => {
    const missing = named
      .filter((n) => !(n.path in EXTERNAL) && !exists(n.path))
      .map((n) => `${n.where} ${n.path}`);
    expect(missing).toEqual([]);
  });

  it('the listed paths of another project are still quoted, and are not ours', () => {
    for (const [path, page] of Object.entries(EXTERNAL)) {
      const where = page.split(' ')[0]!;
      expect(
        named.some((n) => n.path === path && n.where.startsWith(`${where}:`)),
        path,
      ).toBe(true);
      expect(exists(path), path).toBe(false);
    }
  });

  it('the check itself: a missing file, a path cut across lines, a glob, and text that is not a path', () => {
    const text = [
      'See `src/nowhere.ts` and `test/gateway/controller-',
      'real.test.ts`; every file in `test/gateway/**` and `src/cli/*.ts`.',
      'Not paths: ../keyroll/manifests, https://example.com/docs/x.md, $TMPDIR/test/y, a/src/z.ts.',
    ].join('\n');
    const found = namedPaths(text, 'fake.md');
    expect(found).toEqual([
      { path: 'src/nowhere.ts', where: 'fake.md:1' },
      { path: 'test/gateway/controller', where: 'fake.md:1' },
      { path: 'test/gateway/**', where: 'fake.md:2' },
      { path: 'src/cli/*.ts', where: 'fake.md:2' },
    ]);
    expect(found.map((f) => exists(f.path))).toEqual([false, false, true, true]);
  });
});

describe("README.md's map of the code", () => {
  const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('## Map of the code');
  const map = readme.slice(start, readme.indexOf('\n## ', start + 1));

  it('names every folder and every top-level module of src/', () => {
    expect(start).toBeGreaterThan(-1);
    const inMap = new Set(namedPaths(map, 'README.md').map((n) => n.path));
    const parts = readdirSync(join(REPO_ROOT, 'src'), { withFileTypes: true }).map((e) =>
      e.isDirectory() ? `src/${e.name}/` : `src/${e.name}`,
    );
    expect(parts.length).toBeGreaterThan(10);
    expect(parts.filter((p) => !inMap.has(p))).toEqual([]);
  });
});
