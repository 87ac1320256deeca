// A fleet of simulated in-pod controllers in one process, for the reconcile fleet benchmark: each
// is the test suite's fake controller (real HTTP on loopback, /_kilo/state and /_kilo/env/patch,
// a restart that keeps the gateway not ready for RESTART_MS). Prints the URLs as one JSON line.
import { type FakeController, startFakeController } from '../../test/reconcile/support/fake-controller.ts';

const count = Number(process.argv[2] ?? 500);
const token = process.env.FLEET_TOKEN ?? '';
const key = process.env.FLEET_KEY ?? '';
const restartMs = Number(process.env.RESTART_MS ?? 200);
const controllers: FakeController[] = [];
for (let i = 0; i < count; i++) controllers.push(await startFakeController({ token, key, restartMs }));
process.stdout.write(`${JSON.stringify({ urls: controllers.map((c) => c.url) })}\n`);
process.on('SIGTERM', async () => {
  await Promise.all(controllers.map((c) => c.close()));
  process.exit(0);
});
