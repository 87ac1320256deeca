// The Docker build context that .dockerignore leaves: every file the Dockerfile COPYs is in it,
// and nothing that must stay out (dependencies, caches, git, build output, tests) is. No Docker
// daemon here, so the rules are applied as Docker applies them (moby's patternmatcher: patterns
// in order, the last match wins, `!` re-includes, a pattern matching a directory covers
// everything under it).
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/sandbox.ts';

interface Rule {
  exclude: boolean;
  match: (path: string) => boolean;
}

/**
 * A pattern as Go's filepath.Match reads it, plus Docker's `**` (any number of directories):
 * `*` and `?` never cross a `/`. Character classes are not used in .dockerignore and refused.
 */
function matcher(pattern: string): (path: string) => boolean {
  if (/[[\]\\]/.test(pattern)) throw new Error(`unsupported .dockerignore pattern: ${pattern}`);
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '*' && pattern[i + 1] === '*') {
      i++;
      if (pattern[i + 1] === '/') {
        re += '(?:.*/)?';
        i++;
      } else re += '.*';
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|]/g, '\\$&');
  }
  const compiled = new RegExp(`^${re}$`);
  return (path) => compiled.test(path);
}

function rules(text: string): Rule[] {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => {
      const negated = l.startsWith('!');
      const pattern = (negated ? l.slice(1) : l).trim().replace(/^\/+/, '').replace(/\/+$/, '');
      return { exclude: !negated, match: matcher(pattern) };
    });
}

/** Is `path` (relative to the context root) sent to the builder? */
function inContext(rs: readonly Rule[], path: string): boolean {
  const parts = path.split('/');
  const candidates = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let excluded = false;
  for (const r of rs) if (candidates.some((c) => r.match(c))) excluded = r.exclude;
  return !excluded;
}

function filesUnder(path: string): string[] {
  const abs = join(REPO_ROOT, path);
  if (!statSync(abs).isDirectory()) return [path];
  return readdirSync(abs, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile())
    .map((d) => relative(REPO_ROOT, join(d.parentPath, d.name)));
}

/** The sources of every COPY that reads the build context (not `--from=`), ARG defaults filled in. */
function copySources(dockerfile: string): string[] {
  const args = new Map<string, string>();
  const sources: string[] = [];
  for (const line of dockerfile.split('\n')) {
    const arg = /^ARG (\w+)=(\S+)/.exec(line);
    if (arg) args.set(arg[1]!, arg[2]!);
    if (!line.startsWith('COPY ') || /--from=/.test(line)) continue;
    const words = line
      .slice('COPY '.length)
      .trim()
      .split(/\s+/)
      .filter((w) => !w.startsWith('--'));
    for (const w of words.slice(0, -1))
      sources.push(w.replace(/\$\{(\w+)\}/g, (_, n: string) => args.get(n) ?? ''));
  }
  return sources;
}

describe('the Docker build context (.dockerignore)', () => {
  const rs = rules(readFileSync(join(REPO_ROOT, '.dockerignore'), 'utf8'));
  const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');

  it('holds every file the Dockerfile COPYs', () => {
    const sources = copySources(dockerfile);
    expect(sources).toEqual(
      expect.arrayContaining(['package.json', 'package-lock.json', 'scripts/build.mjs', 'src']),
    );
    for (const source of sources) {
      const files = filesUnder(source.replace(/\/+$/, ''));
      expect(files.length, source).toBeGreaterThan(0);
      for (const f of files) expect(inContext(rs, f), f).toBe(true);
    }
  });

  it('leaves out dependencies, caches, git, build output, tests and anything not copied', () => {
    for (const path of [
      'node_modules/zod/package.json',
      '.cache/openclaw-2026.6.8/package.json',
      '.git/HEAD',
      '.ci/run',
      'dist/keyroll.js',
      'coverage/index.html',
      'npm-debug.log',
      'test/manifests/manifests.test.ts',
      'bench/controller.bench.ts',
      'scripts/gateway-install.mjs',
      'manifests/kustomization.yaml',
      '.env',
      'Dockerfile',
    ]) {
      expect(inContext(rs, path), path).toBe(false);
    }
  });
});
