// The fake upstream: 401 unless the key is accepted, JSON and SSE answers, and what it records.
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import {
  FAKE_UPSTREAM_CONTENT,
  type FakeUpstream,
  keyHash,
  startFakeUpstream,
} from '../support/fake-upstream.ts';
import { killAllTracked, spawnTracked } from '../support/processes.ts';

const KEY_A = 'test-key-A-upstream-0001';
const KEY_B = 'test-key-B-upstream-0002';

function post(up: FakeUpstream, key: string | null, body: unknown, feature = 'openclaw') {
  const headers: Record<string, string> = {
    'content-type': 'application/json',
    'x-kilocode-feature': feature,
  };
  if (key !== null) headers.authorization = `Bearer ${key}`;
  return fetch(`${up.baseUrl}chat/completions`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(5_000),
  });
}

describe('fake upstream (in process)', () => {
  let up: FakeUpstream | undefined;
  afterEach(async () => {
    await up?.close();
    up = undefined;
  });

  it('answers 401 authentication_error for an unknown or missing key', async () => {
    up = await startFakeUpstream({ keys: [KEY_A] });
    const wrong = await post(up, KEY_B, { messages: [] });
    expect(wrong.status).toBe(401);
    expect(await wrong.json()).toEqual({
      error: { message: 'Invalid API key', type: 'authentication_error' },
    });
    const none = await post(up, null, { messages: [] });
    expect(none.status).toBe(401);
    await none.text();
    expect(up.requests.map((r) => [r.keyHash, r.ok, r.status])).toEqual([
      [keyHash(KEY_B), false, 401],
      ['', false, 401],
    ]);
  });

  it('answers a JSON completion for an accepted key and records key, feature and stream flag', async () => {
    up = await startFakeUpstream({ keys: [KEY_A] });
    const res = await post(up, KEY_A, { messages: [{ role: 'user', content: 'hi' }] });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { object: string; choices: Array<{ message: { content: string } }> };
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0]?.message.content).toBe(`${FAKE_UPSTREAM_CONTENT} keyhash=${keyHash(KEY_A)}`);
    expect(up.requests).toHaveLength(1);
    expect(up.requests[0]).toMatchObject({
      key: KEY_A,
      ok: true,
      feature: 'openclaw',
      stream: false,
      status: 200,
    });
    expect(up.baseUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/api\/gateway\/$/);
  });

  it('streams chat.completion.chunk events ending in [DONE] when stream is true', async () => {
    up = await startFakeUpstream({ keys: [KEY_A] });
    const res = await post(up, KEY_A, { stream: true, messages: [] });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const text = await res.text();
    const events = text
      .split('\n\n')
      .filter((e) => e.startsWith('data: '))
      .map((e) => e.slice(6));
    expect(events.at(-1)).toBe('[DONE]');
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { object: string; choices: unknown[] });
    expect(chunks.every((c) => c.object === 'chat.completion.chunk')).toBe(true);
    expect(text).toContain(FAKE_UPSTREAM_CONTENT);
    expect(up.requests[0]?.stream).toBe(true);
  });

  it('serves a one-model list and follows setKeys', async () => {
    up = await startFakeUpstream({ keys: [KEY_A] });
    const models = (await (await fetch(`${up.baseUrl}models`)).json()) as { data: Array<{ id: string }> };
    expect(models.data.map((m) => m.id)).toEqual(['kilo/auto']);
    up.setKeys([KEY_B]);
    expect((await post(up, KEY_A, {})).status).toBe(401);
    expect((await post(up, KEY_B, {})).status).toBe(200);
    const seen = await up.waitForRequest((r) => r.key === KEY_B && r.ok, 1_000);
    expect(seen.status).toBe(200);
    expect(up.chatRequests()).toHaveLength(2);
  });

  it('waitForRequest waits for a future request and times out otherwise', async () => {
    up = await startFakeUpstream({ keys: [KEY_A] });
    const waiting = up.waitForRequest((r) => r.key === KEY_A, 5_000);
    await post(up, KEY_A, {});
    expect((await waiting).ok).toBe(true);
    await expect(up.waitForRequest((r) => r.key === KEY_B, 100)).rejects.toThrow(/no matching request/);
  });
});

describe('fake upstream (as a program)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-upstream-'));
  afterAll(async () => {
    await killAllTracked();
    rmSync(dir, { recursive: true, force: true });
  });

  it('prints its baseUrl, re-reads the keys file per request and records hashes, never keys', async () => {
    const keysFile = join(dir, 'keys');
    const record = join(dir, 'record.jsonl');
    writeFileSync(keysFile, `${KEY_A}\n`);
    chmodSync(keysFile, 0o600);
    const program = fileURLToPath(new URL('../support/fake-upstream.ts', import.meta.url));
    const proc = spawnTracked(process.execPath, [
      program,
      '--port',
      '0',
      '--keys-file',
      keysFile,
      '--record',
      record,
    ]);
    const first = await proc.waitForLine(/baseUrl/, 10_000);
    const info = JSON.parse(first) as { baseUrl: string; pid: number };
    expect(info.pid).toBe(proc.pid);
    const call = (key: string) =>
      fetch(`${info.baseUrl}chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: '{"stream":true,"messages":[]}',
        signal: AbortSignal.timeout(5_000),
      }).then(async (r) => {
        await r.text();
        return r.status;
      });
    expect(await call(KEY_A)).toBe(200);
    expect(await call(KEY_B)).toBe(401);
    writeFileSync(keysFile, `${KEY_B}\n`);
    expect(await call(KEY_B)).toBe(200);
    expect(await call(KEY_A)).toBe(401);

    const lines = readFileSync(record, 'utf8').trim().split('\n');
    const rows = lines.map((l) => JSON.parse(l) as { keyHash: string; ok: boolean; stream: boolean });
    expect(rows.map((r) => [r.keyHash, r.ok])).toEqual([
      [keyHash(KEY_A), true],
      [keyHash(KEY_B), false],
      [keyHash(KEY_B), true],
      [keyHash(KEY_A), false],
    ]);
    expect(rows.every((r) => r.stream === true)).toBe(true);
    const exit = await proc.stop('SIGTERM', 3_000);
    expect(exit.code).toBe(0);
    const everything = [readFileSync(record, 'utf8'), ...proc.lines].join('\n');
    expect(everything).not.toContain(KEY_A);
    expect(everything).not.toContain(KEY_B);
  });
});
