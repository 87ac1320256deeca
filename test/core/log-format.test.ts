// The log line src/log.ts writes without a library: pino's format, field for field (what log
// pipelines, the benchmarks' log readers and the secret greps of the tests rely on).
import { describe, expect, it } from 'vitest';
import { createLogger, REDACTED, SecretRegistry, silentLogger } from '../../src/log.ts';

function capture(level = 'trace', secrets?: SecretRegistry) {
  const lines: string[] = [];
  const log = createLogger({
    level,
    destination: { write: (l: string) => lines.push(l) },
    ...(secrets ? { secrets } : {}),
  });
  return { log, lines };
}

describe('the log line', () => {
  it('is {level, time, base, child bindings, fields, msg}, one JSON object per line', () => {
    const { log, lines } = capture();
    log
      .child({ component: 'supervisor' })
      .child({ target: 'gw-0' })
      .info({ pid: 42, ready: true }, 'Gateway ready');
    expect(lines).toHaveLength(1);
    expect(lines[0]!.endsWith('}\n')).toBe(true);
    expect(lines[0]).toMatch(
      /^\{"level":"info","time":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z","app":"keyroll","component":"supervisor","target":"gw-0","pid":42,"ready":true,"msg":"Gateway ready"\}\n$/,
    );
  });

  it('takes a message alone, fields alone, an Error (as `err`, message by default)', () => {
    const { log, lines } = capture();
    log.warn('Only a message');
    log.info({ n: 1, skipped: undefined });
    const err = Object.assign(new TypeError('went wrong'), { code: 'EBAD' });
    log.error(err);
    log.error({ err, phase: 'start' }, 'Phase failed');
    const [a, b, c, d] = lines.map((l) => JSON.parse(l));
    expect([a.level, a.msg]).toEqual(['warn', 'Only a message']);
    expect(b).not.toHaveProperty('msg');
    expect(b).not.toHaveProperty('skipped');
    expect(b.n).toBe(1);
    expect(c.msg).toBe('went wrong');
    expect(c.err).toMatchObject({ type: 'TypeError', message: 'went wrong', code: 'EBAD' });
    expect(c.err.stack).toMatch(/^TypeError: went wrong\n/);
    expect(d).toMatchObject({
      phase: 'start',
      msg: 'Phase failed',
      err: { type: 'TypeError', code: 'EBAD' },
    });
  });

  it('levels: the ones below the logger’s are dropped; silent writes nothing; an unknown level is refused', () => {
    const { log, lines } = capture('warn');
    log.trace('t');
    log.debug('d');
    log.info('i');
    log.warn('w');
    log.error('e');
    log.fatal('f');
    expect(lines.map((l) => JSON.parse(l).level)).toEqual(['warn', 'error', 'fatal']);
    expect(log.level).toBe('warn');
    const quiet = capture('silent');
    quiet.log.fatal('nothing');
    expect(quiet.lines).toEqual([]);
    expect(silentLogger().level).toBe('silent');
    expect(() => createLogger({ level: 'loud' })).toThrow(/unknown log level 'loud'/);
  });

  it('redacts secret-named fields at the top level, one level down, and req.headers.authorization', () => {
    const { log, lines } = capture();
    const fields = {
      token: 'tok-top-level-000001',
      env: { ANY: 'x' },
      child: { apiKey: 'ak-one-down-000001', keep: 'visible' },
      req: { headers: { authorization: 'Bearer tok-deep-000001', host: 'h' } },
      deep: { a: { key: 'deep-is-left-to-the-value-scrub' } },
      list: [{ key: 'in-an-array' }],
      nothing: { password: undefined },
    };
    log.child({ KILOCODE_API_KEY: 'k-binding-000001' }).info(fields, 'Fields');
    const out = JSON.parse(lines[0]!);
    expect(out.KILOCODE_API_KEY).toBe(REDACTED);
    expect(out.token).toBe(REDACTED);
    expect(out.env).toBe(REDACTED);
    expect(out.child).toEqual({ apiKey: REDACTED, keep: 'visible' });
    expect(out.req.headers).toEqual({ authorization: REDACTED, host: 'h' });
    expect(out.deep.a.key).toBe('deep-is-left-to-the-value-scrub');
    expect(out.list).toEqual([{ key: 'in-an-array' }]);
    expect(out.nothing).toEqual({});
    // The caller's object is not changed.
    expect(fields.child.apiKey).toBe('ak-one-down-000001');
    expect(fields.req.headers.authorization).toBe('Bearer tok-deep-000001');
  });

  it('scrubs registered values anywhere in the line, bindings and error stacks included', () => {
    const secrets = new SecretRegistry();
    secrets.add('test-key-scrub-anywhere-0001');
    const { log, lines } = capture('info', secrets);
    log
      .child({ note: 'bound test-key-scrub-anywhere-0001' })
      .error(new Error('upstream refused test-key-scrub-anywhere-0001'), 'deep test-key-scrub-anywhere-0001');
    expect(lines.join('')).not.toContain('test-key-scrub-anywhere-0001');
    expect(lines.join('').match(/\[REDACTED\]/g)!.length).toBeGreaterThanOrEqual(4);
  });

  it('never throws on a value JSON cannot take (a cycle, a BigInt)', () => {
    const { log, lines } = capture();
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    log.info({ cyclic, big: 10n }, 'Odd values');
    const out = JSON.parse(lines[0]!);
    expect(out.cyclic).toEqual({ a: 1, self: '[Circular]' });
    expect(out.big).toBe('10');
  });
});
