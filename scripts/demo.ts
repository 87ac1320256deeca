// `npm run demo`: rotate a provider key across a small fleet and prove every gateway runs it.
//
//   node scripts/demo.ts [--targets N]
//
// Starts a fake provider (accepts key A), one `keyroll controller` with the real OpenClaw
// gateway (and N-1 more with a small stand-in gateway), shows `keyroll diff`, rotates the key
// (the provider accepts B; the key source file changes), runs `keyroll reconcile --once` while
// clients keep sending requests through the controller's port (the gateway's front door), revokes
// A at the provider, chats through the front door and prints the proof: requests sent and failed
// during the rotation, PID before/after, fingerprints and the key the provider saw, all as short
// hashes. Keys are never printed.
// Every process and temp dir is removed at the end, on an error, and on Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { stringify } from 'yaml';
import { shortHash } from '../src/fingerprint.ts';
import {
  type ControllerState,
  type FleetMember,
  KEYROLL_BIN,
  readState,
  startOpenclawMember,
  startStandInMember,
  stopMember,
  waitGatewayReady,
} from '../test/reconcile/support/fleet.ts';
import { type FakeUpstream, keyHash, startFakeUpstream } from '../test/support/fake-upstream.ts';
import { chat } from '../test/support/http.ts';
import { killAllTracked } from '../test/support/processes.ts';
import { node24, REPO_ROOT } from '../test/support/sandbox.ts';
import { failures, latency, startTraffic } from '../test/support/traffic.ts';

const { values } = parseArgs({
  options: { targets: { type: 'string', default: '1' }, help: { type: 'boolean' } },
});
if (values.help) {
  process.stdout.write(
    'Usage: npm run demo [-- --targets N]   (N >= 1; one real OpenClaw gateway, N-1 stand-ins)\n',
  );
  process.exit(0);
}
const total = Number(values.targets);
if (!Number.isInteger(total) || total < 1 || total > 50) {
  process.stderr.write('demo: --targets must be a whole number from 1 to 50\n');
  process.exit(2);
}

const tty = Boolean(process.stdout.isTTY);
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s = '') => process.stdout.write(`${s}\n`);
const step = (n: number, s: string) => say(`\n${bold(`[${n}] ${s}`)}`);

// Demo keys are random per run and never printed; only hashes of them are.
const KEY_A = `demo-key-A-${randomBytes(12).toString('hex')}`;
const KEY_B = `demo-key-B-${randomBytes(12).toString('hex')}`;

const work = mkdtempSync(join(tmpdir(), 'keyroll-demo-'));
const members: FleetMember[] = [];
let upstream: FakeUpstream | null = null;
let cleaning: Promise<void> | null = null;

function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    process.stdout.write('\ncleaning up: stopping controllers and gateways, removing temp dirs… ');
    await Promise.all(members.map((m) => stopMember(m).catch(() => undefined)));
    await killAllTracked();
    await upstream?.close().catch(() => undefined);
    rmSync(work, { recursive: true, force: true });
    say('done');
  })();
  return cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    say(`\n${sig}: interrupted`);
    cleanup().finally(() => process.exit(130));
  });
}

/** Runs `keyroll <args>` with the terminal attached, so its progress line and report show as-is. */
function keyroll(args: string[]): Promise<number> {
  say(`$ keyroll ${args.join(' ').replaceAll(work, '$DEMO')}`);
  return new Promise((resolve) => {
    const p = spawn(node24(), [KEYROLL_BIN, ...args], { stdio: 'inherit', env: { PATH: process.env.PATH } });
    p.on('exit', (code) => resolve(code ?? 1));
  });
}

