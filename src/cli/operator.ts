// Owns `keyroll operator`: parse the config, connect to the cluster, run the operator until SIGTERM/SIGINT.

import { systemClock } from '../clock.ts';
import { EXIT_OK, UsageError } from '../errors.ts';
import { parseOperatorConfig } from '../operator/config.ts';
import { defaultNamespace, kubeAdapter, loadKubeConfig } from '../operator/kube.ts';
import { startOperator } from '../operator/operator.ts';
import { VERSION } from '../version.ts';
import { commandContext } from './shell.ts';
import type { Io } from './usage.ts';

export const OPERATOR_USAGE = `Usage: keyroll operator [flags]

Kubernetes operator for GatewayKey resources (keyroll.dev/v1alpha1): keeps every selected
gateway pod running the key in the referenced Secret, leader-elected on a Lease. Logs JSON
lines on stdout; the start line follows -o.

Flags (environment in brackets; -n also reads POD_NAMESPACE):
  --resync DUR            re-check every GatewayKey this often (default 5m)
  --lease-name NAME       leader-election Lease (default keyroll-operator)
  --identity ID           this replica's name in the Lease [POD_NAME] (default host-pid)
  --metrics-port N        port of /healthz, /readyz and /metrics (default 8080; 0 = any)
  --metrics-bind ADDR     address to bind it to (default 0.0.0.0)
  --concurrency N         GatewayKeys reconciled at once (default 4)
  --lease-duration DUR    Lease duration (default 15s)
  --renew-deadline DUR    leader steps down if it cannot renew for this long (default 10s)
  --retry-period DUR      Lease renew/acquire period (default 2s)
  --target-deadline DUR   per target: delivery plus proof must finish within this (default 2m)
  --request-timeout DUR   per Kubernetes API request (default 10s)
Durations are Go's: 1h30m, 90s, 250ms.
`;

export async function run(argv: string[], io: Io): Promise<number> {
  const ctx = commandContext(argv, io, {
    name: 'operator',
    usage: OPERATOR_USAGE,
    kube: true,
    logLevel: 'info',
    logTo: 'stdout',
    logBase: { version: VERSION },
  });
  if (ctx.help) {
    ctx.dispose();
    return EXIT_OK;
  }
  try {
    const config = parseOperatorConfig(
      {
        namespace: ctx.str('namespace'),
        kubeconfig: ctx.str('kubeconfig'),
        resync: ctx.str('resync'),
        leaseName: ctx.str('lease-name'),
        identity: ctx.str('identity'),
        metricsPort: ctx.str('metrics-port'),
        metricsBind: ctx.str('metrics-bind'),
        concurrency: ctx.str('concurrency'),
        leaseDuration: ctx.str('lease-duration'),
        renewDeadline: ctx.str('renew-deadline'),
        retryPeriod: ctx.str('retry-period'),
        targetDeadline: ctx.str('target-deadline'),
        requestTimeout: ctx.str('request-timeout'),
        logLevel: ctx.str('log-level'),
      },
      io.env,
    );
    const kc = loadKubeConfig(config.kubeconfig);
    const context = ctx.str('context');
    if (context !== undefined) {
      if (!kc.getContextObject(context))
        throw new UsageError(`--context: no context '${context}' in the kubeconfig`);
      kc.setCurrentContext(context);
    }
    const namespace = config.namespace ?? defaultNamespace(kc, io.env);
    const kube = kubeAdapter(kc, {
      kubeconfigPath: config.kubeconfig,
      requestTimeoutMs: config.requestTimeout,
      userAgent: `keyroll-operator/${VERSION}`,
    });
    const operator = await startOperator({
      kube,
      config: { ...config, namespace },
      log: ctx.log,
      clock: systemClock,
      secretValues: ctx.secrets,
    });
    const started = { namespace, identity: config.identity, metricsPort: operator.port };
    ctx.stdout(
      ctx.output === 'json'
        ? `${JSON.stringify({ operator: 'started', ...started })}\n`
        : `keyroll operator: namespace ${namespace}, identity ${config.identity}, metrics on port ${operator.port}\n`,
    );
    return await ctx.untilSignalled(() => operator.stop());
  } finally {
    ctx.dispose();
  }
}
