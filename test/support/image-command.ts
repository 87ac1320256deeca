// Owns "the command line the gateway pod runs", read from the files that define it: the
// Dockerfile's gateway ENTRYPOINT and the StatefulSet's container args. Tests and the controller
// benchmark run exactly that command (with /app mapped to a local package root), so a flag that
// breaks the image, or args that do not fit the entrypoint, fail here rather than in a cluster.
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { node24, REPO_ROOT } from './sandbox.ts';

export interface ImageCommand {
  /** The init before `node` (the gateway image's `tini --`), or empty. */
  init: string[];
  /** Node's own flags before the script (e.g. `--lite-mode`). */
  nodeFlags: string[];
  /** The script, with the image's `/app` mapped to `appRoot`. */
  script: string;
  /** The arguments after the script (`controller`). */
  args: string[];
}

/** The ENTRYPOINT (exec form) of a Dockerfile stage, e.g. `gateway`. */
export function dockerEntrypoint(stage: string, dockerfile = join(REPO_ROOT, 'Dockerfile')): string[] {
  const text = readFileSync(dockerfile, 'utf8');
  const stages = text.split(/^(?=FROM )/m);
  const body = stages.find((s) =>
    new RegExp(`^FROM \\S+ AS ${stage}\\s*$`, 'm').test(s.split('\n')[0] ?? ''),
  );
  if (!body) throw new Error(`Dockerfile has no stage '${stage}'`);
  const lines = body.split('\n').filter((l) => l.startsWith('ENTRYPOINT '));
  const last = lines.at(-1);
  if (!last) throw new Error(`Dockerfile stage '${stage}' has no ENTRYPOINT`);
  return JSON.parse(last.slice('ENTRYPOINT '.length)) as string[];
}

/**
 * A Dockerfile stage's entrypoint, split into init (`tini --`), Node flags, script (under
 * `appRoot`) and args. Tests run `node` with the rest; the init is checked where it matters
 * (test/controller/zombies.test.ts runs the controller under it).
 */
export function imageCommand(stage: 'gateway' | 'operator', appRoot: string): ImageCommand {
  return splitCommand(dockerEntrypoint(stage), `${stage} ENTRYPOINT`, appRoot);
}

/** A node command line (`[tini --] node flags… /app/script args…`) split as `imageCommand` says. */
function splitCommand(command: readonly string[], what: string, appRoot: string): ImageCommand {
  const nodeAt = command.indexOf('node');
  const init = nodeAt > 0 ? command.slice(0, nodeAt) : [];
  if (init.length > 0 && (init[0] !== 'tini' || init.at(-1) !== '--')) {
    throw new Error(`${what} starts with '${init.join(' ')}', expected node or tini -- node`);
  }
  const [program, ...rest] = command.slice(init.length);
  if (program !== 'node') throw new Error(`${what} runs '${program}', expected node`);
  const at = rest.findIndex((a) => !a.startsWith('-'));
  if (at < 0) throw new Error(`${what} names no script`);
  const script = rest[at]!;
  if (!script.startsWith('/app/')) throw new Error(`${what} script ${script} is not under /app`);
  return {
    init,
    nodeFlags: rest.slice(0, at),
    script: join(appRoot, script.slice('/app/'.length)),
    args: rest.slice(at + 1),
  };
}

/**
 * What a manifest's container runs: its own `command` when it sets one (the reconcile CronJob
 * sets its Node flags), else the image stage's ENTRYPOINT; either way followed by its `args`.
 */
export function containerCommand(
  stage: 'gateway' | 'operator',
  file: string,
  kind: string,
  container: string,
  appRoot: string,
): ImageCommand {
  const c = manifestContainer(file, kind, container);
  const base = c.command
    ? splitCommand(c.command, `${file} ${kind} container '${container}' command`, appRoot)
    : imageCommand(stage, appRoot);
  return { ...base, args: [...base.args, ...(c.args ?? [])] };
}

