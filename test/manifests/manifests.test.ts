// The manifests as users get them: rendered by the real kubectl (the default install, each opt-in
// Component, a user's kustomization that adds them), built-in objects validated against the
// Kubernetes schemas, the wiring between objects checked the way the cluster and the operator
// read it, applied with default validation to the API test server, and the Dockerfile's
// production install run for real in a temp dir.
import { execFile } from 'node:child_process';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Deployment, StatefulSet } from 'kubernetes-models/apps/v1';
import { CronJob } from 'kubernetes-models/batch/v1';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1';
import { Role, RoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import { Namespace, Secret, Service, ServiceAccount } from 'kubernetes-models/v1';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseOperatorConfig } from '../../src/operator/config.ts';
import { LabelSelectorSchema } from '../../src/operator/gateway-key.ts';
import { parsePod } from '../../src/operator/kube-port.ts';
import { podTargets, selectorMatches } from '../../src/operator/pod-targets.ts';
import { flagValue } from '../support/image-command.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { type Kubectl, kubectlFor } from '../support/kube/kubectl.ts';
import { node24 } from '../support/sandbox.ts';
import {
  COMPONENTS,
  type ComponentName,
  type Container,
  kubectl,
  MANIFESTS,
  type Obj,
  one,
  podTemplate,
  render,
  renderWith,
  userKustomization,
} from './render.ts';

const run = promisify(execFile);
const root = new URL('../../', import.meta.url).pathname;

// biome-ignore lint/suspicious/noExplicitAny: each model constructor takes its own object type
const BUILT_IN: Record<string, new (o: any) => { validate(): void }> = {
  Namespace,
  Secret,
  Service,
  ServiceAccount,
  Role,
  RoleBinding,
  Deployment,
  StatefulSet,
  CronJob,
  NetworkPolicy,
};
/** Kinds no model here validates: the CRD itself and the custom resources. */
const NOT_BUILT_IN = ['CustomResourceDefinition', 'GatewayKey', 'ServiceMonitor', 'PrometheusRule'];

/** What `kubectl apply -k manifests` installs, and nothing more. */
const DEFAULT_INSTALL = [
  'CustomResourceDefinition/gatewaykeys.keyroll.dev',
  'Deployment/keyroll-operator',
  'Namespace/keyroll',
  'NetworkPolicy/keyroll-operator',
  'Role/keyroll-operator',
  'Role/keyroll-reconcile',
  'RoleBinding/keyroll-operator',
  'RoleBinding/keyroll-reconcile',
  'Service/keyroll-operator-metrics',
  'ServiceAccount/keyroll-operator',
  'ServiceAccount/keyroll-reconcile',
];
const COMPONENT_OBJECTS: Record<ComponentName, string[]> = {
  'reconcile-cronjob': ['CronJob/keyroll-reconcile'],
  'example-gateway': [
    'NetworkPolicy/openclaw-gateway',
    'Service/openclaw-gateway',
    'StatefulSet/openclaw-gateway',
  ],
  monitoring: ['PrometheusRule/keyroll-operator', 'ServiceMonitor/keyroll-operator'],
};

const names = (objects: readonly Obj[]) => objects.map((o) => `${o.kind}/${o.metadata.name}`).sort();
const clusterScoped = (o: Obj) => o.kind === 'Namespace' || o.kind === 'CustomResourceDefinition';

function container(o: Obj, name: string): Container {
  const c = podTemplate(o).spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`${o.kind}/${o.metadata.name} has no container ${name}`);
  return c;
}

