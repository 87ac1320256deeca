// The shipped manifests route a client to the gateway: the example gateway Component, rendered by
// the real kubectl, run as the kubelet would run it, on loopback. `keyroll controller` starts with
// the StatefulSet's own args (every port moved to a free loopback port, the state dir to a
// sandbox, the stand-in as the gateway) and the env its Secrets provide; the test then follows
// the objects' wiring: a client request goes to the port the Service targets and must reach the
// gateway, the kubelet's probes go where the probes say, and the operator's /_kilo/state goes to
// the port the pod annotation names, and only there.
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startFakeUpstream } from '../support/fake-upstream.ts';
import { chat, freePort } from '../support/http.ts';
import { flagValue, replaceFlags } from '../support/image-command.ts';
import { spawnTracked, type Tracked } from '../support/processes.ts';
import { createSandbox, node24, REPO_ROOT } from '../support/sandbox.ts';
import { seedStandInState, standInPath } from '../support/stand-in-gateway.ts';
import { type Container, kubectl, MANIFESTS, one, podTemplate, render } from './render.ts';

const KEYROLL_BIN = join(REPO_ROOT, 'bin', 'keyroll.mjs');
const TOKEN = 'test-token-front-door-0123456789abcdef';
const CONTROLLER_TOKEN = 'test-ctl-token-front-door-0123456789abcdef';
const PREVIOUS_TOKEN = 'test-ctl-token-front-door-previous-0123456789';
const KEY = 'test-key-front-door-000000000000000';
/** The value each of the container's Secret-backed variables gets here. */
const SECRET_ENV: Record<string, string> = {
  OPENCLAW_GATEWAY_TOKEN: TOKEN,
  KEYROLL_CONTROLLER_TOKEN: CONTROLLER_TOKEN,
  KEYROLL_CONTROLLER_TOKEN_PREVIOUS: PREVIOUS_TOKEN,
  KILOCODE_API_KEY: KEY,
};

interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string } };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function get(
  url: string,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(5_000) });
  return { status: res.status, text: await res.text() };
}

