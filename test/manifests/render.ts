// Owns rendering the manifests as a user gets them: the real `kubectl kustomize`, either on a
// directory under manifests/ or on a throw-away kustomization that adds Components, the way the
// README tells users to pick them.
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { parseAllDocuments, stringify } from 'yaml';
import { findKubectl } from '../support/kube/kubectl.ts';
import { REPO_ROOT } from '../support/sandbox.ts';

const run = promisify(execFile);

export const MANIFESTS = join(REPO_ROOT, 'manifests');
export const COMPONENTS = ['reconcile-cronjob', 'example-gateway', 'monitoring'] as const;
export type ComponentName = (typeof COMPONENTS)[number];
export const kubectl = findKubectl();

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}
export interface Probe {
  httpGet?: { path: string; port: string | number };
}
export interface Container {
  name: string;
  image: string;
  args?: string[];
  ports?: ContainerPort[];
  securityContext: {
    readOnlyRootFilesystem?: boolean;
    allowPrivilegeEscalation?: boolean;
    capabilities?: { drop?: string[]; add?: string[] };
  };
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  resources: { requests?: { memory?: string }; limits: { memory?: string } };
}
export interface PodSpec {
  securityContext: { runAsNonRoot?: boolean; runAsUser?: number };
  automountServiceAccountToken?: boolean;
  containers: Container[];
}
export interface PodTemplate {
  metadata?: { labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: PodSpec;
}
export interface LabelSelectorLike {
  matchLabels?: Record<string, string>;
  matchExpressions?: Array<{
    key: string;
    operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
    values?: string[];
  }>;
}
export interface Obj {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  // Each kind reads the fields it has; the tests check presence where it matters.
  spec?: {
    template?: PodTemplate;
    jobTemplate?: { spec: { template: PodTemplate } };
    selector?: Record<string, string> | LabelSelectorLike;
    ports?: Array<{ name?: string; port: number; targetPort?: string | number; protocol?: string }>;
    podSelector?: LabelSelectorLike;
    policyTypes?: string[];
    ingress?: Array<{
      from?: Array<{ podSelector?: LabelSelectorLike; namespaceSelector?: LabelSelectorLike }>;
      ports?: Array<{ port?: string | number; protocol?: string }>;
    }>;
    endpoints?: Array<{ port?: string; path?: string }>;
    targets?: { selector: LabelSelectorLike; port: number };
  };
  rules?: Array<{ apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] }>;
}

/** `kubectl kustomize DIR`, parsed. */
export async function render(dir: string): Promise<Obj[]> {
  const { stdout } = await run(kubectl ?? 'kubectl', ['kustomize', dir], { timeout: 30_000 });
  return parseAllDocuments(stdout).map((d) => d.toJSON() as Obj);
}

/**
 * A user's kustomization in a temp dir: `resources: [manifests]` plus the named Components (and
 * an optional `namespace:`). kustomize refuses absolute paths, so both are relative to the dir.
 * The caller renders or applies `dir` and calls `cleanup()`.
 */
export async function userKustomization(
  components: readonly ComponentName[],
  namespace?: string,
): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'keyroll-kustomize-'));
  const rel = (p: string) => relative(dir, p);
  const k = {
    apiVersion: 'kustomize.config.k8s.io/v1beta1',
    kind: 'Kustomization',
    ...(namespace ? { namespace } : {}),
    resources: [rel(MANIFESTS)],
    components: components.map((c) => rel(join(MANIFESTS, 'components', c))),
  };
  await writeFile(join(dir, 'kustomization.yaml'), stringify(k));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** `manifests` with the named Components, rendered as a user's kustomization renders them. */
export async function renderWith(components: readonly ComponentName[], namespace?: string): Promise<Obj[]> {
  const k = await userKustomization(components, namespace);
  try {
    return await render(k.dir);
  } finally {
    await k.cleanup();
  }
}

/** The one object of a kind (and name, when given); throws when there is not exactly one. */
export function one(objects: readonly Obj[], kind: string, name?: string): Obj {
  const found = objects.filter((o) => o.kind === kind && (name === undefined || o.metadata.name === name));
  if (found.length !== 1)
    throw new Error(`expected one ${kind}${name ? `/${name}` : ''}, found ${found.length}`);
  return found[0]!;
}

/** The pod template of a Deployment, StatefulSet or CronJob. */
export function podTemplate(o: Obj): PodTemplate {
  const t = o.spec?.template ?? o.spec?.jobTemplate?.spec.template;
  if (!t) throw new Error(`${o.kind}/${o.metadata.name} has no pod template`);
  return t;
}
