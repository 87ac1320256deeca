// Owns how a patched key reaches the running gateway: a real restart (env ref) or the key file.
import { writeFileAtomic } from '../adapters/atomic-file.ts';
import { fingerprintValue, shortHash } from '../fingerprint.ts';
import type { Logger, SecretRegistry } from '../log.ts';
import { coalesce } from './coalesce.ts';
import type { EnvStore } from './env-store.ts';
import { ALL_STORE_LAYOUTS, LAYOUTS_WHILE_RUNNING, type ProfilePort } from './profile-port.ts';
import { errInfo, type Supervisor } from './supervisor.ts';

export type DeliveryMode = 'restart' | 'file';

export interface DeliveryResult {
  /** "Delivery to the running gateway was started" (name kept for wire compatibility). */
  signaled: boolean;
  migratedProfiles: number;
}

export interface DeliveryDeps {
  mode: DeliveryMode;
  /** The variable that holds the provider key (the first patchable one). */
  keyVar: string;
  keyFile: string | null;
  /** Owner of the key file: the gateway's user (`--gateway-uid/--gateway-gid`), or null. */
  keyFileOwner?: { uid: number; gid: number } | null;
  /** Key of the fingerprints in log lines (the controller token). */
  token: string;
  env: EnvStore;
  supervisor: Pick<Supervisor, 'hasLiveChild' | 'childEnv' | 'requestRestart'>;
  profiles: ProfilePort;
  secrets: SecretRegistry;
  log: Logger;
  /**
   * File mode: true when the gateway reads the key file only at start and on `secrets reload`
   * (a config-level ref; any file ref on OpenClaw after 2026.6.8), so a replace needs a reload.
   */
  needsReload: () => Promise<boolean>;
  /** The gateway's `secrets.reload`; resolves true on success, never throws. */
  reloadSecrets: () => Promise<boolean>;
  /** Called once the key file holds a new key (file mode). */
  onKeyReplaced?: () => void;
}

/**
 * Alias variables that must follow the key: KiloClaw copied KILOCODE_API_KEY to KILO_API_KEY only
 * at bootstrap, so the alias went stale after the first rotation.
 */
const ALIASES: Record<string, string[]> = { KILOCODE_API_KEY: ['KILO_API_KEY'] };

export class Delivery {
  readonly #d: DeliveryDeps;
  /** Patches that arrive together share a migration run (one that began after they arrived). */
  readonly #migrateRunning = coalesce(() => this.#migrate(false));
  readonly #migrateStopped = coalesce(() => this.#migrate(true));

  constructor(deps: DeliveryDeps) {
    this.#d = deps;
  }

  get mode(): DeliveryMode {
    return this.#d.mode;
  }

  /**
   * Applies a validated patch. The values are registered as secrets first, so nothing logged from
   * here on can carry them. Restart mode answers as soon as the restart is queued (it takes the
   * gateway's stop + cold start); file mode answers after the key file is replaced.
   */
  async deliver(vars: Readonly<Record<string, string>>): Promise<DeliveryResult> {
    const d = this.#d;
    // One slot per variable: the registry keeps this value and the one it replaces.
    for (const [name, v] of Object.entries(vars)) d.secrets.add(v, `env:${name}`);
    const withAliases: Record<string, string> = { ...vars };
    for (const [name, value] of Object.entries(vars)) {
      for (const alias of ALIASES[name] ?? []) if (d.env.get(alias) !== undefined) withAliases[alias] = value;
    }
    d.env.set(withAliases);
    const keyHash =
      vars[d.keyVar] === undefined ? '-' : shortHash(fingerprintValue(d.token, vars[d.keyVar]!));

    if (d.mode === 'file' && vars[d.keyVar] !== undefined) {
      await writeFileAtomic(d.keyFile!, vars[d.keyVar]!, { mode: 0o600, owner: d.keyFileOwner ?? null });
      d.log.info({ keyHash }, 'Replaced key file');
      d.onKeyReplaced?.();
      const migratedProfiles = await this.#migrateNow();
      if (d.supervisor.hasLiveChild() && (await d.needsReload().catch(() => true))) {
        const ok = await d.reloadSecrets();
        d.log.info({ ok }, 'Asked the gateway to reload its secrets');
      }
      // Variables other than the key reach the gateway only through its env.
      const others = Object.keys(vars).filter((k) => k !== d.keyVar);
      if (others.length > 0 && d.supervisor.hasLiveChild()) this.#restartInBackground();
      return { signaled: d.supervisor.hasLiveChild(), migratedProfiles };
    }

    const live = d.supervisor.hasLiveChild();
    // With no child, nobody holds the SQLite stores open, so every layout can be migrated now;
    // otherwise JSON now and the rest in the restart's pre-spawn hook, while the gateway is down.
    const migratedProfiles = await this.#migrateNow();
    if (live) this.#restartInBackground();
    d.log.info({ keyHash, live }, 'Env updated for the next gateway spawn');
    return { signaled: live, migratedProfiles };
  }

  /** Migration before a spawn (the supervisor's pre-spawn hook): every layout, gateway down. */
  async migrateAll(): Promise<number> {
    return this.#migrateStopped();
  }

  /** SQLite stores only while no gateway runs (it holds them open); JSON stores always. */
  #migrateNow(): Promise<number> {
    return this.#d.supervisor.childEnv() === null ? this.#migrateStopped() : this.#migrateRunning();
  }

  async #migrate(all: boolean): Promise<number> {
    try {
      const r = await this.#d.profiles.migrate(all ? ALL_STORE_LAYOUTS : LAYOUTS_WHILE_RUNNING);
      if (r.storesFailed > 0)
        this.#d.log.warn({ storesFailed: r.storesFailed }, 'Some profile stores failed to migrate');
      return r.profilesMigrated;
    } catch (err) {
      this.#d.log.error({ err: errInfo(err) }, 'Profile migration failed');
      return 0;
    }
  }

  #restartInBackground(): void {
    void this.#d.supervisor.requestRestart().catch((err) => {
      this.#d.log.error({ err: errInfo(err) }, 'Gateway restart failed during rotation');
    });
  }
}
