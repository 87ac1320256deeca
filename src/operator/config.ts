// Owns the operator's configuration: parsed once, with zod, from flags and environment; errors name the field.
import { hostname } from 'node:os';
import * as z from 'zod';
import { UsageError } from '../errors.ts';
import { countFlag, durationFlag, flagIssues } from '../flags.ts';

/** Every operator duration is a timer: more than zero, within Node's 2^31-1 ms. */
const Duration = durationFlag(1, 2_147_483_647);

export const OperatorConfigSchema = z
  .object({
    namespace: z
      .string()
      .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/, 'expected a namespace name')
      .optional(),
    kubeconfig: z.string().min(1).optional(),
    resync: Duration.default(300_000),
    leaseName: z
      .string()
      .regex(/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/, 'expected a DNS-1123 name')
      .default('keyroll-operator'),
    identity: z.string().min(1).max(128).optional(),
    metricsPort: countFlag(0, 65535).default(8080),
    metricsBind: z.string().min(1).default('0.0.0.0'),
    concurrency: countFlag(1, 64).default(4),
    leaseDuration: Duration.default(15_000),
    renewDeadline: Duration.default(10_000),
    retryPeriod: Duration.default(2_000),
    targetDeadline: Duration.default(120_000),
    requestTimeout: Duration.default(10_000),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  })
  .superRefine((c, ctx) => {
    if (c.renewDeadline >= c.leaseDuration) {
      ctx.addIssue({
        code: 'custom',
        path: ['renewDeadline'],
        message: 'must be shorter than --lease-duration, or two leaders could overlap',
      });
    }
    if (c.retryPeriod >= c.renewDeadline) {
      ctx.addIssue({
        code: 'custom',
        path: ['retryPeriod'],
        message: 'must be shorter than --renew-deadline',
      });
    }
  });

export type OperatorConfig = z.infer<typeof OperatorConfigSchema> & { identity: string };

/** A bad flag or variable: a UsageError (exit 2), named for the operator. */
export class OperatorConfigError extends UsageError {
  override name = 'OperatorConfigError';
}

const FLAG_OF: Record<string, string> = {
  leaseName: '--lease-name',
  metricsPort: '--metrics-port',
  metricsBind: '--metrics-bind',
  leaseDuration: '--lease-duration',
  renewDeadline: '--renew-deadline',
  retryPeriod: '--retry-period',
  targetDeadline: '--target-deadline',
  requestTimeout: '--request-timeout',
  logLevel: '--log-level',
};

/** Pure: flags (strings as parsed) first, then environment, then defaults. */
export function parseOperatorConfig(
  flags: Record<string, string | undefined>,
  env: NodeJS.ProcessEnv,
): OperatorConfig {
  const input = {
    namespace: flags.namespace ?? env.KEYROLL_NAMESPACE ?? env.POD_NAMESPACE,
    kubeconfig: flags.kubeconfig ?? env.KUBECONFIG,
    resync: flags.resync,
    leaseName: flags.leaseName,
    identity: flags.identity ?? env.POD_NAME,
    metricsPort: flags.metricsPort,
    metricsBind: flags.metricsBind,
    concurrency: flags.concurrency,
    leaseDuration: flags.leaseDuration,
    renewDeadline: flags.renewDeadline,
    retryPeriod: flags.retryPeriod,
    targetDeadline: flags.targetDeadline,
    requestTimeout: flags.requestTimeout,
    logLevel: flags.logLevel ?? env.KEYROLL_LOG_LEVEL,
  };
  const parsed = OperatorConfigSchema.safeParse(
    Object.fromEntries(Object.entries(input).filter(([, v]) => v !== undefined && v !== '')),
  );
  if (!parsed.success) {
    throw new OperatorConfigError(flagIssues(parsed.error, (f) => FLAG_OF[f] ?? `--${f}`));
  }
  return { ...parsed.data, identity: parsed.data.identity ?? `${hostname()}-${process.pid}` };
}