async function main(): Promise<void> {
  step(1, 'Installing the pinned OpenClaw gateway (once; reused afterwards)');
  const install = spawnSync(node24(), [join(REPO_ROOT, 'scripts', 'gateway-install.mjs')], {
    stdio: 'inherit',
  });
  if (install.status !== 0) throw new Error('npm run gateway:install failed');

  step(2, `Starting a fake provider and ${total} controller(s)`);
  upstream = await startFakeUpstream({ keys: [KEY_A] });
  say(`fake provider at ${upstream.baseUrl} accepts key A (sha256 ${keyHash(KEY_A)})`);
  members.push(
    await startOpenclawMember({
      name: 'openclaw',
      token: `demo-token-${randomBytes(12).toString('hex')}`,
      key: KEY_A,
      upstreamBaseUrl: upstream.baseUrl,
    }),
  );
  for (let i = 1; i < total; i++) {
    members.push(
      await startStandInMember({
        name: `standin-${String(i).padStart(2, '0')}`,
        token: `demo-token-${randomBytes(12).toString('hex')}`,
        key: KEY_A,
        upstreamBaseUrl: upstream.baseUrl,
      }),
    );
  }
  let lastTick = -1;
  await Promise.all(
    members.map((m) =>
      waitGatewayReady(m, 240_000, (ms, state) => {
        if (m.kind !== 'openclaw' || cleaning) return;
        const s = Math.floor(ms / 1000);
        const line = `real OpenClaw gateway booting (onboard, then start; 10–60 s): ${s}s, ${state}`;
        if (tty) process.stdout.write(`\r${line}   `);
        else if (s >= lastTick + 5) say(line);
        lastTick = tty ? s : s >= lastTick + 5 ? s : lastTick;
      }),
    ),
  );
  if (tty) say();
  say(`all ${total} gateway(s) running and ready`);

  const targets = members.map((m) => {
    const tokenFile = join(work, `token-${m.name}`);
    writeFileSync(tokenFile, m.token, { mode: 0o600 });
    return { name: m.name, url: m.url, token: { file: tokenFile }, labels: { gateway: m.kind } };
  });
  const keyFile = join(work, 'key');
  writeFileSync(keyFile, `${KEY_A}\n`, { mode: 0o600 });
  const targetsFile = join(work, 'targets.yaml');
  writeFileSync(
    targetsFile,
    stringify({
      source: { file: { path: keyFile } },
      defaults: {
        rollout: { concurrency: 10, maxUnavailable: Math.max(1, Math.ceil(total / 4)), failureBudget: 1 },
      },
      targets,
    }),
  );

  step(3, 'keyroll diff while the key source still holds key A: no drift expected');
  const clean = await keyroll(['diff', '--targets', targetsFile]);
  say(`(exit ${clean})`);

  step(4, 'Rotating: the provider now accepts key B, and the key source file holds B');
  upstream.setKeys([KEY_A, KEY_B]);
  writeFileSync(keyFile, `${KEY_B}\n`, { mode: 0o600 });
  say(`key source file now holds key B (sha256 ${keyHash(KEY_B)})`);
  const drift = await keyroll(['diff', '--targets', targetsFile]);
  say(`(exit ${drift}: drift)`);

  const oc = members[0]!;
  const before = (await readState(oc)) as ControllerState;
  const frontDoor = Number(new URL(oc.url).port);

  step(5, 'keyroll reconcile --once, while clients keep talking to the gateway through its front door');
  say(
    `3 HTTP clients (one streaming) and 1 WebSocket client send requests back to back to the controller's port ${frontDoor}`,
  );
  const traffic = startTraffic({
    port: frontDoor,
    token: oc.token,
    clients: ['chat', 'chat-stream', 'chat'],
    websockets: 1,
    wsToken: oc.token,
    requestTimeoutMs: 180_000,
  });
  await new Promise((r) => setTimeout(r, 2_000));
  const rotationStart = Date.now();
  const code = await keyroll(['reconcile', '--once', '--targets', targetsFile]);
  const rotationMs = Date.now() - rotationStart;
  await new Promise((r) => setTimeout(r, 2_000));
  await traffic.stop();
  say(`(exit ${code})`);
  const after = (await readState(oc)) as ControllerState;
  // The proxy's report, read as the controller sends it (readState keeps only what it checks).
  const raw = (await fetch(`${oc.url}/_kilo/state`, {
    headers: { authorization: `Bearer ${oc.token}` },
    signal: AbortSignal.timeout(5_000),
  }).then((r) => r.json())) as {
    proxy?: {
      strategy: string;
      lastHold: { heldRequests: number; longestWaitMs: number } | null;
      lastRestart: { durationMs: number | null } | null;
    };
  };
  const during = traffic.outcomes.filter((o) => o.endedAt >= rotationStart);
  const failed = failures(during);
  const lat = latency(during.filter((o) => o.kind !== 'healthz'));
  const restartMs = raw.proxy?.lastRestart?.durationMs ?? null;
  const hold = raw.proxy?.lastHold;
  say(`requests during the rotation   ${during.length} sent, ${failed.length} failed`);
  say(
    `gateway restart                ${restartMs === null ? '-' : `${(restartMs / 1000).toFixed(1)} s`} ` +
      `(${raw.proxy?.strategy ?? '-'}: ${hold ? `${hold.heldRequests} requests held, longest wait ${(hold.longestWaitMs / 1000).toFixed(1)} s` : 'no hold'}); ` +
      'a bare gateway refuses every request for that long',
  );
  say(`whole reconcile pass           ${(rotationMs / 1000).toFixed(1)} s (deliver + verify)`);
  say(`client latency meanwhile       p50 ${lat.p50} ms, p99 ${lat.p99} ms`);
  const ws = traffic.wsEvents;
  say(
    `websocket                      ${ws.filter((e) => e.event === 'close' && e.code === 1012).length} close 1012 (service restart), ` +
      `${ws.filter((e) => e.event === 'hello').length} handshakes`,
  );
  for (const f of failed.slice(0, 5)) say(`  failed: ${f}`);

  step(6, 'Proof: revoke key A at the provider, then chat through the front door');
  upstream.setKeys([KEY_B]);
  const res = await chat(frontDoor, oc.token, 90_000);
  const seen = upstream.chatRequests().at(-1);
  say(
    `gateway pid      ${before.gateway.pid} → ${after.gateway.pid}${before.gateway.pid !== after.gateway.pid ? '  (restarted)' : ''}`,
  );
  say(
    `envHash          ${shortHash(before.key.envHash)} → ${shortHash(after.key.envHash)}  (HMAC keyed with the controller token)`,
  );
  say(`chat through it  HTTP ${res.status}`);
  say(`provider saw     sha256 ${seen?.keyHash ?? '-'}  (key A ${keyHash(KEY_A)}, key B ${keyHash(KEY_B)})`);
  const proved =
    code === 0 &&
    failed.length === 0 &&
    res.status === 200 &&
    seen?.keyHash === keyHash(KEY_B) &&
    before.gateway.pid !== after.gateway.pid;

  step(7, 'A second pass changes nothing: converged targets get no request beyond GET /_kilo/state');
  const again = await keyroll(['reconcile', '--once', '--targets', targetsFile]);
  const still = (await readState(oc)) as ControllerState;
  say(`(exit ${again}; pid still ${still.gateway.pid})`);

  say(
    `\n${bold(proved && again === 0 && still.gateway.pid === after.gateway.pid ? 'ROTATION PROVED: every gateway runs key B, the provider saw it, and no client request failed.' : 'ROTATION NOT PROVED — see above.')}`,
  );
  process.exitCode = proved ? 0 : 1;
}

try {
  await main();
} catch (err) {
  if (!cleaning) process.stderr.write(`demo failed: ${(err as Error).message}\n`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
