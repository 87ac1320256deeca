// Owns the key-source flags shared by `reconcile`, `diff` and `fly`: their parseArgs options,
// their validation into a SourceConfig, and building the KeySource from it.
import type { Clock } from '../clock.ts';
import { UsageError } from '../errors.ts';
import { fileKeySource } from '../reconcile/sources/file-source.ts';
import { httpKeySource } from '../reconcile/sources/http-source.ts';
import type { KeySource } from '../reconcile/sources/key-source.ts';
import { resolvePath, resolveToken, type SourceConfig, SourceConfigSchema } from '../reconcile/targets.ts';
import type { SecretRegistry } from '../secrets.ts';

export const SOURCE_FLAG_OPTIONS = {
  'source-file': { type: 'string' },
  'source-key-name': { type: 'string' },
  'source-url': { type: 'string' },
  'source-token-file': { type: 'string' },
  'source-token-env': { type: 'string' },
  'mint-url': { type: 'string' },
  'refresh-before': { type: 'string' },
} as const;

export type SourceFlags = Partial<Record<keyof typeof SOURCE_FLAG_OPTIONS, string | boolean | undefined>>;

/** The source the flags describe, or undefined when none of them was given. */
export function sourceFromFlags(v: SourceFlags): SourceConfig | undefined {
  const s = (k: keyof typeof SOURCE_FLAG_OPTIONS) => (typeof v[k] === 'string' ? v[k] : undefined);
  if (s('source-file') && s('source-url'))
    throw new UsageError('give --source-file or --source-url, not both');
  let raw: unknown;
  if (s('source-file')) {
    raw = {
      file: { path: s('source-file'), ...(s('source-key-name') ? { keyName: s('source-key-name') } : {}) },
    };
  } else if (s('source-url')) {
    raw = {
      http: {
        url: s('source-url'),
        ...(s('source-token-file') ? { tokenFile: s('source-token-file') } : {}),
        ...(s('source-token-env') ? { tokenEnv: s('source-token-env') } : {}),
        ...(s('mint-url') ? { mintUrl: s('mint-url') } : {}),
        ...(s('refresh-before') ? { refreshBefore: s('refresh-before') } : {}),
      },
    };
  } else {
    return undefined;
  }
  const parsed = SourceConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new UsageError(
      `source flags: ${parsed.error.issues.map((i) => `${i.path.slice(1).join('.') || 'source'}: ${i.message}`).join('; ')}`,
    );
  }
  return parsed.data;
}

export interface BuildSourceOptions {
  env: NodeJS.ProcessEnv;
  /** Relative paths (key file, token file) resolve against this directory. */
  baseDir: string;
  /** Default file name inside a mounted Secret directory. */
  envVar: string;
  clock: Clock;
  /** The source's bearer token is registered here before anything can log it. */
  secrets: SecretRegistry;
  /** Keys the content version of a key without a version label: see `versionKeyOf`. */
  versionKey: string;
}

export async function buildKeySource(cfg: SourceConfig, o: BuildSourceOptions): Promise<KeySource> {
  if ('file' in cfg) {
    return fileKeySource({
      path: resolvePath(o.baseDir, cfg.file.path),
      keyName: cfg.file.keyName ?? o.envVar,
      versionKey: o.versionKey,
    });
  }
  const h = cfg.http;
  const token = await resolveToken(
    { env: h.tokenEnv, file: h.tokenFile },
    o.env,
    o.baseDir,
    'source.http.token',
  );
  o.secrets.add(token);
  return httpKeySource({
    url: h.url,
    token,
    ...(h.mintUrl ? { mintUrl: h.mintUrl } : {}),
    ...(h.refreshBefore !== undefined ? { refreshBeforeMs: h.refreshBefore } : {}),
    ...(h.timeout !== undefined ? { timeoutMs: h.timeout } : {}),
    clock: o.clock,
    versionKey: o.versionKey,
  });
}
