// keyroll as the images run it: `npm run build`'s bundle, started with the Dockerfile's
// ENTRYPOINTs (their Node flags included) followed by the manifests' args; for the gateway image,
// a rotation end to end with the stand-in gateway and a fake upstream.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { beforeAll, describe, expect, it } from 'vitest';
import { fingerprintEnv } from '../../src/fingerprint.ts';
import { readState, startStandInMember, stopMember, waitGatewayReady } from '../reconcile/support/fleet.ts';
import { startFakeUpstream } from '../support/fake-upstream.ts';
import { chat, freePort } from '../support/http.ts';
import {
  containerCommand,
  imageCommand,
  manifestArgs,
  replaceFlags,
  statefulSetGatewayArgs,
} from '../support/image-command.ts';
import { pidAlive } from '../support/processes.ts';
import { node24 } from '../support/sandbox.ts';
import { sharedBundleRoot } from '../support/shared-bundle.ts';

const run = promisify(execFile);
const TOKEN = 'test-token-shipped-0123456789abcdef';
const KEY_A = 'test-key-A-shipped-00000000000000';
const KEY_B = 'test-key-B-shipped-11111111111111';

let pkg: { root: string };

beforeAll(async () => {
  // The run's one build, shared with the tests that start the operator (removed at the run's end).
  pkg = { root: await sharedBundleRoot() };
}, 120_000);

describe('the shipped build (dist/keyroll.js)', () => {
  it('answers --version and every command --help, loading each command from its own chunk', async () => {
    const entry = `${pkg.root}/dist/keyroll.js`;
    const version = await run(node24(), [entry, '--version'], { timeout: 30_000 });
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    for (const command of ['controller', 'profiles', 'reconcile', 'diff', 'operator', 'fly']) {
      const help = await run(node24(), [entry, command, '--help'], { timeout: 30_000 });
      expect(help.stdout, command).toContain(`keyroll ${command}`);
    }
  });

  it('the operator image (its Node flags) as the Deployment and the CronJob run it parses and starts', async () => {
    const entrypoint = imageCommand('operator', pkg.root);
    for (const [file, kind, container] of [
      ['base/operator.yaml', 'Deployment', 'operator'],
      ['components/reconcile-cronjob/cronjob.yaml', 'CronJob', 'reconcile'],
    ] as const) {
      // The container's own command (the CronJob sets its Node flags) or the ENTRYPOINT, then its args.
      const c = containerCommand('operator', file, kind, container, pkg.root);
      expect(c.script, `${file} runs the image's script`).toBe(entrypoint.script);
      const args = manifestArgs(file, kind, container);
      // `--help` after the manifest's args: the command and every flag it gives must parse.
      const help = await run(node24(), [...c.nodeFlags, c.script, ...c.args, '--help'], { timeout: 30_000 });
      expect(help.stdout, `${file}`).toContain(`keyroll ${args[0]}`);
    }
  });

  it('the gateway image entrypoint with the pod args: bootstrap migrates, a patch restarts with the new key, SIGTERM leaves no gateway', async () => {
    const image = imageCommand('gateway', pkg.root);
    expect(image.args).toEqual(['controller']);
    // tini is PID 1 in the image (it reaps orphans: test/controller/zombies.test.ts runs it).
    expect(image.init).toEqual(['tini', '--']);
    // /_kilo/* answers only on the pod's --admin-port, moved to a free loopback port here. The
    // pod's gateway user becomes this test's own (the switch needs root and a reachable tree;
    // test/controller/credential-isolation.test.ts covers it).
    const adminPort = await freePort();
    const podArgs = replaceFlags(statefulSetGatewayArgs(), {
      '--admin-port': String(adminPort),
      '--gateway-uid': String(process.getuid?.() ?? 0),
      '--gateway-gid': String(process.getgid?.() ?? 0),
    });
    const launch = [...image.nodeFlags, image.script, ...image.args, ...podArgs];
    const upstream = await startFakeUpstream({ keys: [KEY_A] });
    // The pod's --state-dir, --port and --gateway-port come first; the harness's own follow and win.
    const started = await startStandInMember({
      name: 'shipped',
      token: TOKEN,
      key: KEY_A,
      upstreamBaseUrl: upstream.baseUrl,
      launch,
    });
    const member = { ...started, url: `http://127.0.0.1:${adminPort}` };
    try {
      const before = await waitGatewayReady(member, 30_000);
      expect(before.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_A }));
      // The seeded plaintext profile was migrated to an env ref before the gateway started.
      const state = await fetch(`${member.url}/_kilo/state`, {
        headers: { authorization: `Bearer ${TOKEN}` },
        signal: AbortSignal.timeout(5_000),
      });
      expect(((await state.json()) as { profiles: unknown[] }).profiles).toEqual([
        expect.objectContaining({ profileId: 'kilocode:default', form: 'keyRef-env' }),
      ]);
      expect((await chat(member.gatewayPort, TOKEN, 10_000)).status).toBe(200);

      upstream.setKeys([KEY_B]);
      const res = await fetch(`${member.url}/_kilo/env/patch`, {
        method: 'POST',
        headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' },
        body: JSON.stringify({ KILOCODE_API_KEY: KEY_B }),
        signal: AbortSignal.timeout(30_000),
      });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ ok: true, signaled: true });

      let after = await readState(member);
      const deadline = Date.now() + 30_000;
      while (!(after?.gateway.ready && after.gateway.pid !== before.gateway.pid) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
        after = await readState(member);
      }
      expect(after?.gateway.pid).not.toBe(before.gateway.pid);
      expect(after?.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_B }));
      expect((await chat(member.gatewayPort, TOKEN, 10_000)).status).toBe(200);
      expect(upstream.chatRequests().at(-1)).toMatchObject({ key: KEY_B, ok: true });

      // SIGTERM to the controller alone (not its process group): it stops the gateway and exits 0.
      const exit = await member.controller.stop('SIGTERM', 15_000, { group: false });
      expect(exit.code).toBe(0);
      expect(pidAlive(after!.gateway.pid!)).toBe(false);

      const output = member.controller.lines.join('\n');
      for (const secret of [TOKEN, KEY_A, KEY_B]) expect(output).not.toContain(secret);
    } finally {
      await stopMember(member);
      await upstream.close();
    }
  }, 90_000);
});
