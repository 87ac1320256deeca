// Owns the controller's edits of openclaw.json: base URL, log file, update check, file provider.
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as z from 'zod';
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { configText, parseConfigText } from '../profiles/openclaw-config.ts';

export const FILE_PROVIDER_ALIAS = 'kilofile';

export interface ConfigEdits {
  provider: string;
  stateDir: string;
  providerBaseUrl: string | null;
  enableChatCompletions: boolean;
  /** File delivery: register `secrets.providers.<alias>` for the key file. */
  keyFile: string | null;
}

const JsonObject = z.record(z.string(), z.unknown());
type Obj = z.infer<typeof JsonObject>;

export function configPath(stateDir: string, env: Readonly<Record<string, string | undefined>>): string {
  return env.OPENCLAW_CONFIG_PATH ?? join(stateDir, 'openclaw.json');
}

function child(obj: Obj, key: string): Obj {
  const parsed = JsonObject.safeParse(obj[key]);
  const next = parsed.success ? parsed.data : {};
  obj[key] = next;
  return next;
}

/** Pure: the config with the controller's settings applied; other fields are kept as they are. */
export function applyConfigEdits(doc: Obj, edits: ConfigEdits): Obj {
  const out = structuredClone(doc);
  if (edits.providerBaseUrl) {
    const p = child(child(child(out, 'models'), 'providers'), edits.provider);
    p.baseUrl = edits.providerBaseUrl;
  }
  const logging = child(out, 'logging');
  // OpenClaw's default log path is a shared /tmp file; keep the gateway's log with its state.
  if (typeof logging.file !== 'string') logging.file = join(edits.stateDir, 'logs', 'openclaw.log');
  child(out, 'update').checkOnStart = false;
  if (edits.enableChatCompletions) {
    child(child(child(child(out, 'gateway'), 'http'), 'endpoints'), 'chatCompletions').enabled = true;
  }
  if (edits.keyFile) {
    child(child(out, 'secrets'), 'providers')[FILE_PROVIDER_ALIAS] = {
      source: 'file',
      path: edits.keyFile,
      mode: 'singleValue',
    };
  }
  return out;
}

/** True when `models.providers.<provider>.apiKey` is a ref object (needs `secrets.reload`). */
export function hasConfigLevelRef(doc: Obj, provider: string): boolean {
  const models = JsonObject.safeParse(doc.models);
  const providers = models.success ? JsonObject.safeParse(models.data.providers) : null;
  const p = providers?.success ? JsonObject.safeParse(providers.data[provider]) : null;
  const apiKey = p?.success ? p.data.apiKey : undefined;
  return z.object({ source: z.string() }).safeParse(apiKey).success;
}

export async function readConfig(path: string): Promise<Obj | null> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  // JSON5, as OpenClaw reads it; an error names the position, never the text.
  const read = parseConfigText(text);
  if (!read.ok) throw new Error(read.error);
  const parsed = JsonObject.safeParse(read.root);
  if (!parsed.success) throw new Error('openclaw.json is not a JSON object');
  return parsed.data;
}

/**
 * Applies the edits and writes the file atomically (0600) when anything changed. The file is
 * written as plain JSON (comments of a JSON5 file are not kept), and only when a setting changed.
 */
export async function writeConfigEdits(path: string, edits: ConfigEdits): Promise<boolean> {
  const doc = (await readConfig(path)) ?? {};
  const next = applyConfigEdits(doc, edits);
  if (JSON.stringify(next) === JSON.stringify(doc)) return false;
  await writeFileAtomic(path, configText(next), { mode: 0o600 });
  return true;
}