/** The containerPort a Service targetPort or probe port (a name or a number) resolves to. */
function resolvePort(c: Container, port: string | number | undefined): number | undefined {
  if (typeof port === 'number') return c.ports?.some((p) => p.containerPort === port) ? port : undefined;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

/** Bytes of a Kubernetes memory quantity (the Mi/Gi/M/G forms these manifests use). */
function bytes(q: string | undefined): number {
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|K|M|G)?$/.exec(q ?? '');
  if (!m) throw new Error(`not a memory quantity: ${q}`);
  const unit = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, K: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

/**
 * NetworkPolicy ingress semantics for one policy that selects the destination pod: does some
 * rule admit a peer pod (its labels, in the policy's namespace or another) to the named port?
 */
function admits(
  np: Obj,
  port: string,
  dst: Container,
  peer: { labels: Record<string, string>; sameNamespace: boolean },
) {
  const portNumber = resolvePort(dst, port);
  return (np.spec?.ingress ?? []).some((rule) => {
    const portOk =
      !rule.ports?.length ||
      rule.ports.some((p) => p.port === port || (p.port !== undefined && p.port === portNumber));
    const peerOk =
      !rule.from?.length ||
      rule.from.some((f) => {
        // A podSelector without a namespaceSelector selects pods of the policy's own namespace.
        if (f.namespaceSelector) return false; // no peer in these tests comes from a labelled namespace
        return (
          peer.sameNamespace &&
          f.podSelector !== undefined &&
          selectorMatches(LabelSelectorSchema.parse(f.podSelector), peer.labels)
        );
      });
    return portOk && peerOk;
  });
}

describe.skipIf(!kubectl)('manifests', () => {
  let base: Obj[];
  let samples: Obj[];
  /** manifests with every Component, as a user's kustomization renders it. */
  let full: Obj[];
  const standalone = {} as Record<ComponentName, Obj[]>;

  beforeAll(async () => {
    [base, samples, full] = await Promise.all([
      render(MANIFESTS),
      render(join(MANIFESTS, 'samples')),
      renderWith(COMPONENTS),
    ]);
    for (const c of COMPONENTS) standalone[c] = await render(join(MANIFESTS, 'components', c));
  });

  it('kubectl kustomize manifests: the CRD, the operator, its RBAC, metrics Service and NetworkPolicy; no CronJob, no gateway', () => {
    expect(names(base)).toEqual(DEFAULT_INSTALL);
    expect(base.filter((o) => o.kind === 'CronJob' || o.kind === 'StatefulSet')).toEqual([]);
    for (const o of base) {
      if (!clusterScoped(o)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('keyroll');
    }
    expect(names(samples)).toEqual([
      'GatewayKey/kilocode',
      'Secret/gateway-token',
      'Secret/keyroll-controller-token',
      'Secret/kilocode-key',
    ]);
    for (const o of samples) expect(o.metadata.namespace).toBe('keyroll');
  });

  it.each(COMPONENTS)(
    'Component %s renders on its own, and a kustomization that adds it gets exactly its objects more',
    async (c) => {
      expect(names(standalone[c])).toEqual(COMPONENT_OBJECTS[c]);
      for (const o of standalone[c])
        expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('keyroll');
      const withIt = await renderWith([c]);
      expect(names(withIt)).toEqual([...DEFAULT_INSTALL, ...COMPONENT_OBJECTS[c]].sort());
    },
  );

  it("the README's kustomization (On Kubernetes) renders manifests and the Components it picks", async () => {
    const readme = await readFile(join(root, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## On Kubernetes'));
    const yaml = /```yaml\n([\s\S]*?)```/.exec(section)?.[1];
    expect(yaml).toBeDefined();
    // Laid out as the README's paths assume: a checkout of keyroll beside my-keyroll.
    const dir = await mkdtemp(join(tmpdir(), 'keyroll-readme-'));
    try {
      await symlink(root, join(dir, 'keyroll'));
      await mkdir(join(dir, 'my-keyroll'));
      await writeFile(join(dir, 'my-keyroll', 'kustomization.yaml'), yaml!);
      const objects = await render(join(dir, 'my-keyroll'));
      expect(names(objects)).toEqual(
        [
          ...DEFAULT_INSTALL,
          ...COMPONENT_OBJECTS['example-gateway'],
          ...COMPONENT_OBJECTS['reconcile-cronjob'],
        ].sort(),
      );
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("a user's `namespace:` moves every namespaced object, the Components' included", async () => {
    const moved = await renderWith(COMPONENTS, 'gateways');
    // The Namespace object itself is renamed (kustomize's namespace transformer does that).
    expect(names(moved)).toEqual(
      names(full).map((n) => (n === 'Namespace/keyroll' ? 'Namespace/gateways' : n)),
    );
    for (const o of moved) {
      if (!clusterScoped(o)) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).toBe('gateways');
    }
  });

  it('built-in objects validate against the Kubernetes schemas', () => {
    const all = [...full, ...samples];
    const checked: string[] = [];
    for (const o of all) {
      const Model = BUILT_IN[o.kind];
      if (!Model) continue;
      expect(() => new Model(o).validate(), `${o.kind}/${o.metadata.name}`).not.toThrow();
      checked.push(o.kind);
    }
    expect(checked.length).toBe(all.filter((o) => !NOT_BUILT_IN.includes(o.kind)).length);
  });

  it('run every workload non-root on a read-only root filesystem with a memory limit; servers have probes', () => {
    const workloads = full.filter((o) => ['Deployment', 'StatefulSet', 'CronJob'].includes(o.kind));
    expect(workloads.map((o) => o.kind).sort()).toEqual(['CronJob', 'Deployment', 'StatefulSet']);
    for (const o of workloads) {
      const pod = podTemplate(o).spec;
      if (o.kind === 'StatefulSet') {
        // The gateway pod's controller is root with six capabilities, so that the gateway runs as
        // a user of its own (non-root) that cannot read the controller token.
        expect(pod.securityContext).toMatchObject({ runAsNonRoot: false, runAsUser: 0 });
        const c = container(o, 'gateway');
        expect(c.securityContext.capabilities).toEqual({
          drop: ['ALL'],
          add: ['SETUID', 'SETGID', 'KILL', 'CHOWN', 'DAC_OVERRIDE', 'FOWNER'],
        });
        expect(Number(flagValue(c.args ?? [], '--gateway-uid'))).toBeGreaterThan(0);
        expect(Number(flagValue(c.args ?? [], '--gateway-gid'))).toBeGreaterThan(0);
      } else {
        expect(pod.securityContext.runAsNonRoot, o.metadata.name).toBe(true);
      }
      for (const c of pod.containers) {
        expect(c.securityContext.readOnlyRootFilesystem).toBe(true);
        expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
        expect(c.resources.limits.memory).toBeDefined();
        if (o.kind === 'CronJob') continue;
        expect(c.readinessProbe).toBeDefined();
        expect(c.livenessProbe).toBeDefined();
      }
    }
  });

  it('the GatewayKey sample names the controller token the gateway pod gives its controller, not the gateway token', () => {
    type EnvVar = {
      name: string;
      valueFrom?: { secretKeyRef?: { name: string; key: string; optional?: boolean } };
    };
    const env = (
      container(one(full, 'StatefulSet', 'openclaw-gateway'), 'gateway') as Container & { env: EnvVar[] }
    ).env;
    const ref = (name: string) => env.find((v) => v.name === name)?.valueFrom?.secretKeyRef;
    const gk = one(samples, 'GatewayKey', 'kilocode') as Obj & {
      spec: { controllerTokenSecretRef: { name: string; key: string } };
    };
    expect(gk.spec.controllerTokenSecretRef).toEqual({
      name: ref('KEYROLL_CONTROLLER_TOKEN')?.name,
      key: ref('KEYROLL_CONTROLLER_TOKEN')?.key,
    });
    expect(ref('OPENCLAW_GATEWAY_TOKEN')?.name).not.toBe(gk.spec.controllerTokenSecretRef.name);
    // The previous token (a rotation) comes from the same Secret and may be absent.
    expect(ref('KEYROLL_CONTROLLER_TOKEN_PREVIOUS')).toMatchObject({
      name: gk.spec.controllerTokenSecretRef.name,
      optional: true,
    });
    // The operator sees (label) the controller token's Secret, and not the gateway's.
    const label = (n: string) => one(samples, 'Secret', n).metadata.labels?.['keyroll.dev/key-source'];
    expect(label(gk.spec.controllerTokenSecretRef.name)).toBe('true');
    expect(label(ref('OPENCLAW_GATEWAY_TOKEN')!.name)).toBeUndefined();
  });

  it('grant the operator no write access to Secrets, Pods or workloads', () => {
    const role = one(base, 'Role', 'keyroll-operator');
    const writes = ['create', 'update', 'patch', 'delete', 'deletecollection', '*'];
    expect(role.rules?.length).toBeGreaterThan(0);
    for (const rule of role.rules ?? []) {
      const touchesWorkloads = rule.resources.some((r) => ['secrets', 'pods', 'gatewaykeys'].includes(r));
      if (touchesWorkloads) expect(rule.verbs.filter((v) => writes.includes(v))).toEqual([]);
    }
  });

  it("let the operator read and renew only the Lease it elects with (the Deployment's args), and create it", () => {
    const args = container(one(base, 'Deployment', 'keyroll-operator'), 'operator').args ?? [];
    const config = parseOperatorConfig({ leaseName: flagValue(args, '--lease-name') }, {});
    const leaseRules = (one(base, 'Role', 'keyroll-operator').rules ?? []).filter((r) =>
      r.resources.includes('leases'),
    );
    expect(leaseRules).toEqual([
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: [config.leaseName],
        verbs: ['get', 'update'],
      },
      // Kubernetes authorizes a create before the object has a name: a named create rule never matches.
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    ]);
    for (const role of base.filter((o) => o.kind === 'Role')) {
      for (const r of role.rules ?? []) {
        if (r.resourceNames) expect(r.verbs, role.metadata.name).not.toContain('create');
      }
    }
  });

  it("the reconcile CronJob takes the operator's Lease: its KEYROLL_LEASE_NAME is the operator's, and its Role allows get/update on that Lease only, and create", () => {
    const args = container(one(base, 'Deployment', 'keyroll-operator'), 'operator').args ?? [];
    const operatorLease = parseOperatorConfig({ leaseName: flagValue(args, '--lease-name') }, {}).leaseName;
    const cron = podTemplate(one(full, 'CronJob', 'keyroll-reconcile')).spec.containers[0] as Container & {
      env?: Array<{ name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }>;
    };
    const env = new Map((cron.env ?? []).map((e) => [e.name, e]));
    expect(env.get('KEYROLL_LEASE_NAME')?.value).toBe(operatorLease);
    expect(env.get('POD_NAME')?.valueFrom?.fieldRef?.fieldPath).toBe('metadata.name');
    const leaseRules = (one(base, 'Role', 'keyroll-reconcile').rules ?? []).filter((r) =>
      r.resources.includes('leases'),
    );
    expect(leaseRules).toEqual([
      {
        apiGroups: ['coordination.k8s.io'],
        resources: ['leases'],
        resourceNames: [operatorLease],
        verbs: ['get', 'update'],
      },
      { apiGroups: ['coordination.k8s.io'], resources: ['leases'], verbs: ['create'] },
    ]);
  });

  it("the README's `images:` override moves every container (Components included) to your registry", async () => {
    const k = await userKustomization(['example-gateway', 'reconcile-cronjob']);
    try {
      const path = join(k.dir, 'kustomization.yaml');
      const text = await readFile(path, 'utf8');
      await writeFile(
        path,
        `${text}images:\n` +
          '  - name: ghcr.io/keyroll/keyroll-operator\n' +
          '    newName: registry.example.com/platform/keyroll-operator\n' +
          '    newTag: 0.1.0\n' +
          '  - name: ghcr.io/keyroll/keyroll-gateway\n' +
          '    newName: registry.example.com/platform/keyroll-gateway\n' +
          '    newTag: 0.1.0\n',
      );
      const objects = await render(k.dir);
      const images = objects
        .filter((o) => ['Deployment', 'StatefulSet', 'CronJob'].includes(o.kind))
        .flatMap((o) => podTemplate(o).spec.containers.map((c) => c.image))
        .sort();
      expect(images).toEqual([
        'registry.example.com/platform/keyroll-gateway:0.1.0',
        'registry.example.com/platform/keyroll-operator:0.1.0',
        'registry.example.com/platform/keyroll-operator:0.1.0',
      ]);
    } finally {
      await k.cleanup();
    }
  });

  it('reference images built by the Dockerfile targets', async () => {
    const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8');
    expect(dockerfile).toMatch(/^FROM .* AS operator$/m);
    expect(dockerfile).toMatch(/^FROM .* AS gateway$/m);
    const images = full
      .filter((o) => ['Deployment', 'StatefulSet', 'CronJob'].includes(o.kind))
      .flatMap((o) => podTemplate(o).spec.containers.map((c) => c.image));
    expect(images.sort()).toEqual([
      'ghcr.io/keyroll/keyroll-gateway:0.1.0',
      'ghcr.io/keyroll/keyroll-operator:0.1.0',
      'ghcr.io/keyroll/keyroll-operator:0.1.0',
    ]);
  });

  it("the operator's metrics: its Service, NetworkPolicy and the ServiceMonitor all name its --metrics-port", () => {
    const deployment = one(base, 'Deployment', 'keyroll-operator');
    const operator = container(deployment, 'operator');
    const podLabels = podTemplate(deployment).metadata?.labels ?? {};
    const metricsPort = parseOperatorConfig(
      { metricsPort: flagValue(operator.args ?? [], '--metrics-port') },
      {},
    ).metricsPort;

    const svc = one(base, 'Service', 'keyroll-operator-metrics');
    expect(selectorMatches({ matchLabels: svc.spec?.selector as Record<string, string> }, podLabels)).toBe(
      true,
    );
    expect(svc.spec?.ports).toHaveLength(1);
    expect(resolvePort(operator, svc.spec?.ports?.[0]?.targetPort)).toBe(metricsPort);

    const np = one(base, 'NetworkPolicy', 'keyroll-operator');
    expect(selectorMatches(LabelSelectorSchema.parse(np.spec?.podSelector), podLabels)).toBe(true);
    expect(np.spec?.policyTypes).toEqual(['Ingress']);
    const opened = (np.spec?.ingress ?? []).flatMap((r) =>
      (r.ports ?? []).map((p) => resolvePort(operator, p.port)),
    );
    expect(opened).toEqual([metricsPort]);
    // Not open to any pod of the namespace: only to labelled (monitoring) namespaces.
    expect(admits(np, 'http', operator, { labels: { app: 'anything' }, sameNamespace: true })).toBe(false);

    const monitor = one(full, 'ServiceMonitor', 'keyroll-operator');
    expect(monitor.apiVersion).toBe('monitoring.coreos.com/v1');
    expect(
      selectorMatches(LabelSelectorSchema.parse(monitor.spec?.selector), svc.metadata.labels ?? {}),
    ).toBe(true);
    expect(monitor.spec?.endpoints).toEqual([
      expect.objectContaining({ port: svc.spec?.ports?.[0]?.name, path: '/metrics' }),
    ]);
  });

  describe('the example gateway', () => {
    let gw: Obj[];
    let sts: Obj;
    let c: Container;
    let args: string[];
    let labels: Record<string, string>;

    beforeAll(() => {
      gw = standalone['example-gateway'];
      sts = one(gw, 'StatefulSet', 'openclaw-gateway');
      c = container(sts, 'gateway');
      args = c.args ?? [];
      labels = podTemplate(sts).metadata?.labels ?? {};
    });

    it("the Service exposes the container's proxy port (the controller's --port) and nothing else", () => {
      const proxy = resolvePort(c, 'proxy');
      expect(proxy).toBe(18789);
      expect(Number(flagValue(args, '--port'))).toBe(proxy);
      const svc = one(gw, 'Service', 'openclaw-gateway');
      expect(selectorMatches({ matchLabels: svc.spec?.selector as Record<string, string> }, labels)).toBe(
        true,
      );
      expect(svc.spec?.ports).toEqual([{ name: 'proxy', port: 18789, targetPort: 'proxy', protocol: 'TCP' }]);
      expect(resolvePort(c, svc.spec?.ports?.[0]?.targetPort)).toBe(proxy);
      // No Service anywhere reaches the admin port.
      const admin = resolvePort(c, 'admin');
      for (const s of full.filter((o) => o.kind === 'Service')) {
        for (const p of s.spec?.ports ?? []) {
          if (selectorMatches({ matchLabels: s.spec?.selector as Record<string, string> }, labels)) {
            expect(resolvePort(c, p.targetPort ?? p.port)).not.toBe(admin);
          }
        }
      }
    });

    it('the readiness probe is GET /readyz on the proxy port, liveness /health', () => {
      expect(c.readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 'proxy' });
      expect(c.livenessProbe?.httpGet?.path).toBe('/health');
      expect(resolvePort(c, c.livenessProbe?.httpGet?.port)).toBe(resolvePort(c, 'proxy'));
    });

    it("the keyroll.dev/port annotation names the admin port (the controller's --admin-port), and the operator targets it", () => {
      const template = podTemplate(sts);
      const admin = resolvePort(c, 'admin');
      expect(admin).toBe(18790);
      expect(Number(flagValue(args, '--admin-port'))).toBe(admin);
      expect(template.metadata?.annotations?.['keyroll.dev/port']).toBe(String(admin));
      // As the operator reads a running pod of this template.
      const pod = parsePod({
        metadata: {
          namespace: 'keyroll',
          name: 'openclaw-gateway-0',
          resourceVersion: '1',
          labels,
          annotations: template.metadata?.annotations,
        },
        status: { phase: 'Running', podIP: '10.0.0.7', conditions: [{ type: 'Ready', status: 'True' }] },
      });
      expect(pod).not.toBeNull();
      const gk = one(samples, 'GatewayKey', 'kilocode');
      const selector = LabelSelectorSchema.parse(gk.spec?.targets?.selector);
      const { targets } = podTargets([pod!], 'keyroll', selector, gk.spec?.targets?.port ?? 0);
      expect(targets.map((t) => t.url)).toEqual([`http://10.0.0.7:${admin}`]);
      // Without the annotation the sample GatewayKey's own port is the admin port too.
      expect(gk.spec?.targets?.port).toBe(admin);
      // The gateway itself listens on loopback only: no container port for --gateway-port.
      expect(resolvePort(c, Number(flagValue(args, '--gateway-port')))).toBeUndefined();
    });

    it('no service account token, and memory for two gateways at once (surge)', () => {
      const pod = podTemplate(sts).spec;
      expect(pod.automountServiceAccountToken).toBe(false);
      // Two OpenClaw 2026.6.8 gateways at ≈0.7 GB each, plus the controller.
      expect(bytes(c.resources.limits.memory)).toBeGreaterThanOrEqual(2 * 0.7e9 + 0.1e9);
      expect(bytes(c.resources.requests?.memory)).toBeGreaterThanOrEqual(2 * 0.7e9);
      expect(bytes(c.resources.requests?.memory)).toBeLessThanOrEqual(bytes(c.resources.limits.memory));
    });

    it("the NetworkPolicy opens the proxy port to everyone and the admin port only to the operator's and the reconcile Job's pods", () => {
      const np = one(gw, 'NetworkPolicy', 'openclaw-gateway');
      expect(selectorMatches(LabelSelectorSchema.parse(np.spec?.podSelector), labels)).toBe(true);
      expect(np.spec?.policyTypes).toEqual(['Ingress']);
      const operatorPod = podTemplate(one(base, 'Deployment', 'keyroll-operator')).metadata?.labels ?? {};
      const reconcilePod = podTemplate(one(full, 'CronJob', 'keyroll-reconcile')).metadata?.labels ?? {};
      const client = { app: 'some-client' };
      for (const port of ['proxy', 'admin']) expect(resolvePort(c, port), port).toBeDefined();

      expect(admits(np, 'proxy', c, { labels: client, sameNamespace: false })).toBe(true);
      expect(admits(np, 'admin', c, { labels: operatorPod, sameNamespace: true })).toBe(true);
      expect(admits(np, 'admin', c, { labels: reconcilePod, sameNamespace: true })).toBe(true);
      expect(admits(np, 'admin', c, { labels: client, sameNamespace: true })).toBe(false);
      expect(admits(np, 'admin', c, { labels, sameNamespace: true })).toBe(false);
      expect(admits(np, 'admin', c, { labels: operatorPod, sameNamespace: false })).toBe(false);
      // Any other port (the loopback gateway's, were it bound wider) is closed.
      expect(admits(np, 'gateway', c, { labels: operatorPod, sameNamespace: true })).toBe(false);
    });
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

    it('kubectl apply -k creates every object with default validation; Components added later create only theirs; a second apply changes nothing', async () => {
      const first = await k.run(['apply', '-k', MANIFESTS], { timeoutMs: 60_000 });
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      expect(first.stdout.trim().split('\n')).toHaveLength(DEFAULT_INSTALL.length);
      expect(first.stdout).not.toMatch(/cronjob|statefulset/);
      const samplesRun = await k.run(['apply', '-k', join(MANIFESTS, 'samples')], { timeoutMs: 60_000 });
      expect(samplesRun.stderr).toBe('');
      expect(samplesRun.stdout.trim().split('\n').sort()).toEqual([
        'gatewaykey.keyroll.dev/kilocode created',
        'secret/gateway-token created',
        'secret/keyroll-controller-token created',
        'secret/kilocode-key created',
      ]);
      const crdEstablished = await k.run(
        ['wait', '--for=condition=Established', 'crd/gatewaykeys.keyroll.dev', '--timeout=20s'],
        { timeoutMs: 30_000 },
      );
      expect(crdEstablished.code).toBe(0);
      const gk = await k.run(['get', 'gk', '-n', 'keyroll'], { timeoutMs: 30_000 });
      expect(gk.code).toBe(0);
      expect(gk.stdout).toMatch(/^NAME\s+DESIRED\s+CONVERGED\s+READY\s+STATUS\s+LAST-ROTATED\s+AGE/);
      expect(gk.stdout).toMatch(/^kilocode\s/m);

      // A user's kustomization that opts into the example gateway and the reconcile CronJob
      // (monitoring needs the Prometheus Operator's CRDs, which this server does not have).
      const user = await userKustomization(['example-gateway', 'reconcile-cronjob']);
      try {
        const withComponents = await k.run(['apply', '-k', user.dir], { timeoutMs: 60_000 });
        expect(withComponents.stderr).toBe('');
        expect(withComponents.code).toBe(0);
        const lines = withComponents.stdout.trim().split('\n');
        expect(lines.filter((l) => !l.endsWith(' unchanged')).sort()).toEqual([
          'cronjob.batch/keyroll-reconcile created',
          'networkpolicy.networking.k8s.io/openclaw-gateway created',
          'service/openclaw-gateway created',
          'statefulset.apps/openclaw-gateway created',
        ]);
        const again = await k.run(['apply', '-k', user.dir], { timeoutMs: 60_000 });
        expect(again.code).toBe(0);
        expect(
          again.stdout
            .trim()
            .split('\n')
            .filter((l) => !l.endsWith(' unchanged')),
        ).toEqual([]);
      } finally {
        await user.cleanup();
      }

      const second = await k.run(['apply', '-k', MANIFESTS], { timeoutMs: 60_000 });
      expect(second.code).toBe(0);
      expect(
        second.stdout
          .trim()
          .split('\n')
          .filter((l) => !l.endsWith(' unchanged')),
      ).toEqual([]);
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
      // The Kubernetes client is bundled into the operator's chunks (scripts/build.mjs) and loads here.
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
