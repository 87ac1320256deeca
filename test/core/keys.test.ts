// What a provider key and a version label may look like (src/keys.ts): real key shapes pass,
// whitespace, control characters, non-ASCII and absurd lengths do not, and no reason quotes the value.
import { describe, expect, it } from 'vitest';
import { checkKeyValue, checkVersionLabel, KEY_MAX_LENGTH, KEY_MIN_LENGTH } from '../../src/keys.ts';

// Shapes of real keys, with made-up content.
const JWT_LIKE = `eyJhbGciOiJIUzI1NiJ9.${'eyJzdWIiOiJ0ZXN0LWtleSJ9'.repeat(20)}.abc-DEF_ghi-JKL_0123456789`;
const VALID = [
  ['OpenAI project key', `sk-proj-${'Ab1_-'.repeat(30)}`],
  ['Anthropic key', `sk-ant-api03-${'x'.repeat(93)}-AAAA`],
  ['Google key', `AIza${'Sy0_-'.repeat(7)}`],
  ['kilocode JWT-like token', JWT_LIKE],
  ['base64 with padding and slashes', 'dGVzdC1rZXk+/w==dGVzdA=='],
  ['every printable ASCII symbol', `key!"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}~`],
  ['the shortest allowed', 'k'.repeat(KEY_MIN_LENGTH)],
  ['the longest allowed', 'k'.repeat(KEY_MAX_LENGTH)],
] as const;

const INVALID = [
  ['empty', '', 'must be a non-empty string'],
  ['one space', ' ', 'must not contain whitespace or control characters'],
  ['a tab', '\t', 'must not contain whitespace or control characters'],
  ['a space inside', 'test-key a b-000000', 'must not contain whitespace or control characters'],
  [
    'a header injection',
    'test-key-000000\nX-Injected: 1',
    'must not contain whitespace or control characters',
  ],
  ['a trailing CR', 'test-key-000000\r', 'must not contain whitespace or control characters'],
  ['a NUL', 'test-key\0-000000', 'must not contain whitespace or control characters'],
  ['DEL', 'test-key\x7f-000000', 'must not contain whitespace or control characters'],
  ['a C1 control', 'test-key\u0085-000000', 'must not contain whitespace or control characters'],
  ['a no-break space', 'test-key\u00a0-000000', 'must not contain whitespace or control characters'],
  ['a line separator', 'test-key\u2028-000000', 'must not contain whitespace or control characters'],
  ['a BOM', '\ufefftest-key-000000', 'must not contain whitespace or control characters'],
  ['non-ASCII', 'test-key-ключ-000000', 'must be printable ASCII'],
  ['an emoji', 'test-key-🔑-000000', 'must be printable ASCII'],
  ['too short', 'k'.repeat(KEY_MIN_LENGTH - 1), 'must be 8 to 4096 characters long'],
  ['too long', 'k'.repeat(KEY_MAX_LENGTH + 1), 'must be 8 to 4096 characters long'],
] as const;

describe('checkKeyValue', () => {
  it.each(VALID)('accepts %s', (_name, value) => {
    expect(checkKeyValue(value)).toBeNull();
  });

  it.each(INVALID)('refuses %s', (_name, value, reason) => {
    const why = checkKeyValue(value);
    expect(why).toBe(reason);
    if (value.trim().length > 0) expect(why).not.toContain(value.trim());
  });
});

describe('checkVersionLabel', () => {
  it.each([
    ['v1'],
    ['2026-03-01T00:00:00Z'],
    ['hmac:0123456789abcdef'],
    ['rotation/42+build.7'],
    ['x'.repeat(128)],
  ])('accepts %s', (label) => {
    expect(checkVersionLabel(label)).toBeNull();
  });

  it.each([
    ['', 'must not be empty'],
    ['v 1', 'must be printable ASCII without spaces or control characters'],
    ['v1\n', 'must be printable ASCII without spaces or control characters'],
    ['v1\tb', 'must be printable ASCII without spaces or control characters'],
    ['version-é', 'must be printable ASCII without spaces or control characters'],
    ['x'.repeat(129), 'must be at most 128 characters long'],
  ])('refuses %j', (label, reason) => {
    expect(checkVersionLabel(label)).toBe(reason);
  });
});
