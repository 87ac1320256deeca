// The controller token is out of the gateway's reach: a hostile gateway child, running as its own
// user (--gateway-uid/--gateway-gid), tries every way to get it (its env, /proc/<controller>/
// environ, cmdline, mem, fd/*, every other process's environ, the token file, the admin port
// without the token, signals) and gets nothing; its patches get 401. The controller runs as root
// with exactly the capabilities the StatefulSet grants (setpriv --bounding-set), so the list in
// manifests/components/example-gateway/statefulset.yaml is shown to be enough: migration as root,
// the state dir and key file handed over to the gateway user, the uid switch, the group kill.
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { fingerprintEnv, fingerprintValue } from '../../src/fingerprint.ts';
import { controllerFlags } from '../support/controller-process.ts';
import { freePort } from '../support/http.ts';
import { killAllTracked, pidAlive, spawnTracked } from '../support/processes.ts';
import { filesContaining, node24, REPO_ROOT } from '../support/sandbox.ts';
import { waitFor } from './helpers.ts';

const HOSTILE = fileURLToPath(new URL('./fixtures/hostile-gateway.ts', import.meta.url));
const TOKEN = 'test-ctl-token-isolation-current-0123456789';
const PREVIOUS = 'test-ctl-token-isolation-previous-0123456789';
const GATEWAY_TOKEN = 'test-gw-token-isolation-0123456789abcdef';
const KEY_A = 'test-key-A-isolation-aaaaaaaaaaaa';
const KEY_B = 'test-key-B-isolation-bbbbbbbbbbbb';
const LEGACY = 'test-key-legacy-isolation-llllllll';
const GATEWAY_UID = 10001;
const GATEWAY_GID = 10001;
const BACKUP = 'auth-profiles.json.bak';
const STATEFULSET = join(REPO_ROOT, 'manifests', 'components', 'example-gateway', 'statefulset.yaml');

/** The example StatefulSet's gateway container: `capabilities` and the args naming the gateway user. */
function podSecurity(): { drop: string[]; add: string[]; uid: number; gid: number } {
  const sts = parse(readFileSync(STATEFULSET, 'utf8')) as {
    spec: {
      template: {
        spec: {
          containers: {
            name: string;
            args: string[];
            securityContext: { capabilities: { drop: string[]; add: string[] } };
          }[];
        };
      };
    };
  };
  const c = sts.spec.template.spec.containers.find((x) => x.name === 'gateway')!;
  const flag = (name: string) => Number(c.args.find((a) => a.startsWith(`${name}=`))?.split('=')[1]);
  return { ...c.securityContext.capabilities, uid: flag('--gateway-uid'), gid: flag('--gateway-gid') };
}
const POD = podSecurity();
/** The StatefulSet's `capabilities.add` (after `drop: [ALL]`), as setpriv names them. */
const CAPS = POD.add.map((c) => c.toLowerCase());

const isRoot = process.getuid?.() === 0;
if (!isRoot) {
  console.warn(
    `SKIPPED credential-isolation: the uid switch needs root (uid ${process.getuid?.()}); ` +
      'run as root to check that a gateway running as its own user cannot reach the controller token',
  );
}
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p)) ?? null;
if (isRoot && !setpriv) {
  console.warn(
    'credential-isolation: setpriv not found; the controller runs with all of root’s capabilities',
  );
}

afterEach(async () => {
  await killAllTracked();
});

// biome-ignore lint/suspicious/noExplicitAny: responses are read field by field and asserted on.
type Json = Record<string, any>;

interface Report {
  pid: number;
  controller: number;
  uid: number;
  gid: number;
  groups: number[];
  tried: number;
  statuses: Record<string, number[]>;
  attempts: { vector: string; ok: boolean; error?: string; bytes?: string }[];
  complete?: boolean;
  crashed?: string;
}

