// Owns what a provider key and a key version label may look like: pure checks shared by the
// controller's env/patch route and every key source, so a bad value is refused before anything
// is applied, and a refusal never quotes the value.

/**
 * Bounds of a key's length. Real keys are one token of 20–200 characters (`sk-…`, `sk-ant-…`,
 * `AIza…`) or a JWT of a few hundred (kilocode: base64url parts joined by dots); 8 rejects
 * placeholders, 4096 anything that is not a key at all.
 */
export const KEY_MIN_LENGTH = 8;
export const KEY_MAX_LENGTH = 4096;

/** Printable ASCII without the space: one token, safe in an env var and an HTTP header. */
const TOKEN_CHARS = /^[\x21-\x7e]*$/;
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const WHITESPACE_OR_CONTROL = /[\s\x00-\x1f\x7f\x80-\x9f\u2028\u2029\ufeff]/u;

/**
 * Why `value` cannot be a provider key (a phrase that follows "Value for 'X'" or "the key"), or
 * null when it can. The phrase never contains the value.
 */
export function checkKeyValue(value: string): string | null {
  if (value.length === 0) return 'must be a non-empty string';
  if (WHITESPACE_OR_CONTROL.test(value)) return 'must not contain whitespace or control characters';
  if (!TOKEN_CHARS.test(value)) return 'must be printable ASCII';
  if (value.length < KEY_MIN_LENGTH || value.length > KEY_MAX_LENGTH) {
    return `must be ${KEY_MIN_LENGTH} to ${KEY_MAX_LENGTH} characters long`;
  }
  return null;
}

export const VERSION_LABEL_MAX_LENGTH = 128;

/**
 * Why `label` cannot be a key version label, or null when it can. The label travels in the
 * `X-Keyroll-Key-Version` header, GatewayKey status and Events: printable ASCII, no spaces,
 * 1–128 characters. The controller refuses any other with 400, so a source that yields one must
 * fail where the label is read, not stall every delivery after it.
 */
export function checkVersionLabel(label: string): string | null {
  if (label.length === 0) return 'must not be empty';
  if (!TOKEN_CHARS.test(label)) return 'must be printable ASCII without spaces or control characters';
  if (label.length > VERSION_LABEL_MAX_LENGTH) {
    return `must be at most ${VERSION_LABEL_MAX_LENGTH} characters long`;
  }
  return null;
}