/** The args of container `container` of the first `kind` object in a manifest under manifests/. */
export function manifestArgs(file: string, kind: string, container: string): string[] {
  return manifestContainer(file, kind, container).args ?? [];
}

interface ContainerSpec {
  name: string;
  command?: string[];
  args?: string[];
}

/** Container `container` of the first `kind` object in a manifest under manifests/. */
function manifestContainer(file: string, kind: string, container: string): ContainerSpec {
  const path = join(REPO_ROOT, 'manifests', file);
  for (const doc of parseAllDocuments(readFileSync(path, 'utf8'))) {
    const o = doc.toJS() as {
      kind?: string;
      spec?: {
        template?: PodTemplate;
        jobTemplate?: { spec?: { template?: PodTemplate } };
      };
    } | null;
    if (o?.kind !== kind) continue;
    const pod = o.spec?.template ?? o.spec?.jobTemplate?.spec?.template;
    const c = pod?.spec?.containers?.find((x) => x.name === container);
    if (c) return c;
  }
  throw new Error(`${path} has no ${kind} with a '${container}' container`);
}

interface PodTemplate {
  spec?: { containers?: ContainerSpec[] };
}

/** The args of the `gateway` container of the example gateway (a kustomize Component). */
export function statefulSetGatewayArgs(): string[] {
  return manifestArgs('components/example-gateway/statefulset.yaml', 'StatefulSet', 'gateway');
}

/** The value of `--flag` in args (`--flag=v` or `--flag v`; the last one wins, as for parseArgs). */
export function flagValue(args: readonly string[], flag: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a.startsWith(`${flag}=`)) value = a.slice(flag.length + 1);
    else if (a === flag && i + 1 < args.length) value = args[++i];
  }
  return value;
}

/**
 * args with the value of each named flag replaced, in whichever form it was given (`--flag=v`
 * or `--flag v`), so a test can run a manifest's args on free loopback ports and temp dirs.
 * A flag named in `values` but absent from args is an error: the manifest changed under the test.
 */
export function replaceFlags(args: readonly string[], values: Readonly<Record<string, string>>): string[] {
  const out = [...args];
  for (const [flag, value] of Object.entries(values)) {
    let found = false;
    for (let i = 0; i < out.length; i++) {
      if (out[i]!.startsWith(`${flag}=`)) {
        out[i] = `${flag}=${value}`;
        found = true;
      } else if (out[i] === flag && i + 1 < out.length) {
        out[++i] = value;
        found = true;
      }
    }
    if (!found) throw new Error(`args have no ${flag}: ${args.join(' ')}`);
  }
  return out;
}

export interface BuiltPackage {
  /** Stands for the image's /app: package.json, node_modules (linked) and dist/. */
  root: string;
  cleanup(): void;
}

/**
 * `npm run build` into a fresh package root laid out like the image's /app (plus links to this
 * checkout's node_modules and .cache), so the bundle is tested as shipped and the working tree's
 * dist/ is left alone. Takes about a second.
 */
export function buildPackage(prefix = 'keyroll-dist-'): BuiltPackage {
  const root = mkdtempSync(join(tmpdir(), prefix));
  try {
    copyFileSync(join(REPO_ROOT, 'package.json'), join(root, 'package.json'));
    symlinkSync(join(REPO_ROOT, 'node_modules'), join(root, 'node_modules'));
    // The pinned OpenClaw from `npm run gateway:install`, found as the sources find it.
    symlinkSync(join(REPO_ROOT, '.cache'), join(root, '.cache'));
    execFileSync(node24(), [join(REPO_ROOT, 'scripts', 'build.mjs'), '--outdir', join(root, 'dist')], {
      stdio: ['ignore', 'ignore', 'pipe'],
      timeout: 120_000,
    });
  } catch (err) {
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  return { root, cleanup: () => rmSync(root, { recursive: true, force: true }) };
}
