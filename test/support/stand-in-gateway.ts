// Owns the stand-in gateway: the smallest faithful imitation of OpenClaw 2026.6.8's key handling
// (reference/openclaw.md §11), for tests that cannot afford the real gateway (700 MB, 7-10 s).
//
//   node test/support/stand-in-gateway.ts [gateway run] [--port N] [--bind loopback] [--token T]
//
// Port: --port, else OPENCLAW_GATEWAY_PORT, else gateway.port in the config, else 18789.
// State dir: OPENCLAW_STATE_DIR (else $OPENCLAW_HOME/.openclaw, else $HOME/.openclaw); config
// OPENCLAW_CONFIG_PATH, else $STATE/openclaw.json (plain JSON, as OpenClaw writes it).
//
// Key resolution for provider kilocode, on every chat request, in this order:
//  1. `models.providers.kilocode.apiKey` in the config: a literal, or a ref (`{source,provider,id}`,
//     `"${VAR}"`, `"$VAR"`) resolved into a snapshot at start, on SIGUSR1 and on
//     `POST /__standin/secrets-reload` (bearer gateway token) — the stand-in's `secrets.reload`.
//  2. profile `kilocode:default` from the SQLite store `agents/main/agent/openclaw-agent.sqlite`
//     (table auth_profile_store, row 'primary') if that row exists, else the legacy JSON store
//     `agents/main/agent/auth-profiles.json` (versioned, flat, `api_key` alias). The store is read on
//     every request. `keyRef` beats `key`: an env ref reads this process's own env (fixed at
//     spawn); a file ref re-reads the file on every request and refuses it unless it is a
//     regular file, mode 0600/0400, one hard link, owned by this user (401 "No credentials found").
//  3. no profile: KILOCODE_API_KEY from this process's env.
// Start-up fails with exit 1 when an active ref cannot be resolved (env var missing or empty, file
// missing or too open), as the real gateway does.
//
// Routes: GET /healthz, /health → {"ok":true,"status":"live"}; GET /readyz → 200
// {"ready":true,"failing":[]} once STANDIN_READY_DELAY_MS (default 150) have passed since
// listening, else 503; POST /v1/chat/completions (bearer gateway token) → forwards to
// `<baseUrl>chat/completions` with `Authorization: Bearer <key>`, `X-KILOCODE-FEATURE: openclaw`,
// `stream:true`; upstream 401 → 401 authentication_error; else a chat.completion JSON.
// GET /__standin/info (bearer) → {pid, startedAt, restarts, credential: <where the key came from>}.
// For the front-door tests (no auth): GET /__standin/stream?n=N&ms=M → N server-sent events M ms
// apart, each `data: {"i":…,"pid":…}`; POST /__standin/echo → the request body streamed back;
// GET /__standin/headers → {pid, headers} as received;
// a WebSocket upgrade on any path → a socket that sends `{"hello":<pid>}` and answers every
// message with `{"pid":<pid>,"echo":<message>}`.
//
// Signals: SIGUSR1 → in-process restart: server closed, config re-read, config refs re-resolved
// from the SAME env, server reopened (same PID, old env — the seed's dead end). SIGTERM/SIGINT →
// close and exit 0 within 3 s.
// Test knobs: STANDIN_IGNORE_SIGTERM=1 (log and ignore SIGTERM), STANDIN_EXIT_AFTER_MS=N (crash
// with exit 1 after N ms), STANDIN_FAIL_START=1 (exit 1 at start), STANDIN_READY_DELAY_MS=N,
// STANDIN_RESTART_MS=N (not-listening gap of a SIGUSR1 restart, default 100).
// It never prints a key or the gateway token: log lines carry only shapes and hashes.
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { WebSocketServer } from 'ws';
import * as z from 'zod';
import { type ExitInfo, spawnTracked, type Tracked } from './processes.ts';

const PROVIDER = 'kilocode';
const PROFILE_ID = 'kilocode:default';
const ENV_VAR = 'KILOCODE_API_KEY';
const DEFAULT_BASE_URL = 'https://api.kilo.ai/api/gateway/';
const MAX_BODY = 1024 * 1024;
const MAX_SECRET_FILE = 1024 * 1024;
const UPSTREAM_TIMEOUT_MS = 30_000;

// ---------------------------------------------------------------------------------------------
// Shapes (zod at the boundary: config, stores, request bodies)

