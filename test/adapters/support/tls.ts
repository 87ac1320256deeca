// Owns the TLS side of the HTTP/1.1 client's tests: throwaway self-signed certificates (test-only
// keys, made by openssl in a temp dir removed at once, valid one day), trusting one for a block,
// and an HTTPS server on 127.0.0.1 that records whether each connection resumed a TLS session.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';

export interface TestCert {
  cert: string;
  key: string;
}

/** A self-signed certificate (its own CA) for `localhost` and 127.0.0.1. Test-only key. */
export function selfSignedCert(): TestCert {
  const dir = mkdtempSync(join(tmpdir(), 'keyroll-http1-tls-'));
  try {
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-days',
        '1',
        '-nodes',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=DNS:localhost,IP:127.0.0.1',
      ],
      { stdio: 'ignore' },
    );
    return {
      cert: readFileSync(join(dir, 'cert.pem'), 'utf8'),
      key: readFileSync(join(dir, 'key.pem'), 'utf8'),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Runs `fn` with `certs` trusted beside the default CAs, then trusts only the defaults again. */
export async function withTrusted<T>(certs: string[], fn: () => Promise<T>): Promise<T> {
  const before = tls.getCACertificates('default');
  tls.setDefaultCACertificates([...before, ...certs]);
  try {
    return await fn();
  } finally {
    tls.setDefaultCACertificates(before);
  }
}

export interface TlsServer {
  port: number;
  /** Per TLS connection, in order: whether it resumed a session. */
  resumed: boolean[];
  /** The `host` header of each request. */
  hosts: string[];
  close(): Promise<void>;
}

/** An HTTPS server on 127.0.0.1 answering `{"tls":true}` with keep-alive. */
export async function tlsServer(cert: TestCert): Promise<TlsServer> {
  const resumed: boolean[] = [];
  const hosts: string[] = [];
  const server: Server = createServer(cert, (req, res) => {
    hosts.push(req.headers.host ?? '');
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end('{"tls":true}');
  });
  server.on('secureConnection', (socket: tls.TLSSocket) => resumed.push(socket.isSessionReused()));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as { port: number }).port,
    resumed,
    hosts,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}
