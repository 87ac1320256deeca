// Owns which proxy, if any, the HTTP/1.1 client (src/adapters/http1.ts) goes through to an
// origin, read from HTTP_PROXY / HTTPS_PROXY / NO_PROXY as Node 24's own http and https agents
// read them when NODE_USE_ENV_PROXY=1 or --use-env-proxy is set (Node's docs, http, "Built-in
// Proxy Support"): the lower-case variable wins over the upper-case one, only `http://` and
// `https://` proxy URLs are used (any other is ignored), credentials in the URL become a Basic
// `Proxy-Authorization`, and NO_PROXY entries match as Node matches them (below). Pure: no I/O.

/** The variables read; any object with them will do (`process.env`, or a test's own). */
export type ProxyEnv = Readonly<Record<string, string | undefined>>;

export interface HttpProxy {
  protocol: 'http:' | 'https:';
  /** Host name or IP address, IPv6 without brackets. */
  hostname: string;
  port: number;
  /** `host:port`, what errors name: never the credentials. */
  name: string;
  /** The `proxy-authorization` header line (CRLF-terminated) from the URL's credentials, or ''. */
  authLine: string;
}

/** A proxy variable that is set but unusable: every request it would carry fails with this. */
export interface ProxyConfigError {
  invalid: string;
}

export interface ProxySettings {
  /** For http origins (HTTP_PROXY), https origins (HTTPS_PROXY); null when unset or ignored. */
  'http:': HttpProxy | ProxyConfigError | null;
  'https:': HttpProxy | ProxyConfigError | null;
  /** NO_PROXY entries, trimmed and lower-cased. */
  noProxy: string[];
}

/**
 * Whether Node's switch is on for this process: the last `--use-env-proxy` /
 * `--no-use-env-proxy` in NODE_OPTIONS then the command line, else NODE_USE_ENV_PROXY=1 (the
 * flag wins over the variable, as in Node).
 */
export function envProxySwitch(env: ProxyEnv, execArgv: readonly string[]): boolean {
  let flag: boolean | undefined;
  for (const arg of [...(env.NODE_OPTIONS?.split(/\s+/) ?? []), ...execArgv]) {
    if (arg === '--use-env-proxy') flag = true;
    else if (arg === '--no-use-env-proxy') flag = false;
  }
  return flag ?? env.NODE_USE_ENV_PROXY === '1';
}

/** The proxies `env` names, or null when it names none (the common case: nothing to do per call). */
export function proxySettings(env: ProxyEnv): ProxySettings | null {
  const http = proxyOf(env, 'http_proxy', 'HTTP_PROXY');
  const https = proxyOf(env, 'https_proxy', 'HTTPS_PROXY');
  if (http === null && https === null) return null;
  const noProxy = env.no_proxy || env.NO_PROXY;
  return {
    'http:': http,
    'https:': https,
    noProxy: noProxy ? noProxy.split(',').map((e) => e.trim().toLowerCase()) : [],
  };
}

function proxyOf(env: ProxyEnv, lower: string, upper: string): HttpProxy | ProxyConfigError | null {
  const name = env[lower] ? lower : upper;
  const value = env[name];
  if (!value) return null;
  // The message names the variable, never its value: the URL may hold a password.
  const invalid = { invalid: `invalid proxy URL in ${name}` };
  if (/[\r\n]/.test(value)) return invalid;
  // Other schemes (socks5://…) are left to whoever set them, as Node leaves them.
  if (!value.startsWith('http://') && !value.startsWith('https://')) return null;
  let url: URL;
  let user: string;
  let password: string;
  try {
    url = new URL(value);
    user = decodeURIComponent(url.username);
    password = decodeURIComponent(url.password);
  } catch {
    return invalid;
  }
  if (url.hostname === '') return invalid;
  const protocol = url.protocol === 'https:' ? 'https:' : 'http:';
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  const port = url.port ? Number(url.port) : protocol === 'https:' ? 443 : 80;
  const authLine =
    user || password
      ? `proxy-authorization: Basic ${Buffer.from(`${user}:${password}`).toString('base64')}\r\n`
      : '';
  return { protocol, hostname, port, name: `${url.hostname}:${port}`, authLine };
}

/**
 * The proxy for an origin: null to connect directly (no proxy for its protocol, or NO_PROXY
 * names it), or the variable's error when it is unusable.
 */
export function proxyFor(
  settings: ProxySettings,
  protocol: 'http:' | 'https:',
  hostname: string,
  port: number,
): HttpProxy | ProxyConfigError | null {
  const proxy = settings[protocol];
  if (proxy === null || 'invalid' in proxy) return proxy;
  return bypassed(settings.noProxy, hostname, port) ? null : proxy;
}

/**
 * Whether a NO_PROXY list names the origin, as Node matches it: `*` is every host; `host` or
 * `host:port` the host itself (no subdomains, port as written); `.example.com` the domain and
 * every name under it; `*.example.com` only names under it; `a.b.c.d-e.f.g.h` an IPv4 range.
 * Loopback is not special: `localhost` and 127.0.0.1 go through the proxy unless listed. Names
 * are compared as written (a name never matches its address), without brackets for IPv6.
 */
export function bypassed(noProxy: readonly string[], hostname: string, port: number): boolean {
  const host = hostname.toLowerCase();
  const hostPort = `${host}:${port}`;
  for (const entry of noProxy) {
    if (entry === '*' || entry === host || entry === hostPort) return true;
    if (entry.startsWith('.')) {
      const domain = entry.slice(1);
      if (host === domain || host.endsWith(entry)) return true;
    } else if (entry.startsWith('*.')) {
      if (host.endsWith(entry.slice(1))) return true;
    } else if (entry.includes('-')) {
      const ip = ipv4(host);
      const [from, to] = entry.split('-').map((s) => ipv4(s.trim()));
      if (ip !== null && from != null && to != null && ip >= from && ip <= to) return true;
    }
  }
  return false;
}

/** An IPv4 address in dotted decimal as a number, or null when it is not one. */
function ipv4(s: string): number | null {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s);
  if (!m) return null;
  let n = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255 || (m[i]!.length > 1 && m[i]!.startsWith('0'))) return null;
    n = n * 256 + octet;
  }
  return n;
}
