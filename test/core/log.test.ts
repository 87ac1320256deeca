import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, SecretRegistry } from '../../src/log.ts';

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
});
