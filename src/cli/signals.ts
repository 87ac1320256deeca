// Owns graceful shutdown of the long-running commands: the first SIGTERM/SIGINT stops the work,
// and the exit code says whether stopping went cleanly.
import type { Logger } from '../log.ts';

/**
 * Resolves with 0 once `stop()` finished after the first SIGTERM or SIGINT, or 1 when it threw.
 * Listeners stay installed (`on`, not `once`): a second signal during shutdown must not kill the
 * process with the default action while children are still stopping.
 */
export function untilSignalled(log: Logger, stop: () => Promise<void>): Promise<number> {
  return new Promise<number>((resolve) => {
    let signalled = false;
    const onSignal = (sig: NodeJS.Signals) => {
      if (signalled) return;
      signalled = true;
      log.info({ signal: sig }, 'Signal received');
      stop().then(
        () => resolve(0),
        (err: unknown) => {
          log.error({ error: err instanceof Error ? err.message : String(err) }, 'Shutdown failed');
          resolve(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