async function run(variant: 'env' | 'file') {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-isolation-'));
  chmodSync(dir, 0o755); // the gateway user must reach its state dir below
  const stateDir = join(dir, 'state');
  const agentDir = join(stateDir, 'agents', 'main', 'agent');
  mkdirSync(agentDir, { recursive: true, mode: 0o700 });
  // A legacy plaintext store, written by root: the controller migrates it (as root) and must hand
  // the result over to the gateway user.
  writeFileSync(
    join(agentDir, 'auth-profiles.json'),
    JSON.stringify({
      version: 1,
      profiles: { 'kilocode:default': { type: 'api_key', provider: 'kilocode', key: LEGACY } },
    }),
    { mode: 0o600 },
  );
  // A backup `openclaw doctor` (running as the gateway user) left world-readable: the controller
  // (root) hardens it to 0600, a file of another user (FOWNER).
  writeFileSync(join(agentDir, BACKUP), '{"version":1,"profiles":{}}', { mode: 0o644 });
  chmodSync(join(agentDir, BACKUP), 0o644);
  chownSync(join(agentDir, BACKUP), GATEWAY_UID, GATEWAY_GID);
  const reports = join(dir, 'reports');
  mkdirSync(reports, { mode: 0o700 });
  chownSync(reports, GATEWAY_UID, GATEWAY_GID);
  const keys = join(dir, 'keys');
  mkdirSync(keys, { mode: 0o700 });
  chownSync(keys, GATEWAY_UID, GATEWAY_GID); // as the pod's fsGroup makes its emptyDir
  const keyFile = join(keys, 'kilocode.key');
  const tokenFile = join(dir, 'controller.token');
  writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o400 });

  const [port, adminPort, gatewayPort] = [await freePort(), await freePort(), await freePort()];
  const controllerArgs = [
    join(REPO_ROOT, 'bin', 'keyroll.mjs'),
    'controller',
    ...controllerFlags({ stateDir, port, adminPort, gatewayPort, gatewayCmd: `'${node24()}' '${HOSTILE}'` }),
    '--gateway-uid',
    String(GATEWAY_UID),
    '--gateway-gid',
    String(GATEWAY_GID),
    '--stop-timeout',
    '3000ms',
    ...(variant === 'file'
      ? ['--controller-token-file', tokenFile, '--delivery', 'file', '--key-file', keyFile]
      : []),
  ];
  const [command, args] = setpriv
    ? [
        setpriv,
        ['--bounding-set', `-all,${CAPS.map((c) => `+${c}`).join(',')}`, '--', node24(), ...controllerArgs],
      ]
    : [node24(), controllerArgs];
  const controller = spawnTracked(command, args, {
    name: `controller-isolation-${variant}`,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: reports,
      TMPDIR: reports,
      OPENCLAW_STATE_DIR: stateDir,
      OPENCLAW_GATEWAY_TOKEN: GATEWAY_TOKEN,
      ...(variant === 'env' ? { KEYROLL_CONTROLLER_TOKEN: TOKEN } : {}),
      KEYROLL_CONTROLLER_TOKEN_PREVIOUS: PREVIOUS,
      KILOCODE_API_KEY: KEY_A,
      KEYROLL_LOG_LEVEL: 'info',
      HOSTILE_REPORT_DIR: reports,
      HOSTILE_TOKEN_FILE: tokenFile,
    },
  });
  const admin = `http://127.0.0.1:${adminPort}`;
  const call = async (method: string, path: string, bearer: string, body?: unknown) => {
    const res = await fetch(admin + path, {
      method,
      headers: { authorization: `Bearer ${bearer}`, 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(10_000),
    });
    return { status: res.status, body: (await res.json()) as Json };
  };
  const report = await waitFor(
    () => {
      if (controller.exitInfo())
        throw new Error(`controller exited:\n${controller.lines.slice(-20).join('\n')}`);
      const f = existsSync(reports) ? readdirSync(reports).find((n) => n.startsWith('report-')) : undefined;
      if (!f) return null;
      let r: Report;
      try {
        r = JSON.parse(readFileSync(join(reports, f), 'utf8')) as Report;
      } catch {
        return null; // being written
      }
      return r.complete || r.crashed ? r : null;
    },
    25_000,
    "the hostile gateway's report",
  );
  return { dir, stateDir, keyFile, agentDir, controller, call, report };
}

function searched(report: Report): string {
  return report.attempts
    .map((a) => (a.bytes ? Buffer.from(a.bytes, 'base64').toString('latin1') : ''))
    .join('\n');
}

function expectNothingObtained(report: Report) {
  expect(report.crashed).toBeUndefined();
  // It really is another user, with no supplementary group of the controller's.
  expect(report.uid).toBe(GATEWAY_UID);
  expect(report.gid).toBe(GATEWAY_GID);
  expect(report.groups.filter((g) => g !== GATEWAY_GID)).toEqual([]);
  const all = searched(report);
  expect(all.length).toBeGreaterThan(1000); // it did read things (its env, cmdlines)
  for (const secret of [TOKEN, PREVIOUS])
    expect(all.includes(secret), 'controller token obtained').toBe(false);
  const by = (v: string) => report.attempts.filter((a) => a.vector === v);
  // Its own env: its gateway token, no controller token under any name.
  const ownEnv = JSON.parse(Buffer.from(by('env')[0]!.bytes!, 'base64').toString('utf8')) as Record<
    string,
    string
  >;
  expect(ownEnv.OPENCLAW_GATEWAY_TOKEN).toBe(GATEWAY_TOKEN);
  expect(Object.keys(ownEnv).filter((k) => k.startsWith('KEYROLL_CONTROLLER'))).toEqual([]);
  // The controller's /proc entries: refused, except cmdline (world-readable, and token-free).
  expect(by('proc-controller-environ')[0]).toMatchObject({ ok: false, error: 'EACCES' });
  expect(by('proc-controller-mem')[0]).toMatchObject({ ok: false });
  expect(by('proc-controller-fd-list')[0]).toMatchObject({ ok: false, error: 'EACCES' });
  expect(by('proc-controller-cmdline')[0]?.ok).toBe(true);
  for (const a of by('token-file')) expect(a).toMatchObject({ ok: false, error: 'EACCES' });
  expect(by('token-file').length).toBeGreaterThan(0);
  // Every request to the admin port without the controller token: 401, patches included.
  expect(report.tried).toBeGreaterThan(2);
  const statuses = Object.values(report.statuses).flat();
  expect(statuses.length).toBe(report.tried * 3);
  expect(new Set(statuses)).toEqual(new Set([401]));
  expect(by('signal-controller')[0]).toMatchObject({ ok: false, error: 'EPERM' });
}

