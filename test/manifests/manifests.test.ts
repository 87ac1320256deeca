// The manifests as users get them: rendered by the real kubectl, built-in objects validated
// against the Kubernetes schemas, applied with default validation to the API test server, and
// the Dockerfile's production install run for real in a temp dir.
import { execFile } from 'node:child_process';
import { cp, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob } from 'kubernetes-models/batch/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, Secret, ServiceAccount } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAllDocuments } from 'yaml';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { findKubectl, type Kubectl, kubectlFor } from '../support/kube/kubectl.ts';
import { node24 } from '../support/sandbox.ts';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;
const manifests = join(root, 'manifests');
const kubectl = findKubectl();

interface Container {
  image: string;
  securityContext: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  readinessProbe?: unknown;
  livenessProbe?: unknown;
  resources: { limits: { memory?: string } };
}
interface PodSpec {
  securityContext: { runAsNonRoot?: boolean };
  containers: Container[];
}
interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { template?: { spec: PodSpec }; jobTemplate?: { spec: { template: { spec: PodSpec } } } };
  rules?: Array<{ resources: string[]; verbs: string[] }>;
}

async function render(dir: string): Promise<Obj[]> {
  const { stdout } = await run(kubectl ?? 'kubectl', ['kustomize', dir], { timeout: 30_000 });
  return parseAllDocuments(stdout).map((d) => d.toJSON() as Obj);
}

// biome-ignore lint/suspicious/noExplicitAny: each model constructor takes its own object type
const BUILT_IN: Record<string, new (o: any) => { validate(): void }> = {
  Namespace,
  Secret,
  ServiceAccount,
  Role,
  RoleBinding,
  Deployment,
  StatefulSet,
  CronJob,
};

