// Owns the targets file: its zod schema, field-named errors, and resolving each target's token.
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse as parseYaml } from 'yaml';
import * as z from 'zod';
import { parseDuration } from '../duration.ts';

const Duration = z.union([z.number().int().nonnegative(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'number') return v * 1000;
  try {
    return parseDuration(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as Error).message });
    return z.NEVER;
  }
});

const TokenSchema = z
  .object({
    env: z.string().min(1).optional(),
    file: z.string().min(1).optional(),
    value: z.unknown().optional(),
  })
  .strict()
  .superRefine((t, ctx) => {
    if (t.value !== undefined) {
      ctx.addIssue({
        code: 'custom',
        path: ['value'],
        message: 'inline tokens are not allowed in a targets file; use {env: NAME} or {file: PATH}',
      });
    } else if ((t.env === undefined) === (t.file === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'expected exactly one of {env: NAME} or {file: PATH}' });
    }
  });

export type TokenRef = { env: string } | { file: string };

const TargetSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, 'expected letters, digits, ".", "_" or "-"'),
    url: z.url({ protocol: /^https?$/ }),
    token: TokenSchema,
    labels: z.record(z.string(), z.string()).default({}),
  })
  .strict();

export const RolloutSchema = z
  .object({
    concurrency: z.number().int().min(1).max(1000).default(10),
    maxUnavailable: z.number().int().min(1).default(1),
    failureBudget: z.number().int().min(1).default(1),
    paused: z.boolean().default(false),
  })
  .strict();

export type Rollout = z.infer<typeof RolloutSchema>;

export const SourceConfigSchema = z.union([
  z
    .object({ file: z.object({ path: z.string().min(1), keyName: z.string().min(1).optional() }).strict() })
    .strict(),
  z
    .object({
      http: z
        .object({
          url: z.url({ protocol: /^https?$/ }),
          tokenFile: z.string().min(1).optional(),
          tokenEnv: z.string().min(1).optional(),
          mintUrl: z.url({ protocol: /^https?$/ }).optional(),
          refreshBefore: Duration.optional(),
          timeout: Duration.optional(),
        })
        .strict()
        .refine((h) => (h.tokenFile === undefined) !== (h.tokenEnv === undefined), {
          message: 'expected exactly one of tokenFile or tokenEnv',
        }),
    })
    .strict(),
]);

export type SourceConfig = z.infer<typeof SourceConfigSchema>;

export const TargetsFileSchema = z
  .object({
    source: SourceConfigSchema.optional(),
    defaults: z
      .object({
        envVar: z
          .string()
          .regex(/^[A-Z_][A-Z0-9_]*$/)
          .default('KILOCODE_API_KEY'),
        delivery: z.enum(['restart', 'file']).default('restart'),
        requestTimeout: Duration.default(5000),
        rollout: RolloutSchema.default(RolloutSchema.parse({})),
      })
      .strict()
      .default({
        envVar: 'KILOCODE_API_KEY',
        delivery: 'restart',
        requestTimeout: 5000,
        rollout: RolloutSchema.parse({}),
      }),
    targets: z.array(TargetSchema).min(1, 'expected at least one target'),
  })
  .strict()
  .superRefine((f, ctx) => {
    const seen = new Set<string>();
    f.targets.forEach((t, i) => {
      if (seen.has(t.name)) {
        ctx.addIssue({ code: 'custom', path: ['targets', i, 'name'], message: `duplicate name '${t.name}'` });
      }
      seen.add(t.name);
    });
  });

export type TargetsFile = z.infer<typeof TargetsFileSchema>;
export type TargetEntry = TargetsFile['targets'][number];

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function fieldPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)),
    '',
  );
}

/** Pure: parse YAML or JSON text; every error names the file and the field. */
export function parseTargetsFile(text: string, where: string): TargetsFile {
  let raw: unknown;
  try {
    raw = parseYaml(text); // YAML is a superset of JSON, so one parser reads both
  } catch (err) {
    throw new ConfigError(`${where}: not valid YAML or JSON (${(err as Error).message.split('\n')[0]})`);
  }
  const parsed = TargetsFileSchema.safeParse(raw);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${fieldPath(i.path) || '(file)'}: ${i.message}`);
    throw new ConfigError(`${where}: invalid targets file\n${lines.join('\n')}`);
  }
  return parsed.data;
}

export async function loadTargetsFile(path: string): Promise<{ file: TargetsFile; baseDir: string }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  return { file: parseTargetsFile(text, path), baseDir: dirname(resolve(path)) };
}

/** Relative paths in a targets file are relative to the file, not to the working directory. */
export function resolvePath(baseDir: string, p: string): string {
  return isAbsolute(p) ? p : resolve(baseDir, p);
}

/** Reads a token from the environment or a file; the error names the field, never the value. */
export async function resolveToken(
  ref: { env?: string | undefined; file?: string | undefined },
  env: NodeJS.ProcessEnv,
  baseDir: string,
  field: string,
): Promise<string> {
  if (ref.env !== undefined) {
    const v = env[ref.env];
    if (!v) throw new ConfigError(`${field}: environment variable ${ref.env} is not set`);
    return v;
  }
  if (ref.file !== undefined) {
    const p = resolvePath(baseDir, ref.file);
    let v: string;
    try {
      v = (await readFile(p, 'utf8')).trim();
    } catch (err) {
      throw new ConfigError(`${field}: cannot read ${p} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (!v) throw new ConfigError(`${field}: ${p} is empty`);
    return v;
  }
  throw new ConfigError(`${field}: expected {env: NAME} or {file: PATH}`);
}
