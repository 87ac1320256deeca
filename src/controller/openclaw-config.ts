// Owns the controller's settings in openclaw.json (base URL, log file, update check, file
// provider, the custom provider's plugin switch); reading and writing are src/profiles/openclaw-config.ts's.
import { join } from 'node:path';
import {
  childObject,
  hasConfigLevelRef as hasRef,
  type JsonObject,
  readConfigFile,
  setFileProvider,
  setOwn,
  updateConfigFile,
} from '../profiles/openclaw-config.ts';

export { configPath } from '../profiles/openclaw-config.ts';

export const FILE_PROVIDER_ALIAS = 'kilofile';

export interface ConfigEdits {
  provider: string;
  stateDir: string;
  providerBaseUrl: string | null;
  enableChatCompletions: boolean;
  /** File delivery: register `secrets.providers.<alias>` for the key file. */
  keyFile: string | null;
  /**
   * The provider is a custom provider in models.providers (OpenClaw >= 2026.6.9 without its
   * plugin installed): `plugins.entries.<provider>.enabled = false` unless the config says
   * otherwise, so the gateway does not try to install the plugin on every start (it cannot
   * offline, and the attempt costs about a minute).
   */
  disableProviderPlugin?: boolean;
}

/** Pure: the config with the controller's settings applied; other fields are kept as they are. */
export function applyConfigEdits(doc: JsonObject, edits: ConfigEdits): JsonObject {
  const out = structuredClone(doc);
  if (edits.providerBaseUrl) {
    const p = childObject(childObject(childObject(out, 'models'), 'providers'), edits.provider);
    p.baseUrl = edits.providerBaseUrl;
  }
  const logging = childObject(out, 'logging');
  // OpenClaw's default log path is a shared /tmp file; keep the gateway's log with its state.
  if (typeof logging.file !== 'string') logging.file = join(edits.stateDir, 'logs', 'openclaw.log');
  childObject(out, 'update').checkOnStart = false;
  if (edits.enableChatCompletions) {
    childObject(
      childObject(childObject(childObject(out, 'gateway'), 'http'), 'endpoints'),
      'chatCompletions',
    ).enabled = true;
  }
  if (edits.keyFile) setFileProvider(out, FILE_PROVIDER_ALIAS, edits.keyFile);
  if (edits.disableProviderPlugin) {
    const entry = childObject(childObject(childObject(out, 'plugins'), 'entries'), edits.provider);
    if (typeof entry.enabled !== 'boolean') setOwn(entry, 'enabled', false);
  }
  return out;
}

/** True when `models.providers.<provider>.apiKey` is a ref object (needs `secrets.reload`). */
export function hasConfigLevelRef(doc: JsonObject, provider: string): boolean {
  return hasRef(doc, provider);
}

/** The config, or null when there is none; a file keyroll cannot read is an error. */
export async function readConfig(path: string): Promise<JsonObject | null> {
  return (await readConfigFile(path)).root;
}

/**
 * Applies the edits and writes the file atomically (0600) when anything changed. The file is
 * written as plain JSON (comments of a JSON5 file are not kept), and only when a setting changed.
 */
export async function writeConfigEdits(path: string, edits: ConfigEdits): Promise<boolean> {
  return updateConfigFile(path, (root) => {
    const next = applyConfigEdits(root, edits);
    for (const k of Object.keys(root)) delete root[k];
    for (const [k, v] of Object.entries(next)) setOwn(root, k, v);
  });
}
