import { describe, expect, it } from 'vitest';
import { canonicalEnv, constantTimeEqual, fingerprintEnv, shortHash } from '../../src/fingerprint.ts';

describe('fingerprints', () => {
  it('canonicalises variables sorted by name, one NAME=value line each', () => {
    expect(canonicalEnv({ B: '2', A: '1' })).toBe('A=1\nB=2\n');
  });

  it('depends on the key, the names and the values', () => {
    const base = fingerprintEnv('token-1', { KILOCODE_API_KEY: 'value-a' });
    expect(base).toMatch(/^hmac-sha256:[0-9a-f]{64}$/);
    expect(fingerprintEnv('token-2', { KILOCODE_API_KEY: 'value-a' })).not.toBe(base);
    expect(fingerprintEnv('token-1', { KILOCODE_API_KEY: 'value-b' })).not.toBe(base);
    expect(fingerprintEnv('token-1', { OTHER: 'value-a' })).not.toBe(base);
    expect(fingerprintEnv('token-1', { KILOCODE_API_KEY: 'value-a' })).toBe(base);
  });

  it('shortens to 12 hex digits and prints a dash for nothing', () => {
    expect(shortHash('hmac-sha256:0123456789abcdef')).toBe('0123456789ab');
    expect(shortHash(null)).toBe('-');
  });

  it('compares tokens in constant time and rejects length mismatches', () => {
    expect(constantTimeEqual('abc', 'abc')).toBe(true);
    expect(constantTimeEqual('abc', 'abd')).toBe(false);
    expect(constantTimeEqual('abc', 'abcd')).toBe(false);
  });

  it('runs on a Node with node:sqlite (>= 22.19)', async () => {
    const [major] = process.versions.node.split('.').map(Number);
    expect(major).toBeGreaterThanOrEqual(22);
    const sqlite = await import('node:sqlite');
    expect(typeof sqlite.DatabaseSync).toBe('function');
  });
});