const refSchema = z.object({
  source: z.enum(['env', 'file', 'exec']),
  provider: z.string().default('default'),
  id: z.string().min(1),
});
type SecretRef = z.infer<typeof refSchema>;

const secretInputSchema = z.union([z.string(), refSchema]);

const secretProviderSchema = z
  .object({
    source: z.enum(['env', 'file', 'exec']),
    path: z.string().optional(),
    mode: z.enum(['singleValue', 'json']).optional(),
  })
  .passthrough();

const configSchema = z
  .object({
    gateway: z
      .object({
        port: z.number().int().optional(),
        auth: z.object({ token: secretInputSchema.optional() }).passthrough().optional(),
      })
      .passthrough()
      .optional(),
    models: z
      .object({
        providers: z
          .record(
            z.string(),
            z.object({ baseUrl: z.string().optional(), apiKey: secretInputSchema.optional() }).passthrough(),
          )
          .optional(),
      })
      .passthrough()
      .optional(),
    secrets: z
      .object({ providers: z.record(z.string(), secretProviderSchema).optional() })
      .passthrough()
      .optional(),
  })
  .passthrough();
export type StandInConfig = z.infer<typeof configSchema>;

const credentialSchema = z
  .object({
    type: z.string().optional(),
    provider: z.string().optional(),
    key: z.string().optional(),
    api_key: z.string().optional(),
    keyRef: refSchema.optional(),
  })
  .passthrough();
type Credential = z.infer<typeof credentialSchema>;

const versionedStoreSchema = z.object({ profiles: z.record(z.string(), z.unknown()) }).passthrough();

const chatBodySchema = z
  .object({ model: z.string().optional(), messages: z.array(z.unknown()).optional() })
  .passthrough();

// ---------------------------------------------------------------------------------------------
// Pure-ish helpers

/** `"${VAR}"` / `"$VAR"` shorthands become env refs; any other string is a literal. */
function asRef(input: z.infer<typeof secretInputSchema> | undefined): SecretRef | string | undefined {
  if (input === undefined || typeof input !== 'string') return input;
  const m = /^\$\{([A-Z][A-Z0-9_]{0,127})\}$/.exec(input) ?? /^\$([A-Z][A-Z0-9_]{0,127})$/.exec(input);
  return m?.[1] ? { source: 'env', provider: 'default', id: m[1] } : input;
}

function hash(value: string): string {
  return createHash('sha256').update(value).digest('hex').slice(0, 12);
}

class ResolveError extends Error {
  override name = 'ResolveError';
}

export interface StandInPaths {
  stateDir: string;
  configPath: string;
  sqliteStore: string;
  jsonStore: string;
}

export function standInPaths(env: NodeJS.ProcessEnv): StandInPaths {
  const stateDir = env.OPENCLAW_STATE_DIR ?? join(env.OPENCLAW_HOME ?? env.HOME ?? homedir(), '.openclaw');
  const agentDir = join(stateDir, 'agents', 'main', 'agent');
  return {
    stateDir,
    configPath: env.OPENCLAW_CONFIG_PATH ?? join(stateDir, 'openclaw.json'),
    sqliteStore: join(agentDir, 'openclaw-agent.sqlite'),
    jsonStore: join(agentDir, 'auth-profiles.json'),
  };
}

function loadConfig(path: string): StandInConfig {
  if (!existsSync(path)) return {};
  const raw: unknown = JSON.parse(readFileSync(path, 'utf8'));
  return configSchema.parse(raw);
}

