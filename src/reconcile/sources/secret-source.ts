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
  read(
    ref: Omit<SecretRef, 'key'>,
    signal: AbortSignal,
  ): Promise<{ data: Record<string, string>; annotations: Record<string, string> } | null>;
}

/**
 * Version = the `keyroll.dev/version` annotation when present, else a content fingerprint keyed
 * with `versionKey` (the controller token; see content-version.ts).
 */
export function secretKeySource(reader: SecretReader, ref: SecretRef, versionKey: string): KeySource {
  const where = `secret ${ref.namespace}/${ref.name} key ${ref.key}`;
  return {
    describe: where,
    async current(signal): Promise<KeyMaterial> {
      const secret = await reader.read({ namespace: ref.namespace, name: ref.name }, signal);
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
    },
  };
}
