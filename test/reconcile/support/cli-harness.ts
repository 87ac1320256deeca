// Runs the reconcile/diff commands in-process against fake controllers, capturing every byte.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { stringify } from 'yaml';
import { main } from '../../../src/cli/main.ts';
import type { Io } from '../../../src/cli/usage.ts';
import type { FakeController } from './fake-controller.ts';

export interface Captured {
  code: number;
  stdout: string;
  stderr: string;
}

export class Workspace {
  readonly dir = mkdtempSync(join(tmpdir(), 'keyroll-reconcile-'));
  readonly env: NodeJS.ProcessEnv = { KEYROLL_LOG_LEVEL: 'debug' };
  /** Every byte any command printed in this workspace, for the secret grep. */
  transcript = '';

  path(name: string): string {
    return join(this.dir, name);
  }

  write(name: string, text: string): string {
    const p = this.path(name);
    writeFileSync(p, text, { mode: 0o600 });
    return p;
  }

  /** Writes a targets file; each target's token goes into an env var named after it. */
  targets(
    list: Array<{ name: string; url: string; token: string }>,
    defaults: Record<string, unknown> = {},
    source: Record<string, unknown> | null = { file: { path: 'key' } },
  ): string {
    const targets = list.map((t) => {
      const envName = `TOKEN_${t.name.replace(/[^A-Za-z0-9]/g, '_').toUpperCase()}`;
      this.env[envName] = t.token;
      return { name: t.name, url: t.url, token: { env: envName } };
    });
    return this.write(
      'targets.yaml',
      stringify({ ...(source ? { source } : {}), defaults: { requestTimeout: '2s', ...defaults }, targets }),
    );
  }

  async run(cmd: 'reconcile' | 'diff', argv: string[], tty = false): Promise<Captured> {
    let stdout = '';
    let stderr = '';
    const io: Io = {
      stdout: (t) => {
        stdout += t;
      },
      stderr: (t) => {
        stderr += t;
      },
      env: this.env,
      isTty: tty,
    };
    const code = await main([cmd, ...argv], io);
    this.transcript += stdout + stderr;
    return { code, stdout, stderr };
  }

  cleanup(): void {
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The end of a test that ran commands in `ws` against `fakes`: every fake closed, none of
 * `secrets` nor any `test-token…` value of the workspace's env in anything the commands printed,
 * the workspace removed.
 */
export async function endWorkspaceTest(
  ws: Workspace,
  fakes: FakeController[],
  secrets: string[],
): Promise<void> {
  await Promise.all(fakes.map((f) => f.close()));
  for (const secret of [...secrets, ...Object.values(ws.env).filter((v) => v?.startsWith('test-token'))]) {
    expect(ws.transcript).not.toContain(secret);
  }
  ws.cleanup();
}