describe.skipIf(!kubectl)('manifests', () => {
  let objects: Obj[];

  beforeAll(async () => {
    objects = [...(await render(manifests)), ...(await render(join(manifests, 'samples')))];
  });

  it('render with kubectl kustomize into one namespace (manifests, then manifests/samples)', () => {
    const kinds = objects.map((o) => o.kind).sort();
    expect(kinds).toEqual(
      [
        'CronJob',
        'CustomResourceDefinition',
        'Deployment',
        'GatewayKey',
        'Namespace',
        'Role',
        'Role',
        'RoleBinding',
        'RoleBinding',
        'Secret',
        'Secret',
        'ServiceAccount',
        'ServiceAccount',
        'StatefulSet',
      ].sort(),
    );
    for (const o of objects) {
      if (o.kind === 'Namespace' || o.kind === 'CustomResourceDefinition') continue;
      expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('keyroll');
    }
  });

  it('built-in objects validate against the Kubernetes schemas', () => {
    const checked: string[] = [];
    for (const o of objects) {
      const Model = BUILT_IN[o.kind];
      if (!Model) continue;
      expect(() => new Model(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      checked.push(o.kind);
    }
    expect(checked.length).toBe(12);
  });

  it('run the operator non-root on a read-only root filesystem, with probes and limits', () => {
    for (const o of objects.filter((x) => ['Deployment', 'StatefulSet'].includes(x.kind))) {
      const pod = o.spec!.template!.spec;
      expect(pod.securityContext.runAsNonRoot, o.metadata.name).toBe(true);
      for (const c of pod.containers) {
        expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
        expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
        expect(c.readinessProbe).toBeDefined();
        expect(c.livenessProbe).toBeDefined();
        expect(c.resources.limits.memory).toBeDefined();
      }
    }
  });

  it('grant the operator no write access to Secrets, Pods or workloads', () => {
    const role = objects.find((o) => o.kind === 'Role' && o.metadata.name === 'keyroll-operator');
    const writes = ['create', 'update', 'patch', 'delete', 'deletecollection', '*'];
    expect(role?.rules?.length).toBeGreaterThan(0);
    for (const rule of role?.rules ?? []) {
      const touchesWorkloads = rule.resources.some((r) => ['secrets', 'pods', 'gatewaykeys'].includes(r));
      if (touchesWorkloads) expect(rule.verbs.filter((v) => writes.includes(v))).toEqual([]);
    }
  });

  it('reference images built by the Dockerfile targets', async () => {
    const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^FROM .* AS operator$/m);
    expect(dockerfile).toMatch(/^FROM .* AS gateway$/m);
    const images = objects.flatMap((o) =>
      o.kind === 'CronJob'
        ? (o.spec?.jobTemplate?.spec.template.spec.containers.map((c) => c.image) ?? [])
        : (o.spec?.template?.spec.containers.map((c) => c.image) ?? []),
    );
    expect(images.sort()).toEqual([
      'ghcr.io/keyroll/keyroll-gateway:0.1.0',
      'ghcr.io/keyroll/keyroll-operator:0.1.0',
      'ghcr.io/keyroll/keyroll-operator:0.1.0',
    ]);
  });

  describe('applied with kubectl to the API test server', () => {
    let server: KubeApiServer;
    let k: Kubectl;

    beforeAll(async () => {
      server = await startKubeApiServer({});
      k = await kubectlFor(server.kubeconfigPath);
    });

    afterAll(async () => {
      await k?.dispose();
      await server?.close();
    });

    it('kubectl apply -k creates every object with default validation, and a second apply changes nothing', async () => {
      const first = await k.run(['apply', '-k', manifests], { timeoutMs: 60_000 });
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      expect(first.stdout.trim().split('\n')).toHaveLength(11);
      const samples = await k.run(['apply', '-k', join(manifests, 'samples')], { timeoutMs: 60_000 });
      expect(samples.stderr).toBe('');
      expect(samples.stdout.trim().split('\n').sort()).toEqual([
        'gatewaykey.keyroll.dev/kilocode created',
        'secret/gateway-token created',
        'secret/kilocode-key created',
      ]);
      const crdEstablished = await k.run(
        ['wait', '--for=condition=Established', 'crd/gatewaykeys.keyroll.dev', '--timeout=20s'],
        { timeoutMs: 30_000 },
      );
      expect(crdEstablished.code).toBe(0);
      const gk = await k.run(['get', 'gk', '-n', 'keyroll'], { timeoutMs: 30_000 });
      expect(gk.code).toBe(0);
      expect(gk.stdout).toMatch(/^NAME\s+DESIRED\s+CONVERGED\s+READY\s+AGE/);
      expect(gk.stdout).toMatch(/^kilocode\s/m);
      const second = await k.run(['apply', '-k', manifests], { timeoutMs: 60_000 });
      expect(second.code).toBe(0);
      // Secrets with stringData always report "configured" (as on a real cluster); nothing else changes.
      const changed = second.stdout
        .trim()
        .split('\n')
        .filter((l) => !l.endsWith(' unchanged') && !l.startsWith('secret/'));
      expect(changed).toEqual([]);
    });
  });
});

describe('production install (the Dockerfile deps and build stages)', () => {
  it("installs without dev or optional dependencies and runs the bundle, the operator's Kubernetes client included", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'keyroll-prod-'));
    try {
      for (const f of ['package.json', 'package-lock.json']) await cp(join(root, f), join(dir, f));
      await run(
        'npm',
        ['ci', '--omit=dev', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund'],
        { cwd: dir, timeout: 240_000 },
      );
      // The build stage's output, made from this checkout's sources with its dev tooling.
      await run(node24(), [join(root, 'scripts', 'build.mjs'), '--outdir', join(dir, 'dist')], {
        timeout: 120_000,
      });
      const entry = join(dir, 'dist', 'keyroll.js');
      const { stdout } = await run(node24(), [entry, '--help'], { cwd: dir, timeout: 30_000 });
      expect(stdout).toMatch(/^\s+controller\s/m);
      // `@kubernetes/client-node` is not bundled: it must resolve from the production install.
      const kube = await run(node24(), [entry, 'diff', '--kube', '--kubeconfig', join(dir, 'missing')], {
        cwd: dir,
        timeout: 30_000,
      }).then(
        () => ({ code: 0, stderr: '' }),
        (err: { code: number; stderr: string }) => err,
      );
      expect(kube.stderr).toMatch(/cannot load the kubeconfig/);
      expect(kube.code).toBe(2);
      // Dev tooling is absent, so nothing at run time depends on it.
      await expect(run('ls', [join(dir, 'node_modules', 'vitest')])).rejects.toThrow();
      await expect(run('ls', [join(dir, 'node_modules', 'esbuild')])).rejects.toThrow();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