/** Reads a file-ref secret with OpenClaw's checks; throws ResolveError with a key-free message. */
function readFileSecret(config: StandInConfig, ref: SecretRef): string {
  const provider = config.secrets?.providers?.[ref.provider];
  if (provider?.source !== 'file' || !provider.path) {
    throw new ResolveError(`secrets.providers.${ref.provider} is not a file provider`);
  }
  const path = provider.path;
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(path);
  } catch {
    throw new ResolveError(`secrets.providers.${ref.provider}.path does not exist`);
  }
  if (!st.isFile()) throw new ResolveError(`secrets.providers.${ref.provider}.path is not a regular file`);
  if ((st.mode & 0o077) !== 0) {
    throw new ResolveError(`secrets.providers.${ref.provider}.path permissions are too open`);
  }
  if (st.nlink !== 1) throw new ResolveError(`secrets.providers.${ref.provider}.path has more than one link`);
  if (typeof process.getuid === 'function' && st.uid !== process.getuid()) {
    throw new ResolveError(`secrets.providers.${ref.provider}.path is not owned by the gateway user`);
  }
  if (st.size > MAX_SECRET_FILE)
    throw new ResolveError(`secrets.providers.${ref.provider}.path is too large`);
  const content = readFileSync(path, 'utf8');
  let value: string;
  if ((provider.mode ?? 'singleValue') === 'singleValue') {
    if (ref.id !== 'value') throw new ResolveError(`file ref id must be "value" in singleValue mode`);
    value = content.replace(/\r?\n$/, '');
  } else {
    value = jsonPointer(content, ref.id, ref.provider);
  }
  if (value === '') throw new ResolveError(`secrets.providers.${ref.provider}.path is empty`);
  return value;
}

function jsonPointer(content: string, pointer: string, provider: string): string {
  let node: unknown;
  try {
    node = JSON.parse(content);
  } catch {
    throw new ResolveError(`secrets.providers.${provider}.path is not valid JSON`);
  }
  if (!pointer.startsWith('/')) throw new ResolveError('file ref id must be an absolute JSON pointer');
  for (const raw of pointer.slice(1).split('/')) {
    const part = raw.replaceAll('~1', '/').replaceAll('~0', '~');
    if (node && typeof node === 'object' && part in node) {
      node = (node as Record<string, unknown>)[part];
    } else {
      throw new ResolveError(`file ref pointer does not resolve`);
    }
  }
  if (typeof node !== 'string') throw new ResolveError('file ref pointer does not name a string');
  return node;
}

/** Resolves a ref against `env` (this process's env captured at spawn) and the config. */
function resolveRef(config: StandInConfig, ref: SecretRef, env: NodeJS.ProcessEnv): string {
  if (ref.source === 'env') {
    const v = env[ref.id];
    if (!v) throw new ResolveError(`Environment variable "${ref.id}" is missing or empty.`);
    return v;
  }
  if (ref.source === 'file') return readFileSecret(config, ref);
  throw new ResolveError('exec refs are not supported by the stand-in gateway');
}

/** The `kilocode:default` credential from the stores, or null when no store has it. */
export function readProfile(
  paths: StandInPaths,
): { store: 'sqlite' | 'json'; credential: Credential } | null {
  if (existsSync(paths.sqliteStore)) {
    const db = new DatabaseSync(paths.sqliteStore, { readOnly: true });
    try {
      db.exec('PRAGMA busy_timeout = 2000');
      const hasTable = db
        .prepare("select name from sqlite_master where type='table' and name='auth_profile_store'")
        .get();
      const row = hasTable
        ? z
            .object({ store_json: z.string() })
            .optional()
            .parse(db.prepare("select store_json from auth_profile_store where store_key='primary'").get())
        : undefined;
      if (row) {
        const store = versionedStoreSchema.parse(JSON.parse(row.store_json));
        const cred = store.profiles[PROFILE_ID];
        return cred === undefined ? null : { store: 'sqlite', credential: credentialSchema.parse(cred) };
      }
    } finally {
      db.close();
    }
  }
  if (existsSync(paths.jsonStore)) {
    const raw: unknown = JSON.parse(readFileSync(paths.jsonStore, 'utf8'));
    const versioned = versionedStoreSchema.safeParse(raw);
    if (versioned.success) {
      const cred = versioned.data.profiles[PROFILE_ID];
      return cred === undefined ? null : { store: 'json', credential: credentialSchema.parse(cred) };
    }
    // The flat pre-versioning layout: provider → credential.
    const flat = z.record(z.string(), z.unknown()).parse(raw);
    const cred = flat[PROVIDER] ?? flat[PROFILE_ID];
    return cred === undefined ? null : { store: 'json', credential: credentialSchema.parse(cred) };
  }
  return null;
}

export type CredentialSource =
  | 'config-literal'
  | 'config-ref'
  | 'profile-plaintext'
  | 'profile-env-ref'
  | 'profile-file-ref'
  | 'env'
  | 'none';

interface State {
  config: StandInConfig;
  /** Config-level apiKey resolved at the last activation (start, SIGUSR1, secrets reload). */
  configKeySnapshot: string | null;
  configKeyIsRef: boolean;
}

