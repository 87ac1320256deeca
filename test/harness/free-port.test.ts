// freePort(): distinct ports, outside the kernel's ephemeral range (so no listen(0) can take one
// before its user binds it), each free when handed out.
import { createServer } from 'node:net';
import { describe, expect, it } from 'vitest';
import { freePort } from '../support/http.ts';

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
});
