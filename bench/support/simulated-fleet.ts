// A fleet of simulated in-pod controllers in one process, for the reconcile fleet benchmark: each
// is the test suite's fake controller (real HTTP on loopback, /_kilo/state and /_kilo/env/patch,
// a restart that keeps the gateway not ready for RESTART_MS). Prints the URLs as one JSON line,
// then answers each `stats` line on stdin with one JSON line: requests served so far by method,
// and this process's own CPU (ms) and RSS (MB), so the benchmark can keep them apart from keyroll's.
import { createInterface } from 'node:readline';
import { type FakeController, startFakeController } from '../../test/reconcile/support/fake-controller.ts';

const count = Number(process.argv[2] ?? 500);
const token = process.env.FLEET_TOKEN ?? '';
const key = process.env.FLEET_KEY ?? '';
const restartMs = Number(process.env.RESTART_MS ?? 200);
const controllers: FakeController[] = [];
for (let i = 0; i < count; i++) controllers.push(await startFakeController({ token, key, restartMs }));
process.stdout.write(`${JSON.stringify({ urls: controllers.map((c) => c.url) })}\n`);

createInterface({ input: process.stdin }).on('line', (line) => {
  if (line.trim() !== 'stats') return;
  let get = 0;
  let post = 0;
  for (const c of controllers) {
    for (const r of c.requests) {
      if (r.method === 'GET') get++;
      else if (r.method === 'POST') post++;
    }
    // Counted; the per-request log is not needed past this point and would grow for every pass.
    c.requests.length = 0;
  }
  const cpu = process.cpuUsage();
  process.stdout.write(
    `${JSON.stringify({ get, post, cpuMs: (cpu.user + cpu.system) / 1000, rssMb: process.memoryUsage().rss / 1e6 })}\n`,
  );
});
process.on('SIGTERM', async () => {
  await Promise.all(controllers.map((c) => c.close()));
  process.exit(0);
});
