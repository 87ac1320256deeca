import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { CUT_MARK, createLogger, SecretRegistry } from '../../src/log.ts';

function capture() {
  const lines: string[] = [];
  const destination = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { lines, destination };
}

describe('logger redaction', () => {
  it('redacts secret fields by path', () => {
    const { lines, destination } = capture();
    const log = createLogger({ destination });
    log.info({ token: 'tok-abcdef-123', headers: { authorization: 'Bearer tok-abcdef-123' } }, 'hello');
    expect(lines.join('')).not.toContain('tok-abcdef-123');
    expect(lines.join('')).toContain('[REDACTED]');
  });

  it('scrubs registered secret values wherever they appear', () => {
    const { lines, destination } = capture();
    const secrets = new SecretRegistry();
    secrets.add('sk-test-VALUE-1234');
    const log = createLogger({ destination, secrets });
    log.warn({ detail: 'upstream said sk-test-VALUE-1234 is bad' }, 'message with sk-test-VALUE-1234 inside');
    log.error(new Error('failed with sk-test-VALUE-1234'), 'boom');
    const out = lines.join('');
    expect(out).not.toContain('sk-test-VALUE-1234');
    expect(out.match(/\[REDACTED\]/g)?.length).toBeGreaterThanOrEqual(3);
  });

  it('a line cut inside a secret keeps none of the secret (the cut mark is scrubbed before)', () => {
    const { lines, destination } = capture();
    const secrets = new SecretRegistry();
    const key = 'test-key-B-straddle-0123456789';
    secrets.add(key);
    const log = createLogger({ destination, secrets });
    for (const keep of [6, 12, key.length - 1]) {
      log.info({ line: `KILOCODE_API_KEY=${key.slice(0, keep)}${CUT_MARK}` }, 'Gateway output');
    }
    log.info({ line: `short ${key.slice(0, 5)}${CUT_MARK}` }, 'Gateway output');
    const out = lines.join('');
    expect(out).not.toContain(key.slice(0, 6));
    expect(out.match(/\[REDACTED\]…/g)).toHaveLength(3);
    // Below the registry's 6-character floor a prefix is too common to be worth redacting.
    expect(out).toContain(`short ${key.slice(0, 5)}${CUT_MARK}`);
  });
});