/** Activation: resolve every active config-level ref now; throws ResolveError when one fails. */
function activate(paths: StandInPaths, env: NodeJS.ProcessEnv): State {
  const config = loadConfig(paths.configPath);
  const input = asRef(config.models?.providers?.[PROVIDER]?.apiKey);
  let snapshot: string | null = null;
  if (typeof input === 'string') snapshot = input;
  else if (input) snapshot = resolveRef(config, input, env);
  return { config, configKeySnapshot: snapshot, configKeyIsRef: typeof input === 'object' };
}

/** Start-up check of the profile's ref, as the gateway's fail-fast secrets preflight does. */
function preflightProfile(paths: StandInPaths, config: StandInConfig, env: NodeJS.ProcessEnv): void {
  const profile = readProfile(paths);
  if (profile?.credential.keyRef) resolveRef(config, profile.credential.keyRef, env);
}

/** Which key a request uses now. Throws ResolveError when a profile ref cannot be resolved. */
function currentKey(
  state: State,
  paths: StandInPaths,
  env: NodeJS.ProcessEnv,
): { key: string | null; source: CredentialSource } {
  if (state.configKeySnapshot !== null) {
    return { key: state.configKeySnapshot, source: state.configKeyIsRef ? 'config-ref' : 'config-literal' };
  }
  const profile = readProfile(paths);
  if (profile) {
    const c = profile.credential;
    if (c.keyRef) {
      const key = resolveRef(state.config, c.keyRef, env);
      return { key, source: c.keyRef.source === 'file' ? 'profile-file-ref' : 'profile-env-ref' };
    }
    const plain = c.key ?? c.api_key;
    if (plain) return { key: plain, source: 'profile-plaintext' };
  }
  const fromEnv = env[ENV_VAR];
  return fromEnv ? { key: fromEnv, source: 'env' } : { key: null, source: 'none' };
}

// ---------------------------------------------------------------------------------------------
// HTTP

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk));
    size += b.length;
    if (size > MAX_BODY) return null;
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

const sseChunkSchema = z
  .object({
    choices: z
      .array(
        z
          .object({ delta: z.object({ content: z.string().nullish() }).passthrough().optional() })
          .passthrough(),
      )
      .optional(),
  })
  .passthrough();
const completionSchema = z
  .object({
    choices: z.array(
      z.object({ message: z.object({ content: z.string().nullish() }).passthrough() }).passthrough(),
    ),
  })
  .passthrough();

/** Content of an upstream answer, SSE chunks or one JSON completion. */
function upstreamContent(contentType: string, text: string): string {
  if (contentType.includes('text/event-stream')) {
    let out = '';
    for (const line of text.split('\n')) {
      const m = /^data:\s*(.*)$/.exec(line.trim());
      if (!m?.[1] || m[1] === '[DONE]') continue;
      const chunk = sseChunkSchema.safeParse(JSON.parse(m[1]));
      if (chunk.success) for (const c of chunk.data.choices ?? []) out += c.delta?.content ?? '';
    }
    return out;
  }
  const parsed = completionSchema.safeParse(JSON.parse(text));
  return parsed.success ? (parsed.data.choices[0]?.message.content ?? '') : '';
}

function log(event: string, fields: Record<string, unknown> = {}): void {
  process.stdout.write(
    `${JSON.stringify({ time: new Date().toISOString(), component: 'stand-in', event, ...fields })}\n`,
  );
}

