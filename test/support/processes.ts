// Owns the processes tests spawn: each child runs in its own process group, its output lines are
// captured, every wait has a timeout, and killAllTracked() leaves nothing behind.
import { type ChildProcess, type SpawnOptions, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface StopOptions {
  /**
   * Send the first signal to the whole process group (default) or only to the child itself.
   * Tests of a supervisor's own shutdown pass `false`, so the grandchild gets no signal from the
   * test and the supervisor has to stop it. The SIGKILL escalation always hits the group.
   */
  group?: boolean;
}

export interface Tracked {
  child: ChildProcess;
  pid: number;
  name: string;
  /** Every stdout and stderr line so far, in arrival order (stderr lines are not marked). */
  lines: string[];
  stdoutLines: string[];
  stderrLines: string[];
  /** Resolves with the first captured line (past or future) matching `re`; rejects on timeout or exit. */
  waitForLine(re: RegExp, timeoutMs?: number): Promise<string>;
  /** Signals, waits up to `timeoutMs`, then SIGKILLs the group; resolves with how it exited. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number, opts?: StopOptions): Promise<ExitInfo>;
  /** Resolves once the child has exited (never rejects). */
  exited: Promise<ExitInfo>;
  /** The exit info once exited, else null. */
  exitInfo(): ExitInfo | null;
}

export interface SpawnTrackedOptions extends Omit<SpawnOptions, 'detached' | 'stdio'> {
  name?: string;
  /** Input for the child's stdin; by default stdin is closed. */
  stdin?: string;
  /** Mirror the child's lines to this process's stderr (debugging only; default off). */
  echo?: boolean;
}

const tracked = new Set<Tracked>();
const foreignPids = new Set<number>();

function signalGroup(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false;
  }
}

function signalPid(pid: number, signal: NodeJS.Signals): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** True when a process with this PID exists (a zombie counts as existing). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Polls until `pid` is gone; resolves true if it went away within the timeout. */
export async function waitForPidExit(pid: number, timeoutMs = 10_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!pidAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return !pidAlive(pid);
}

/**
 * Registers a PID this test did not spawn directly (say, the gateway a controller under test
 * started) so killAllTracked() also kills it (and its group, if it leads one).
 */
export function trackPid(pid: number): void {
  foreignPids.add(pid);
}

export function spawnTracked(cmd: string, args: string[], opts: SpawnTrackedOptions = {}): Tracked {
  const { name, stdin, echo, ...spawnOpts } = opts;
  // detached: the child leads a new process group, so `kill(-pid)` reaches its descendants too.
  const child = spawn(cmd, args, {
    ...spawnOpts,
    detached: true,
    stdio: [stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) {
    // spawn failed synchronously (ENOENT is reported via 'error'); surface it now.
    throw new Error(`spawnTracked: could not start ${cmd}`);
  }
  const pid = child.pid;
  if (stdin !== undefined) child.stdin?.end(stdin);

  const label = name ?? cmd.split('/').pop() ?? cmd;
  const lines: string[] = [];
  const stdoutLines: string[] = [];
  const stderrLines: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  let info: ExitInfo | null = null;

  const onLine = (bucket: string[]) => (line: string) => {
    lines.push(line);
    bucket.push(line);
    if (echo) process.stderr.write(`[${label} ${pid}] ${line}\n`);
    for (const w of lineWaiters) w(line);
  };
  if (child.stdout) createInterface({ input: child.stdout }).on('line', onLine(stdoutLines));
  if (child.stderr) createInterface({ input: child.stderr }).on('line', onLine(stderrLines));

  const exited = new Promise<ExitInfo>((resolve) => {
    child.on('exit', (code, signal) => {
      info = { code, signal };
      resolve(info);
    });
    child.on('error', () => {
      // Failure to spawn: no 'exit' follows.
      if (child.exitCode === null && child.signalCode === null && !pidAlive(pid)) {
        info = { code: null, signal: null };
        resolve(info);
      }
    });
  });

  const t: Tracked = {
    child,
    pid,
    name: label,
    lines,
    stdoutLines,
    stderrLines,
    exited,
    exitInfo: () => info,
    waitForLine(re, timeoutMs = 30_000) {
      const seen = lines.find((l) => re.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<string>((resolve, reject) => {
        const cleanup = () => {
          clearTimeout(timer);
          lineWaiters.delete(onNew);
        };
        const onNew = (line: string) => {
          if (re.test(line)) {
            cleanup();
            resolve(line);
          }
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`${label} (pid ${pid}): no line matching ${re} within ${timeoutMs} ms`));
        }, timeoutMs);
        lineWaiters.add(onNew);
        void exited.then((e) => {
          // Let the readline interfaces flush the last lines before giving up.
          setTimeout(() => {
            if (!lineWaiters.has(onNew)) return;
            cleanup();
            reject(
              new Error(
                `${label} (pid ${pid}) exited (code ${e.code}, signal ${e.signal}) before a line matching ${re}`,
              ),
            );
          }, 50);
        });
      });
    },
    async stop(signal = 'SIGTERM', timeoutMs = 5_000, stopOpts = {}) {
      if (info) return info;
      const group = stopOpts.group ?? true;
      if (group) {
        if (!signalGroup(pid, signal)) signalPid(pid, signal);
      } else {
        signalPid(pid, signal);
      }
      let timer: NodeJS.Timeout | undefined;
      const killed = new Promise<'timeout'>((resolve) => {
        timer = setTimeout(() => resolve('timeout'), timeoutMs);
      });
      const first = await Promise.race([exited, killed]);
      clearTimeout(timer);
      if (first === 'timeout') {
        signalGroup(pid, 'SIGKILL');
        signalPid(pid, 'SIGKILL');
        // SIGKILL cannot be ignored; the bound only guards against a kernel-level hang.
        const last = await Promise.race([exited, new Promise<null>((r) => setTimeout(() => r(null), 5_000))]);
        if (!last) throw new Error(`${label} (pid ${pid}) survived SIGKILL for 5 s`);
        return last;
      }
      return first;
    },
  };
  tracked.add(t);
  return t;
}

/**
 * Stops every tracked child (SIGTERM to its group, SIGKILL after `graceMs`) and kills whatever
 * is left in the groups and every PID registered with trackPid(). For afterEach/afterAll.
 */
export async function killAllTracked(graceMs = 3_000): Promise<void> {
  const all = [...tracked];
  tracked.clear();
  await Promise.all(
    all.map(async (t) => {
      try {
        await t.stop('SIGTERM', graceMs);
      } catch {
        // stop() already escalated to SIGKILL; nothing more to do here.
      }
      // Stragglers: grandchildren that outlived their group leader.
      signalGroup(t.pid, 'SIGKILL');
    }),
  );
  const pids = [...foreignPids];
  foreignPids.clear();
  await Promise.all(
    pids.map(async (pid) => {
      if (!pidAlive(pid)) return;
      signalPid(pid, 'SIGTERM');
      if (!(await waitForPidExit(pid, graceMs))) {
        signalGroup(pid, 'SIGKILL');
        signalPid(pid, 'SIGKILL');
        await waitForPidExit(pid, 5_000);
      }
    }),
  );
}

/** Number of children currently tracked (for tests of the harness itself). */
export function trackedCount(): number {
  return tracked.size;
}

// Last line of defence when a test file dies without its afterAll: no orphaned gateways.
process.on('exit', () => {
  for (const t of tracked) {
    signalGroup(t.pid, 'SIGKILL');
    signalPid(t.pid, 'SIGKILL');
  }
  for (const pid of foreignPids) signalPid(pid, 'SIGKILL');
});
