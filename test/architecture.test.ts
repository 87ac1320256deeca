// The architecture rules of docs/design.md ("Import rules"), checked on the sources: which part
// may import which, and which files may talk to the outside world. A new I/O user is a decision:
// add it to IO_ALLOWED with the reason, and to docs/design.md if it is a new kind of adapter.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, relative } from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './support/sandbox.ts';

const SRC = join(REPO_ROOT, 'src');

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return sources(p);
    return e.name.endsWith('.ts') ? [p] : [];
  });
}

interface SourceFile {
  /** Path under src/, e.g. `controller/server.ts`. */
  path: string;
  text: string;
  /** Relative imports resolved to paths under src/; package and node: imports as written. */
  imports: string[];
}

const IMPORT =
  /(?:^|\n)\s*(?:import|export)\b[^'"]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

function load(): SourceFile[] {
  return sources(SRC).map((abs) => {
    const text = readFileSync(abs, 'utf8');
    const imports = [...text.matchAll(IMPORT)].map((m) => {
      const spec = (m[1] ?? m[2])!;
      return spec.startsWith('.') ? relative(SRC, normalize(join(dirname(abs), spec))) : spec;
    });
    return { path: relative(SRC, abs), text, imports };
  });
}

const files = load();
const part = (path: string) => (path.includes('/') ? path.slice(0, path.indexOf('/')) : path);

/** Part → parts it must not import. */
const FORBIDDEN: Record<string, string[]> = {
  // The controller runs in the gateway pod and knows nothing of who drives it.
  controller: ['cli', 'engine', 'reconcile', 'lifecycle', 'operator', 'fly'],
  profiles: ['cli', 'engine', 'reconcile', 'lifecycle', 'operator', 'fly', 'controller'],
  // The engine: drivers call it, never the reverse.
  lifecycle: ['cli', 'engine', 'operator', 'fly', 'controller'],
  reconcile: ['cli', 'operator', 'fly', 'controller'],
  engine: ['cli', 'fly', 'controller'],
  operator: ['cli', 'fly', 'controller'],
  fly: ['cli', 'operator', 'controller'],
  adapters: ['cli', 'engine', 'reconcile', 'lifecycle', 'operator', 'fly', 'controller', 'profiles'],
};

/**
 * The GatewayKey engine builds on the GatewayKey model (CRD schema, status, Events, pod targets,
 * the cache and client types), never on the operator's runtime (its loop, Kubernetes client,
 * leader election, queue, metrics).
 */
const ENGINE_MAY_USE_FROM_OPERATOR = [
  'operator/events.ts',
  'operator/gateway-key.ts',
  'operator/informer.ts',
  'operator/kube-port.ts',
  'operator/pod-targets.ts',
  'operator/status.ts',
];

/** Outside-facing module → the files that may use it (under src/), each an adapter or an edge. */
const IO_ALLOWED: Record<string, string[]> = {
  'node:http': [
    'adapters/loopback-http.ts', // loopback client without undici, and the gateway's readiness probe (shared)
    'controller/front-door.ts', // the controller's inbound edge: the proxy
    'controller/server.ts', // the controller's inbound edge: /_kilo/*, health
    'operator/operator.ts', // the operator's health and metrics endpoint
  ],
  'node:https': [],
  'node:net': [
    'adapters/http1.ts', // HTTP/1.1 client of the controller API (reconcile/controller-client.ts)
    'controller/server.ts',
    'fly/address.ts',
  ],
  'node:tls': ['adapters/http1.ts'],
  'node:child_process': [
    'controller/openclaw-cli.ts', // the openclaw CLI (onboard, doctor, secrets reload)
    'controller/supervisor.ts', // the gateway process itself
  ],
  '@kubernetes/client-node': ['operator/kube.ts'],
  'node:sqlite': ['profiles/sqlite-store.ts'],
  fetch: [
    'fly/client.ts', // the Fly Machines API
    'lifecycle/retire.ts', // revoke URL and retirement webhook
    'reconcile/sources/http-source.ts', // the HTTP key source
  ],
};

function users(mod: string): string[] {
  if (mod === 'fetch') return files.filter((f) => /\bfetch\(/.test(f.text)).map((f) => f.path);
  return files.filter((f) => f.imports.some((i) => i === mod || i.startsWith(`${mod}/`))).map((f) => f.path);
}

describe('architecture', () => {
  it('reads the sources and their imports', () => {
    expect(files.length).toBeGreaterThan(50);
    expect(files.find((f) => f.path === 'cli/main.ts')?.imports.length).toBeGreaterThan(0);
  });

  it('no part imports a part it must not (docs/design.md, "Import rules")', () => {
    const violations = files.flatMap((f) =>
      f.imports
        .filter((i) => !i.startsWith('node:') && i.includes('/') && !i.startsWith('@') && !i.startsWith('..'))
        .filter((i) => (FORBIDDEN[part(f.path)] ?? []).includes(part(i)))
        .map((i) => `${f.path} → ${i}`),
    );
    expect(violations).toEqual([]);
  });

  it('the GatewayKey engine uses only the GatewayKey model from src/operator', () => {
    const violations = files
      .filter((f) => part(f.path) === 'engine')
      .flatMap((f) =>
        f.imports.filter((i) => part(i) === 'operator' && !ENGINE_MAY_USE_FROM_OPERATOR.includes(i)),
      );
    expect(violations).toEqual([]);
  });

  it('the /_kilo/state contract (src/kilo-state.ts) imports nothing: the controller and the engine both load it, and zod stays out of the controller', () => {
    const contract = files.find((f) => f.path === 'kilo-state.ts');
    expect(contract?.text).toContain('export function parseObservedState');
    expect(contract?.imports).toEqual([]);
    const readers = files.filter((f) => f.imports.includes('kilo-state.ts')).map((f) => part(f.path));
    expect(new Set(readers)).toEqual(new Set(['controller', 'engine', 'reconcile']));
  });

  it('nothing outside src/cli imports the command line', () => {
    const violations = files
      .filter((f) => part(f.path) !== 'cli')
      .flatMap((f) => f.imports.filter((i) => part(i) === 'cli').map((i) => `${f.path} → ${i}`));
    expect(violations).toEqual([]);
  });

  it.each(Object.keys(IO_ALLOWED))('only the listed adapters use %s', (mod) => {
    expect(users(mod).sort()).toEqual([...IO_ALLOWED[mod]!].sort());
  });

  it('the rule check itself catches a forbidden import', () => {
    const fake: SourceFile = { path: 'controller/x.ts', text: '', imports: ['cli/usage.ts'] };
    const bad = fake.imports.filter((i) => (FORBIDDEN[part(fake.path)] ?? []).includes(part(i)));
    expect(bad).toEqual(['cli/usage.ts']);
  });
});
