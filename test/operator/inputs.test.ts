// The operator refuses a bad key or version label where it reads it (the Secret): Degraded
// InvalidKey / InvalidVersionLabel naming the Secret, never the value; fixed Secret → recovers.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type KubeApiServer, startKubeApiServer } from '../support/kube/index.ts';
import {
  condition,
  createGatewayKey,
  gatewayKeySpec,
  gkStatus,
  KEY_A,
  NS,
  putSecret,
  startTestOperator,
  type TestOperator,
  TOKEN,
  waitFor,
} from './support.ts';

let server: KubeApiServer;
let operator: TestOperator;
const lines: string[] = [];

beforeAll(async () => {
  server = await startKubeApiServer({
    crdPaths: ['manifests/crd/gatewaykey.yaml'],
    bookmarkIntervalMs: 1_000,
  });
  putSecret(server, 'gateway-token', { OPENCLAW_GATEWAY_TOKEN: TOKEN });
  operator = await startTestOperator(server, 'inputs-a', {}, lines);
  await waitFor('leader', () => operator.op.isLeader(), 15_000);
}, 30_000);

afterAll(async () => {
  await operator?.stop().catch(() => {});
  await server?.close();
});

const degraded = (name: string) => condition(gkStatus(server, name), 'Degraded');

describe('operator: key and label checked at the source', () => {
  it('a keyroll.dev/version annotation with a space or non-ASCII → Degraded InvalidVersionLabel; fixed → not degraded', async () => {
    putSecret(server, 'label-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'rotation 7' });
    await createGatewayKey(server, 'label', gatewayKeySpec({ app: 'none', secret: 'label-key' }));
    await waitFor(
      'Degraded InvalidVersionLabel',
      () => degraded('label')?.reason === 'InvalidVersionLabel',
      15_000,
    );
    const d = degraded('label')!;
    expect(d.status).toBe('True');
    expect(d.message).toBe(
      `spec.source.secretRef: secret ${NS}/label-key key KILOCODE_API_KEY: the version label must be printable ASCII without spaces or control characters`,
    );
    expect(condition(gkStatus(server, 'label'), 'Ready')?.reason).toBe('InvalidVersionLabel');
    expect(gkStatus(server, 'label').desiredVersion).toBeUndefined();

    putSecret(server, 'label-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'version-é' });
    await waitFor('still InvalidVersionLabel after the change', () =>
      lines.some(
        (l) =>
          l.includes('GatewayKey degraded') && l.includes('"label"') && l.includes('InvalidVersionLabel'),
      ),
    );
    expect(degraded('label')?.reason).toBe('InvalidVersionLabel');

    putSecret(server, 'label-key', { KILOCODE_API_KEY: KEY_A }, { 'keyroll.dev/version': 'rotation-7' });
    await waitFor('no longer degraded', () => degraded('label')?.status === 'False', 15_000);
    expect(gkStatus(server, 'label').desiredVersion).toBe('rotation-7');
  });

  it('a key with whitespace or a second line → Degraded InvalidKey; the value is nowhere', async () => {
    const injected = 'test-key-inputs-000001\nX-Injected: 1';
    putSecret(server, 'bad-key', { KILOCODE_API_KEY: injected }, { 'keyroll.dev/version': 'v1' });
    await createGatewayKey(server, 'badkey', gatewayKeySpec({ app: 'none', secret: 'bad-key' }));
    await waitFor('Degraded InvalidKey', () => degraded('badkey')?.reason === 'InvalidKey', 15_000);
    expect(degraded('badkey')?.message).toBe(
      `spec.source.secretRef: secret ${NS}/bad-key key KILOCODE_API_KEY: the key must not contain whitespace or control characters`,
    );
    // A reconcile writes status, then records its Event: wait for the Event rather than race it.
    const eventsNow = () => server.hooks.objects('events', NS).map((e) => JSON.stringify(e));
    await waitFor('an InvalidKey Event', () => eventsNow().some((e) => e.includes('InvalidKey')), 5_000);
    const events = eventsNow();
    const everything = [JSON.stringify(gkStatus(server, 'badkey')), ...events, ...lines].join('\n');
    expect(everything).not.toContain('test-key-inputs-000001');
    expect(everything).not.toContain('X-Injected');
  });
});