export async function runStandIn(argv: string[], env: NodeJS.ProcessEnv = process.env): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      port: { type: 'string' },
      bind: { type: 'string' },
      token: { type: 'string' },
      force: { type: 'boolean' },
      verbose: { type: 'boolean' },
    },
    strict: true,
    allowPositionals: true,
  });
  const extra = positionals.filter((p, i) => !((i === 0 && p === 'gateway') || (i === 1 && p === 'run')));
  if (extra.length > 0) {
    process.stderr.write(`stand-in: unexpected arguments: ${extra.join(' ')}\n`);
    process.exit(2);
  }
  // The env is captured once, at spawn, exactly like the real gateway's process.env.
  const spawnEnv: NodeJS.ProcessEnv = { ...env };
  const paths = standInPaths(spawnEnv);

  if (spawnEnv.STANDIN_FAIL_START === '1') {
    log('start_failed', { reason: 'STANDIN_FAIL_START' });
    process.stderr.write('Gateway failed to start: STANDIN_FAIL_START=1\n');
    process.exit(1);
  }

  let state: State;
  try {
    state = activate(paths, spawnEnv);
    preflightProfile(paths, state.config, spawnEnv);
  } catch (err) {
    const msg = err instanceof ResolveError ? err.message : 'invalid configuration or profile store';
    process.stderr.write(
      `Gateway failed to start: Startup failed: required secrets are unavailable. ${msg}\n`,
    );
    process.exit(1);
  }

  const portText =
    values.port ?? spawnEnv.OPENCLAW_GATEWAY_PORT ?? String(state.config.gateway?.port ?? 18789);
  let port = Number(portText);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    process.stderr.write('stand-in: port must be an integer 0-65535\n');
    process.exit(2);
  }
  let token: string | undefined = values.token;
  if (!token) {
    const configured = asRef(state.config.gateway?.auth?.token);
    try {
      if (typeof configured === 'string') token = configured;
      else if (configured) token = resolveRef(state.config, configured, spawnEnv);
    } catch (err) {
      process.stderr.write(`Gateway failed to start: ${err instanceof Error ? err.message : 'token'}\n`);
      process.exit(1);
    }
  }
  token ??= spawnEnv.OPENCLAW_GATEWAY_TOKEN;
  if (!token) {
    process.stderr.write('Gateway failed to start: no gateway token (OPENCLAW_GATEWAY_TOKEN)\n');
    process.exit(1);
  }
  const gatewayToken = token;

  const readyDelayMs = Number(spawnEnv.STANDIN_READY_DELAY_MS ?? 150) || 0;
  const restartGapMs = Number(spawnEnv.STANDIN_RESTART_MS ?? 100) || 0;
  const startedAt = new Date().toISOString();
  let readyAt = Number.POSITIVE_INFINITY;
  let restarts = 0;
  let lastSource: CredentialSource = 'none';

  const authorized = (req: IncomingMessage) => {
    const m = /^Bearer\s+(.*)$/i.exec(req.headers.authorization ?? '');
    return m?.[1] === gatewayToken;
  };

  const chat = async (req: IncomingMessage, res: ServerResponse) => {
    const text = await readBody(req);
    if (text === null)
      return send(res, 413, { error: { message: 'Request body too large', type: 'invalid_request_error' } });
    let body: z.infer<typeof chatBodySchema>;
    try {
      body = chatBodySchema.parse(JSON.parse(text));
    } catch {
      return send(res, 400, { error: { message: 'Invalid JSON body', type: 'invalid_request_error' } });
    }
    let resolved: ReturnType<typeof currentKey>;
    try {
      resolved = currentKey(state, paths, spawnEnv);
    } catch (err) {
      log('credential_unavailable', {
        reason: err instanceof ResolveError ? err.message : 'store unreadable',
      });
      return send(res, 401, {
        error: { message: `No credentials found for profile "${PROFILE_ID}".`, type: 'authentication_error' },
      });
    }
    lastSource = resolved.source;
    if (resolved.key === null) {
      return send(res, 401, {
        error: { message: `No API key found for provider "${PROVIDER}".`, type: 'authentication_error' },
      });
    }
    const baseUrl = state.config.models?.providers?.[PROVIDER]?.baseUrl ?? DEFAULT_BASE_URL;
    const url = `${baseUrl.endsWith('/') ? baseUrl : `${baseUrl}/`}chat/completions`;
    let upstream: Response;
    let upstreamText: string;
    try {
      upstream = await fetch(url, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${resolved.key}`,
          'content-type': 'application/json',
          'x-kilocode-feature': 'openclaw',
        },
        body: JSON.stringify({ model: 'kilo/auto', messages: body.messages ?? [], stream: true }),
        signal: AbortSignal.timeout(UPSTREAM_TIMEOUT_MS),
      });
      upstreamText = await upstream.text();
    } catch {
      log('upstream_unreachable', { source: resolved.source });
      return send(res, 502, { error: { message: 'Upstream request failed', type: 'api_error' } });
    }
    log('upstream_response', {
      status: upstream.status,
      source: resolved.source,
      keyHash: hash(resolved.key),
    });
    if (upstream.status === 401) {
      return send(res, 401, { error: { message: '401 Invalid API key', type: 'authentication_error' } });
    }
    if (!upstream.ok) {
      return send(res, 502, { error: { message: `Upstream error ${upstream.status}`, type: 'api_error' } });
    }
    let content: string;
    try {
      content = upstreamContent(upstream.headers.get('content-type') ?? '', upstreamText);
    } catch {
      return send(res, 502, { error: { message: 'Upstream answer unreadable', type: 'api_error' } });
    }
    return send(res, 200, {
      id: `chatcmpl-standin-${Date.now().toString(36)}`,
      object: 'chat.completion',
      created: Math.floor(Date.now() / 1000),
      model: body.model ?? 'openclaw',
      choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const method = req.method ?? 'GET';
    if (method === 'GET' && (path === '/healthz' || path === '/health')) {
      return send(res, 200, { ok: true, status: 'live' });
    }
    if (method === 'GET' && path === '/readyz') {
      return Date.now() >= readyAt
        ? send(res, 200, { ready: true, failing: [] })
        : send(res, 503, { ready: false, failing: ['startup'] });
    }
    if (method === 'GET' && path === '/__standin/stream') {
      const q = new URL(req.url ?? '/', 'http://127.0.0.1').searchParams;
      const n = Math.min(10_000, Number(q.get('n') ?? 5));
      const ms = Math.min(60_000, Number(q.get('ms') ?? 50));
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-store' });
      for (let i = 0; i < n && !res.destroyed; i++) {
        res.write(`data: ${JSON.stringify({ i, pid: process.pid })}\n\n`);
        await new Promise((r) => setTimeout(r, ms));
      }
      res.end('data: [DONE]\n\n');
      return;
    }
    if (method === 'GET' && path === '/__standin/headers') {
      return send(res, 200, { pid: process.pid, headers: req.headers });
    }
    if (method === 'POST' && path === '/__standin/echo') {
      res.writeHead(200, { 'content-type': req.headers['content-type'] ?? 'application/octet-stream' });
      req.pipe(res);
      return;
    }
    if (!authorized(req)) {
      return send(res, 401, { error: { message: 'Unauthorized', type: 'unauthorized' } });
    }
    if (method === 'POST' && path === '/v1/chat/completions') return chat(req, res);
    if (method === 'POST' && path === '/__standin/secrets-reload') {
      try {
        state = activate(paths, spawnEnv);
        log('secrets_reloaded');
        return send(res, 200, { ok: true, warningCount: 0 });
      } catch (err) {
        // Atomic swap: on failure the last good snapshot stays.
        log('secrets_reload_degraded', { reason: err instanceof ResolveError ? err.message : 'config' });
        return send(res, 500, { ok: false, error: 'SECRETS_RELOADER_DEGRADED' });
      }
    }
    if (method === 'GET' && path === '/__standin/info') {
      return send(res, 200, { pid: process.pid, startedAt, restarts, credential: lastSource });
    }
    return send(res, 404, { error: { message: 'Not found', type: 'not_found' } });
  };

  let server: Server;
  const wss = new WebSocketServer({ noServer: true });
  wss.on('connection', (ws) => {
    ws.send(JSON.stringify({ hello: process.pid }));
    ws.on('message', (data) => ws.send(JSON.stringify({ pid: process.pid, echo: String(data) })));
    ws.on('error', () => {});
  });
  const listen = () =>
    new Promise<void>((ok, fail) => {
      server = createServer((req, res) => {
        handle(req, res).catch(() => {
          if (!res.headersSent) send(res, 500, { error: { message: 'stand-in failed', type: 'api_error' } });
          else res.destroy();
        });
      });
      server.on('upgrade', (req, socket, head) => {
        wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
      });
      server.once('error', fail);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', fail);
        readyAt = Date.now() + readyDelayMs;
        ok();
      });
    });
  const closeServer = () =>
    new Promise<void>((ok) => {
      server.close(() => ok());
      server.closeAllConnections();
    });

  try {
    await listen();
  } catch {
    process.stderr.write(`Gateway failed to start: cannot listen on 127.0.0.1:${port}\n`);
    process.exit(1);
  }
  const addr = server!.address();
  const actualPort = addr && typeof addr === 'object' ? addr.port : port;
  // An in-process restart must come back on the same port, also when 0 was asked for.
  port = actualPort;
  log('listening', { port: actualPort, pid: process.pid, readyDelayMs });
  setTimeout(() => log('ready', { port: actualPort }), readyDelayMs).unref();

  let restarting: Promise<void> | null = null;
  process.on('SIGUSR1', () => {
    if (restarting) return;
    // In-process restart: the HTTP server goes away and comes back, config is re-read, and refs
    // re-resolve against the same (spawn-time) env — so an env key never changes this way.
    restarting = (async () => {
      log('restart', { mode: 'in-process restart (OPENCLAW_NO_RESPAWN)' });
      readyAt = Number.POSITIVE_INFINITY;
      await closeServer();
      try {
        state = activate(paths, spawnEnv);
      } catch (err) {
        log('restart_reload_degraded', { reason: err instanceof ResolveError ? err.message : 'config' });
      }
      await new Promise((r) => setTimeout(r, restartGapMs));
      await listen();
      restarts++;
      log('restarted', { restarts });
    })()
      .catch(() => {
        process.stderr.write('stand-in: in-process restart failed\n');
        process.exit(1);
      })
      .finally(() => {
        restarting = null;
      });
  });

  let stopping = false;
  const shutdown = (signal: string) => {
    if (spawnEnv.STANDIN_IGNORE_SIGTERM === '1' && signal === 'SIGTERM') {
      log('signal_ignored', { signal });
      return;
    }
    if (stopping) return;
    stopping = true;
    log('shutdown', { signal });
    setTimeout(() => process.exit(0), 2_000).unref();
    for (const ws of wss.clients) ws.close(1001, 'going away');
    void closeServer().then(() => {
      log('shutdown_complete');
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));

  const exitAfter = Number(spawnEnv.STANDIN_EXIT_AFTER_MS ?? 0);
  if (exitAfter > 0) {
    setTimeout(() => {
      log('crash', { reason: 'STANDIN_EXIT_AFTER_MS' });
      process.exit(1);
    }, exitAfter);
  }
}

/** Absolute path of this program, for `spawn(process.execPath, [standInPath(), …])`. */
export function standInPath(): string {
  return fileURLToPath(import.meta.url);
}

// ---------------------------------------------------------------------------------------------
// Helpers for tests: seed a state dir the way OpenClaw 2026.6.8 lays it out, spawn the stand-in.

export type SeedProfile =
  | { key: string }
  | { apiKeyAlias: string }
  | { keyRef: { source: 'env' | 'file'; provider: string; id: string } }
  | null;

export interface SeedOptions {
  baseUrl: string;
  /** `kilocode:default` credential; null writes no store at all. */
  profile: SeedProfile;
  /** Where the profile goes (default sqlite, the 2026.6.x layout). */
  store?: 'sqlite' | 'json' | 'json-flat';
  /** `secrets.providers` entries, e.g. `{ kilofile: { source: 'file', path, mode: 'singleValue' } }`. */
  secretsProviders?: Record<string, { source: 'env' | 'file'; path?: string; mode?: 'singleValue' | 'json' }>;
  /** `models.providers.kilocode.apiKey` (literal or ref); omitted by default, as onboarding does. */
  configApiKey?: string | { source: 'env' | 'file'; provider: string; id: string };
  gatewayPort?: number;
}

/** The credential object OpenClaw stores for a seed profile. */
function seedCredential(profile: Exclude<SeedProfile, null>): Record<string, unknown> {
  const base = { type: 'api_key', provider: PROVIDER };
  if ('key' in profile) return { ...base, key: profile.key };
  if ('apiKeyAlias' in profile) return { ...base, api_key: profile.apiKeyAlias };
  return { ...base, keyRef: profile.keyRef };
}

/**
 * Writes `openclaw.json` (gateway token as an env ref, chat endpoint enabled, kilocode pointed at
 * `baseUrl`) and, unless `profile` is null, the auth profile store, with OpenClaw's modes (0700
 * dirs, 0600 files). Works for the stand-in and is shaped like the real gateway's files.
 */
export function seedStandInState(stateDir: string, opts: SeedOptions): StandInPaths {
  const paths = standInPaths({ OPENCLAW_STATE_DIR: stateDir });
  const agentDir = join(stateDir, 'agents', 'main', 'agent');
  mkdirSync(agentDir, { recursive: true, mode: 0o700 });
  const provider: Record<string, unknown> = {
    baseUrl: opts.baseUrl,
    api: 'openai-completions',
    models: [{ id: 'kilo/auto', name: 'Kilo Auto', contextWindow: 1000000, maxTokens: 128000 }],
  };
  if (opts.configApiKey !== undefined) provider.apiKey = opts.configApiKey;
  const config: Record<string, unknown> = {
    agents: { defaults: { model: { primary: 'kilocode/kilo/auto' } } },
    gateway: {
      mode: 'local',
      port: opts.gatewayPort ?? 18789,
      bind: 'loopback',
      auth: { mode: 'token', token: { source: 'env', provider: 'default', id: 'OPENCLAW_GATEWAY_TOKEN' } },
      http: { endpoints: { chatCompletions: { enabled: true } } },
    },
    plugins: { entries: { kilocode: { enabled: true } } },
    auth: { profiles: { [PROFILE_ID]: { provider: PROVIDER, mode: 'api_key' } } },
    models: { mode: 'merge', providers: { [PROVIDER]: provider } },
    update: { checkOnStart: false },
  };
  if (opts.secretsProviders) config.secrets = { providers: opts.secretsProviders };
  writeFileSync(paths.configPath, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });

  if (opts.profile === null) return paths;
  const credential = seedCredential(opts.profile);
  const store = opts.store ?? 'sqlite';
  if (store === 'sqlite') {
    const db = new DatabaseSync(paths.sqliteStore);
    try {
      db.exec('PRAGMA journal_mode = WAL');
      db.exec(
        'CREATE TABLE IF NOT EXISTS auth_profile_store (store_key TEXT NOT NULL PRIMARY KEY, store_json TEXT NOT NULL, updated_at INTEGER NOT NULL)',
      );
      db.prepare(
        "INSERT INTO auth_profile_store (store_key, store_json, updated_at) VALUES ('primary', ?, ?) " +
          'ON CONFLICT(store_key) DO UPDATE SET store_json = excluded.store_json, updated_at = excluded.updated_at',
      ).run(JSON.stringify({ version: 1, profiles: { [PROFILE_ID]: credential } }), Date.now());
    } finally {
      db.close();
    }
    chmodSync(paths.sqliteStore, 0o600);
  } else {
    const body =
      store === 'json' ? { version: 1, profiles: { [PROFILE_ID]: credential } } : { [PROVIDER]: credential };
    writeFileSync(paths.jsonStore, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
  }
  return paths;
}

export interface StandInHandle {
  proc: Tracked;
  pid: number;
  port: number;
  stop(): Promise<ExitInfo>;
}

/**
 * Spawns the stand-in with exactly `env` (plus PATH), on `port`, and waits until `/readyz` is 200
 * (or the process exits, or `timeoutMs` passes).
 */
export async function startStandIn(opts: {
  /** 0 lets the stand-in pick a free port (read back from its `listening` line). */
  port: number;
  env: NodeJS.ProcessEnv;
  timeoutMs?: number;
}): Promise<StandInHandle> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const proc = spawnTracked(
    process.execPath,
    [standInPath(), 'gateway', 'run', '--port', String(opts.port)],
    {
      name: 'stand-in',
      env: { PATH: process.env.PATH, ...opts.env },
    },
  );
  let port = opts.port;
  if (port === 0) {
    const line = await proc.waitForLine(/"event":"listening"/, timeoutMs);
    port = z.object({ port: z.number() }).parse(JSON.parse(line)).port;
  }
  await waitForReady(port, proc, timeoutMs);
  return { proc, pid: proc.pid, port, stop: () => proc.stop('SIGTERM', 5_000) };
}

/** Polls `GET /readyz` until 200; rejects when `proc` exits first or the timeout passes. */
export async function waitForReady(port: number, proc: Tracked | null, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const exit = proc?.exitInfo();
    if (exit) {
      throw new Error(`gateway exited (code ${exit.code}, signal ${exit.signal}) before /readyz was 200`);
    }
    try {
      const r = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(1_000) });
      await r.body?.cancel();
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`/readyz on port ${port} not 200 within ${timeoutMs} ms`);
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  runStandIn(process.argv.slice(2)).catch((err: unknown) => {
    // Only the error's class: messages of parse errors can quote the input (a store, a key).
    process.stderr.write(`stand-in: failed (${err instanceof Error ? err.name : 'unknown'})\n`);
    process.exit(1);
  });
}
