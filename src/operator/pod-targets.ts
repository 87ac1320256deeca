// Owns target discovery, pure: which pods a GatewayKey's selector picks, and where their controllers listen.
import type { LabelSelector } from './gateway-key.ts';
import type { CachedPod } from './kube-port.ts';

/** Pure: Kubernetes LabelSelector semantics (all of matchLabels and matchExpressions must hold). */
export function selectorMatches(selector: LabelSelector, labels: Readonly<Record<string, string>>): boolean {
  for (const [k, v] of Object.entries(selector.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.hasOwn(labels, e.key);
    const value = labels[e.key];
    const values = e.values ?? [];
    switch (e.operator) {
      case 'In':
        if (!has || value === undefined || !values.includes(value)) return false;
        break;
      case 'NotIn':
        if (has && value !== undefined && values.includes(value)) return false;
        break;
      case 'Exists':
        if (!has) return false;
        break;
      case 'DoesNotExist':
        if (has) return false;
        break;
    }
  }
  return true;
}

/** An empty selector would pick every pod in the namespace; the operator refuses that. */
export function selectorIsEmpty(selector: LabelSelector): boolean {
  return (
    Object.keys(selector.matchLabels ?? {}).length === 0 && (selector.matchExpressions ?? []).length === 0
  );
}

/** Names of pods not ready kept for status and messages (the count is exact). */
export const MAX_NOT_READY_NAMES = 10;

export interface PodTarget {
  name: string;
  url: string;
  labels: Record<string, string>;
}

function hostPort(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/**
 * Pure: the ready pods the selector matches, sorted by name, each at its pod IP and the
 * `keyroll.dev/port` annotation (else the spec's port). Pods not ready or without an IP are no
 * targets (nothing can be observed there) but are counted and named: they hold the key
 * lifecycle back and keep Ready False.
 */
export function podTargets(
  pods: readonly CachedPod[],
  namespace: string,
  selector: LabelSelector,
  defaultPort: number,
): { targets: PodTarget[]; notReady: number; notReadyNames: string[] } {
  const targets: PodTarget[] = [];
  let notReady = 0;
  const notReadyNames: string[] = [];
  for (const pod of pods) {
    if (pod.namespace !== namespace || !selectorMatches(selector, pod.labels)) continue;
    if (!pod.ready || !pod.podIP) {
      notReady++;
      notReadyNames.push(pod.name);
      continue;
    }
    targets.push({
      name: pod.name,
      url: `http://${hostPort(pod.podIP, pod.portOverride ?? defaultPort)}`,
      labels: pod.labels,
    });
  }
  targets.sort((a, b) => a.name.localeCompare(b.name));
  notReadyNames.sort();
  return { targets, notReady, notReadyNames: notReadyNames.slice(0, MAX_NOT_READY_NAMES) };
}