describe.skipIf(!isRoot)(
  'the controller token is out of reach of a gateway running as its own user (root)',
  () => {
    it('runs with the StatefulSet’s own settings: drop ALL, its capability list, its gateway user', () => {
      expect(POD.drop).toEqual(['ALL']);
      expect([...CAPS].sort()).toEqual(['chown', 'dac_override', 'fowner', 'kill', 'setgid', 'setuid']);
      expect([POD.uid, POD.gid]).toEqual([GATEWAY_UID, GATEWAY_GID]);
    });

    it('token in the env: the hostile gateway gets nothing, its patches get 401; migration and hand-over work with the StatefulSet capabilities', async () => {
      const { dir, stateDir, agentDir, controller, call, report } = await run('env');
      try {
        expectNothingObtained(report);
        expect(report.controller).toBe(controller.pid);
        // Nothing it tried was applied: same child, same key, no restart.
        const state = await call('GET', '/_kilo/state', TOKEN);
        expect(state.status).toBe(200);
        expect(state.body.gateway.pid).toBe(report.pid);
        expect(state.body.key.envHash).toBe(fingerprintEnv(TOKEN, { KILOCODE_API_KEY: KEY_A }));
        expect((await call('GET', '/_kilo/gateway/status', TOKEN)).body).toMatchObject({
          requestedRestarts: 0,
          spawns: 1,
        });
        // The gateway token is not an admin credential once a controller token is set.
        expect((await call('GET', '/_kilo/state', GATEWAY_TOKEN)).status).toBe(401);
        // Migrated as root, handed over: the store is the gateway user's, with no plaintext left;
        // the controller still reads it (DAC_OVERRIDE) and hardened the backup (FOWNER).
        const store = join(agentDir, 'auth-profiles.json');
        expect(readFileSync(store, 'utf8')).not.toContain(LEGACY);
        expect(state.body.profiles).toEqual([expect.objectContaining({ form: 'keyRef-env' })]);
        for (const p of [stateDir, agentDir, store, join(agentDir, BACKUP)]) {
          expect(statSync(p), p).toMatchObject({ uid: GATEWAY_UID, gid: GATEWAY_GID });
        }
        expect(statSync(join(agentDir, BACKUP)).mode & 0o777).toBe(0o600);
        const exit = await controller.stop('SIGTERM', 15_000, { group: false });
        expect(exit.code).toBe(0);
        expect(pidAlive(report.pid)).toBe(false);
        const output = controller.lines.join('\n');
        for (const s of [TOKEN, PREVIOUS, GATEWAY_TOKEN, KEY_A, LEGACY]) expect(output).not.toContain(s);
        // The gateway user's own files hold no controller token either.
        expect(filesContaining(stateDir, TOKEN)).toEqual([]);
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\n--- controller ---\n${controller.lines.slice(-30).join('\n')}`,
        );
      } finally {
        await controller.stop('SIGTERM', 15_000).catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      }
    }, 60_000);

    it('token in a 0400 file, file delivery: nothing obtained; the key file is 0600 and the gateway user’s across a rotation', async () => {
      const { dir, keyFile, controller, call, report } = await run('file');
      try {
        expectNothingObtained(report);
        expect(statSync(keyFile)).toMatchObject({ uid: GATEWAY_UID, gid: GATEWAY_GID });
        expect(statSync(keyFile).mode & 0o777).toBe(0o600);
        // The previous token works too (a token rotation in progress), and keys its own fingerprints.
        const viaPrevious = await call('POST', '/_kilo/env/patch', PREVIOUS, { KILOCODE_API_KEY: KEY_B });
        expect(viaPrevious.status).toBe(200);
        const state = await call('GET', '/_kilo/state', PREVIOUS);
        expect(state.body.key.fileHash).toBe(fingerprintValue(PREVIOUS, KEY_B));
        expect(state.body.gateway.pid).toBe(report.pid);
        expect(statSync(keyFile)).toMatchObject({ uid: GATEWAY_UID, gid: GATEWAY_GID });
        expect(statSync(keyFile).mode & 0o777).toBe(0o600);
        const exit = await controller.stop('SIGTERM', 15_000, { group: false });
        expect(exit.code).toBe(0);
        const output = controller.lines.join('\n');
        for (const s of [TOKEN, PREVIOUS, GATEWAY_TOKEN, KEY_A, KEY_B, LEGACY])
          expect(output).not.toContain(s);
      } catch (err) {
        throw new Error(
          `${(err as Error).message}\n--- controller ---\n${controller.lines.slice(-30).join('\n')}`,
        );
      } finally {
        await controller.stop('SIGTERM', 15_000).catch(() => undefined);
        rmSync(dir, { recursive: true, force: true });
      }
    }, 60_000);
  },
);
