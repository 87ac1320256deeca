// Runs the real kubectl against a test server: fresh discovery cache and HOME per server, every
// call bounded by --request-timeout and a process timeout.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface KubectlResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** kubectl on PATH (the google-cloud-cli dispatcher or a plain binary), or undefined. */
export function findKubectl(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const p = join(dir, 'kubectl');
    if (dir && existsSync(p)) return p;
  }
  return undefined;
}

export interface Kubectl {
  run(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<KubectlResult>;
  dispose(): Promise<void>;
}

export async function kubectlFor(kubeconfigPath: string, bin = findKubectl() ?? 'kubectl'): Promise<Kubectl> {
  const home = await mkdtemp(join(tmpdir(), 'keyroll-kubectl-'));
  return {
    run: (args, opts = {}) =>
      new Promise((resolve) => {
        const timeoutMs = opts.timeoutMs ?? 30_000;
        const child = execFile(
          bin,
          [
            `--kubeconfig=${kubeconfigPath}`,
            `--cache-dir=${join(home, 'cache')}`,
            `--request-timeout=${Math.ceil(timeoutMs / 1000)}s`,
            ...args,
          ],
          {
            env: { ...process.env, HOME: home, KUBECONFIG: kubeconfigPath },
            timeout: timeoutMs,
            killSignal: 'SIGKILL',
          },
          (error, stdout, stderr) => {
            const code = error ? (typeof error.code === 'number' ? error.code : -1) : 0;
            resolve({ code, stdout: String(stdout), stderr: String(stderr) });
          },
        );
        if (opts.input !== undefined) child.stdin?.end(opts.input);
        else child.stdin?.end();
      }),
    dispose: () => rm(home, { recursive: true, force: true }),
  };
}
