// Owns the Kubernetes Secret key source, behind a reader port the operator implements.
import { contentVersion } from './content-version.ts';
import { checkMaterial, type KeyMaterial, type KeySource, KeySourceError } from './key-source.ts';

export const VERSION_ANNOTATION = 'keyroll.dev/version';

export interface SecretRef {
  namespace: string;
  name: string;
  /** Data key holding the API key, e.g. `KILOCODE_API_KEY`. */
  key: string;
}

/** The one call the Secret source needs; the operator backs it with its informer cache or the API. */
export interface SecretReader {
  /** `data` values base64-encoded as the API returns them; null when the Secret does not exist. */
  read(ref: Omit<SecretRef, 'key'>, signal: AbortSignal): Promise<SecretData | null>;
}

/** A Secret as a source reads it: `data` values base64-encoded as the API returns them. */
export interface SecretData {
  data: Record<string, string>;
  annotations: Record<string, string>;
}

/**
 * Pure. The key material a Secret holds (null: the Secret does not exist). Version = the
 * `keyroll.dev/version` annotation when present, else a content fingerprint keyed with
 * `versionKey` (the controller token; see content-version.ts). Throws KeySourceError.
 */
export function secretMaterial(secret: SecretData | null, ref: SecretRef, versionKey: string): KeyMaterial {
  const where = describeSecretRef(ref);
  if (!secret) throw new KeySourceError(`${where}: the Secret does not exist`);
  const b64 = secret.data[ref.key];
  if (b64 === undefined) throw new KeySourceError(`${where}: the Secret has no such key`);
  // Trailing whitespace (the newline `kubectl create secret --from-file` keeps) is dropped;
  // anything else that is not one printable token is refused by checkMaterial (InvalidKey).
  const key = Buffer.from(b64, 'base64').toString('utf8').replace(/\s+$/, '');
  const label = secret.annotations[VERSION_ANNOTATION]?.trim();
  // A bad annotation (a space, non-ASCII) is InvalidVersionLabel here: the controller would
  // refuse it with 400 on every delivery and the rotation would never converge.
  return checkMaterial(
    where,
    key,
    label === undefined || label === '' ? contentVersion(key, versionKey) : label,
  );
}

function describeSecretRef(ref: SecretRef): string {
  return `secret ${ref.namespace}/${ref.name} key ${ref.key}`;
}

/** The Secret source behind a reader port (read afresh on every `current()`); see secretMaterial. */
export function secretKeySource(reader: SecretReader, ref: SecretRef, versionKey: string): KeySource {
  return {
    describe: describeSecretRef(ref),
    async current(signal): Promise<KeyMaterial> {
      const secret = await reader.read({ namespace: ref.namespace, name: ref.name }, signal);
      return secretMaterial(secret, ref, versionKey);
    },
  };
}
