// Owns `keyroll operator`: parse the config, connect to the cluster, run the operator until SIGTERM/SIGINT.
import { createLogger, SecretRegistry } from '../log.ts';
import { systemClock } from '../clock.ts';
import { OperatorConfigError, parseOperatorConfig } from '../operator/config.ts';
import { defaultNamespace, kubeAdapter, loadKubeConfig } from '../operator/kube.ts';
import { startOperator } from '../operator/operator.ts';
import { VERSION } from '../version.ts';
import { untilSignalled } from './signals.ts';
import { type Io, parseFlags, UsageError } from './usage.ts';

export const OPERATOR_USAGE = `Usage: keyroll operator [flags]

Kubernetes operator for GatewayKey resources (keyroll.dev/v1alpha1): keeps every selected
gateway pod running the key in the referenced Secret, leader-elected on a Lease.

Flags (environment in brackets):
  --namespace NS          namespace to watch [KEYROLL_NAMESPACE, POD_NAMESPACE]
                          (default: the kubeconfig context's, else the pod's own, else default)
  --kubeconfig PATH       kubeconfig file [KUBECONFIG] (default: in-cluster service account)
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
  --log-level LEVEL       trace|debug|info|warn|error (default info) [KEYROLL_LOG_LEVEL]
  -h, --help              show this help
`;

export async function run(argv: string[], io: Io): Promise<number> {
  const { values } = parseFlags(argv, {
    namespace: { type: 'string' },
    kubeconfig: { type: 'string' },
    resync: { type: 'string' },
    'lease-name': { type: 'string' },
    identity: { type: 'string' },
    'metrics-port': { type: 'string' },
    'metrics-bind': { type: 'string' },
    concurrency: { type: 'string' },
    'lease-duration': { type: 'string' },
    'renew-deadline': { type: 'string' },
    'retry-period': { type: 'string' },
    'target-deadline': { type: 'string' },
    'request-timeout': { type: 'string' },
    'log-level': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    io.stdout(OPERATOR_USAGE);
    return 0;
  }
  let config: ReturnType<typeof parseOperatorConfig>;
  try {
    config = parseOperatorConfig(
      {
        namespace: values.namespace,
        kubeconfig: values.kubeconfig,
        resync: values.resync,
        leaseName: values['lease-name'],
        identity: values.identity,
        metricsPort: values['metrics-port'],
        metricsBind: values['metrics-bind'],
        concurrency: values.concurrency,
        leaseDuration: values['lease-duration'],
        renewDeadline: values['renew-deadline'],
        retryPeriod: values['retry-period'],
        targetDeadline: values['target-deadline'],
        requestTimeout: values['request-timeout'],
        logLevel: values['log-level'],
      },
      io.env,
    );
  } catch (err) {
    if (err instanceof OperatorConfigError) throw new UsageError(err.message);
    throw err;
  }

  const secretValues = new SecretRegistry();
  const log = createLogger({
    secrets: secretValues,
    level: config.logLevel,
    base: { app: 'keyroll', version: VERSION },
  });
  const kc = loadKubeConfig(config.kubeconfig);
  const namespace = config.namespace ?? defaultNamespace(kc, io.env);
  const kube = kubeAdapter(kc, {
    kubeconfigPath: config.kubeconfig,
    requestTimeoutMs: config.requestTimeout,
    userAgent: `keyroll-operator/${VERSION}`,
  });
  const operator = await startOperator({
    kube,
    config: { ...config, namespace },
    log,
    clock: systemClock,
    secretValues,
  });
  io.stdout(
    `keyroll operator: namespace ${namespace}, identity ${config.identity}, metrics on port ${operator.port}\n`,
  );

  return untilSignalled(log, () => operator.stop());
}
