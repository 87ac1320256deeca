// freePort(): distinct ports, outside the kernel's ephemeral range (so no listen(0) can take one
// before its user binds it), each free when handed out, and never the same in two processes.
import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort } from '../support/http.ts';

const HTTP_TS = fileURLToPath(new URL('../support/http.ts', import.meta.url));
const children: ChildProcessWithoutNullStreams[] = [];
afterEach(() => {
  for (const c of children.splice(0))
    if (c.exitCode === null && c.signalCode === null) process.kill(c.pid!, 'SIGKILL');
});

/**
 * A separate node process that takes `n` ports with freePort, prints them, and holds them (lives)
 * until its stdin closes. All of them share one VITEST_POOL_ID, so all start at the same port.
 */
async function taker(n: number) {
  const script = `
    import { freePort } from ${JSON.stringify(HTTP_TS)};
    const ports = [];
    for (let i = 0; i < ${n}; i++) ports.push(await freePort());
    console.log(JSON.stringify(ports));
    process.stdin.resume();
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    env: { ...process.env, VITEST_POOL_ID: '13' },
  });
  children.push(child);
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => {
    err += c;
  });
  const ports = await new Promise<number[]>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c;
      if (out.endsWith('\n')) resolve(JSON.parse(out) as number[]);
    });
    child.on('exit', (code) => reject(new Error(`taker exited (${code}) before printing: ${err}`)));
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { ports, child, exited };
}

describe('freePort', () => {
  it('hands out distinct, bindable ports below the ephemeral range, never one in use', async () => {
    const held = createServer();
    const ports: number[] = [];
    for (let i = 0; i < 40; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const p of ports) expect(p >= 20_000 && p < 32_000).toBe(true);
    // A port someone holds is skipped: hold the next candidates' neighbour and draw again.
    const next = await freePort();
    await new Promise<void>((r) => held.listen(next + 1, '127.0.0.1', r));
    const after = await freePort();
    expect(after).not.toBe(next + 1);
    await new Promise<void>((r) => held.close(() => r()));
  });

  it('two processes side by side (one VITEST_POOL_ID, so one start) get disjoint ports; an ended one frees its own', async () => {
    const a = await taker(50);
    const b = await taker(50);
    expect(new Set(a.ports).size).toBe(50);
    expect(new Set(b.ports).size).toBe(50);
    expect(a.ports.filter((p) => b.ports.includes(p))).toEqual([]);
    // However it ends (SIGKILL: no exit handler runs), its reservations go with it.
    a.child.kill('SIGKILL');
    await a.exited;
    const c = await taker(1);
    expect(c.ports).toEqual([a.ports[0]]);
    b.child.stdin.end();
    c.child.stdin.end();
    await Promise.all([b.exited, c.exited]);
  });
});
