// Supply chain of the shipped images: every base image is pinned by digest, and OpenClaw is
// installed only with `npm ci` from the lockfile committed for its version (image and
// `npm run gateway:install` alike), so a build gets the tree the tests ran and nothing else.
// Static checks of the files that decide it: there is no Docker daemon or registry here.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from '../support/sandbox.ts';

const DIGEST = /@sha256:[0-9a-f]{64}$/;

interface Stage {
  image: string;
  name: string | null;
}

/** The Dockerfile's logical lines: continuations joined, comments and blanks dropped. */
function instructions(text: string): string[] {
  return text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'));
}

/** Each FROM with its image resolved through the global ARG defaults, as BuildKit does. */
function stages(text: string): Stage[] {
  const args = new Map<string, string>();
  const out: Stage[] = [];
  for (const line of instructions(text)) {
    const arg = /^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(\S+)$/.exec(line);
    if (arg && out.length === 0) args.set(arg[1]!, arg[2]!.replace(/^"|"$/g, ''));
    const from = /^FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(line);
    if (from) {
      const image = from[1]!.replace(
        /\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?/g,
        (_, n: string) => args.get(n) ?? '',
      );
      out.push({ image, name: from[2] ?? null });
    }
  }
  return out;
}

/** Pure: the base images a Dockerfile pulls that are not pinned by digest. */
function unpinnedBases(text: string): string[] {
  const all = stages(text);
  const names = new Set(all.map((s) => s.name).filter((n): n is string => n !== null));
  return all
    .filter((s) => !names.has(s.image) && s.image !== 'scratch' && !DIGEST.test(s.image))
    .map((s) => s.image);
}

/** Pure: why an OpenClaw lock directory does not pin exactly one reproducible tree ([] when it does). */
function lockProblems(version: string, pkg: unknown, lock: unknown): string[] {
  const problems: string[] = [];
  const deps = (pkg as { dependencies?: Record<string, string> }).dependencies ?? {};
  if (deps.openclaw !== version) problems.push(`package.json pins openclaw ${deps.openclaw ?? '(none)'}`);
  const l = lock as { lockfileVersion?: number; packages?: Record<string, Record<string, unknown>> };
  if (l.lockfileVersion !== 3) problems.push(`lockfileVersion ${l.lockfileVersion}`);
  const packages = l.packages ?? {};
  if (packages['node_modules/openclaw']?.version !== version)
    problems.push('the lock does not resolve openclaw to the version');
  for (const [path, entry] of Object.entries(packages)) {
    // A bundled dependency ships inside its parent's tarball, under the parent's integrity.
    if (path === '' || entry.link === true || entry.inBundle === true) continue;
    if (typeof entry.integrity !== 'string' || !entry.integrity.startsWith('sha512-'))
      problems.push(`${path}: no sha512 integrity`);
    // npm leaves `resolved` out for the default registry (omit-lockfile-registry-resolved); a
    // tarball URL elsewhere would be a package from outside the registry.
    if (entry.resolved !== undefined && !String(entry.resolved).startsWith('https://registry.npmjs.org/'))
      problems.push(`${path}: not resolved from the npm registry`);
  }
  return problems;
}

const dockerfile = readFileSync(join(REPO_ROOT, 'Dockerfile'), 'utf8');
const installer = readFileSync(join(REPO_ROOT, 'scripts', 'gateway-install.mjs'), 'utf8');
const lockRoot = join(REPO_ROOT, 'scripts', 'openclaw-lock');

describe('base images', () => {
  it('every FROM of the Dockerfile resolves to an image pinned by digest', () => {
    expect(stages(dockerfile).length).toBeGreaterThan(0);
    expect(unpinnedBases(dockerfile)).toEqual([]);
  });

  it('the check refuses a tag, a tag through an ARG, and accepts stage names and digests', () => {
    expect(unpinnedBases(`ARG B=node:24-bookworm-slim\nFROM \${B} AS a\nFROM a AS b\n`)).toEqual([
      'node:24-bookworm-slim',
    ]);
    expect(unpinnedBases('FROM debian:bookworm-slim\n')).toEqual(['debian:bookworm-slim']);
    const pinned = `node:24@sha256:${'a'.repeat(64)}`;
    expect(unpinnedBases(`ARG B=${pinned}\nFROM $B AS a\nFROM a\nFROM scratch\n`)).toEqual([]);
  });
});

describe('OpenClaw install', () => {
  const versions = readdirSync(lockRoot);

  it('each committed lock pins one version, every package with a sha512 integrity and none from outside the registry', () => {
    expect(versions).toContain('2026.6.8');
    for (const v of versions) {
      const pkg = JSON.parse(readFileSync(join(lockRoot, v, 'package.json'), 'utf8'));
      const lock = JSON.parse(readFileSync(join(lockRoot, v, 'package-lock.json'), 'utf8'));
      expect({ v, problems: lockProblems(v, pkg, lock) }).toEqual({ v, problems: [] });
    }
  });

  it('the lock check refuses a range, a missing integrity and a tarball from elsewhere', () => {
    const lock = {
      lockfileVersion: 3,
      packages: {
        '': {},
        'node_modules/openclaw': {
          version: '2026.6.8',
          resolved: 'https://example.test/openclaw.tgz',
        },
      },
    };
    expect(lockProblems('2026.6.8', { dependencies: { openclaw: '^2026.6.8' } }, lock)).toEqual([
      'package.json pins openclaw ^2026.6.8',
      'node_modules/openclaw: no sha512 integrity',
      'node_modules/openclaw: not resolved from the npm registry',
    ]);
  });

  it('the image installs the pinned version with npm ci from its committed lock, without scripts', () => {
    const stage = dockerfile.slice(dockerfile.indexOf(' AS openclaw'), dockerfile.indexOf(' AS operator'));
    const version = /ARG OPENCLAW_VERSION=(\S+)/.exec(stage)?.[1];
    expect(versions).toContain(version);
    const lockDir = String.raw`scripts/openclaw-lock/\$\{OPENCLAW_VERSION\}`;
    expect(stage).toMatch(
      new RegExp(String.raw`COPY ${lockDir}/package\.json ${lockDir}/package-lock\.json \./`),
    );
    const runs = instructions(stage).filter((l) => l.startsWith('RUN'));
    expect(runs.some((l) => /\bnpm ci\b/.test(l) && l.includes('--ignore-scripts'))).toBe(true);
    expect(runs.filter((l) => /\bnpm (i|install|add)\b/.test(l))).toEqual([]);
  });

  it('gateway:install runs npm ci with --ignore-scripts and installs nothing unlocked', () => {
    const calls = [...installer.matchAll(/npm\(\s*\[([^\]]*)\]/g)].map((m) => m[1]!);
    expect(calls.some((c) => c.includes("'ci'") && c.includes("'--ignore-scripts'"))).toBe(true);
    // The one `npm install` writes a lockfile (`--lock`): metadata only, nothing downloaded or run.
    for (const c of calls.filter((c) => c.includes("'install'"))) {
      expect(c).toContain("'--package-lock-only'");
      expect(c).toContain("'--ignore-scripts'");
    }
  });
});
