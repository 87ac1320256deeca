// The informer against the Kubernetes API test server: one 410 Expired relists at once; a watch
// that answers 410 again and again backs off instead of relisting in a hot loop, and recovers.
// Its backoff runs on a manual clock: the tests move time, and wait only for the server's answers.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ManualClock } from '../../src/clock.ts';
import { silentLogger } from '../../src/log.ts';
import { Informer } from '../../src/operator/informer.ts';
import { kubeAdapter, loadKubeConfig } from '../../src/operator/kube.ts';
import { type CachedSecret, parseSecret } from '../../src/operator/kube-port.ts';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import { advanceUntil, NS, putSecret, waitFor } from './support.ts';

let server: KubeApiServer;
let informer: Informer<CachedSecret> | null = null;
let clock: ManualClock;
const restarts: string[] = [];

beforeAll(async () => {
  server = await startKubeApiServer({ bookmarkIntervalMs: 1_000 });
});
afterAll(async () => {
  await server?.close();
});
afterEach(async () => {
  await informer?.stop();
  informer = null;
  server.hooks.clearFailures();
  restarts.length = 0;
});

function start(baseMs: number): Informer<CachedSecret> {
  clock = new ManualClock(Date.now());
  const kube = kubeAdapter(loadKubeConfig(server.kubeconfigPath), { requestTimeoutMs: 5_000 });
  informer = new Informer<CachedSecret>({
    resource: 'secrets',
    namespace: NS,
    kube,
    parse: parseSecret,
    clock,
    log: silentLogger(),
    backoff: { baseMs, maxMs: 1_000 },
    watchTimeoutSeconds: 60,
    onChange: () => {},
    onRestart: (reason) => restarts.push(reason),
  });
  informer.start();
  return informer;
}

const requests = (verb: string) =>
  server.hooks.requestLog().filter((e) => e.verb === verb && e.resource === 'secrets').length;

describe('informer: 410 Expired', () => {
  it('a single 410 after a working watch relists at once (no backoff sleep)', async () => {
    const inf = start(10_000); // the clock never moves: a backoff sleep would never end
    await inf.whenSynced();
    await waitFor('watching', () => server.hooks.activeWatches() > 0, 5_000);
    putSecret(server, 'before-expiry', { K: 'v' });
    await waitFor('seen', () => inf.get(NS, 'before-expiry'), 5_000);
    server.hooks.compactHistory();
    server.hooks.dropWatches(); // the re-watch from the held version now gets 410
    putSecret(server, 'after-expiry', { K: 'v' });
    await waitFor('relisted', () => inf.get(NS, 'after-expiry'), 4_000);
    expect(restarts).toContain('expired');
    expect(clock.pending).toBe(0); // watching again, not waiting out a backoff
  });

  it('410 on every watch: lists back off (capped, jittered) instead of a hot loop; recovers when it stops', async () => {
    const inf = start(100);
    await inf.whenSynced();
    server.hooks.clearRequestLog();
    const remove = server.hooks.injectFailure({ verb: 'watch', resource: 'secrets', code: 410 });
    server.hooks.dropWatches();
    // 3 s of the informer's clock, moved only while it waits out a backoff (each list and watch
    // has been answered); it stops once it sleeps again after the 3 s.
    const t0 = clock.now();
    await advanceUntil(clock, () => clock.now() - t0 >= 3_000 && clock.pending > 0, { stepMs: 10 });
    const lists = requests('list');
    const watches = requests('watch');
    // Delays 0, 50–100, 100–200, 200–400, 400–800, then 500–1000 ms each: at most ~10 lists in
    // 3 s. Without backoff (on the wall clock) the same 3 s saw 1,062 lists and 1,062 watches;
    // on this clock, which stands still through I/O, it would never park and advanceUntil fails.
    console.log(`410 on every watch: ${lists} lists, ${watches} watches in 3 s of its clock`);
    expect(lists).toBeGreaterThanOrEqual(3);
    expect(lists).toBeLessThanOrEqual(12);
    expect(watches).toBeLessThanOrEqual(lists + 1);
    expect(restarts.filter((r) => r === 'expired').length).toBeGreaterThanOrEqual(3);

    remove();
    putSecret(server, 'after-recovery', { K: 'v' });
    // At most one backoff (≤ 1 s of its clock) before it lists again.
    const waited = await advanceUntil(clock, () => inf.get(NS, 'after-recovery'), { stepMs: 10 });
    expect(waited).toBeLessThanOrEqual(1_000);
    await waitFor('watching again', () => server.hooks.activeWatches() > 0, 5_000);
  });
});
