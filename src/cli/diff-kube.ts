// Owns `keyroll diff --kube`: one snapshot of the namespace → a dry-run pass per GatewayKey → diff report and exit code; writes nothing.
import { type Rotation, reconcileGatewayKey } from '../engine/gateway-key.ts';
import type { PassResult } from '../engine/pass.ts';
import { errorMessage } from '../errors.ts';
import { objectKey } from '../operator/gateway-key.ts';
import { decodeSecretValue } from '../operator/kube-port.ts';
import { renderDiff } from '../reconcile/report.ts';
import { DEFAULT_RETRY } from '../reconcile/retry.ts';
import { type KubeDeps, withKubeSession } from './reconcile-kube.ts';
import { EXIT_NOT_DONE, EXIT_OK, EXIT_USAGE, type Io } from './usage.ts';

export interface KubeDiffOptions {
  namespace?: string | undefined;
  kubeconfig?: string | undefined;
  context?: string | undefined;
  json: boolean;
  retries?: number | undefined;
  /** Per Kubernetes API request. */
  requestTimeoutMs?: number;
  /** Per controller request. */
  controllerTimeoutMs?: number;
}

/** One GatewayKey's section of the report. */
export interface GatewayKeyDiff {
  name: string;
  drift: boolean;
  /** Why no pass could be planned (invalid spec, missing Secret, key or token); absent when one ran. */
  reason?: string;
  /** Set when planning failed with an unexpected error (exit 2). */
  error?: string;
  pass?: PassResult;
}

/** A dry run never waits for a gateway: nothing is sent, so there is nothing to verify. */
const DRY_DEADLINE_MS = 30_000;

/** Pure: the text report, one section per GatewayKey, then a verdict line. */
export function renderKubeDiff(namespace: string, diffs: readonly GatewayKeyDiff[]): string {
  if (diffs.length === 0) return `no GatewayKeys in namespace ${namespace}\nno drift\n`;
  const sections = diffs.map((d) => {
    const head = `=== GatewayKey ${namespace}/${d.name}\n`;
    if (d.error !== undefined) return `${head}! error: ${d.error}\n`;
    if (!d.pass) return `${head}! drift: ${d.reason ?? 'unknown'}\n`;
    return head + renderDiff(d.pass);
  });
  const drifted = diffs.filter((d) => d.drift).length;
  const verdict =
    drifted === 0
      ? 'no drift'
      : `drift in ${drifted} of ${diffs.length} GatewayKey(s) in namespace ${namespace}`;
  return `${sections.join('\n')}\n${verdict}\n`;
}

export async function runKubeDiff(opts: KubeDiffOptions, io: Io, deps: KubeDeps = {}): Promise<number> {
  return withKubeSession('diff', opts, io, deps, async (k) => {
    // Register every value first, so even a section printed before its own Secret is read is scrubbed.
    for (const s of k.snapshot.secrets)
      for (const name of Object.keys(s.data)) {
        const v = decodeSecretValue(s, name);
        if (v !== null) k.secrets.add(v);
      }
    const rotations = new Map<string, Rotation>();
    const diffs: GatewayKeyDiff[] = [];
    for (const gk of k.live) {
      try {
        // The operator's engine, dry: GETs at the controllers, nothing written anywhere.
        const r = await reconcileGatewayKey(
          objectKey(gk.namespace, gk.name),
          {
            ...k.caches,
            env: {
              clock: k.clock,
              log: k.log,
              retry: { ...DEFAULT_RETRY, ...(opts.retries !== undefined ? { retries: opts.retries } : {}) },
              deadlineMs: DRY_DEADLINE_MS,
              pollIntervalMs: 500,
              signal: k.signal,
            },
            pass: { requestTimeoutMs: opts.controllerTimeoutMs ?? 5_000, concurrency: 10 },
            resyncMs: 0,
            missingSourceRequeueMs: 0,
            secretValues: k.secrets,
            rotations,
          },
          { dryRun: true },
        );
        if (r.unresolved) {
          diffs.push({
            name: gk.name,
            drift: true,
            reason: `${r.unresolved.reason}: ${r.unresolved.message}`,
          });
        } else if (r.pass) {
          const s = r.pass.summary;
          diffs.push({ name: gk.name, drift: s.converged !== s.total, pass: r.pass });
        }
      } catch (e) {
        if (k.signal.aborted) throw k.signal.reason ?? e;
        const error = k.secrets.scrub(errorMessage(e));
        k.log.error({ gatewayKey: gk.name, namespace: k.namespace, error }, 'Diff failed');
        diffs.push({ name: gk.name, drift: true, error });
      }
    }

    if (opts.json) {
      k.out(
        `${JSON.stringify({ namespace: k.namespace, drift: diffs.some((d) => d.drift), gatewayKeys: diffs }, null, 2)}\n`,
      );
    } else {
      k.out(renderKubeDiff(k.namespace, diffs));
    }
    if (diffs.some((d) => d.error !== undefined)) return EXIT_USAGE;
    return diffs.some((d) => d.drift) ? EXIT_NOT_DONE : EXIT_OK;
  });
}