/** Polls `url` until it answers 200 (as a readiness probe would); fails when the process exits. */
async function until200(url: string, proc: Tracked, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exit = proc.exitInfo();
    if (exit) {
      throw new Error(
        `keyroll controller exited (code ${exit.code}, signal ${exit.signal}) before ${url} answered 200:\n${proc.lines.slice(-15).join('\n')}`,
      );
    }
    const status = await get(url).then(
      (r) => r.status,
      () => 0,
    );
    if (status === 200) return;
    if (Date.now() > deadline) {
      throw new Error(
        `${url} not 200 after ${timeoutMs} ms (last ${status}):\n${proc.lines.slice(-15).join('\n')}`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe.skipIf(!kubectl)('The shipped manifests route a client to the gateway', () => {
  it("a client's request to the Service's port reaches the gateway; /_kilo/state answers only on the annotated admin port", async () => {
    const objects = await render(join(MANIFESTS, 'components', 'example-gateway'));
    const sts = one(objects, 'StatefulSet', 'openclaw-gateway');
    const template = podTemplate(sts);
    const c = template.spec.containers.find((x) => x.name === 'gateway') as Container & { env?: EnvVar[] };
    expect(c).toBeDefined();
    const args = c.args ?? [];

    // Every port flag of the pod moves to a free loopback port; remember where each went.
    const local = new Map<number, number>();
    const values: Record<string, string> = {};
    const portFlags = [
      ...new Set(args.map((a) => a.split('=')[0]!).filter((f) => /^--([a-z]+-)*port$/.test(f))),
    ];
    expect(portFlags).toEqual(expect.arrayContaining(['--port', '--admin-port', '--gateway-port']));
    for (const flag of portFlags) {
      const port = await freePort();
      local.set(Number(flagValue(args, flag)), port);
      values[flag] = String(port);
    }
    const sandbox = createSandbox('keyroll-front-door-');
    cleanups.push(() => sandbox.cleanup());
    values['--state-dir'] = sandbox.stateDir;
    // The pod's gateway user needs root and a tree it can reach: here the gateway runs as the
    // test's own user (test/controller/credential-isolation.test.ts covers the switch).
    values['--gateway-uid'] = String(process.getuid?.() ?? 0);
    values['--gateway-gid'] = String(process.getgid?.() ?? 0);
    const extra = [
      '--bind',
      '127.0.0.1',
      '--gateway-cmd',
      `${node24()} ${standInPath()}`,
      '--stop-timeout',
      '3000ms',
    ];
    // surge's second gateway defaults to --gateway-port + 1, which may not be free here.
    if (flagValue(args, '--restart-strategy') === 'surge' && flagValue(args, '--surge-port') === undefined) {
      extra.push('--surge-port', String(await freePort()));
    }

    // The container's env: plain values mapped into the sandbox, Secret-backed ones given test values.
    const env: Record<string, string> = { KEYROLL_LOG_LEVEL: 'info' };
    for (const v of c.env ?? []) {
      if (v.valueFrom?.secretKeyRef) {
        const value = SECRET_ENV[v.name];
        if (value === undefined) throw new Error(`no test value for the Secret-backed variable ${v.name}`);
        env[v.name] = value;
      } else if (v.name === 'HOME') env.HOME = sandbox.home;
      else if (v.name === 'TMPDIR') env.TMPDIR = sandbox.tmpDir;
      else if (v.value !== undefined) env[v.name] = v.value;
    }
    expect(Object.keys(env)).toEqual(expect.arrayContaining(Object.keys(SECRET_ENV)));

    const upstream = await startFakeUpstream({ keys: [KEY] });
    cleanups.push(() => upstream.close());
    const gatewayPort = local.get(Number(flagValue(args, '--gateway-port')))!;
    seedStandInState(sandbox.stateDir, { baseUrl: upstream.baseUrl, profile: { key: KEY }, gatewayPort });

    const controller = spawnTracked(
      node24(),
      [KEYROLL_BIN, 'controller', ...replaceFlags(args, values), ...extra],
      { name: 'front-door-controller', env: sandbox.env(env) },
    );
    cleanups.push(async () => {
      await controller.stop('SIGTERM', 15_000);
    });

    // Where the objects send each kind of traffic, followed name by name.
    const containerPort = (p: string | number | undefined) =>
      typeof p === 'number' ? p : c.ports?.find((x) => x.name === p)?.containerPort;
    const svc = one(objects, 'Service', 'openclaw-gateway');
    expect(svc.spec?.ports).toHaveLength(1);
    const clientPort = local.get(containerPort(svc.spec?.ports?.[0]?.targetPort) ?? -1);
    const readinessPort = local.get(containerPort(c.readinessProbe?.httpGet?.port) ?? -1);
    const livenessPort = local.get(containerPort(c.livenessProbe?.httpGet?.port) ?? -1);
    const adminPort = local.get(Number(template.metadata?.annotations?.['keyroll.dev/port']));
    for (const [what, port] of Object.entries({ clientPort, readinessPort, livenessPort, adminPort })) {
      expect(port, `${what}: a port the controller was told to listen on`).toBeDefined();
    }
    expect(adminPort).not.toBe(clientPort);

    // The kubelet: ready (readinessProbe), alive (livenessProbe).
    await until200(`http://127.0.0.1:${readinessPort}${c.readinessProbe?.httpGet?.path}`, controller, 30_000);
    expect((await get(`http://127.0.0.1:${livenessPort}${c.livenessProbe?.httpGet?.path}`)).status).toBe(200);

    // A client, through the Service's port: the gateway answers, with the pod's key upstream.
    const reply = await chat(clientPort!, TOKEN, 15_000);
    expect(reply.status).toBe(200);
    expect(upstream.chatRequests().at(-1)).toMatchObject({ key: KEY, ok: true });

    // The operator, at the annotated port: /_kilo/state with the controller token (or the
    // previous one); the gateway's token, which the gateway's clients hold, opens nothing there.
    const bearer = { authorization: `Bearer ${CONTROLLER_TOKEN}` };
    const state = await get(`http://127.0.0.1:${adminPort}/_kilo/state`, bearer);
    expect(state.status).toBe(200);
    expect(JSON.parse(state.text)).toMatchObject({ gateway: { state: 'running', ready: true } });
    expect((await get(`http://127.0.0.1:${adminPort}/_kilo/state`)).status).toBe(401);
    const previous = { authorization: `Bearer ${PREVIOUS_TOKEN}` };
    expect((await get(`http://127.0.0.1:${adminPort}/_kilo/state`, previous)).status).toBe(200);
    const gatewayToken = { authorization: `Bearer ${TOKEN}` };
    expect((await get(`http://127.0.0.1:${adminPort}/_kilo/state`, gatewayToken)).status).toBe(401);
    // The client port does not serve /_kilo/*, token or not, and does not pass it to the gateway.
    for (const headers of [bearer, {}]) {
      const onClientPort = await get(`http://127.0.0.1:${clientPort}/_kilo/state`, headers);
      expect([401, 404]).toContain(onClientPort.status);
      expect(onClientPort.text).not.toContain('envHash');
    }
    const patch = await fetch(`http://127.0.0.1:${clientPort}/_kilo/env/patch`, {
      method: 'POST',
      headers: { ...bearer, 'content-type': 'application/json' },
      body: JSON.stringify({ KILOCODE_API_KEY: 'test-key-never-applied-000000000' }),
      signal: AbortSignal.timeout(5_000),
    });
    expect([401, 404]).toContain(patch.status);
    await patch.body?.cancel();

    const exit = await controller.stop('SIGTERM', 15_000, { group: false });
    expect(exit.code).toBe(0);
    const output = controller.lines.join('\n');
    for (const secret of [TOKEN, CONTROLLER_TOKEN, PREVIOUS_TOKEN, KEY]) expect(output).not.toContain(secret);
  }, 90_000);
});
