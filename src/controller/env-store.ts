// Owns the controller's current environment: the values each new gateway child is spawned with.
import type { ChildEnv } from './supervisor.ts';

/**
 * A mutable copy of the environment, separate from `process.env` so several controllers can live
 * in one test process. Read it only through `snapshot()` at spawn time: a copy taken once and
 * reused is exactly the bug that made rotations silent no-ops.
 */
export class EnvStore {
  #vars: ChildEnv;

  constructor(initial: NodeJS.ProcessEnv) {
    this.#vars = {};
    for (const [k, v] of Object.entries(initial)) if (typeof v === 'string') this.#vars[k] = v;
  }

  get(name: string): string | undefined {
    return this.#vars[name];
  }

  set(vars: Readonly<Record<string, string>>): void {
    for (const [k, v] of Object.entries(vars)) this.#vars[k] = v;
  }

  delete(name: string): void {
    delete this.#vars[name];
  }

  snapshot(): ChildEnv {
    return { ...this.#vars };
  }
}
